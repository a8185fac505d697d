"""The build-swarm CLI against a real swarmd (and real drones): as an operator uses it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from harness.swarm import Swarm
from tests.conftest import BIN, SwarmdProc

pytestmark = pytest.mark.slow

WORLD = Path(__file__).parent / "data" / "world-tree.txt"


def cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "PORTAGE_OVERRIDE_EPREFIX": "/", "HOME": "/nonexistent", **(env or {})}
    e.pop("SWARM_ADMIN_KEY", None)
    return subprocess.run([str(BIN / "build-swarm"), *args], input=stdin, capture_output=True,
                          text=True, env=e, timeout=60)


def test_cli_against_real_swarmd(tmp_path: Path) -> None:
    sd = SwarmdProc(tmp_path / "state", tmp_path / "swarmd.log",
                    env={"SWARM_CONTROL_TOKEN": "ctl"}).start()
    tok = {"SWARM_CONTROL_TOKEN": "ctl"}
    try:
        # From a file, JSON output parsed.
        r = cli("--orchestrator", sd.url, "--json", "submit", "--any-target", str(WORLD),
                env=tok)
        assert r.returncode == 0, r.stderr
        rec = json.loads(r.stdout)
        assert rec["queued"] == 6  # the [binary] row is not queued
        # From stdin, human output: the same packages are merged, not queued twice.
        r = cli("--orchestrator", sd.url, "submit", "--any-target", "-",
                stdin=WORLD.read_text(), env=tok)
        assert r.returncode == 0, r.stderr
        assert "merged" in r.stdout
        assert "6 merged" in r.stdout
        q = json.loads(cli("--orchestrator", sd.url, "--json", "queue").stdout)
        assert len(q["entries"]) == 6
        # A wrong token: refused with the auth exit code and a hint.
        r = cli("--orchestrator", sd.url, "cancel", rec["id"],
                env={"SWARM_CONTROL_TOKEN": "wrong"})
        assert r.returncode == 4
        assert "SWARM_CONTROL_TOKEN" in r.stderr
        r = cli("--orchestrator", sd.url, "--json", "cancel", rec["id"], env=tok)
        assert r.returncode == 0, r.stderr
        q = json.loads(cli("--orchestrator", sd.url, "--json", "queue").stdout)
        states = {e["cpv"]: e["state"] for e in q["entries"]}
        # The second request still holds every package, so nothing is cancelled.
        assert set(states.values()) <= {"pending", "ready"}
        # A bad submission: every bad line named, exit code for a rejected request.
        r = cli("--orchestrator", sd.url, "submit", "--any-target", "-",
                stdin="[ebuild  N    ] foo\n[ebuild  N    ] dev-libs/ok-1\n[ebuild N ] x/y-\n",
                env=tok)
        assert r.returncode == 5
        assert "line 1" in r.stderr + r.stdout
        assert "line 3" in r.stderr + r.stdout
        s = json.loads(cli("--orchestrator", sd.url, "--json", "status").stdout)
        assert s["status"] == "ok"
    finally:
        assert sd.stop() == 0


def test_cli_unreachable_target() -> None:
    r = cli("--orchestrator", "http://127.0.0.1:9", "status")
    assert r.returncode == 3
    assert "127.0.0.1:9" in r.stderr


def test_cli_restart_drone_and_metrics_after_a_run(tmp_path: Path) -> None:
    sw = Swarm(tmp_path).start()
    try:
        sw.add_drone("m1", 8)
        rid = sw.submit({"packages": ["=a/x-1", "=a/y-1", "=a/z-1"],
                         "deps": {"=a/y-1": ["=a/x-1"]}})["id"]
        sw.wait_complete(rid, 90)
        r = cli("--orchestrator", sw.url, "--json", "drones")
        drones = json.loads(r.stdout)["drones"]
        assert [d["name"] for d in drones] == ["m1"]
        r = cli("--orchestrator", sw.url, "restart", "m1")
        assert r.returncode == 0, r.stderr
        text = httpx.get(sw.url + "/metrics", timeout=10).text
        metrics = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                metrics[k] = float(v)
        assert metrics['swarm_queue_entries{state="built"}'] == 3
        assert metrics['swarm_builds{result="success"}'] == 3
        assert metrics["swarm_submissions_total"] == 1
        assert metrics['swarm_build_duration_seconds_count{result="success"}'] == 3
        assert metrics["swarm_journal_appends_total"] >= 1 + 1 + 3 * 3
        assert metrics['swarm_drones{status="offline"}'] == 0
        # The drone got the restart command on its next heartbeat, re-executed itself and
        # registered again under the same name.
        log = tmp_path / "m1.log"
        sw.wait_for(lambda: "restart requested by swarmd" in log.read_text(), 30, "restart")
        sw.wait_for(lambda: log.read_text().count("droned.agent: registered") >= 2, 30,
                    "re-registered after re-executing")
        d = sw.wait_for(lambda: [x for x in sw.get("/api/drones")["drones"]
                                 if x["status"] == "ready"], 30, "drone ready again")
        assert d[0]["name"] == "m1"
    finally:
        sw.stop()
