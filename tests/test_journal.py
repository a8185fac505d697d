"""The journal on real files: torn tails, corruption, repair, compaction, failed writes, and the
Trio group commit of swarmd.service."""

from __future__ import annotations

import errno
import json
import os
import shutil
import types
from pathlib import Path
from typing import Any

import pytest
import trio

from swarmd import journal as jr
from swarmd import journal_events as je
from swarmd import service
from swarmd.config import SwarmdConfig
from swarmd.state import Policy, State
from swarmlib.errors import JournalCorrupt, JournalWriteFailed

# ------------------------------------------------------------------ helpers


def make_events(n: int, start: int = 1) -> list[dict[str, Any]]:
    """Events with a seq each, of varying sizes (a history record is a plain apply)."""
    return [
        {"type": "history", "seq": s, "ts": 1000.0 + s,
         "packages": {f"cat/pkg{s}": float(s), "cat/x": 1.5 * s, "pad": float(len("x" * s))},
         "note": "y" * (s * 7 % 53)}
        for s in range(start, start + n)
    ]


def write_journal(state_dir: Path, events: list[dict[str, Any]], batch: int = 3) -> jr.Journal:
    j = jr.Journal(state_dir, events[0]["seq"] if events else 1)
    for i in range(0, len(events), batch):
        j.append_batch([jr.encode(e) for e in events[i:i + batch]])
    return j


def boundaries(events: list[dict[str, Any]]) -> list[int]:
    """File offsets where each record ends."""
    out, off = [], 0
    for e in events:
        off += len(jr.encode(e))
        out.append(off)
    return out


def only_segment(state_dir: Path) -> Path:
    segs = jr.segments(state_dir)
    assert len(segs) == 1
    return segs[0]


def queue_events() -> list[dict[str, Any]]:
    """A realistic event history (submit, register, assign, complete) with seqs."""
    evs: list[dict[str, Any]] = [
        {"type": "register", "name": "d1", "session": "s1", "cores": 8},
        {"type": "submit", "request_id": "r1", "packages": ["a/x-1", "a/y-1", "a/z-1"],
         "deps": {"a/y-1": ["a/x-1"], "a/z-1": ["a/y-1"]}},
        {"type": "assign", "entry_id": "e-000001", "drone_id": "d-0001", "session": "s1",
         "lease": "L1"},
        {"type": "started", "build_id": "b-0000001", "lease": "L1"},
        {"type": "complete", "build_id": "b-0000001", "lease": "L1", "result": "success",
         "duration_s": 12.0},
        {"type": "assign", "entry_id": "e-000002", "drone_id": "d-0001", "session": "s1",
         "lease": "L2"},
        {"type": "submit", "request_id": "r2", "packages": ["a/z-1", "b/w-2"]},
        {"type": "complete", "build_id": "b-0000002", "lease": "L2", "result": "failed",
         "error": "compile error"},
        {"type": "cancel", "target": "r2"},
        {"type": "history", "packages": {"a/x": 33.0}},
    ]
    for i, e in enumerate(evs, start=1):
        e["seq"] = i
        e["ts"] = 100.0 + i
    return evs


def live_state(events: list[dict[str, Any]]) -> State:
    s = State(Policy())
    for e in events:
        s.apply(json.loads(json.dumps(e)))
    return s


# ------------------------------------------------------------------ torn tails


def test_load_returns_every_record(tmp_path: Path) -> None:
    evs = make_events(10)
    write_journal(tmp_path, evs).close()
    loaded = jr.load(tmp_path)
    assert loaded.events == evs
    assert (loaded.last_seq, loaded.torn, loaded.records, loaded.snapshot) == (10, None, 10, None)


def test_truncate_at_every_offset_of_the_last_records(tmp_path: Path) -> None:
    evs = make_events(8)
    src = tmp_path / "src"
    src.mkdir()
    write_journal(src, evs).close()
    seg = only_segment(src)
    data = seg.read_bytes()
    ends = boundaries(evs)
    assert ends[-1] == len(data)
    first = ends[-4]  # every byte of the last three records
    for cut in range(first, len(data) + 1):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / seg.name).write_bytes(data[:cut])
        complete = [e for e, end in zip(evs, ends, strict=True) if end <= cut]
        loaded = jr.load(d)
        assert loaded.events == complete, cut
        assert loaded.last_seq == len(complete)
        boundary = ends[len(complete) - 1]
        assert (loaded.torn is None) == (cut == boundary), cut
        if loaded.torn is not None:
            assert loaded.torn.offset == boundary
        # the torn bytes were never acknowledged: the file is cut back to the last record
        assert (d / seg.name).read_bytes() == data[:boundary], cut
        shutil.rmtree(d)


