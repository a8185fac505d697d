"""The public push socket at the protocol level, and the rule that it is built on supported
interfaces only (issue 14).

The protocol tests speak RFC 6455 to ``wsfront.serve_public`` over real sockets on 127.0.0.1
with a wsproto client (no trio-websocket on the client side, so every frame is visible), in real
time. The rule is an AST scan of the push modules.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import math
import socket
import struct
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import wsproto
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from gatewayd.push import Hub
from gatewayd.wsfront import serve_public
from gatewayd.wsserver import ServerWebSocket, text_frame
from tests.gateway.test_wsfront import FakeSanitizer, make_app, progress_event, wait_for

ROOT = Path(__file__).resolve().parents[2]
PUSH_MODULES = ("gatewayd/push.py", "gatewayd/wsfront.py", "gatewayd/wsserver.py")

# -- only supported interfaces -----------------------------------------------------------------


def foreign_underscore_accesses(source: str) -> list[str]:
    """Every ``x._name`` (not a dunder) whose ``x`` is not ``self``, ``cls`` or a class defined
    in this module, every ``getattr``/``setattr``/``hasattr``/``delattr`` of such a name, and
    every import of an underscore module or name from another package: ``line: text``."""
    tree = ast.parse(source)
    local_classes = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    own = {"self", "cls", *local_classes}

    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in own):
                found.append((node.lineno, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str) and private(node.args[1].value)):
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            module = node.module or ""
            names = [a.name for a in node.names]
            if any(private(part) for part in module.split(".")) or any(map(private, names)):
                found.append((node.lineno, f"from {module} import {', '.join(names)}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(private(part) for part in alias.name.split(".")):
                    found.append((node.lineno, f"import {alias.name}"))
    return [f"{line}: {text}" for line, text in sorted(found)]


def test_the_scan_finds_what_it_should() -> None:
    """The checker itself, on snippets: a checker that finds nothing cannot pass."""
    found = foreign_underscore_accesses(
        "import trio._core\n"
        "from trio_websocket._impl import WebSocketConnection\n"
        "from wsproto import _private\n"
        "def f(ws, c):\n"
        "    ws._stream_lock.locked()\n"
        "    getattr(ws._stream, 'socket', None)\n"
        "    setattr(c, '_x', 1)\n"
        "    return c.__class__, c.public\n"
    )
    assert found == [
        "1: import trio._core",
        "2: from trio_websocket._impl import WebSocketConnection",
        "3: from wsproto import _private",
        "5: ws._stream_lock",
        "6: ws._stream",
        "7: setattr(c, '_x', 1)",
    ]
    assert foreign_underscore_accesses(
        "class _C:\n"
        "    _n = 0\n"
        "    def f(self):\n"
        "        return self._n + _C._n\n"
        "    @classmethod\n"
        "    def g(cls):\n"
        "        return cls._n\n"
    ) == []


@pytest.mark.parametrize("relpath", PUSH_MODULES)
def test_push_modules_use_no_private_attribute_of_another_package(relpath: str) -> None:
    path = ROOT / relpath
    assert path.exists(), f"{relpath} is missing"
    found = foreign_underscore_accesses(path.read_text())
    assert found == [], f"{relpath} reaches into private attributes: {found}"


# -- the protocol over a real socket -----------------------------------------------------------


class RawClient:
    """A WebSocket client on a TCP stream, driven by hand: every event is seen."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.pending: list[Event] = []

    @classmethod
    async def connect(cls, port: int, *, reads: bool = True) -> RawClient:
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        await client.stream.send_all(
            client.conn.send(Request(host="127.0.0.1", target="/ws/build-status")))
        accepted = await client.next_event()
        assert isinstance(accepted, AcceptConnection), accepted
        return client

    async def next_event(self) -> Event:
        """The next event; raises EOFError when the server closed the TCP connection."""
        while not self.pending:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self.conn.receive_data(data)
            self.pending.extend(self.conn.events())
        return self.pending.pop(0)

    async def skip_pings(self) -> None:
        """Read pings (unanswered) until something else comes: fails on anything but a reset."""
        while True:
            event = await self.next_event()
            assert isinstance(event, Ping), event

    async def skip_messages(self) -> None:
        """Read and ignore everything, forever: returns only by an exception."""
        while True:
            await self.next_event()

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.conn.send(event))

    async def next_message(self) -> dict[str, Any]:
        """The next text message, whole (wsproto hands a big frame over in pieces)."""
        text = ""
        while True:
            event = await self.next_event()
            if isinstance(event, Ping):
                await self.send(event.response())
            elif isinstance(event, TextMessage):
                text += event.data
                if event.message_finished:
                    parsed: dict[str, Any] = json.loads(text)
                    return parsed
            else:
                raise AssertionError(f"unexpected {event!r}")


