"""swarmlib.http1 (through swarmlib.front.serve_front): HTTP/1.1 as a client on a socket sees
it. Real sockets on 127.0.0.1 and real time (never autojump while sockets are in flight)."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

import pytest
import trio
import trio_websocket
import wsproto
from quart import request, websocket
from quart_trio import QuartTrio
from wsproto.events import Request, TextMessage

from swarmlib.front import serve_front
from swarmlib.http1 import LifespanFailed, Message, Receive, Scope, Send, ServerConfig


class Client:
    """Raw HTTP/1.1 over one trio socket: exact bytes out, responses parsed in."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _more(self) -> None:
        chunk = await self.stream.receive_some(65536)
        assert chunk, f"closed before a whole response; got {self.buf!r}"
        self.buf += chunk

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        with trio.fail_after(5):
            while b"\r\n\r\n" not in self.buf:
                await self._more()
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            if status < 200 or status in (204, 304):
                return status, headers, b""
            if headers.get("transfer-encoding") == "chunked":
                body = b""
                while True:
                    while b"\r\n" not in self.buf:
                        await self._more()
                    size_line, _, self.buf = self.buf.partition(b"\r\n")
                    size = int(size_line, 16)
                    while len(self.buf) < size + 2:
                        await self._more()
                    body += self.buf[:size]
                    self.buf = self.buf[size + 2:]
                    if size == 0:
                        return status, headers, body
            n = int(headers["content-length"])
            while len(self.buf) < n:
                await self._more()
            body, self.buf = self.buf[:n], self.buf[n:]
            return status, headers, body

    async def closed(self) -> bool:
        """True when the server closed the connection (EOF or reset) within 5 s."""
        with trio.fail_after(5):
            try:
                while await self.stream.receive_some(65536):
                    pass
            except trio.BrokenResourceError:
                pass
        return True


def make_app(log: list[str], slow_started: trio.Event | None = None) -> QuartTrio:
    app = QuartTrio("test-http1")

    @app.before_serving
    async def started() -> None:
        log.append("startup")

    @app.after_serving
    async def stopped() -> None:
        log.append("shutdown")

    @app.route("/hello")
    async def hello() -> Any:
        client = request.scope.get("client") or ("", 0)
        return {"hello": "world", "port": client[1], "query": request.args.get("q")}

    @app.route("/echo", methods=["POST"])
    async def echo() -> Any:
        return {"got": (await request.get_data()).decode()}

    @app.route("/slow")
    async def slow() -> Any:
        if slow_started is not None:
            slow_started.set()
        await trio.sleep(float(request.args.get("s", "1")))
        return {"slow": "done"}

    @app.websocket("/ws/echo")
    async def ws_echo() -> None:
        while True:
            await websocket.send(await websocket.receive())

    @app.websocket("/ws/refuse")
    async def ws_refuse() -> None:
        await websocket.close(1008, "no")

    return app


@asynccontextmanager
async def serving(app: Any, config: ServerConfig | None = None,
                  shutdown: trio.Event | None = None) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_front, app, "127.0.0.1", 0, config=config,
                                           shutdown=shutdown))
        yield port
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def connect(port: int) -> AsyncIterator[Client]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        yield Client(stream)
    finally:
        await stream.aclose()


GET_HELLO = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_keep_alive_and_pipelining() -> None:
    async with serving(make_app([])) as port, connect(port) as c:
        await c.send(GET_HELLO)
        s1, h1, b1 = await c.response()
        await c.send(GET_HELLO)
        s2, _, b2 = await c.response()
        assert (s1, s2) == (200, 200)
        assert json.loads(b1)["port"] == json.loads(b2)["port"] != 0  # one connection
        assert h1["server"] == "swarmlib"
        assert "date" in h1
        # Pipelined: three requests in one write, answered in order.
        await c.send(b"GET /hello?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                     b"GET /hello?q=3 HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = [json.loads((await c.response())[2]) for _ in range(3)]
        assert [answers[0]["query"], answers[1]["got"], answers[2]["query"]] == ["1", "abc", "3"]


async def test_chunked_request_body_and_expect_100_continue() -> None:
    async with serving(make_app([])) as port, connect(port) as c:
        await c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n")
        await trio.sleep(0.05)
        await c.send(b"6\r\n world\r\n0\r\n\r\n")
        status, _, body = await c.response()
        assert (status, json.loads(body)) == (200, {"got": "hello world"})
        await c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert (await c.response())[0] == 100  # only then the client sends the body
        await c.send(b"ok")
        assert json.loads((await c.response())[2]) == {"got": "ok"}


async def test_chunked_response_when_the_length_is_unknown() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one,", "more_body": True})
        await send({"type": "http.response.body", "body": b"two", "more_body": False})

    async with serving(app) as port, connect(port) as c:
        for _ in range(2):
            await c.send(GET_HELLO)
            status, headers, body = await c.response()
            assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"one,two")


