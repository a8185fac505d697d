"""The small helpers every program shares (swarmlib.backoff, .files, .counts, .timefmt): one
copy each, used by swarmd, gatewayd, the drone and the CLI."""

from __future__ import annotations

import datetime as _dt
import os
import random
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmlib import counts, files, timefmt
from swarmlib.backoff import Backoff, equal_jitter

REPO = Path(__file__).resolve().parent.parent

# -- backoff ---------------------------------------------------------------------------------------


def test_equal_jitter_stays_in_the_upper_half() -> None:
    rng = random.Random(7)
    got = [equal_jitter(8.0, rng) for _ in range(2000)]
    assert all(4.0 <= d <= 8.0 for d in got)
    # Spread over the whole half, not a constant: the point of jitter is to break lockstep.
    assert min(got) < 4.2
    assert max(got) > 7.8
    assert equal_jitter(0.0, rng) == 0.0


def test_backoff_doubles_caps_and_resets() -> None:
    b = Backoff(0.5, 8.0, rng=random.Random(1))
    delays = [b.next() for _ in range(12)]
    assert [b.ceiling(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    for n, d in enumerate(delays):
        assert b.ceiling(n) / 2 <= d <= b.ceiling(n)
    assert b.attempt == 12
    b.reset()
    assert b.attempt == 0
    assert 0.25 <= b.next() <= 0.5
    # A huge attempt count neither overflows nor passes the cap.
    b.attempt = 10_000
    assert 4.0 <= b.next() <= 8.0


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="base"):
        Backoff(0, 1)
    with pytest.raises(ValueError, match="cap"):
        Backoff(2, 1)


def test_backoff_same_seed_same_delays() -> None:
    a = Backoff(1, 60, rng=random.Random(3))
    b = Backoff(1, 60, rng=random.Random(3))
    assert [a.next() for _ in range(8)] == [b.next() for _ in range(8)]


# -- atomic file write -----------------------------------------------------------------------------


def test_atomic_write_replaces_whole_file_with_mode(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "doc.json"
    p.parent.mkdir()
    files.atomic_write(p, b"first")
    assert p.read_bytes() == b"first"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    files.atomic_write(p, b"second, longer than the first", mode=0o644)
    assert p.read_bytes() == b"second, longer than the first"
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    assert sorted(x.name for x in p.parent.iterdir()) == ["doc.json"]  # no temp file left


def test_atomic_write_of_pieces(tmp_path: Path) -> None:
    p = tmp_path / "snapshot.json"
    files.atomic_write(p, (piece for piece in [b'{"a": ', b"1", b"}"]))
    assert p.read_bytes() == b'{"a": 1}'


def test_atomic_write_failure_in_a_piece_keeps_the_old_file(tmp_path: Path) -> None:
    p = tmp_path / "snapshot.json"
    files.atomic_write(p, b"old")

    def pieces() -> Iterator[bytes]:
        yield b"half of the new"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        files.atomic_write(p, pieces())
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["snapshot.json"]


def test_atomic_write_through_a_tmp_dir(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    (tmp_path / "pending").mkdir()
    files.atomic_write(tmp_path / "pending" / "a.json", b"{}", tmp_dir=tmp_path / "tmp")
    assert (tmp_path / "pending" / "a.json").read_bytes() == b"{}"
    assert list((tmp_path / "tmp").iterdir()) == []


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "doc"
    files.atomic_write(p, b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output"):
        files.atomic_write(p, b"new")
    monkeypatch.undo()
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["doc"]


def test_atomic_write_fsyncs_file_then_directory(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    files.atomic_write(tmp_path / "x", b"data")
    assert synced == ["file", "dir"]


# -- queue counts ----------------------------------------------------------------------------------


def test_count_states_and_public_counts() -> None:
    entries = [{"state": "pending"}, {"state": "ready"}, {"state": "building"},
               {"state": "assigned"}, {"state": "built"}, {"state": "built"},
               {"state": "failed"}, {"state": "blocked"}, {"state": "cancelled"},
               {"state": None}, {}, "junk"]
    c = counts.count_states(entries)
    assert c == {"pending": 1, "ready": 1, "building": 1, "assigned": 1, "built": 2,
                 "failed": 1, "blocked": 1, "cancelled": 1}
    assert counts.public_counts(c) == {"pending": 2, "building": 2, "completed": 2, "failed": 2}
    # swarmd's counts as JSON: missing keys, nulls, strings, NaN and garbage count as 0.
    assert counts.public_counts({"ready": 3.0, "pending": "3", "built": None, "failed": "x",
                                 "blocked": True, "building": float("nan"),
                                 "assigned": float("inf")}) \
        == {"pending": 3, "building": 0, "completed": 0, "failed": 0}
    assert counts.public_counts(None) == {"pending": 0, "building": 0, "completed": 0,
                                          "failed": 0}


# -- time ------------------------------------------------------------------------------------------


def test_iso_and_now() -> None:
    assert timefmt.iso(0) == "1970-01-01T00:00:00Z"
    assert timefmt.iso(1_700_000_000.9) == "2023-11-14T22:13:20Z"
    assert timefmt.iso(None) is None
    now = timefmt.utc_now_iso()
    assert now == timefmt.iso(_dt.datetime.strptime(now, timefmt.FORMAT)
                              .replace(tzinfo=_dt.UTC).timestamp())


# -- the pure parts stay pure, and there is one copy of each ---------------------------------------


def test_helpers_do_not_import_trio() -> None:
    code = ("import sys; import swarmlib.backoff, swarmlib.counts, swarmlib.files, "
            "swarmlib.timefmt; assert 'trio' not in sys.modules, 'trio imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# Where a private copy of a helper used to live, and what gave it away.
COPIES = {
    "droned/backoff.py": ["class Backoff"],
    "droned/agent.py": ["class Backoff", ".uniform("],
    "droned/outbox.py": ["os.fsync(", "os.replace("],
    "gatewayd/spool.py": ["os.fsync(", ".uniform(", "def utc_now_iso"],
    "gatewayd/app.py": ["os.fsync(", "def utc_now_iso", "strftime("],
    "gatewayd/main.py": ["NOTIFY_SOCKET", "socket.socket("],
    "gatewayd/probe.py": ["def utc_now_iso"],
    "gatewayd/sanitize.py": ["def utc_now_iso", "def queue_counts", '"ready")', "%SZ"],
    "lib/swarmlib/cli.py": ["backoff * 2", "Counter("],
    "demo/__main__.py": ["counts.get(e[\"state\"], 0) + 1"],
    "bench/page.py": ["def iso("],
    "swarmd/journal.py": ["def _fsync_dir", "os.replace("],
    "swarmd/state.py": ['"ready"]'],
    "gatewayd/push.py": ["def utc_now_iso", ".uniform(", '"ready")', "backoff * 2"],
}


@pytest.mark.parametrize(("path", "signs"), sorted(COPIES.items()))
def test_no_private_copies_left(path: str, signs: list[str]) -> None:
    f = REPO / path
    if not f.exists():
        return  # deleted: the best outcome
    text = f.read_text()
    assert [s for s in signs if s in text] == [], path
