"""The journal: swarmd's only source of truth, an append-only file of framed events.

Synchronous file code, no Trio: the shell calls ``append_batch`` from a worker thread.

Layout of the state directory::

    journal-<first seq, 20 digits>.log   segments; only the newest one is appended to
    snapshot.json                        the live state as of ``seq`` (written atomically)
    logs/                                build logs (not journaled)

A record is ``MAGIC(2) | length u32 | crc32(payload) u32 | payload`` where payload is the JSON
event, which carries its own ``seq`` (consecutive across segments) and its version ``v``
(``swarmd.journal_events`` says what a record holds and how version 1 records are read).

Recovery rules:
- A record that is incomplete or fails its checksum, with no valid record after it in the newest
  segment, is a torn tail (the crash hit mid-write, so it was never acknowledged): it is cut off
  and logged.
- A damaged record followed by valid ones, or damage in an older segment, or a gap in the
  sequence, is corruption: start-up refuses with the file and offset (``JournalCorrupt``).
- A complete record that is not a valid event (``load(decode=...)``: a missing, mistyped or
  unknown field, an unknown type) is corruption too: ``JournalRecordInvalid`` names the file,
  offset, sequence number and field, and nothing is changed (no tail is cut).
- Records at or below the snapshot's ``seq`` are skipped (a crash between writing the snapshot
  and deleting old segments leaves them behind).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from swarmd import journal_events as je
from swarmlib.errors import JournalCorrupt, JournalRecordInvalid, JournalWriteFailed
from swarmlib.files import atomic_write, fsync_dir

log = logging.getLogger("swarmd.journal")

MAGIC = b"SJ"
HEADER = struct.Struct(">2sII")
MAX_RECORD = 256 * 1024 * 1024
SNAPSHOT = "snapshot.json"


def frame(payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def encode(event: dict[str, Any]) -> bytes:
    """The frame of a raw record (a dict that already holds ``seq``)."""
    return frame(json.dumps(event, separators=(",", ":"), sort_keys=True).encode())


def encode_event(event: je.Event, seq: int) -> bytes:
    """The frame of ``event`` journaled as ``seq`` (a version 2 record)."""
    return frame(je.encode(event, seq))


def _segment_name(first_seq: int) -> str:
    return f"journal-{first_seq:020d}.log"


def segments(state_dir: Path) -> list[Path]:
    return sorted(state_dir.glob("journal-*.log"))


@attrs.define
class Damage:
    path: Path
    offset: int
    why: str
    torn: bool  # True: nothing valid after it (a torn tail); False: corruption


def _try_record(data: bytes | memoryview, off: int) -> tuple[bytes | None, str]:
    if off + HEADER.size > len(data):
        return None, "incomplete record header"
    magic, length, crc = HEADER.unpack_from(data, off)
    if magic != MAGIC:
        return None, "bad record marker"
    if length > MAX_RECORD:
        return None, f"record length {length} is implausible"
    end = off + HEADER.size + length
    if end > len(data):
        return None, "record extends past the end of the file"
    payload = bytes(data[off + HEADER.size:end])
    if zlib.crc32(payload) != crc:
        return None, "checksum mismatch"
    return payload, ""


def _valid_record_after(data: bytes, off: int) -> bool:
    i = data.find(MAGIC, off + 1)
    while i != -1:
        payload, _ = _try_record(data, i)
        if payload is not None:
            try:
                json.loads(payload)
                return True
            except ValueError:
                pass
        i = data.find(MAGIC, i + 1)
    return False


def scan_segment(path: Path) -> tuple[list[tuple[int, bytes]], Damage | None]:
    """All complete records of one segment, and the first damage if any."""
    data = path.read_bytes()
    out: list[tuple[int, bytes]] = []
    off = 0
    while off < len(data):
        payload, why = _try_record(data, off)
        if payload is None:
            torn = not _valid_record_after(data, off)
            return out, Damage(path, off, why, torn)
        out.append((off, payload))
        off += HEADER.size + len(payload)
    return out, None


@attrs.define
class Loaded:
    snapshot: dict[str, Any] | None
    events: list[Any]  # the records as dicts, or what ``decode`` made of them
    last_seq: int
    torn: Damage | None
    records: int
    seqs: list[int] = attrs.field(factory=list)  # the sequence number of each of ``events``


def load(state_dir: Path, *, repair_torn_tail: bool = True,
         decode: Callable[[Any], Any] | None = None) -> Loaded:
    """Read the snapshot and every journaled event after it, checking as ``check`` does.

    ``decode`` (``journal_events.decode``) turns each record into its event; a record it
    refuses raises JournalRecordInvalid before anything is changed (a torn tail is cut only
    once every record before it decoded).

    Raises JournalCorrupt for damage that is not a torn tail of the newest segment.
    """
    snap: dict[str, Any] | None = None
    sp = state_dir / SNAPSHOT
    if sp.exists():
        try:
            snap = json.loads(sp.read_bytes())
        except ValueError as exc:
            raise JournalCorrupt(str(sp), 0, f"snapshot is not valid JSON ({exc})") from None
        if not isinstance(snap, dict) or "seq" not in snap:
            raise JournalCorrupt(str(sp), 0, "snapshot has no 'seq'")
    base = int(snap["seq"]) if snap else 0
    segs = segments(state_dir)
    events: list[Any] = []
    seqs: list[int] = []
    last = base
    todo: list[tuple[Path, Damage]] = []
    torn: Damage | None = None
    records = 0
    for i, seg in enumerate(segs):
        recs, damage = scan_segment(seg)
        if damage is not None and (not damage.torn or i != len(segs) - 1):
            raise JournalCorrupt(str(seg), damage.offset, damage.why)
        for off, payload in recs:
            try:
                ev = json.loads(payload)
                seq = int(ev["seq"])
            except (ValueError, KeyError, TypeError):
                raise JournalCorrupt(str(seg), off, "record is not a journal event") from None
            records += 1
            if seq <= base:
                continue
            if seq != last + 1:
                raise JournalCorrupt(str(seg), off, f"sequence gap: expected {last + 1}, found {seq}")
            if decode is not None:
                try:
                    ev = decode(ev)
                except je.BadRecord as exc:
                    raise JournalRecordInvalid(str(seg), off, seq, exc.field, exc.why) from None
            events.append(ev)
            seqs.append(seq)
            last = seq
        if damage is not None:
            torn = damage
            if repair_torn_tail:
                todo.append((seg, damage))
    for seg, damage in todo:
        size = seg.stat().st_size
        log.warning(
            "journal %s: torn last record at offset %d (%s): cut off %d bytes that were "
            "never acknowledged", seg, damage.offset, damage.why, size - damage.offset,
        )
        with seg.open("r+b") as fh:
            fh.truncate(damage.offset)
            fh.flush()
            os.fsync(fh.fileno())
    return Loaded(snapshot=snap, events=events, last_seq=last, torn=torn, records=records,
                  seqs=seqs)


class Journal:
    """The newest segment, open for appending. Not thread-safe: one writer at a time.

    Any OSError from a write or fsync is turned into JournalWriteFailed: the caller must not
    acknowledge anything of that batch, and the daemon exits (never retry an fsync).
    """

    def __init__(self, state_dir: Path, next_seq: int) -> None:
        self.state_dir = state_dir
        self.next_seq = next_seq
        segs = segments(state_dir)
        if segs:
            self.path = segs[-1]
        else:
            self.path = state_dir / _segment_name(next_seq)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if not segs:
            fsync_dir(state_dir)
        self.bytes = os.fstat(self.fd).st_size
        self.appends = 0
        self.fsyncs = 0
        self.last_fsync_s = 0.0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in segments(self.state_dir))

    def append_batch(self, frames: list[bytes]) -> None:
        """Write the frames and fsync once. Blocking: run it in a worker thread."""
        data = b"".join(frames)
        try:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
            t0 = time.perf_counter()
            os.fsync(self.fd)
            self.last_fsync_s = time.perf_counter() - t0
        except OSError as exc:
            raise JournalWriteFailed(
                f"journal {self.path}: {'write' if view else 'fsync'} failed: "
                f"{exc.strerror or exc} (errno {exc.errno})"
            ) from exc
        self.bytes += len(data)
        self.appends += len(frames)
        self.fsyncs += 1

    def compact(self, snapshot: dict[str, Any]) -> None:
        """Write ``snapshot`` atomically, start a new segment, drop the old ones."""
        older = self.rotate(int(snapshot["seq"]))
        write_snapshot(self.state_dir, snapshot, older)

    def rotate(self, seq: int) -> list[Path]:
        """Append from now on to a new segment whose first record is ``seq + 1``; the segments
        before it, which a snapshot at ``seq`` makes redundant. Quick: open + fsync of the
        directory. (Called by the writer, between batches.)"""
        try:
            new_path = self.state_dir / _segment_name(seq + 1)
            if new_path != self.path:
                fd = os.open(new_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                fsync_dir(self.state_dir)
                os.close(self.fd)
                self.fd = fd
                self.path = new_path
                self.bytes = 0
        except OSError as exc:
            raise JournalWriteFailed(f"compaction in {self.state_dir} failed: {exc}") from exc
        return [old for old in segments(self.state_dir) if old != self.path]


SNAPSHOT_CHUNK = 500  # records per json.dumps call while writing a snapshot


def _snapshot_pieces(snapshot: dict[str, Any]) -> Iterator[bytes]:
    """``snapshot`` as compact JSON, in pieces: each list is encoded SNAPSHOT_CHUNK records at
    a time, so that no single string of the whole snapshot (10 MB and more) is built in
    memory, and a thread writing it would let go of the GIL between pieces."""
    yield b"{"
    for i, (key, value) in enumerate(snapshot.items()):
        yield (("," if i else "") + json.dumps(key) + ":").encode()
        if isinstance(value, list) and len(value) > SNAPSHOT_CHUNK:
            yield b"["
            for at in range(0, len(value), SNAPSHOT_CHUNK):
                piece = json.dumps(value[at:at + SNAPSHOT_CHUNK], separators=(",", ":"))
                yield (("," if at else "") + piece[1:-1]).encode()
            yield b"]"
        else:
            yield json.dumps(value, separators=(",", ":")).encode()
    yield b"}"


def write_snapshot(state_dir: Path, snapshot: dict[str, Any], older: list[Path]) -> None:
    """Write ``snapshot`` atomically (tmp, fsync, rename, fsync the directory), then remove the
    ``older`` segments it covers. Blocking; swarmd runs it in a forked child
    (``fork_snapshot_writer``). It touches no file the writer appends to, so appends go on
    meanwhile. A crash at any point leaves either the old
    snapshot with every segment, or the new one (records it covers are skipped on load)."""
    try:
        atomic_write(state_dir / SNAPSHOT, _snapshot_pieces(snapshot), mode=0o600)
    except OSError as exc:
        raise JournalWriteFailed(f"compaction in {state_dir} failed: {exc}") from exc
    try:
        for old in older:
            old.unlink(missing_ok=True)
        fsync_dir(state_dir)
    except OSError as exc:
        raise JournalWriteFailed(f"compaction in {state_dir}: removing old segments "
                                 f"failed: {exc}") from exc


def fork_snapshot_writer(snapshot_of: Callable[[], dict[str, Any]], state_dir: Path,
                         older: list[Path]) -> tuple[int, int]:
    """Write a snapshot from a forked child, like Redis's BGSAVE: ``(pid, fd)``.

    The child sees the parent's memory as it was at the fork (copy-on-write), so the snapshot
    is consistent however the parent's state changes afterwards, and the parent is held up only
    for the fork itself (a few ms) instead of the copy and the encoding of the whole state. The
    child calls ``snapshot_of()``, runs ``write_snapshot`` and exits 0; on failure it writes the
    reason to ``fd`` (the parent reads it, see ``reap_snapshot_writer``) and exits 1. It runs
    no Trio, no threads and no logging (their locks may be held by threads that do not exist in
    the child), and ``os._exit`` skips every finalizer.
    """
    parent = os.getpid()
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        raise
    if pid == 0:  # pragma: no cover - the child; its effects are what the tests check
        code = 1
        try:
            # Die with swarmd: a snapshot writer outliving it could rename files under the
            # next swarmd's feet (OpenRC signals only the main process).
            _die_with_parent(parent)
            # Let go of every inherited socket and file (the listener, drones' connections):
            # a connection swarmd closes must close now, not when this child exits.
            os.closerange(3, min(r, w))
            os.closerange(max(r, w) + 1, os.sysconf("SC_OPEN_MAX"))
            os.close(r)
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            gc.disable()
            write_snapshot(state_dir, snapshot_of(), older)
            code = 0
        except BaseException as exc:
            try:
                os.write(w, f"{type(exc).__name__}: {exc}".encode()[:4000])
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the child
    """PR_SET_PDEATHSIG(SIGKILL) on Linux; exit at once if the parent is already gone."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def reap_snapshot_writer(pid: int, fd: int) -> str | None:
    """Wait for the child of ``fork_snapshot_writer``: None if it succeeded, else why not.
    Blocking: run it in a worker thread."""
    try:
        chunks = []
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return None
    why = b"".join(chunks).decode(errors="replace")
    if os.WIFSIGNALED(status):
        why = why or f"killed by signal {os.WTERMSIG(status)}"
    return why or f"exit status {os.waitstatus_to_exitcode(status)}"


