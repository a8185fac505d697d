"""swarmd's drone lane (swarmd.front): what it serves itself, what it hands to Hypercorn, and
that both answer the same bytes of JSON. Against the real swarmd program over raw sockets."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from swarmd.front import LANE_MAX_BODY, parse_request
from tests.conftest import SwarmdProc

TOKEN = "lane-test-token"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"


def head(lines: list[str]) -> bytes:
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize(("lines", "endpoint", "ident"), [
    (["POST /api/drones/register HTTP/1.1", "Host: x", "Content-Length: 2"], "register", ""),
    (["POST /api/drones/d-0001/heartbeat HTTP/1.1", "host: x", "content-length: 10",
      "Content-Type: application/json"], "heartbeat", "d-0001"),
    (["POST /api/drones/d-0001/lease HTTP/1.1", "Host: x", "Content-Length: 0"], "lease",
     "d-0001"),
    (["POST /api/builds/b-0000001/complete HTTP/1.1", "Content-Length: 5", "Host: x"],
     "complete", "b-0000001"),
    (["POST /api/builds/b-0000001/log HTTP/1.1", "Host: x", "Content-Length: 5",
      "X-Swarm-Lease: l", "Authorization: Bearer a.b-c_d~e+f/g="], "log", "b-0000001"),
])
def test_lane_takes_simple_drone_calls(lines: list[str], endpoint: str, ident: str) -> None:
    req = parse_request(head(lines))
    assert req is not None
    assert (req.endpoint, req.ident, req.close) == (endpoint, ident, False)


@pytest.mark.parametrize("lines", [
    ["GET /api/drones/register HTTP/1.1", "Host: x", "Content-Length: 2"],  # not POST
    ["POST /api/status HTTP/1.1", "Host: x", "Content-Length: 2"],  # not the drone protocol
    ["POST /api/drones/d-1/restart HTTP/1.1", "Host: x", "Content-Length: 2"],
    ["POST /api/drones//lease HTTP/1.1", "Host: x", "Content-Length: 2"],  # empty id
    ["POST /api/drones/register?x=1 HTTP/1.1", "Host: x", "Content-Length: 2"],  # query string
    ["POST /api/drones/register HTTP/1.0", "Host: x", "Content-Length: 2"],
    ["POST /api/drones/register HTTP/1.1", "Host: x", "Transfer-Encoding: chunked"],
    ["POST /api/drones/register HTTP/1.1", "Host: x", "Content-Length: 2", "Transfer-Encoding: chunked"],
    ["POST /api/drones/register HTTP/1.1", "Host: x"],  # no length
    ["POST /api/drones/register HTTP/1.1", "Host: x", "Content-Length: 2", "Content-Length: 2"],
    ["POST /api/drones/register HTTP/1.1", "Host: x", "Content-Length: +2"],
    ["POST /api/drones/register HTTP/1.1", "Host: x", "Content-Length: 2", "Expect: 100-continue"],
    ["POST /api/drones/register HTTP/1.1", "Host: x", "Content-Length: 2", "Upgrade: h2c"],
    ["POST /api/drones/register HTTP/1.1", "Host: x", "Content-Length : 2"],  # space before the colon
    ["POST /api/drones/register HTTP/1.1", "Host: x", "Content-Length: 2", " folded"],  # obs-fold
    ["POST /api/drones/register HTTP/1.1", "Host: x", "Content-Length: 2", "Bad"],  # no colon
    ["POST  /api/drones/register HTTP/1.1", "Host: x", "Content-Length: 2"],
    ["POST /api/drones/register HTTP/1.1", "Host: x", f"Content-Length: {LANE_MAX_BODY + 1}"],
    # what h11 refuses: control characters, names that are not tokens, no Host
    ["POST /api/drones/register HTTP/1.1", "Host: x", "X: a\nTransfer-Encoding: chunked",
     "Content-Length: 2"],
    ["POST /api/drones/register HTTP/1.1", "Host: x", "X: a\rb", "Content-Length: 2"],
    ["POST /api/drones/register HTTP/1.1", "Host: x", "X: a\x00b", "Content-Length: 2"],
    ["POST /api/drones/register HTTP/1.1", "Host: x", "Transfer-Encoding\x0b: chunked",
     "Content-Length: 2"],
    ["POST /api/drones/register HTTP/1.1", "Host: x", "(bad)@: 1", "Content-Length: 2"],
    ["POST /api/drones/register HTTP/1.1", "Content-Length: 2"],  # no Host
    ["POST /api/drones/d%2D0001/lease HTTP/1.1", "Host: x", "Content-Length: 2"],
    ["POST /api/drones/register HTTP/1.1", "Host: x", "Content-Length: 2",
     "X-Pad: " + "a" * 17000],
])
def test_lane_hands_everything_else_to_hypercorn(lines: list[str]) -> None:
    assert parse_request(head(lines)) is None


def test_lane_sees_connection_close() -> None:
    req = parse_request(head(["POST /api/drones/register HTTP/1.1", "Content-Length: 2",
                              "Host: x", "Connection: keep-alive, Close"]))
    assert req is not None
    assert req.close


# ---------------------------------------------------------------------- real process


@pytest.fixture(scope="module")
def sd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwarmdProc]:
    tmp = tmp_path_factory.mktemp("lane")
    proc = SwarmdProc(tmp / "state", tmp / "swarmd.log",
                      env={"SWARM_DRONE_TOKEN": TOKEN}).start()
    yield proc
    proc.stop()


class Raw:
    """A blocking HTTP/1.1 client on one socket, for exact control of the bytes."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed before a response; got {self.buf!r}"
            self.buf += chunk
        h, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = h.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            assert chunk
            self.buf += chunk
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def eof(self) -> bool:
        return self.sock.recv(1) == b""


