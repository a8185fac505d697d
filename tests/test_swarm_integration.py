"""Real processes on 127.0.0.1: swarmd plus swarm-drone agents running the fake emerge."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from harness.swarm import Swarm, dag

pytestmark = pytest.mark.slow


def _check_built_once_in_order(sw: Swarm, body: dict[str, Any]) -> None:
    builds = sw.get("/api/builds?limit=1000")["builds"]
    ok = [b for b in builds if b["result"] == "success"]
    cpvs = [b["cpv"] for b in ok]
    assert len(cpvs) == len(set(cpvs)), "a package was built twice"
    assert sorted(cpvs) == sorted(p[1:] for p in body["packages"])
    by = {b["cpv"]: b for b in ok}
    for pkg, deps in body["deps"].items():
        for d in deps:
            assert by[pkg[1:]]["started_ts"] >= by[d[1:]]["finished_ts"], (pkg, d)
    for b in ok:
        f = sw.binhost / b["artifact"]["path"]
        assert f.is_file(), f
        data = f.read_bytes()
        assert hashlib.sha256(data).hexdigest() == b["artifact"]["sha256"]
        assert len(data) == b["artifact"]["size"]


def test_three_drones_build_a_50_package_dag(tmp_path: Path) -> None:
    sw = Swarm(tmp_path).start()
    try:
        for name, cores in (("d-small", 4), ("d-mid", 8), ("d-big", 16)):
            sw.add_drone(name, cores)
        body = dag(50)
        rid = sw.submit(body)["id"]
        req = sw.wait_complete(rid, 150)
        assert req["counts"]["built"] == 50
        _check_built_once_in_order(sw, body)
        used = {b["drone_name"] for b in sw.get("/api/builds?limit=1000")["builds"]}
        assert len(used) == 3, used
    finally:
        codes = sw.stop()
    assert all(c == 0 for c in codes.values()), codes


def test_killed_drone_work_moves_and_run_completes(tmp_path: Path) -> None:
    sw = Swarm(tmp_path, fake_env={"FAKE_EMERGE_SECONDS": "1.5"}).start()
    try:
        victim = sw.add_drone("victim", 16)
        body = dag(12, seed=3)
        rid = sw.submit(body)["id"]
        # Let the victim take a build, then kill it mid-build and add a survivor.
        bid = sw.wait_for(lambda: next((b["id"] for b in sw.get("/api/builds")["builds"]
                                        if b["state"] != "finished"), None), 30, "a lease")
        victim.kill()
        victim.wait()
        sw.add_drone("survivor", 8)
        req = sw.wait_complete(rid, 150)
        assert req["counts"]["built"] == 12
        b = sw.get(f"/api/builds/{bid}")
        assert b["result"] == "returned"  # moved, not counted as a failure
        entry = next(e for e in sw.get("/api/queue")["entries"] if e["cpv"] == b["cpv"])
        assert entry["state"] == "built"
        assert entry["attempts"] == 1
        _check_built_once_in_order(sw, body)
    finally:
        sw.stop()


def test_swarmd_sigkill_mid_run_then_completes(tmp_path: Path) -> None:
    sw = Swarm(tmp_path, fake_env={"FAKE_EMERGE_SECONDS": "0.5"}).start()
    try:
        sw.add_drone("a", 8)
        sw.add_drone("b", 8)
        body = dag(24, seed=11)
        rid = sw.submit(body)["id"]
        sw.wait_for(lambda: sw.get(f"/api/requests/{rid}")["counts"]["built"] >= 5, 60, "5 built")
        before = {b["cpv"] for b in sw.get("/api/builds?limit=1000")["builds"]
                  if b["result"] == "success"}
        sw.swarmd.kill9()
        time.sleep(1.5)  # drones keep building and retry their reports with backoff
        sw.swarmd.start()
        req = sw.wait_complete(rid, 150)
        assert req["counts"]["built"] == 24
        _check_built_once_in_order(sw, body)
        after = [b["cpv"] for b in sw.get("/api/builds?limit=1000")["builds"]
                 if b["result"] == "success"]
        assert before <= set(after)
    finally:
        sw.stop()


def test_always_failing_package_fails_after_three_attempts(tmp_path: Path) -> None:
    sw = Swarm(tmp_path, fake_env={"FAKE_EMERGE_FAIL": "cat-1/pkg1-1.1"}).start()
    try:
        for name in ("f1", "f2"):
            sw.add_drone(name, 8)
        body = {"packages": ["=cat-0/pkg0-1.0", "=cat-1/pkg1-1.1", "=cat-2/pkg2-1.2",
                             "=cat-3/pkg3-1.3"],
                "deps": {"=cat-2/pkg2-1.2": ["=cat-1/pkg1-1.1"],
                         "=cat-3/pkg3-1.3": ["=cat-2/pkg2-1.2"]}}
        rid = sw.submit(body)["id"]
        req = sw.wait_complete(rid, 120)
        assert req["counts"]["failed"] == 1
        assert req["counts"]["blocked"] == 2
        assert req["counts"]["built"] == 1
        q = {e["cpv"]: e for e in sw.get("/api/queue")["entries"]}
        assert q["cat-1/pkg1-1.1"]["attempts"] == 3
        assert [h["result"] for h in q["cat-1/pkg1-1.1"]["history"]] == ["failed"] * 3
        assert "cat-1/pkg1-1.1" in q["cat-3/pkg3-1.3"]["reason"] or \
            "cat-2/pkg2-1.2" in q["cat-3/pkg3-1.3"]["reason"]
    finally:
        sw.stop()