def test_after_a_torn_tail_the_journal_continues(tmp_path: Path) -> None:
    evs = make_events(5)
    write_journal(tmp_path, evs).close()
    seg = only_segment(tmp_path)
    with seg.open("r+b") as fh:
        fh.truncate(seg.stat().st_size - 3)
    loaded = jr.load(tmp_path)
    assert [e["seq"] for e in loaded.events] == [1, 2, 3, 4]
    j = jr.Journal(tmp_path, loaded.last_seq + 1)
    more = make_events(2, start=5)
    j.append_batch([jr.encode(e) for e in more])
    j.close()
    assert jr.load(tmp_path).events == evs[:4] + more


def test_check_reports_a_torn_tail_without_changing_the_file(tmp_path: Path) -> None:
    write_journal(tmp_path, make_events(4)).close()
    seg = only_segment(tmp_path)
    with seg.open("ab") as fh:
        fh.write(jr.encode(make_events(1, start=5)[0])[:10])
    before = seg.read_bytes()
    ok, lines = jr.check(tmp_path)
    assert ok
    assert any(line.startswith("torn tail") for line in lines), lines
    assert seg.read_bytes() == before


# ------------------------------------------------------------------ corruption


def test_flipped_byte_in_a_middle_record_refuses_with_path_and_offset(tmp_path: Path) -> None:
    evs = make_events(9)
    src = tmp_path / "src"
    src.mkdir()
    write_journal(src, evs).close()
    seg = only_segment(src)
    data = seg.read_bytes()
    ends = boundaries(evs)
    start, end = ends[3], ends[4]  # record 5 of 9, followed by valid ones
    for pos in range(start, end):
        d = tmp_path / "flip"
        d.mkdir()
        bad = bytearray(data)
        bad[pos] ^= 0x20
        (d / seg.name).write_bytes(bytes(bad))
        with pytest.raises(JournalCorrupt) as info:
            jr.load(d)
        assert info.value.path == str(d / seg.name), pos
        assert info.value.offset == start, pos
        assert f"offset {start}" in str(info.value)
        assert "journal check" in str(info.value)
        assert (d / seg.name).read_bytes() == bytes(bad)  # never silently cut
        ok, lines = jr.check(d)
        assert not ok
        assert any(line.startswith("DAMAGED") and f"offset {start}" in line for line in lines)
        shutil.rmtree(d)


def test_zeroed_block_refuses_and_repair_keeps_the_cut_bytes(tmp_path: Path) -> None:
    evs = make_events(40)
    write_journal(tmp_path, evs, batch=7).close()
    seg = only_segment(tmp_path)
    data = seg.read_bytes()
    ends = boundaries(evs)
    pos = len(data) // 3
    assert len(data) - pos > 512 + 200
    bad = data[:pos] + b"\0" * 512 + data[pos + 512:]
    seg.write_bytes(bad)
    k = next(i for i, end in enumerate(ends) if end > pos)  # the record hit first
    offset = ends[k - 1] if k else 0
    with pytest.raises(JournalCorrupt) as info:
        jr.load(tmp_path)
    assert (info.value.path, info.value.offset) == (str(seg), offset)
    ok, lines = jr.check(tmp_path)
    assert not ok
    assert any(f"DAMAGED {seg} at offset {offset}" in line for line in lines), lines

    report = jr.repair_truncate_at_damage(tmp_path)
    assert any(f"at offset {offset}" in line for line in report), report
    kept = list(tmp_path.glob(seg.name + ".damaged-*"))
    assert len(kept) == 1
    assert kept[0].read_bytes() == bad[offset:]
    assert seg.read_bytes() == data[:offset]
    loaded = jr.load(tmp_path)
    assert loaded.events == evs[:k]
    assert jr.check(tmp_path)[0]
    assert jr.repair_truncate_at_damage(tmp_path) == ["no damage found; nothing changed"]


def test_damage_in_an_older_segment_is_corruption_even_at_its_end(tmp_path: Path) -> None:
    evs = make_events(6)
    write_journal(tmp_path, evs[:3]).close()
    # a second segment, as after compaction (its name is its first seq)
    (tmp_path / "journal-00000000000000000004.log").write_bytes(
        b"".join(jr.encode(e) for e in evs[3:]))
    old = jr.segments(tmp_path)[0]
    with old.open("r+b") as fh:
        fh.truncate(old.stat().st_size - 1)
    with pytest.raises(JournalCorrupt) as info:
        jr.load(tmp_path)
    assert info.value.path == str(old)
    assert info.value.offset == boundaries(evs[:3])[1]