def post(path: str, doc: object, extra: str = AUTH, version: str = "HTTP/1.1") -> bytes:
    body = json.dumps(doc).encode()
    return (f"POST {path} {version}\r\nHost: swarmd\r\nContent-Type: application/json\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n").encode() + body


def test_lane_serves_a_drone_and_hands_over_mid_connection(sd: SwarmdProc) -> None:
    c = Raw(sd.port)
    try:
        c.send(post("/api/drones/register", {"name": "lane-1", "cores": 8}))
        status, headers, body = c.response()
        assert (status, headers["server"]) == (200, "swarmd"), body
        reg = json.loads(body)
        beat = {"session": reg["session"], "status": "ready", "load": 0.5, "builds": []}
        # Pipelined: a beat for the lane, then an operator call that only Hypercorn serves,
        # on the same connection and in one write.
        c.send(post(f"/api/drones/{reg['drone_id']}/heartbeat", beat)
               + b"GET /api/drones/lane-1 HTTP/1.1\r\nHost: swarmd\r\n\r\n")
        status, headers, body = c.response()
        assert status == 200
        assert headers["server"] == "swarmd"
        assert json.loads(body) == {"commands": [], "revoked": []}
        status, headers, body = c.response()
        assert status == 200
        assert headers["server"] != "swarmd"
        assert json.loads(body)["name"] == "lane-1"
        # The rest of the connection is Hypercorn's, drone calls included.
        c.send(post(f"/api/drones/{reg['drone_id']}/heartbeat", beat))
        status, headers, _ = c.response()
        assert status == 200
        assert headers["server"] != "swarmd"
    finally:
        c.close()


