"""Fakes of the drone tests: a fake swarmd (plain trio + h11 on 127.0.0.1, port 0) that
records what the agent sends, and an agent configuration running the fake emerge."""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h11
import trio

from droned.config import DroneConfig
from droned.identity import Identity

TOKEN = "drone-test-token"

COPY = "import shutil, sys; shutil.copyfile(sys.argv[1], sys.argv[2])"


class FakeSwarmd:
    """Just enough of swarmd's drone protocol, with knobs for the failure cases."""

    def __init__(self) -> None:
        self.port = 0
        self.hb_interval = 0.2
        self.events: list[tuple[str, Any]] = []  # (kind, body) in arrival order
        self.registrations: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.completes: list[tuple[str, dict[str, Any]]] = []
        self.logs: dict[str, bytearray] = {}
        self.leases: dict[str, dict[str, Any]] = {}  # build_id -> lease record
        self.jobs: list[dict[str, Any]] = []
        self.revoked: set[str] = set()
        self.commands: list[dict[str, Any]] = []
        self.stale_on_complete = False
        self.auth_failures = 0
        self.session = ""
        self._sessions = itertools.count(1)
        self._builds = itertools.count(1)
        self._work = trio.Event()
        self._scope: trio.CancelScope | None = None
        self.nursery: trio.Nursery | None = None
        self.changed = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- knobs ---------------------------------------------------------------------------

    def add_job(self, cpv: str, estimate_s: float | None = None,
                use: list[str] | None = None) -> None:
        self.jobs.append({"cpv": cpv, "estimate_s": estimate_s, "use": use})
        self._work.set()

    def supersede(self) -> None:
        """Another agent registered with this name: the current session is dead."""
        self.session = f"s-other-{next(self._sessions)}"

    def complete_for(self, build_id: str) -> list[dict[str, Any]]:
        return [body for b, body in self.completes if b == build_id]

    async def wait_for(self, pred: Callable[[], bool]) -> None:
        """Until ``pred()`` holds, re-checked on every request (15 s at most)."""
        with trio.fail_after(15):
            while not pred():
                await self.changed.wait()

    def _note(self, kind: str, body: Any) -> None:
        self.events.append((kind, body))
        self.changed.set()
        self.changed = trio.Event()

    # ---- server --------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._handle, listeners)
                task_status.started()

    async def bring_up(self) -> None:
        """Listen again on the same port."""
        assert self.nursery is not None
        await self.nursery.start(self.serve)

    def take_down(self) -> None:
        """Close the port and every open connection (connection refused from now on)."""
        assert self._scope is not None
        self._scope.cancel()

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            req: h11.Request | None = None
            body = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                    continue
                if isinstance(event, h11.Request):
                    req = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    return
            assert req is not None
            headers = {k.decode().lower(): v.decode() for k, v in req.headers}
            status, doc = await self._dispatch(req.target.decode(), headers, bytes(body))
            payload = b"" if doc is None else json.dumps(doc).encode()
            hdrs = [("Connection", "close"), ("Content-Length", str(len(payload)))]
            if doc is not None:
                hdrs.append(("Content-Type", "application/json"))
            await stream.send_all(conn.send(h11.Response(status_code=status, headers=hdrs)))
            if payload:
                await stream.send_all(conn.send(h11.Data(data=payload)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
        except (trio.BrokenResourceError, h11.ProtocolError):
            pass
        finally:
            await stream.aclose()

    @staticmethod
    def _err(status: int, code: str, msg: str) -> tuple[int, dict[str, Any]]:
        return status, {"error": {"code": code, "message": msg}}

    async def _dispatch(
        self, target: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, Any] | None]:
        if headers.get("authorization") != f"Bearer {TOKEN}":
            self.auth_failures += 1
            return self._err(401, "unauthorized", "bad token")
        parts = target.strip("/").split("/")
        if parts[-1] == "log":
            return self._log(parts[2], headers.get("x-swarm-lease", ""), raw)
        body = json.loads(raw)
        if target == "/api/drones/register":
            self.session = f"s-{next(self._sessions)}"
            self.commands = []  # a new session clears what was queued for the old one
            self.registrations.append(body)
            self._note("register", body)
            return 200, {"drone_id": "d-1", "session": self.session,
                         "heartbeat_interval_s": self.hb_interval}
        if parts[:2] == ["api", "drones"]:
            if parts[2] != "d-1":
                return self._err(404, "not_found", "unknown drone")
            if body.get("session") != self.session:
                return self._err(409, "session_superseded", "a newer session exists")
            if parts[3] == "heartbeat":
                self.heartbeats.append(body)
                self._note("heartbeat", body)
                held = {b["lease"] for b in body["builds"]}
                cmds = list(self.commands)  # like swarmd: repeated until a new register
                return 200, {"commands": cmds, "revoked": sorted(held & self.revoked)}
            if parts[3] == "lease":
                return await self._lease(body)
        if parts[:2] == ["api", "builds"] and parts[3] == "complete":
            return self._complete(parts[2], body)
        return self._err(404, "not_found", target)

    async def _lease(self, body: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        with trio.move_on_after(min(float(body.get("wait_s", 30)), 1.0)):
            while not self.jobs:
                self._work = trio.Event()
                await self._work.wait()
        if not self.jobs:
            return 204, None
        job = self.jobs.pop(0)
        build_id = f"b-{next(self._builds):06d}"
        lease = f"L-{build_id}-{os.urandom(4).hex()}"
        rec = {"build_id": build_id, "lease": lease, "package": job["cpv"],
               "atom": "=" + job["cpv"], "estimate_s": job["estimate_s"], "use": job["use"]}
        self.leases[build_id] = rec
        self._note("lease", rec)
        return 200, rec

    def _log(self, build_id: str, lease: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        rec = self.leases.get(build_id)
        if rec is None:
            return self._err(404, "not_found", "unknown build")
        if rec["lease"] != lease or lease in self.revoked:
            return self._err(409, "stale_lease", "lease is no longer valid")
        self.logs.setdefault(build_id, bytearray()).extend(raw)
        self._note("log", build_id)
        return 200, {"bytes": len(raw)}

    def _complete(self, build_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        rec = self.leases.get(build_id)
        if rec is None:
            return self._err(404, "not_found", "unknown build")
        self._note("complete_attempt", (build_id, body))
        if self.stale_on_complete or rec["lease"] != body.get("lease") or (
            rec["lease"] in self.revoked
        ):
            return self._err(409, "stale_lease", "the package was moved")
        self.completes.append((build_id, body))
        self._note("complete", (build_id, body))
        return 200, {"build_id": build_id, "state": "finished"}


def drone_config(tmp_path: Path, url: str, **over: Any) -> DroneConfig:
    values: dict[str, Any] = {
        "orchestrator": url,
        "name": "drone-test",
        "cores": 2,
        "slots": 1,
        "pkgdir": str(tmp_path / "pkgdir"),
        "binhost_target": str(tmp_path / "binhost"),
        "build_command": [sys.executable, "-m", "droned.fake_emerge", "--oneshot",
                          "--buildpkg", "--pkgdir", "{pkgdir}", "={cpv}"],
        "sync_command": [sys.executable, "-c", COPY, "{artifact}", "{binhost_target}/{relpath}"],
        "lease_wait_s": 1.0,
        "state_dir": str(tmp_path / "state"),
        "stop_grace_s": 0.5,
        "kill_grace_s": 1.0,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.3,
        "log_interval_s": 0.1,
        "token": TOKEN,
    }
    values.update(over)
    cfg = DroneConfig(**values)
    cfg.validate()
    return cfg


IDENTITY = Identity(
    name="drone-test", hostname="drone-test-host", ip="127.0.0.1", mac="02:00:00:00:00:01",
    cores=2, arch="amd64", chost="x86_64-pc-linux-gnu",
)
