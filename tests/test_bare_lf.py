"""A request head whose lines end in a bare LF is answered by both daemons (h11 accepts it,
RFC 9112 section 2.2 lets a recipient do so); it used to get no answer and be dropped after the
10 s head timeout."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.conftest import SwarmdProc
from tests.test_gateway_integration import GatewayProc

pytestmark = pytest.mark.slow


def ask(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(raw)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)  # socket.timeout (3 s) fails the test
            if not chunk:
                break
            data += chunk
        return data


def test_bare_lf_heads_are_answered_by_swarmd_and_gatewayd(tmp_path: Path) -> None:
    sd = SwarmdProc(tmp_path / "state", tmp_path / "swarmd.log").start()
    gw = GatewayProc(tmp_path, sd.url).start()
    try:
        for port, path in ((sd.port, "/api/status"), (gw.port, "/health"),
                           (gw.port, "/api/v1/binhost")):
            got = ask(port, f"GET {path} HTTP/1.1\nHost: x\nConnection: close\n\n".encode())
            assert got.startswith(b"HTTP/1.1 200"), (port, path, got[:200])
        # The drone lane's own path too: a drone protocol call with bare LFs.
        body = b'{"name": "d", "cores": 2}'
        got = ask(sd.port, b"POST /api/drones/register HTTP/1.1\nHost: x\nContent-Type: "
                           b"application/json\nContent-Length: " + str(len(body)).encode()
                  + b"\nConnection: close\n\n" + body)
        assert got.startswith(b"HTTP/1.1 200"), got[:200]
    finally:
        gw.stop()
        sd.stop()