def test_snapshot_lost_is_a_sequence_gap(tmp_path: Path) -> None:
    (tmp_path / "journal-00000000000000000004.log").write_bytes(
        b"".join(jr.encode(e) for e in make_events(2, start=4)))
    with pytest.raises(JournalCorrupt, match="sequence gap: expected 1, found 4"):
        jr.load(tmp_path)


def test_damaged_snapshot_refuses(tmp_path: Path) -> None:
    (tmp_path / jr.SNAPSHOT).write_text('{"seq": 3, "entr')
    with pytest.raises(JournalCorrupt) as info:
        jr.load(tmp_path)
    assert info.value.path == str(tmp_path / jr.SNAPSHOT)


# ------------------------------------------------------------------ compaction


def test_compaction_snapshot_plus_later_events(tmp_path: Path) -> None:
    evs = queue_events()
    j = write_journal(tmp_path, evs[:6], batch=2)
    first_segment = only_segment(tmp_path)
    snap = live_state(evs[:6]).to_snapshot()
    assert snap["seq"] == 6
    j.compact(snap)
    j.append_batch([jr.encode(e) for e in evs[6:]])
    j.close()
    assert not first_segment.exists()
    assert [p.name for p in jr.segments(tmp_path)] == ["journal-00000000000000000007.log"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    loaded = jr.load(tmp_path)
    assert loaded.snapshot == json.loads(json.dumps(snap))
    assert loaded.events == evs[6:]
    replayed, _ = service.replay(tmp_path, Policy())
    assert replayed.to_snapshot() == live_state(evs).to_snapshot()


def test_snapshot_written_while_appends_go_on(tmp_path: Path) -> None:
    """swarmd's compaction: rotate between batches, keep appending to the new segment while a
    thread writes the snapshot (in pieces) and removes the covered segments."""
    evs = queue_events()
    j = write_journal(tmp_path, evs[:6], batch=2)
    snap = live_state(evs[:6]).to_snapshot()
    older = j.rotate(6)
    assert [p.name for p in older] == ["journal-00000000000000000001.log"]
    j.append_batch([jr.encode(e) for e in evs[6:8]])  # appends before the snapshot lands
    loaded = jr.load(tmp_path, repair_torn_tail=False)  # a crash here: old snapshot + all
    assert loaded.snapshot is None
    assert loaded.events == evs[:8]
    jr.write_snapshot(tmp_path, snap, older)
    j.append_batch([jr.encode(e) for e in evs[8:]])
    j.close()
    assert [p.name for p in jr.segments(tmp_path)] == ["journal-00000000000000000007.log"]
    loaded = jr.load(tmp_path)
    assert loaded.snapshot == json.loads(json.dumps(snap))
    assert loaded.events == evs[6:]
    replayed, _ = service.replay(tmp_path, Policy())
    assert replayed.to_snapshot() == live_state(evs).to_snapshot()


def test_snapshot_pieces_are_the_json_of_the_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jr, "SNAPSHOT_CHUNK", 2)
    snap = live_state(queue_events()).to_snapshot()
    text = b"".join(jr._snapshot_pieces(snap))
    assert json.loads(text) == json.loads(json.dumps(snap))
    assert list(json.loads(text)) == list(snap)  # same key order


def test_crash_between_snapshot_and_segment_deletion(tmp_path: Path) -> None:
    evs = queue_events()
    j = write_journal(tmp_path, evs[:6])
    old = only_segment(tmp_path)
    saved = old.read_bytes()
    j.compact(live_state(evs[:6]).to_snapshot())
    j.append_batch([jr.encode(e) for e in evs[6:]])
    j.close()
    old.write_bytes(saved)  # the unlink never happened
    assert len(jr.segments(tmp_path)) == 2
    loaded = jr.load(tmp_path)
    assert loaded.events == evs[6:]  # records at or below the snapshot's seq are skipped
    assert loaded.records == len(evs)
    replayed, _ = service.replay(tmp_path, Policy())
    assert replayed.to_snapshot() == live_state(evs).to_snapshot()
    # a later compaction removes the leftover
    j2 = jr.Journal(tmp_path, loaded.last_seq + 1)
    j2.compact(replayed.to_snapshot())
    j2.close()
    assert not old.exists()


