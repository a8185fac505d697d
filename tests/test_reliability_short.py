"""The short version of the reliability suite (bench/reliability.py has the full one and
writes docs/RELIABILITY.md): a few quick items of each kind, each able to fail."""

from __future__ import annotations

import json
import signal
import tempfile
import time
from pathlib import Path

import pytest

from harness import reliability_faults as rf
from harness.swarm import Swarm


async def test_lazy_file_crash_loses_nothing_acknowledged() -> None:
    r = await rf.lazy_trials(12, seed=11)
    assert r["crashed_mid_write"] >= 6, r  # the crash hit a write before its fsync
    assert r["acked"] > 100, r
    assert r["dropped_bytes"] > 0, r
    assert r["lost"] == [], r["lost"]


async def test_journal_damage_is_recovered_or_refused_never_silent(tmp_path: Path) -> None:
    await rf.build_journal(tmp_path / "src")
    r = rf.damage_trials(tmp_path / "src", tail_bytes=600, flips=150, zero_runs=30, seed=5)
    for kind in ("truncate", "bitflip", "zero512"):
        assert r[kind].get("silent_loss", 0) == 0, (kind, r)
        assert r[kind].get("unclear_refusal", 0) == 0, (kind, r)
    assert r["truncate"].get("recovered") == 600, r  # a cut tail always recovers
    assert r["bitflip"].get("refused", 0) > 0, r


def test_hypothesis_input_faults_on_every_swarmd_endpoint() -> None:
    validator = None
    try:
        from harness.reliability_schema import ApiSchema

        validator = ApiSchema().validate_any
    except ImportError:
        pass
    r = rf.run_input_faults(200, seed=3, validator=validator)
    assert r["examples"] == 200
    assert r["endpoints"] >= 30, r
    assert all(s < 500 for s in r["statuses"]), r


async def test_drone_token_and_cross_drone_lease(tmp_path: Path) -> None:
    r = await rf.security_checks(tmp_path)
    assert r["problems"] == []
    assert r["no_token_refused"] == r["no_token_calls"] == 25
    assert r["cross_refused"] == r["cross_calls"] == 7


@pytest.mark.slow
def test_sigstopped_drone_below_and_above_the_offline_threshold() -> None:
    with tempfile.TemporaryDirectory(prefix="stop-") as d:
        times = Path(d) / "times.json"
        times.write_text(json.dumps({"stop/below-1": 2.5, "stop/above-1": 6}))
        sw = Swarm(Path(d), swarmd_args=["--heartbeat-interval-s", "0.5", "--offline-after-s",
                                         "2"], fake_env={"FAKE_EMERGE_SECONDS": "",
                                                         "FAKE_EMERGE_TIMES": str(times)}).start()
        try:
            victim = sw.add_drone("victim", 8)
            rid = sw.submit({"packages": ["=stop/below-1"]})["id"]
            bid = sw.wait_for(lambda: next((b["id"] for b in sw.get("/api/builds")["builds"]
                                            if b["state"] != "finished"), None), 20, "a lease")
            victim.send_signal(signal.SIGSTOP)  # below: 1 s of 2
            seen = set()
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                seen |= {x["status"] for x in sw.get("/api/drones")["drones"]}
                time.sleep(0.1)
            victim.send_signal(signal.SIGCONT)
            sw.wait_complete(rid, 30)
            assert "offline" not in seen
            assert sw.get(f"/api/builds/{bid}")["result"] == "success"

            rid2 = sw.submit({"packages": ["=stop/above-1"]})["id"]
            vb = sw.wait_for(lambda: next((b for b in sw.get("/api/builds")["builds"]
                                           if b["cpv"] == "stop/above-1"), None), 20, "lease")
            t_lease = time.monotonic()
            sw.add_drone("survivor", 8)
            sw.wait_for(lambda: len(sw.get("/api/drones")["drones"]) == 2, 20, "survivor")
            assert sw.get(f"/api/builds/{vb['id']}")["state"] != "finished"
            victim.send_signal(signal.SIGSTOP)  # above: until offline and its emerge is done
            t0 = time.monotonic()
            sw.wait_for(lambda: any(x["name"] == "victim" and x["status"] == "offline"
                                    for x in sw.get("/api/drones")["drones"]), 10, "offline")
            took = time.monotonic() - t0
            # Its emerge (6 s) finishes meanwhile: a stale success waits to be sent.
            time.sleep(max(0.0, t_lease + 7 - time.monotonic()))
            victim.send_signal(signal.SIGCONT)
            sw.wait_complete(rid2, 30)
            time.sleep(2)  # the returning drone tries its stale reports
            builds = [b for b in sw.get("/api/builds?limit=1000")["builds"]
                      if b["cpv"] == "stop/above-1"]
            assert took < 4, took
            assert next(b for b in builds if b["id"] == vb["id"])["result"] == "returned"
            ok = [b for b in builds if b["result"] == "success"]
            assert [b["drone_name"] for b in ok] == ["survivor"], builds
        finally:
            sw.stop()
