"""The gateway tests' fake swarmd (behind httpx.MockTransport) and a Gateway wired to it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import trio

from gatewayd.app import Gateway, create_app
from gatewayd.config import GatewayConfig
from gatewayd.spool import inline

ADMIN_KEYS = "key-one-0123456789,key-two-9876543210"
CONTROL_TOKEN = "control-token-abcdef"
IDENTITY = {
    "hosts": {"Izar-Host": "Izar", "secretbox.lan": "Vega", "Altair-Link": "Altair"},
    "networks": {"10.42.0.0/24": "192.0.2.0/24"},
}


def sample_state() -> dict[str, Any]:
    return {
        "status": {
            "status": "ok", "version": "0.1.0", "uptime_s": 12.5, "hostname": "izar-host",
            "journal": {"dir": "/var/lib/build-swarm"},
            "counts": {"pending": 2, "ready": 1, "assigned": 1, "building": 1, "built": 5,
                       "failed": 1, "blocked": 1, "cancelled": 0},
            "drones": {"ready": 1, "building": 1, "degraded": 0, "offline": 0},
        },
        "drones": [
            {"id": "d-1", "name": "drone-Izar-Host", "hostname": "izar-host",
             "ip": "10.42.0.201", "mac": "aa:bb:cc:dd:ee:ff", "cores": 16, "arch": "amd64",
             "status": "building", "last_heartbeat": "2026-02-23T10:30:00Z", "load": 1.5,
             "current_builds": [{"build_id": "b-1", "cpv": "sys-libs/glibc-2.39",
                                 "progress": 40.0, "started": "2026-02-23T10:25:00Z"}]},
            {"id": "d-2", "name": "drone-secretbox", "hostname": "secretbox.lan",
             "ip": "192.168.20.7", "mac": "00-11-22-33-44-55", "cores": 8, "arch": "amd64",
             "status": "ready", "current_builds": []},
        ],
        "queue": {
            "entries": [
                {"id": "e-1", "cpv": "dev-libs/openssl-3.3.2", "state": "building",
                 "drone": "d-1", "build_id": "b-1", "estimate_s": 600.0, "priority": 900.0,
                 "request_priority": 0, "requests": ["r-1"]},
                {"id": "e-2", "cpv": "sys-libs/zlib-1.3.1", "state": "built",
                 "requests": ["r-1"]},
                {"id": "e-3", "cpv": "app-misc/foo-1.0", "state": "pending",
                 "estimate_s": 300.0, "priority": 300.0, "request_priority": 0,
                 "requests": ["r-1"]},
            ],
            "counts": {"pending": 1, "building": 1, "built": 1},
        },
        "requests": [
            {"id": "r-1", "state": "open", "created": "2026-02-23T10:00:00Z", "finished": None,
             "packages": 3, "priority": 0, "entries": ["e-1", "e-2", "e-3"], "cycles": [],
             "counts": {"pending": 1, "ready": 0, "assigned": 0, "building": 1, "built": 1,
                        "failed": 0, "blocked": 0, "cancelled": 0, "skipped": 0},
             "summary": {"request_id": "r-1", "packages": 3, "built": 1, "failed": 0,
                         "blocked": 0, "cancelled": 0, "duration_s": 1800.0}},
            {"id": "gw-0123456789abcdef0123456789abcdef", "state": "complete",
             "created": "2026-02-23T09:00:00Z", "finished": "2026-02-23T09:30:00Z",
             "packages": 2, "priority": 0, "entries": ["e-0"], "cycles": [],
             "counts": {"pending": 0, "ready": 0, "assigned": 0, "building": 0, "built": 1,
                        "failed": 1, "blocked": 0, "cancelled": 0, "skipped": 0},
             "summary": {"request_id": "gw-0123456789abcdef0123456789abcdef", "packages": 2,
                         "built": 1, "failed": 1, "blocked": 0, "cancelled": 0,
                         "duration_s": 1800.0}},
        ],
        "builds": [
            {"id": "b-1", "cpv": "sys-libs/glibc-2.39", "drone": "d-1",
             "drone_name": "drone-Izar-Host", "result": "success",
             "started": "2026-02-23T10:00:00Z", "finished": "2026-02-23T10:20:00Z",
             "duration_s": 1200.0, "error": "log at http://10.42.0.201:8080/x",
             "artifact": {"path": "sys-libs/glibc/glibc-2.39-1.gpkg.tar"}},
        ],
    }


class FakeSwarmd:
    """swarmd's operator API, in memory. ``up=False`` refuses connections."""

    def __init__(self) -> None:
        self.state = sample_state()
        self.up = True
        self.delay = 0.0
        self.fail_status: int | None = None
        self.error_body = "broken"
        self.calls: Counter[str] = Counter()
        self.queued: dict[str, dict[str, Any]] = {}
        self.posts: list[httpx.Request] = []
        self.auth_seen: list[str | None] = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, req: httpx.Request) -> httpx.Response:
        path = req.url.path
        self.calls[f"{req.method} {path}"] += 1
        self.auth_seen.append(req.headers.get("authorization"))
        if not self.up:
            raise httpx.ConnectError("connection refused", request=req)
        if self.delay:
            await trio.sleep(self.delay)
        if self.fail_status is not None:
            return httpx.Response(self.fail_status, json={"error": {
                "code": "boom", "message": self.error_body}})
        if req.method == "GET":
            if path == "/api/status":
                return httpx.Response(200, json=self.state["status"])
            if path == "/api/drones":
                return httpx.Response(200, json={"drones": self.state["drones"]})
            if path == "/api/queue":
                queue = self.state["queue"]
                want = req.url.params.get("state")
                if want:
                    states = set(want.split(","))
                    queue = {**queue, "entries": [e for e in queue["entries"]
                                                  if e.get("state") in states]}
                return httpx.Response(200, json=queue)
            if path == "/api/requests":
                return httpx.Response(200, json={"requests": self.state["requests"]})
            if path == "/api/builds":
                return httpx.Response(200, json={"builds": self.state["builds"]})
            if path == "/api/config":
                return httpx.Response(200, json={"config": {"listen": "10.42.0.201:8080"}})
            if path == "/api/logs":
                return httpx.Response(200, json={"lines": [], "query": req.url.query.decode()})
        if req.method == "POST" and path == "/api/queue":
            self.posts.append(req)
            body = req.content
            if req.headers.get("content-type", "").startswith("application/json"):
                doc = json.loads(body)
                rid = doc.get("request_id")
                if "bad/atom" in doc.get("packages", []):
                    return httpx.Response(400, json={"error": {
                        "code": "bad_request", "message": "line 1: 'bad/atom' is not valid"}})
            else:
                rid = req.headers.get("x-request-id")
            assert rid, "the gateway always sends a request id"
            if rid in self.queued:
                return httpx.Response(200, json={**self.queued[rid], "duplicate": True})
            record = {"id": rid, "queued": 1, "skipped": 0, "merged": 0, "duplicate": False}
            self.queued[rid] = record
            return httpx.Response(202, json=record)
        if req.method == "DELETE" and path.startswith("/api/queue/"):
            return httpx.Response(404, json={"error": {"code": "not_found",
                                                       "message": "no such request"}})
        if req.method == "POST" and path.endswith("/restart"):
            return httpx.Response(202, json={"drone_id": path.split("/")[3],
                                              "command": "restart"})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})


def make_config(tmp_path: Path, **overrides: Any) -> GatewayConfig:
    values: dict[str, Any] = {
        "spool_dir": str(tmp_path / "spool"),
        "admin_key": ADMIN_KEYS,
        "control_token": CONTROL_TOKEN,
        "identity": IDENTITY,
        "public_binhost_url": "https://binhost.example.org/amd64",
        "spool_max_requests": 5,
    }
    values.update(overrides)
    cfg = GatewayConfig(**values)
    cfg.validate()
    return cfg


class Rig:
    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        self.fake = FakeSwarmd()
        self.http = httpx.AsyncClient(transport=self.fake.transport())
        self.cfg = make_config(tmp_path, **overrides)
        self.gw = Gateway.create(self.cfg, self.http, alias_key=b"test-alias-key", offload=inline)
        self.app = create_app(self.gw, public=True)
        self.admin_app = create_app(self.gw, public=False)
        self.client = self.app.test_client()
        self.admin_client = self.admin_app.test_client()
