"""Real swarmd and gatewayd processes: sanitized public views, the admin API, swarmd going
down and coming back with the spool, gatewayd killed with requests spooled, and the live
WebSocket push from a real build, every frame checked for canaries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from harness.swarm import wait_for
from tests.conftest import BIN, SwarmdProc, free_port, wait_http

pytestmark = pytest.mark.slow

ADMIN = "admin-key-1"
CONTROL = "control-token-1"
CANARIES = ["secretbox", "10.42.0.77", "aa:bb:cc:dd:ee:01", "AA-BB-CC-DD-EE-01", CONTROL, ADMIN,
            "fd00::77"]


class GatewayProc:
    def __init__(self, tmp: Path, orchestrator: str) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.cfg = tmp / "gatewayd.toml"
        self.cfg.write_text(
            '[identity.hosts]\n"secretbox.lan" = "Vega"\n'
            '[identity.networks]\n"10.42.0.0/24" = "192.0.2.0/24"\n')
        self.argv = [str(BIN / "gatewayd"), "--config", str(self.cfg),
                     "--listen", f"127.0.0.1:{self.port}",
                     "--admin-listen", f"127.0.0.1:{self.admin_port}",
                     "--orchestrator", orchestrator, "--spool-dir", str(tmp / "spool"),
                     "--probe-interval-s", "0.5", "--cache-ttl-s", "0.5",
                     "--public-binhost-url", "https://binhost.example.org/amd64"]
        self.log = tmp / "gatewayd.log"
        self.env = {**os.environ, "SWARM_ADMIN_KEY": f"{ADMIN},admin-key-2",
                    "SWARM_CONTROL_TOKEN": CONTROL, "PORTAGE_OVERRIDE_EPREFIX": "/"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProc:
        self.proc = subprocess.Popen(self.argv, stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT, env=self.env)
        wait_http(self.url + "/health", proc=self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(20)
        return int(self.proc.returncode)


def _no_canary(text: str, where: str) -> None:
    low = text.lower()
    for c in CANARIES:
        assert c.lower() not in low, f"canary {c!r} leaked in {where}: {text[:400]}"


def _fake_drone_build(sd_url: str) -> None:
    """A drone with canary identity builds everything ready, over the real protocol."""
    c = httpx.Client(base_url=sd_url, timeout=10)
    reg = c.post("/api/drones/register", json={
        "name": "drone-Secretbox", "hostname": "secretbox.lan", "ip": "10.42.0.77",
        "mac": "AA-BB-CC-DD-EE-01", "cores": 8, "arch": "amd64", "chost": "x", "version": "t"})
    reg.raise_for_status()
    did, sess = reg.json()["drone_id"], reg.json()["session"]
    while True:
        r = c.post(f"/api/drones/{did}/lease", json={"session": sess, "wait_s": 0})
        if r.status_code == 204:
            return
        job = r.json()
        c.post(f"/api/builds/{job['build_id']}/log", content=b"building on secretbox.lan\n",
               headers={"X-Swarm-Lease": job["lease"]})
        c.post(f"/api/drones/{did}/heartbeat", json={
            "session": sess, "status": "building", "load": 1.0,
            "builds": [{"build_id": job["build_id"], "lease": job["lease"], "progress": 50}]})
        time.sleep(0.2)
        c.post(f"/api/builds/{job['build_id']}/complete", json={
            "lease": job["lease"], "result": "success", "duration_s": 0.2,
            "artifact": {"path": "a/b/b-1-1.gpkg.tar", "size": 1, "sha256": "c" * 64}})


def test_gateway_public_admin_spool_and_restarts(tmp_path: Path) -> None:
    sd = SwarmdProc(tmp_path / "state", tmp_path / "swarmd.log",
                    env={"SWARM_CONTROL_TOKEN": CONTROL}).start()
    gw = GatewayProc(tmp_path, sd.url)
    adm = {"X-Admin-Key": ADMIN}
    try:
        gw.start()
        r = httpx.post(gw.url + "/api/swarm-admin/queue", headers=adm, timeout=10,
                       json={"packages": ["=a/b-1", "=a/c-1"], "request_id": "first"})
        assert r.status_code == 202, r.text
        _fake_drone_build(sd.url)
        # Public views: the standard envelope, sanitized, no canary anywhere.
        for route in ("build-swarm", "build-history", "infrastructure", "queue"):
            resp = wait_for(lambda route=route: httpx.get(
                f"{gw.url}/api/v1/services/public/{route}", timeout=5), 10, route)
            assert resp.status_code == 200, (route, resp.text)
            doc = resp.json()
            assert doc["status"] == "ok"
            assert set(doc) == {"status", "timestamp", "data"}
            _no_canary(resp.text, route)
        bs = wait_for(lambda: (d := httpx.get(gw.url + "/api/v1/services/public/build-swarm",
                                           timeout=5).json()["data"])["drones"] and d, 10, "drones")
        assert bs["drones"][0]["name"] == "drone-Vega"
        # Admin: full data with the key (either rotated key), 401 without, never via query.
        full = httpx.get(gw.url + "/api/swarm-admin/drones", headers=adm, timeout=5)
        assert full.status_code == 200
        assert "secretbox.lan" in full.text
        assert httpx.get(gw.admin_url + "/api/swarm-admin/drones",
                         headers={"X-Admin-Key": "admin-key-2"}, timeout=5).status_code == 200
        for bad in ({}, {"X-Admin-Key": "nope"}):
            r = httpx.get(gw.url + "/api/swarm-admin/status", headers=bad, timeout=5)
            assert r.status_code == 401
        r = httpx.get(gw.url + f"/api/swarm-admin/status?key={ADMIN}", timeout=5)
        assert r.status_code == 400  # refused: a key never travels in a query string
        assert r.json()["error"]["code"] == "key_in_query"
        # swarmd dies: down within 3 probe intervals, public data degraded, POST spooled.
        sd.kill9()
        wait_for(lambda: httpx.get(gw.url + "/health", timeout=5).json()["orchestrator"]["state"]
              == "down", 5, "orchestrator down")
        pub = httpx.get(gw.url + "/api/v1/services/public/build-swarm", timeout=5)
        assert pub.json()["status"] == "degraded"
        assert pub.json()["data"]["orchestrator"] == "down" or \
            pub.json()["data"].get("orchestrator_status") == "down"
        r = httpx.post(gw.url + "/api/swarm-admin/queue", headers=adm, timeout=10,
                       json={"packages": ["=a/spooled-1"], "request_id": "spooled-1"})
        assert r.status_code == 202
        assert r.json()["id"] == "spooled-1"
        r = httpx.post(gw.url + "/api/swarm-admin/queue", timeout=10,
                       headers={**adm, "Content-Type": "text/plain"},
                       content="[ebuild  N    ] a/spooledtext-2.0\n")
        assert r.status_code == 202
        text_id = r.json()["id"]
        assert httpx.get(gw.url + "/health", timeout=5).json()["spool_depth"] == 2
        assert httpx.get(gw.url + "/api/swarm-admin/queue", headers=adm,
                         timeout=5).status_code == 503
        # gatewayd is killed with the requests in its spool, then restarted.
        gw.stop(signal.SIGKILL)
        gw.start()
        assert httpx.get(gw.url + "/health", timeout=5).json()["spool_depth"] == 2
        # swarmd comes back: the spool is forwarded, exactly once.
        sd.start()
        wait_for(lambda: httpx.get(gw.url + "/health", timeout=5).json()["spool_depth"] == 0, 20,
              "spool drained")
        q = httpx.get(sd.url + "/api/queue", timeout=5).json()["entries"]
        cpvs = [e["cpv"] for e in q]
        assert cpvs.count("a/spooled-1") == 1
        assert cpvs.count("a/spooledtext-2.0") == 1
        assert httpx.get(f"{sd.url}/api/requests/spooled-1", timeout=5).status_code == 200
        assert httpx.get(f"{sd.url}/api/requests/{text_id}", timeout=5).status_code == 200
        # Everything the gateway logged on its public path is free of canaries.
        _no_canary(gw.log.read_text(), "gatewayd log")
    finally:
        if gw.proc is not None:
            gw.stop()
        sd.stop()


def test_websocket_push_of_a_real_build(tmp_path: Path) -> None:
    sd = SwarmdProc(tmp_path / "state", tmp_path / "swarmd.log",
                    env={"SWARM_CONTROL_TOKEN": CONTROL}).start()
    gw = GatewayProc(tmp_path, sd.url)
    frames: list[dict[str, Any]] = []
    raw: list[str] = []

    async def client() -> None:
        async with trio_websocket.open_websocket_url(
                f"ws://127.0.0.1:{gw.port}/ws/build-status") as ws:
            async with trio.open_nursery() as nursery:
                async def drive() -> None:
                    await trio.sleep(1.0)
                    await trio.to_thread.run_sync(lambda: httpx.post(
                        sd.url + "/api/queue", json={"packages": ["=a/b-1"], "request_id": "ws1"},
                        headers={"Authorization": f"Bearer {CONTROL}"}, timeout=10))
                    await trio.to_thread.run_sync(_fake_drone_build, sd.url)

                nursery.start_soon(drive)
                with trio.move_on_after(30):
                    while True:
                        msg = await ws.get_message()
                        raw.append(str(msg))
                        frames.append(json.loads(msg))
                        if frames[-1]["type"] == "build_complete":
                            break
                nursery.cancel_scope.cancel()

    try:
        gw.start()
        trio.run(client)
    finally:
        if gw.proc is not None:
            gw.stop()
        sd.stop()
    types = [f["type"] for f in frames]
    assert "build_complete" in types, types
    assert types[0] in ("queue_update", "drone_status")  # the snapshot first
    assert set(types) <= {"drone_status", "build_progress", "queue_update", "build_complete"}
    for f in frames:
        assert set(f) == {"type", "timestamp", "data"}
    prog = [f["data"] for f in frames if f["type"] == "build_progress"]
    assert [p["phase"] for p in prog][0] == "started"
    assert prog[-1]["phase"] == "finished"
    assert prog[-1]["result"] == "success"
    assert types.index("build_complete") > max(i for i, t in enumerate(types)
                                               if t == "build_progress")
    drone_frames = [f["data"] for f in frames if f["type"] == "drone_status"]
    assert any(d["name"] == "drone-Vega" for d in drone_frames)
    for r in raw:
        _no_canary(r, "websocket frame")