@pytest.mark.parametrize(("path", "doc", "extra"), [
    ("/api/drones/register", {"name": "lane-2"}, AUTH),  # cores missing
    ("/api/drones/register", {"name": "lane-2", "cores": "8"}, AUTH),
    ("/api/drones/register", ["not", "an", "object"], AUTH),
    ("/api/drones/register", {"name": "lane-2", "cores": 8}, ""),  # no token
    ("/api/drones/register", {"name": "lane-2", "cores": 8}, "Authorization: Bearer wrong\r\n"),
    ("/api/drones/d-9999/heartbeat", {"session": "s"}, AUTH),
    ("/api/drones/d-9999/lease", {"session": "s", "wait_s": 0}, AUTH),
    ("/api/drones/d-9999/lease", {"session": "s", "wait_s": 31}, AUTH),
    ("/api/builds/b-9999999/complete", {"lease": "l", "result": "failed"}, AUTH),
    ("/api/builds/b-9999999/complete", {"lease": "l", "result": "success"}, AUTH),
    ("/api/builds/b-9999999/log", {"x": 1}, AUTH),  # no X-Swarm-Lease
])
def test_lane_and_hypercorn_answer_the_same(sd: SwarmdProc, path: str, doc: object,
                                            extra: str) -> None:
    """Each bad call is made twice: through the lane, and as HTTP/1.0 (which the lane hands to
    Hypercorn and Quart). Same status, same JSON; nothing registered."""
    answers = []
    for version in ("HTTP/1.1", "HTTP/1.0"):
        c = Raw(sd.port)
        try:
            c.send(post(path, doc, extra, version))
            status, headers, body = c.response()
            answers.append((status, json.loads(body), headers["server"] == "swarmd"))
        finally:
            c.close()
    (s1, b1, lane1), (s2, b2, lane2) = answers
    assert lane1
    assert not lane2
    assert 400 <= s1 < 500
    assert (s1, b1) == (s2, b2)
    assert b1["error"]["message"]
    c = Raw(sd.port)
    try:
        c.send(b"GET /api/drones/lane-2 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response()[0] == 404
    finally:
        c.close()


def test_lane_honours_connection_close_and_answers_204(sd: SwarmdProc) -> None:
    c = Raw(sd.port)
    try:
        c.send(post("/api/drones/register", {"name": "lane-3", "cores": 2}))
        reg = json.loads(c.response()[2])
        # No work is queued: the long-poll with wait_s 0 answers 204 with no body.
        c.send(post(f"/api/drones/{reg['drone_id']}/lease", {"session": reg["session"],
                                                             "wait_s": 0},
                    AUTH + "Connection: close\r\n"))
        status, headers, body = c.response()
        assert (status, body) == (204, b"")
        assert headers["server"] == "swarmd"
        assert "content-length" not in headers
        assert headers["connection"] == "close"
        assert c.eof()
    finally:
        c.close()


def test_a_drone_that_hangs_up_during_a_long_poll_is_leased_nothing(sd: SwarmdProc) -> None:
    c = Raw(sd.port)
    try:
        c.send(post("/api/drones/register", {"name": "lane-4", "cores": 8}))
        reg = json.loads(c.response()[2])
        c.send(post(f"/api/drones/{reg['drone_id']}/lease", {"session": reg["session"],
                                                             "wait_s": 30}))
        time.sleep(0.5)
    finally:
        c.close()  # gone while its lease call waits for work
    time.sleep(0.5)
    r = httpx.post(sd.url + "/api/queue", json={"packages": ["app-misc/lane-orphan-1.0"],
                                                "request_id": "lane-orphan"}, timeout=10)
    assert r.status_code == 202, r.text
    time.sleep(1.0)
    queue = httpx.get(sd.url + "/api/queue", timeout=10).json()["entries"]
    entry = next(e for e in queue if e["cpv"] == "app-misc/lane-orphan-1.0")
    assert (entry["state"], entry["drone"]) == ("ready", None)


def test_idle_lane_connections_do_not_hold_up_shutdown(tmp_path: Path) -> None:
    sd = SwarmdProc(tmp_path / "state", tmp_path / "swarmd.log").start()
    conns = []
    try:
        for i in range(3):
            c = Raw(sd.port)
            c.send(post("/api/drones/register", {"name": f"idle-{i}", "cores": 4}, ""))
            assert c.response()[0] == 200
            conns.append(c)  # idle keep-alive connections (keep_alive_timeout is 75 s)
        t0 = time.monotonic()
        assert sd.stop() == 0
        assert time.monotonic() - t0 < 10
        for c in conns:
            assert c.eof()
    finally:
        for c in conns:
            c.close()
        if sd.proc is not None and sd.proc.poll() is None:
            sd.proc.kill()