async def test_bare_lf_head_is_answered() -> None:
    async with serving(make_app([])) as port, connect(port) as c:
        await c.send(b"GET /hello?q=lf HTTP/1.1\nHost: x\n\n")
        status, _, body = await c.response()
        assert (status, json.loads(body)["query"]) == (200, "lf")


async def test_oversized_head_431_and_bad_request_400_then_close() -> None:
    async with serving(make_app([]), ServerConfig(max_head_bytes=4096)) as port:
        async with connect(port) as c:
            await c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8000 + b"\r\n\r\n")
            assert (await c.response())[0] == 431
            assert await c.closed()
        async with connect(port) as c:
            await c.send(b"this is not HTTP\r\n\r\n")
            assert (await c.response())[0] == 400
            assert await c.closed()
        async with connect(port) as c:  # two Content-Lengths that disagree
            await c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                         b"Content-Length: 2\r\n\r\nab")
            assert (await c.response())[0] == 400
            assert await c.closed()


async def test_content_length_with_transfer_encoding_is_refused_and_closed() -> None:
    """Request smuggling: a proxy framing by Content-Length and h11 framing by chunked would
    disagree on where the body ends; the rest must never be served as a second request."""
    log: list[str] = []
    app = make_app(log)
    async with serving(app) as port:
        async with connect(port) as c:
            smuggled = b"GET /hello?q=smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
            body = b"0\r\n\r\n" + smuggled
            await c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + body)
            status, _headers, _body = await c.response()
            assert status == 400
            assert await c.closed()