def test_crash_after_new_segment_before_snapshot(tmp_path: Path) -> None:
    evs = queue_events()
    write_journal(tmp_path, evs[:6]).close()
    (tmp_path / "journal-00000000000000000007.log").touch()  # created, snapshot not yet written
    loaded = jr.load(tmp_path)
    assert loaded.snapshot is None
    assert loaded.events == evs[:6]
    j = jr.Journal(tmp_path, 7)
    assert j.path.name == "journal-00000000000000000007.log"
    j.append_batch([jr.encode(e) for e in evs[6:]])
    j.close()
    replayed, _ = service.replay(tmp_path, Policy())
    assert replayed.to_snapshot() == live_state(evs).to_snapshot()


# ------------------------------------------------------------------ failed writes


def patched_os(monkeypatch: pytest.MonkeyPatch, **calls: Any) -> None:
    """Replace functions of the ``os`` the journal sees (not the process-wide module)."""
    fake = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    for name, fn in calls.items():
        setattr(fake, name, fn)
    monkeypatch.setattr(jr, "os", fake)


def failing(err: int) -> Any:
    def fn(*args: Any) -> Any:
        raise OSError(err, os.strerror(err))
    return fn


@pytest.mark.parametrize(
    ("call", "err", "words"),
    [("write", errno.ENOSPC, "write failed"), ("fsync", errno.EIO, "fsync failed"),
     ("write", errno.EIO, "write failed"), ("fsync", errno.ENOSPC, "fsync failed")],
)
def test_failed_write_or_fsync_is_fatal_and_claims_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, err: int, words: str
) -> None:
    evs = make_events(6)
    j = write_journal(tmp_path, evs[:4])
    counters = (j.bytes, j.appends, j.fsyncs)
    assert counters[1:] == (4, 2)
    patched_os(monkeypatch, **{call: failing(err)})
    with pytest.raises(JournalWriteFailed, match=words) as info:
        j.append_batch([jr.encode(e) for e in evs[4:]])
    assert f"errno {err}" in str(info.value)
    assert (j.bytes, j.appends, j.fsyncs) == counters
    monkeypatch.undo()
    j.close()
    loaded = jr.load(tmp_path)
    # what was acknowledged is intact (an fsync that failed may or may not leave the data)
    assert loaded.events[:4] == evs[:4]
    if call == "write":
        assert loaded.events == evs[:4]


def test_partial_write_then_enospc_leaves_a_torn_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evs = make_events(6)
    j = write_journal(tmp_path, evs[:4])
    real_write = os.write
    calls = []

    def short_write(fd: int, data: Any) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:10]))  # a short write
        raise OSError(errno.ENOSPC, "No space left on device")

    patched_os(monkeypatch, write=short_write)
    with pytest.raises(JournalWriteFailed, match="No space left"):
        j.append_batch([jr.encode(e) for e in evs[4:]])
    assert len(calls) == 2  # the rest of a short write is written, not dropped
    monkeypatch.undo()
    j.close()
    loaded = jr.load(tmp_path)
    assert loaded.events == evs[:4]
    assert loaded.torn is not None
    assert only_segment(tmp_path).stat().st_size == boundaries(evs)[3]


# ------------------------------------------------------------------ Trio group commit


def orchestrator(state_dir: Path) -> service.Orchestrator:
    orch = service.Orchestrator(SwarmdConfig(state_dir=str(state_dir)))
    orch.recover()
    return orch


def submit(i: int) -> je.Submit:
    return je.Submit(ts=1_700_000_000.0 + i, request_id=f"req-{i}",
                     packages=[f"dev-libs/p{i}-1.0", f"dev-libs/shared{i % 5}-2"],
                     deps={f"dev-libs/p{i}-1.0": [f"dev-libs/shared{i % 5}-2"]})


async def test_group_commit_shares_fsyncs_and_replays_to_the_live_state(tmp_path: Path) -> None:
    orch = orchestrator(tmp_path)
    assert orch.journal is not None
    outcomes: dict[int, Any] = {}

    async def one(i: int) -> None:
        outcomes[i] = await orch.commit(submit(i))

    async with trio.open_nursery() as nursery:
        await nursery.start(orch.run)
        async with trio.open_nursery() as clients:
            for i in range(50):
                clients.start_soon(one, i)
        nursery.cancel_scope.cancel()
    assert sorted(outcomes) == list(range(50))
    assert all(o.ok for o in outcomes.values())
    assert orch.journal.appends == 50
    assert orch.journal.fsyncs < 50  # concurrent commits shared fsyncs
    assert orch.state.seq == 50
    assert len(orch.state.requests) == 50
    assert sum(o.result["merged"] for o in outcomes.values()) == 45  # shared{0..4} built once
    orch.journal.close()
    replayed, loaded = service.replay(tmp_path, orch.policy)
    assert loaded.last_seq == 50
    assert sorted(loaded.seqs) == list(range(1, 51))
    assert replayed.to_snapshot() == orch.state.to_snapshot()


