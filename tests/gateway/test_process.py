"""The real ``gatewayd`` program: start it against a tiny fake swarmd, ask it, SIGTERM it."""

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

import httpx
import pytest

from tests.gateway.fakes import sample_state

pytestmark = pytest.mark.slow

GATEWAYD = Path(sys.executable).parent / "gatewayd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeSwarmdHandler(BaseHTTPRequestHandler):
    state = sample_state()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        docs = {"/api/status": self.state["status"],
                "/api/drones": {"drones": self.state["drones"]},
                "/api/queue": self.state["queue"],
                "/api/builds": {"builds": self.state["builds"]}}
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
def fake_swarmd() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeSwarmdHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_gatewayd_serves_and_exits_0_on_sigterm(fake_swarmd: str, tmp_path: Path) -> None:
    public, admin = free_port(), free_port()
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(20)
    config = tmp_path / "gatewayd.toml"
    config.write_text(
        '[identity.hosts]\n"Izar-Host" = "Izar"\n"secretbox.lan" = "Vega"\n'
        '[identity.networks]\n"10.42.0.0/24" = "192.0.2.0/24"\n'
    )
    env = {**os.environ, "SWARM_ADMIN_KEY": "k1,k2", "SWARM_CONTROL_TOKEN": "ctl",
           "NOTIFY_SOCKET": str(notify), "PORTAGE_OVERRIDE_EPREFIX": "/"}
    proc = subprocess.Popen(
        [str(GATEWAYD), "--config", str(config), "--listen", f"127.0.0.1:{public}",
         "--admin-listen", f"127.0.0.1:{admin}", "--orchestrator", fake_swarmd,
         "--spool-dir", str(tmp_path / "spool")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert sock.recv(64) == b"READY=1"
        base = f"http://127.0.0.1:{public}"
        deadline = time.monotonic() + 20
        health: dict[str, object] = {}
        while time.monotonic() < deadline:
            health = httpx.get(base + "/health").json()
            if health["orchestrator"]["state"] == "up":  # type: ignore[index]
                break
            time.sleep(0.1)
        assert health["orchestrator"]["state"] == "up"  # type: ignore[index]
        doc = httpx.get(base + "/api/v1/services/public/build-swarm").json()
        assert doc["status"] == "ok"
        assert doc["data"]["drones"][0]["name"] == "drone-Izar"
        assert "10.42.0" not in json.dumps(doc)
        assert httpx.get(f"http://127.0.0.1:{admin}/metrics").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{admin}/api/swarm-admin/status",
                         headers={"X-Admin-Key": "k2"}).json()["hostname"] == "izar-host"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert "k1" not in stderr
    assert "Traceback" not in stderr, stderr


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = subprocess.run([str(GATEWAYD), "--listen", "nonsense", "--spool-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PORTAGE_OVERRIDE_EPREFIX": "/"})
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1
    assert "listen" in out.stderr