async def test_unread_body_is_drained_before_the_next_request() -> None:
    async with serving(make_app([]), ServerConfig(max_drain_bytes=1000)) as port:
        async with connect(port) as c:
            # 405 at once, before the body; the body comes after the answer, in pieces.
            await c.send(b"PUT /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 600\r\n\r\n")
            assert (await c.response())[0] == 405
            await c.send(b"x" * 300)
            await trio.sleep(0.05)
            await c.send(b"x" * 300 + GET_HELLO)
            assert (await c.response())[0] == 200
        async with connect(port) as c:
            # More left unread than max_drain_bytes: answered, then the connection closes.
            await c.send(b"PUT /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
            assert (await c.response())[0] == 405
            await c.send(b"x" * 5000)
            assert await c.closed()


async def test_http_1_0_and_connection_close_end_the_connection() -> None:
    async with serving(make_app([])) as port:
        for req in (b"GET /hello HTTP/1.0\r\n\r\n",
                    b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
            async with connect(port) as c:
                await c.send(req)
                assert (await c.response())[0] == 200
                assert await c.closed()


async def test_head_timeout_closes_quietly_and_idle_connections_time_out(
        caplog: pytest.LogCaptureFixture) -> None:
    config = ServerConfig(head_timeout=0.2, keep_alive_timeout=0.3)
    with caplog.at_level("DEBUG"):
        async with serving(make_app([]), config) as port:
            async with connect(port) as c:
                await c.send(GET_HELLO)
                assert (await c.response())[0] == 200
                await c.send(b"GET /hello HTTP/1.1\r\n")  # never finished
                t0 = trio.current_time()
                assert await c.closed()
                assert 0.15 < trio.current_time() - t0 < 2
            async with connect(port) as c:
                await c.send(GET_HELLO)
                assert (await c.response())[0] == 200
                t0 = trio.current_time()
                assert await c.closed()  # idle past keep_alive_timeout
                assert 0.25 < trio.current_time() - t0 < 2
    bad = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]
    assert bad == [], [r.getMessage() for r in bad]


async def test_app_sees_the_client_hang_up() -> None:
    """A handler waiting (a long-poll) learns of the disconnect: ``receive`` returns
    ``http.disconnect`` once the body is in and the client has gone."""
    seen = trio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        message: Message = {"type": ""}
        while message["type"] != "http.disconnect":
            message = await receive()
        seen.set()

    async with serving(app) as port:
        async with connect(port) as c:
            await c.send(b"POST /wait HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
            await trio.sleep(0.1)
        with trio.fail_after(2):
            await seen.wait()


async def test_app_failure_is_a_500_and_closes() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raise ValueError("boom")

    async with serving(app) as port, connect(port) as c:
        await c.send(GET_HELLO)
        assert (await c.response())[0] == 500
        assert await c.closed()


async def test_lifespan_runs_around_serving() -> None:
    log: list[str] = []
    async with serving(make_app(log)) as port:
        assert log == ["startup"]
        async with connect(port) as c:
            await c.send(GET_HELLO)
            assert (await c.response())[0] == 200
    assert log == ["startup", "shutdown"]


async def test_lifespan_startup_failure_is_raised() -> None:
    app = QuartTrio("failing")

    @app.before_serving
    async def fail() -> None:
        raise RuntimeError("no database")

    with pytest.raises(ExceptionGroup) as failed:
        async with serving(app):
            pass  # pragma: no cover
    assert failed.group_contains(LifespanFailed, match="no database")


async def test_websocket_routes_of_the_app() -> None:
    async with serving(make_app([])) as port:
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/ws/echo") as ws:
            await ws.send_message("ping?")
            assert await ws.get_message() == "ping?"
            await ws.send_message(b"\x00bytes")
            assert await ws.get_message() == b"\x00bytes"
            big = "x" * 200_000
            await ws.send_message(big)
            assert await ws.get_message() == big
        # Closed before accept: refused with 403 (ASGI), as swarmd's /api/events does
        # without its token.
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/ws/refuse"):
                pass  # pragma: no cover
        assert rejected.value.status_code == 403


async def test_graceful_shutdown() -> None:
    """Shutdown: the request in flight gets its whole answer (with ``connection: close``),
    the idle keep-alive connection and the WebSocket are closed at once, new connections are
    refused, and the app's lifespan shutdown runs last."""
    log: list[str] = []
    shutdown = trio.Event()
    slow_started = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_front, make_app(log, slow_started),
                                           "127.0.0.1", 0, config=ServerConfig(graceful_timeout=5),
                                           shutdown=shutdown))
        async with connect(port) as idle, connect(port) as busy, \
                trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/ws/echo") as ws:
            await idle.send(GET_HELLO)
            assert (await idle.response())[0] == 200
            await busy.send(b"GET /slow?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
            with trio.fail_after(2):
                await slow_started.wait()
            shutdown.set()
            assert await idle.closed()
            with pytest.raises(OSError, match="failed"):
                await trio.open_tcp_stream("127.0.0.1", port)
            with pytest.raises(trio_websocket.ConnectionClosed) as ws_closed:
                await ws.get_message()
            status, headers, body = await busy.response()
            assert (status, json.loads(body)) == (200, {"slow": "done"})
            assert headers["connection"] == "close"
            assert "shutdown" not in log  # the lifespan ends after the last request
    assert ws_closed.value.reason is not None
    assert ws_closed.value.reason.code == 1001
    assert log[-1] == "shutdown"


async def test_client_gone_mid_response_is_not_an_error(
        caplog: pytest.LogCaptureFixture) -> None:
    """A client that hangs up while a long response streams ends that connection quietly,
    also when the app sends from a task of its own (quart-trio's nursery)."""
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(10_000):
            await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    quart = QuartTrio("streaming")

    @quart.route("/stream")
    async def stream() -> Any:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10_000):
                yield b"x" * 65536

        return chunks()

    with caplog.at_level("DEBUG"):
        for served, target in ((app, b"/"), (quart, b"/stream")):
            async with serving(served, ServerConfig(send_timeout=2)) as port:
                async with connect(port) as c:
                    await c.send(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                    assert await c.stream.receive_some(1000)
                await trio.sleep(0.2)
    bad = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]
    assert bad == [], [r.getMessage() for r in bad]


@pytest.mark.parametrize("hang_up", ["fin", "reset"])
async def test_websocket_client_gone_mid_stream_is_not_an_error(
        caplog: pytest.LogCaptureFixture, hang_up: str) -> None:
    """A WebSocket client whose TCP connection goes away (no close frame: a killed process,
    whose kernel resets the connection, or a FIN while it still reads) while the app keeps
    sending (as swarmd's /api/events does with its backlog): the app's handler ends, nothing
    is logged as an error."""
    quart = QuartTrio("ws-stream")
    ended = trio.Event()

    @quart.websocket("/ws/stream")
    async def stream() -> None:
        try:
            while True:
                await websocket.send("tick")
        finally:
            ended.set()

    with caplog.at_level("DEBUG"):
        async with serving(quart) as port:
            sock = await trio.open_tcp_stream("127.0.0.1", port)
            client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            await sock.send_all(client.send(Request(host="x", target="/ws/stream")))
            with trio.fail_after(5):
                while not any(isinstance(e, TextMessage) for e in client.events()):
                    client.receive_data(await sock.receive_some(65536))
            with trio.fail_after(5):
                if hang_up == "reset":
                    sock.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                    await sock.aclose()
                    await ended.wait()
                else:
                    await sock.send_eof()
                    with suppress(trio.BrokenResourceError):
                        while await sock.receive_some(65536):  # until the server closes
                            pass
                    await sock.aclose()
                    await ended.wait()
            await trio.sleep(0.2)  # whatever the server logs about it, it has logged by now
    bad = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]
    assert bad == [], [r.getMessage() for r in bad]