def test_the_snapshot_child_lets_go_of_inherited_sockets(tmp_path: Path) -> None:
    """A connection swarmd closes while a snapshot is being written must close at once: the
    child must not keep its inherited copy open."""
    import socket
    import time

    mine, peer = socket.socketpair()
    snap = live_state(queue_events()).to_snapshot()

    def slow_snapshot() -> dict[str, Any]:
        time.sleep(2.0)
        return snap

    pid, fd = jr.fork_snapshot_writer(slow_snapshot, tmp_path, [])
    try:
        mine.close()  # swarmd closes the connection while the child is running
        peer.settimeout(1.0)
        assert peer.recv(1) == b""  # EOF now, not when the child exits
    finally:
        assert jr.reap_snapshot_writer(pid, fd) is None
        peer.close()
    assert json.loads((tmp_path / jr.SNAPSHOT).read_bytes()) == json.loads(json.dumps(snap))


async def snapshot_written(orch: service.Orchestrator) -> None:
    """Until the forked snapshot writer (if any) has been reaped; at most 20 s."""
    for _ in range(2000):
        if not orch.committer.snapshot_running:
            return
        await trio.sleep(0.01)
    raise AssertionError("the snapshot writer did not finish in 20 s")


async def commit_submissions(state_dir: Path, n: int) -> service.Orchestrator:
    """A real Orchestrator compacting every 100 events commits ``n`` submissions one after the
    other, waits for the last snapshot writer and stops (journal closed)."""
    orch = service.Orchestrator(SwarmdConfig(state_dir=str(state_dir), compact_after_events=100))
    orch.recover()
    assert orch.journal is not None
    async with trio.open_nursery() as nursery:
        await nursery.start(orch.run)
        for i in range(n):
            assert (await orch.commit(submit(i))).ok
        await snapshot_written(orch)
        nursery.cancel_scope.cancel()
    orch.journal.close()
    return orch


async def test_compaction_in_a_forked_child_while_commits_go_on(tmp_path: Path) -> None:
    """Every 100 events a snapshot is written by a forked child while the writer keeps
    committing; at the end the state dir holds the newest snapshot and the segments after it,
    and replays to the live state."""
    orch = await commit_submissions(tmp_path, 450)
    snap = json.loads((tmp_path / jr.SNAPSHOT).read_bytes())
    assert snap["seq"] > 200  # several compactions happened (prune events count too)
    first = [int(p.name.split("-")[1].split(".")[0]) for p in jr.segments(tmp_path)]
    assert min(first) <= snap["seq"] + 1  # no gap between the snapshot and the journal
    assert len(first) <= 2  # the segments a snapshot covers are gone
    replayed, loaded = service.replay(tmp_path, orch.policy)
    assert loaded.snapshot is not None
    assert replayed.to_snapshot() == orch.state.to_snapshot()


async def test_a_failed_snapshot_is_not_fatal_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(state_dir: Path, snapshot: dict[str, Any], older: list[Path]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jr, "write_snapshot", broken)  # the child inherits the patch
    orch = await commit_submissions(tmp_path, 250)
    assert not (tmp_path / jr.SNAPSHOT).exists()
    assert len(jr.segments(tmp_path)) > 1  # rotated, but nothing removed
    replayed, _ = service.replay(tmp_path, orch.policy)
    assert replayed.to_snapshot() == orch.state.to_snapshot()


async def test_failed_fsync_never_answers_and_kills_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    orch = orchestrator(tmp_path)
    assert orch.journal is not None
    answered: list[Any] = []

    async def one(i: int) -> None:
        answered.append(await orch.commit(submit(i)))

    with pytest.RaisesGroup(JournalWriteFailed, flatten_subgroups=True):  # noqa: PT012
        async with trio.open_nursery() as nursery:
            await nursery.start(orch.run)
            await one(0)  # acknowledged before the disk fails
            assert len(answered) == 1
            patched_os(monkeypatch, fsync=failing(errno.EIO))
            for i in range(1, 10):
                nursery.start_soon(one, i)
            await trio.sleep_forever()
    assert len(answered) == 1  # nothing after the failure was answered
    assert orch.journal.fsyncs == 1
    monkeypatch.undo()
    orch.journal.close()
    replayed, loaded = service.replay(tmp_path, orch.policy)
    assert loaded.events[0].request_id == "req-0"  # the acknowledged request is intact
    assert "req-0" in replayed.requests