async def http_exchange(port: int, head: bytes) -> tuple[bytes, float]:
    """Send a raw request head; everything the server sent until it closed, and how long."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    started = time.monotonic()
    await stream.send_all(head)
    got = b""
    with trio.fail_after(5):
        while data := await stream.receive_some(65536):
            got += data
    await stream.aclose()
    return got, time.monotonic() - started


def upgrade_head(key: bytes | None = b"dGhlIHNhbXBsZSBub25jZQ==", version: bytes = b"13") -> bytes:
    lines = [b"GET /ws/build-status HTTP/1.1", b"Host: 127.0.0.1", b"Upgrade: websocket",
             b"Connection: Upgrade", b"Sec-WebSocket-Version: " + version]
    if key is not None:
        lines.append(b"Sec-WebSocket-Key: " + key)
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def test_handshake_answers_101_with_the_accept_key() -> None:
    hub = Hub(FakeSanitizer())
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_public, make_app([]), "127.0.0.1", 0, hub)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(upgrade_head(key))
        head = b""
        with trio.fail_after(2):
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)}
        expect = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()).decode()
        assert lines[0].startswith("HTTP/1.1 101")
        assert headers["upgrade"].lower() == "websocket"
        assert headers["sec-websocket-accept"] == expect  # the RFC 6455 example's answer
        assert "sec-websocket-extensions" not in headers  # the shared frames are plain
        await wait_for(lambda: len(hub.clients) == 1)
        await stream.aclose()
        await wait_for(lambda: not hub.clients)
        nursery.cancel_scope.cancel()


async def test_messages_are_unfragmented_text_frames_in_order() -> None:
    hub = Hub(FakeSanitizer())
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_public, make_app([]), "127.0.0.1", 0, hub)
        client = await RawClient.connect(port)
        await wait_for(lambda: len(hub.clients) == 1)
        for seq in range(1, 51):
            hub.publish(progress_event(seq, seq))
        with trio.fail_after(2):
            got = [await client.next_message() for _ in range(50)]
        assert [m["data"]["elapsed_s"] for m in got] == list(range(1, 51))
        assert all(m["type"] == "build_progress" for m in got)
        nursery.cancel_scope.cancel()


async def test_server_pings_and_a_pong_keeps_the_client() -> None:
    hub = Hub(FakeSanitizer(), ping_interval_s=0.1, pong_timeout_s=0.2)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_public, make_app([]), "127.0.0.1", 0, hub)
        client = await RawClient.connect(port)
        pings = 0
        with trio.fail_after(3):
            while pings < 5:
                event = await client.next_event()
                assert isinstance(event, Ping), event
                pings += 1
                await client.send(event.response())
        assert len(hub.clients) == 1
        assert not hub.drops
        nursery.cancel_scope.cancel()


async def test_client_ping_gets_its_pong_and_messages_are_read_and_dropped() -> None:
    hub = Hub(FakeSanitizer())
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_public, make_app([]), "127.0.0.1", 0, hub)
        client = await RawClient.connect(port)
        for i in range(200):  # more than any message queue: the input is read and thrown away
            await client.send(Message(data=f"hello {i}"))
        await client.send(Ping(payload=b"are you there"))
        with trio.fail_after(2):
            event = await client.next_event()
        assert isinstance(event, Pong)
        assert event.payload == b"are you there"
        hub.publish(progress_event(1, 1))
        with trio.fail_after(2):
            assert (await client.next_message())["data"]["elapsed_s"] == 1
        nursery.cancel_scope.cancel()


async def test_client_close_is_answered_and_the_client_leaves() -> None:
    hub = Hub(FakeSanitizer())
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_public, make_app([]), "127.0.0.1", 0, hub)
        client = await RawClient.connect(port)
        await wait_for(lambda: len(hub.clients) == 1)
        await client.send(CloseConnection(code=1000, reason="bye"))
        with trio.fail_after(2):
            event = await client.next_event()
            assert isinstance(event, CloseConnection)
            assert event.code == 1000
            with pytest.raises(EOFError):  # then the server closes the TCP connection
                await client.next_event()
        await wait_for(lambda: not hub.clients)
        assert not hub.drops
        nursery.cancel_scope.cancel()


async def test_oversized_client_message_is_closed_with_1009() -> None:
    hub = Hub(FakeSanitizer())
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_public, make_app([]), "127.0.0.1", 0, hub)
        client = await RawClient.connect(port)
        await wait_for(lambda: len(hub.clients) == 1)
        await client.send(Message(data="x" * 100_000))
        with trio.fail_after(2):
            event = await client.next_event()
        assert isinstance(event, CloseConnection)
        assert event.code == 1009
        await wait_for(lambda: not hub.clients)
        nursery.cancel_scope.cancel()


async def test_silent_client_is_aborted_with_a_reset_after_the_pong_timeout() -> None:
    hub = Hub(FakeSanitizer(), ping_interval_s=0.1, pong_timeout_s=0.2)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_public, make_app([]), "127.0.0.1", 0, hub)
        client = await RawClient.connect(port)
        started = time.monotonic()
        await wait_for(lambda: hub.drops["no pong"] == 1, limit_s=3)
        assert 0.25 <= time.monotonic() - started < 1.0
        # No close frame and no FIN: the connection was reset (the ping itself may be there).
        with trio.fail_after(2), pytest.raises(trio.BrokenResourceError):
            await client.skip_pings()
        nursery.cancel_scope.cancel()


async def test_slow_reader_is_dropped_when_its_buffer_fills_and_others_are_not_delayed() -> None:
    hub = Hub(FakeSanitizer(), buffer=4)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_public, make_app([]), "127.0.0.1", 0, hub)
        good = await RawClient.connect(port)
        slow = await RawClient.connect(port)  # never reads: kernel buffers, then ours, fill
        await wait_for(lambda: len(hub.clients) == 2)
        big = "x" * 100_000
        latencies: list[float] = []
        for seq in range(1, 101):
            event = progress_event(seq, seq)
            event["data"]["package"] = big
            sent = time.monotonic()
            hub.publish(event)
            with trio.fail_after(2):
                assert (await good.next_message())["data"]["elapsed_s"] == seq
            latencies.append(time.monotonic() - sent)
            if hub.drops["buffer full"]:
                break
        assert hub.drops["buffer full"] == 1
        assert len(hub.clients) == 1
        assert max(latencies) < 0.5
        with trio.fail_after(2), pytest.raises(trio.BrokenResourceError):
            await slow.skip_messages()
        nursery.cancel_scope.cancel()


async def test_malformed_upgrade_gets_400_at_once() -> None:
    hub = Hub(FakeSanitizer())
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_public, make_app([]), "127.0.0.1", 0, hub)
        got, took = await http_exchange(port, upgrade_head(key=None))
        assert got.startswith(b"HTTP/1.1 400 "), got
        assert b"Sec-WebSocket-Key" in got  # says what was wrong
        assert took < 1.0
        assert not hub.clients
        nursery.cancel_scope.cancel()


async def test_unsupported_version_gets_426_with_the_version_we_speak() -> None:
    hub = Hub(FakeSanitizer())
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_public, make_app([]), "127.0.0.1", 0, hub)
        got, took = await http_exchange(port, upgrade_head(version=b"8"))
        head = got.split(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 426 "), got
        assert b"sec-websocket-version: 13" in head
        assert took < 1.0
        nursery.cancel_scope.cancel()


async def test_refused_when_full_with_503() -> None:
    hub = Hub(FakeSanitizer(), max_clients=1)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_public, make_app([]), "127.0.0.1", 0, hub)
        first = await RawClient.connect(port)
        await wait_for(lambda: len(hub.clients) == 1)
        got, took = await http_exchange(port, upgrade_head())
        assert got.startswith(b"HTTP/1.1 503 "), got
        assert got.endswith(b"too many clients\n")
        assert took < 1.0
        assert len(hub.clients) == 1
        await first.stream.aclose()
        nursery.cancel_scope.cancel()


def test_frame_header_sizes() -> None:
    """The server's shared frames: FIN + text, unmasked, 7/16/64-bit lengths (RFC 6455 5.2)."""
    from gatewayd.wsserver import text_frame

    assert text_frame("a") == b"\x81\x01a"
    assert text_frame("a" * 126)[:4] == b"\x81\x7e" + struct.pack("!H", 126)
    assert text_frame("a" * 65536)[:10] == b"\x81\x7f" + struct.pack("!Q", 65536)
    # A wsproto client past its handshake reads our frames as whole text messages.
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    server = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/")))
    request = next(server.events())
    assert isinstance(request, Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    for text in ("a", "é" * 200, "b" * 70_000):
        client.receive_data(text_frame(text))
        [event] = client.events()
        assert isinstance(event, TextMessage)
        assert (event.data, event.message_finished) == (text, True)


# -- a frame half-written by the fast path is finished before anything else -----------------


class FrameReader:
    """The client end of a socketpair whose server end is a ``ServerWebSocket``: reads what the
    server sends and names every whole message (text joined across wsproto's pieces), answering
    pings and the close. A frame spliced into another shows up as a text that is not what was
    sent, as a protocol error, or as a wait for bytes that never come."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.seen: list[tuple[str, Any]] = []
        self._text = ""

    async def handshake(self, server: ServerWebSocket) -> None:
        await self.stream.send_all(self.conn.send(Request(host="x", target="/")))
        assert await server.receive_request() is not None
        await server.accept()
        self.conn.receive_data(await self.stream.receive_some(65536))
        assert isinstance(next(self.conn.events()), AcceptConnection)

    async def read_until(self, kind: str) -> None:
        """Read until a message of ``kind`` ("text", "ping", "close") has been seen."""
        while not any(k == kind for k, _ in self.seen):
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError(self.seen)
            self.conn.receive_data(data)
            for event in self.conn.events():
                if isinstance(event, TextMessage):
                    self._text += event.data
                    if event.message_finished:
                        self.seen.append(("text", self._text))
                        self._text = ""
                elif isinstance(event, Ping):
                    self.seen.append(("ping", event.payload))
                    await self.stream.send_all(self.conn.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.seen.append(("close", event.code))
                    if self.conn.state is ConnectionState.REMOTE_CLOSING:
                        await self.stream.send_all(self.conn.send(event.response()))
                else:
                    self.seen.append(("other", event))


async def small_buffer_pair() -> tuple[ServerWebSocket, FrameReader]:
    """A connected, accepted ``ServerWebSocket`` on a real socketpair with small kernel buffers,
    so that one non-blocking write of a big frame takes only part of it."""
    a, b = trio.socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server = ServerWebSocket(trio.SocketStream(a))
    reader = FrameReader(trio.SocketStream(b))
    await reader.handshake(server)
    return server, reader


BIG = "x" * 1_000_000


async def test_a_control_frame_waits_for_the_rest_of_a_half_sent_frame() -> None:
    server, reader = await small_buffer_pair()
    assert server.try_send(text_frame(BIG))  # taken: part written, the rest owed
    refused = not server.try_send(text_frame("next"))  # while the rest is owed
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.receive_until_closed)  # sees the pong
            nursery.start_soon(server.ping)  # the pinger takes the lock before any writer
            await reader.read_until("ping")
            nursery.cancel_scope.cancel()
    assert reader.seen == [("text", BIG), ("ping", struct.pack("!I", 1))]
    assert refused


async def test_shutdown_close_comes_after_the_rest_of_a_half_sent_frame() -> None:
    hub = Hub(FakeSanitizer(), ping_interval_s=math.inf)
    server, reader = await small_buffer_pair()
    async with trio.open_nursery() as nursery:
        client_scope = trio.CancelScope()
        nursery.start_soon(partial(run_in, client_scope, hub.handle_client, server))
        await wait_for(lambda: len(hub.clients) == 1 and next(iter(hub.clients)).idle)
        hub.broadcast([BIG])  # the fast path writes part of it
        client_scope.cancel()  # shutdown, before the writer ran: the 1001 close follows
        with trio.fail_after(5):
            await reader.read_until("close")
        with trio.fail_after(5):
            await wait_for(lambda: not hub.clients)
    assert reader.seen == [("text", BIG), ("close", 1001)]


async def run_in(scope: trio.CancelScope, fn: Any, *args: Any) -> None:
    with scope:
        await fn(*args)
