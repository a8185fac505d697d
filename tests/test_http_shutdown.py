"""Both daemons' HTTP ports, as a client sees them (real processes, raw sockets):

- keep-alive survives a request whose body arrives after its answer (a 405 sent at once,
  the body later): the server reads and discards the rest of that body, then answers the
  next request on the same connection;
- SIGTERM drains: a request in flight gets its whole answer, new connections are refused,
  and the daemon exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import SwarmdProc
from tests.gateway.fakes import sample_state
from tests.test_front import Raw, post

pytestmark = pytest.mark.slow

GATEWAYD = Path(sys.executable).parent / "gatewayd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_until(pred: object, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"not reached in {limit_s} s")


def late_body_then_next(port: int, method_path: str, next_path: str) -> None:
    """Head of a request the app refuses (405) without reading its body; the body only after
    the answer; then a second request on the same connection must be answered."""
    c = Raw(port)
    try:
        body = b'{"x": "0123456789"}'
        c.send(f"{method_path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n".encode())
        status, _, _ = c.response()
        assert status == 405
        c.send(body[:5])
        time.sleep(0.05)  # the body in two pieces, the second after a pause
        c.send(body[5:])
        c.send(f"GET {next_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, _, doc = c.response()  # a hang fails on the socket's 10 s timeout
        assert status == 200, doc
        # And once more, chunked this time.
        c.send(f"{method_path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               .encode())
        assert c.response()[0] == 405
        c.send(b"5\r\nhello\r\n0\r\n\r\n" + f"GET {next_path} HTTP/1.1\r\nHost: x\r\n\r\n"
               .encode())
        assert c.response()[0] == 200
    finally:
        c.close()


# ------------------------------------------------------------------------------ swarmd


def test_swarmd_keep_alive_after_a_405_whose_body_comes_late(tmp_path: Path) -> None:
    sd = SwarmdProc(tmp_path / "state", tmp_path / "swarmd.log").start()
    try:
        late_body_then_next(sd.port, "PUT /api/status", "/api/status")
        # A drone-protocol path with a method the lane does not take goes the same way.
        late_body_then_next(sd.port, "PUT /api/drones/register", "/api/status")
    finally:
        assert sd.stop() == 0


def test_swarmd_drains_a_request_in_flight_on_sigterm(tmp_path: Path) -> None:
    sd = SwarmdProc(tmp_path / "state", tmp_path / "swarmd.log").start()
    c = Raw(sd.port)
    try:
        c.send(post("/api/drones/register", {"name": "drain-1", "cores": 2}, ""))
        reg = json.loads(c.response()[2])
        # A lease call with "Expect: 100-continue" (which takes it past the drone lane to the
        # HTTP/1.1 server and the Quart app): the 100 comes when the app asks for the body,
        # so once it is here the request is in flight, for certain.
        body = json.dumps({"session": reg["session"], "wait_s": 0}).encode()
        c.send(f"POST /api/drones/{reg['drone_id']}/lease HTTP/1.1\r\nHost: x\r\n"
               f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        assert c.response()[0] == 100
        assert sd.proc is not None
        sd.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: refused(sd.port))  # no new connections while it drains
        c.send(body)
        status, headers, doc = c.response()
        assert (status, doc) == (204, b"")
        assert headers.get("connection") == "close"
        assert sd.proc.wait(15) == 0
    finally:
        c.close()
        sd.stop()


@pytest.mark.parametrize("path", ["lane", "quart"])
def test_swarmd_sigterm_ends_a_waiting_lease_poll_at_once(tmp_path: Path, path: str) -> None:
    """A drone waiting in a lease long-poll (wait_s 25) is answered "no work" (204) with
    ``connection: close`` as soon as SIGTERM arrives, and swarmd exits 0 well within its 5 s
    graceful timeout (before the fix the poll was cut off unanswered after those 5 s). Both
    carriers: the drone lane, and the Quart route (reached with Expect: 100-continue)."""
    sd = SwarmdProc(tmp_path / "state", tmp_path / "swarmd.log").start()
    c = Raw(sd.port)
    try:
        c.send(post("/api/drones/register", {"name": f"poll-{path}", "cores": 2}, ""))
        reg = json.loads(c.response()[2])
        lease = f"/api/drones/{reg['drone_id']}/lease"
        doc = {"session": reg["session"], "wait_s": 25}
        if path == "lane":
            c.send(post(lease, doc, ""))
        else:
            body = json.dumps(doc).encode()
            c.send(f"POST {lease} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n".encode())
            assert c.response()[0] == 100  # the Quart app is reading the body
            c.send(body)
        time.sleep(0.5)  # the poll is waiting for work
        assert sd.proc is not None
        t0 = time.monotonic()
        sd.proc.send_signal(signal.SIGTERM)
        status, headers, answer = c.response()
        answered = time.monotonic() - t0
        assert (status, answer) == (204, b"")
        assert headers.get("connection") == "close"
        assert (headers.get("server") == "swarmd") == (path == "lane")
        assert answered < 1.5, answered
        assert sd.proc.wait(15) == 0
        exited = time.monotonic() - t0
        assert exited < 3.0, exited
    finally:
        c.close()
        sd.stop()


# ----------------------------------------------------------------------------- gatewayd


class SlowSwarmd(BaseHTTPRequestHandler):
    """A fake swarmd whose /api/builds waits for ``release`` once ``hold`` is set."""

    state = sample_state()
    hold = threading.Event()
    arrived = threading.Event()
    release = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        docs = {"/api/status": self.state["status"],
                "/api/drones": {"drones": self.state["drones"]},
                "/api/queue": self.state["queue"],
                "/api/builds": {"builds": self.state["builds"]}}
        if path == "/api/builds" and self.hold.is_set():
            self.arrived.set()
            self.release.wait(20)
        doc = docs.get(path)
        body = json.dumps(doc if doc is not None else {"error": {"code": "not_found",
                                                                 "message": path}}).encode()
        self.send_response(200 if doc is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def slow_swarmd() -> Iterator[type[SlowSwarmd]]:
    SlowSwarmd.hold.clear()
    SlowSwarmd.arrived.clear()
    SlowSwarmd.release.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowSwarmd)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    SlowSwarmd.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    try:
        yield SlowSwarmd
    finally:
        SlowSwarmd.release.set()
        server.shutdown()
        server.server_close()


def start_gatewayd(tmp_path: Path, orchestrator: str) -> tuple[subprocess.Popen[bytes], int]:
    public, admin = free_port(), free_port()
    config = tmp_path / "gatewayd.toml"
    config.write_text('[identity.hosts]\n"Izar-Host" = "Izar"\n')
    env = {**os.environ, "SWARM_ADMIN_KEY": "k1", "SWARM_CONTROL_TOKEN": "ctl",
           "PORTAGE_OVERRIDE_EPREFIX": "/"}
    proc = subprocess.Popen(
        [str(GATEWAYD), "--config", str(config), "--listen", f"127.0.0.1:{public}",
         "--admin-listen", f"127.0.0.1:{admin}", "--orchestrator", orchestrator,
         "--spool-dir", str(tmp_path / "spool")],
        env=env, stdout=(tmp_path / "gatewayd.log").open("ab"), stderr=subprocess.STDOUT)

    def up() -> bool:
        try:
            c = Raw(public)
        except OSError:
            return False
        try:
            c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            return c.response()[0] == 200
        finally:
            c.close()

    wait_until(up, 20)
    return proc, public


def test_gatewayd_keep_alive_after_a_405_whose_body_comes_late(
        tmp_path: Path, slow_swarmd: type[SlowSwarmd]) -> None:
    proc, port = start_gatewayd(tmp_path, slow_swarmd.url)  # type: ignore[attr-defined]
    try:
        late_body_then_next(port, "PUT /health", "/health")
        late_body_then_next(port, "POST /api/v1/binhost", "/api/v1/binhost")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_gatewayd_drains_a_request_in_flight_on_sigterm(
        tmp_path: Path, slow_swarmd: type[SlowSwarmd]) -> None:
    proc, port = start_gatewayd(tmp_path, slow_swarmd.url)  # type: ignore[attr-defined]
    c = Raw(port)
    try:
        slow_swarmd.hold.set()
        c.send(b"GET /api/v1/services/public/build-history HTTP/1.1\r\nHost: x\r\n\r\n")
        assert slow_swarmd.arrived.wait(10)  # the gateway is now waiting on swarmd
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: refused(port))  # no new connections while it drains
        time.sleep(0.5)  # ... and the request in flight is still waited for
        slow_swarmd.release.set()
        status, _, body = c.response()
        assert status == 200
        doc = json.loads(body)
        assert doc["status"] == "ok"
        assert doc["data"]["builds"]
        assert proc.wait(15) == 0
        assert time.monotonic() - t0 < 5 + 3
    finally:
        c.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
