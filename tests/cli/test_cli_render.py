"""What people see: tables, durations and the watch view (pure functions)."""

from __future__ import annotations

import pytest

from swarmlib import clirender as r


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (0, "0s"), (12.4, "12s"), (59.6, "1m00s"), (245, "4m05s"), (3725, "1h02m"),
    (-5, "0s"), ("x", "-"),
])
def test_duration(seconds: object, text: str) -> None:
    assert r.duration(seconds) == text


def test_table_aligns_text_left_and_numbers_right() -> None:
    out = r.table(["NAME", "CORES", "NOTE"], [["a", 8, None], ["longer", 128, "x"]])
    assert out.splitlines() == [
        "NAME    CORES  NOTE",
        "a           8  -",
        "longer    128  x",
    ]


def test_when() -> None:
    assert r.when("2026-02-23T10:30:00.123Z") == "2026-02-23 10:30:00"
    assert r.when(0) == "1970-01-01 00:00:00"
    assert r.when(None) == "-"


def test_bar() -> None:
    assert r.bar(0.5, 10) == "[#####.....]"
    assert r.bar(2.0, 4) == "[####]"


def test_bad_lines_lists_every_line() -> None:
    out = r.bad_lines({"message": "m", "lines": [
        {"line": 1, "text": "[ebuild] x", "why": "no"}, {"line": 9, "text": "y", "why": "bad"}]})
    assert out.splitlines() == [
        "submission rejected, 2 bad line(s); nothing was queued:",
        "  line 1: no", "    [ebuild] x", "  line 9: bad", "    y"]


def test_missing_fields_never_crash() -> None:
    for fn in (r.status, r.drones, r.queue, r.builds, r.build, r.packages, r.logs, r.config,
               r.submitted):
        assert isinstance(fn({}), str)


def test_watch_view_progress_eta_and_recent() -> None:
    v = r.WatchView()
    assert v.apply({"type": "drone_status", "timestamp": "2026-02-23T10:30:00Z",
                    "data": {"name": "drone-izar", "cores": 16, "status": "ready"}}, now=0) \
        == "10:30:00 drone drone-izar ready"
    assert v.apply({"type": "build_progress", "timestamp": "2026-02-23T10:30:01Z",
                    "data": {"build_id": "b-1", "package": "dev-libs/openssl-3.3.2",
                             "drone": "drone-izar", "phase": "started", "elapsed_s": 0,
                             "estimate_s": 400}}, now=100.0) \
        == "10:30:01 started dev-libs/openssl-3.3.2 on drone-izar"
    v.apply({"type": "queue_update", "data": {"pending": 3, "building": 1, "completed": 0,
                                              "failed": 0}}, now=100.0)
    screen = v.render(now=200.0)  # 100 s later: 25% of the estimate, 5 minutes to go
    assert "queue: pending 3  building 1  completed 0  failed 0" in screen
    row = next(line for line in screen.splitlines() if line.startswith("drone-izar"))
    assert "[#####...............]  25%" in row
    assert row.endswith("ETA 5m00s")
    # a reported percent wins over elapsed / estimate
    v.apply({"type": "build_progress", "data": {"build_id": "b-1", "package": "dev-libs/openssl-3.3.2",
                                                "drone": "drone-izar", "phase": "progress",
                                                "percent": 80, "elapsed_s": 120,
                                                "estimate_s": 400}}, now=220.0)
    assert " 80%" in v.render(now=220.0)
    line = v.apply({"type": "build_progress", "timestamp": "2026-02-23T10:37:00Z",
                    "data": {"build_id": "b-1", "package": "dev-libs/openssl-3.3.2",
                             "drone": "drone-izar", "phase": "finished", "result": "success",
                             "elapsed_s": 419}}, now=300.0)
    assert line == "10:37:00 success dev-libs/openssl-3.3.2 on drone-izar in 6m59s"
    screen = v.render(now=300.0)
    assert "%" not in screen
    assert screen.splitlines()[-1] == "  " + line


def test_watch_view_offline_drone_drops_its_builds() -> None:
    v = r.WatchView()
    v.apply({"type": "build_progress", "data": {"build_id": "b-1", "package": "a/b-1",
                                                "drone": "d1", "phase": "started"}}, now=0)
    v.apply({"type": "drone_status", "data": {"name": "d1", "status": "offline"}}, now=1)
    assert v.builds == {}
    assert v.apply({"type": "drone_status", "data": {"name": "d1", "status": "offline"}},
                   now=2) is None  # no change, no line