def iter_check(state_dir: Path) -> Iterator[str]:
    """Human-readable findings of ``swarmd journal check``; never modifies anything."""
    sp = state_dir / SNAPSHOT
    if sp.exists():
        try:
            snap = json.loads(sp.read_bytes())
            yield f"snapshot {sp}: seq {snap.get('seq')}"
        except ValueError as exc:
            yield f"DAMAGED snapshot {sp}: {exc}"
    segs = segments(state_dir)
    if not segs:
        yield f"no journal segments in {state_dir}"
    for i, seg in enumerate(segs):
        recs, damage = scan_segment(seg)
        yield f"segment {seg.name}: {len(recs)} complete records, {seg.stat().st_size} bytes"
        if damage is not None:
            if damage.torn and i == len(segs) - 1:
                yield (f"torn tail in {seg} at offset {damage.offset} ({damage.why}): "
                       "cut off automatically at start-up, nothing acknowledged is lost")
            else:
                yield (f"DAMAGED {seg} at offset {damage.offset}: {damage.why}; valid records "
                       "follow, so start-up refuses")


def check(state_dir: Path) -> tuple[bool, list[str]]:
    lines = list(iter_check(state_dir))
    ok = not any(line.startswith("DAMAGED") for line in lines)
    if ok:
        try:
            load(state_dir, repair_torn_tail=False, decode=je.decode)
        except JournalCorrupt as exc:
            lines.append(f"DAMAGED {exc}")
            ok = False
    return ok, lines


def repair_truncate_at_damage(state_dir: Path) -> list[str]:
    """Cut the journal at its first damage; the cut bytes are kept in a ``.damaged`` file."""
    out: list[str] = []
    segs = segments(state_dir)
    for i, seg in enumerate(segs):
        _recs, damage = scan_segment(seg)
        if damage is None:
            continue
        data = seg.read_bytes()
        keep = state_dir / f"{seg.name}.damaged-{int(time.time())}"
        keep.write_bytes(data[damage.offset:])
        with seg.open("r+b") as fh:
            fh.truncate(damage.offset)
            os.fsync(fh.fileno())
        out.append(f"truncated {seg} at offset {damage.offset} ({damage.why}); "
                   f"{len(data) - damage.offset} bytes saved in {keep}")
        for later in segs[i + 1:]:
            moved = later.with_name(later.name + ".after-damage")
            later.rename(moved)
            out.append(f"moved later segment {later.name} aside to {moved.name}")
        fsync_dir(state_dir)
        break
    if not out:
        out.append("no damage found; nothing changed")
    return out
