"""A small HTTP/1.1 server for ASGI apps on Trio: h11 for HTTP, wsproto for WebSocket.

Both daemons serve their Quart apps through this module (by way of ``swarmlib.front``): the
parsing is h11's and wsproto's, the sans-IO libraries Hypercorn itself is built on, reached
only through their documented interfaces; this module is the thin Trio shell around them and
the ASGI glue (http, websocket and lifespan scopes).

Theory of operation, one TCP connection (``serve_connection``)::

    IDLE --request head--> APP --response done--> BODY? --rest of the body read--> IDLE
      |                     |                        (discarded, bounded)
      |                     +--Upgrade: websocket--> WEBSOCKET (until either side closes)
      +--EOF, idle timeout, head timeout, shutdown--> closed

- IDLE: waiting for the next request. With nothing of it received yet the wait is the
  keep-alive timeout, and shutdown (``Drain.begin``) ends it at once; once its first bytes are
  in, the head must be complete within ``head_timeout`` (else the connection is just closed).
  A malformed head gets 400, an oversized one 431 (h11's verdicts), then the connection closes.
- APP: the ASGI app runs in the connection's task. ``receive()`` reads the body from the
  socket only when the app asks for it (TCP backpressure); once the body is in, it watches the
  socket so that the app learns of a client that hung up (``http.disconnect``); bytes of a
  pipelined next request read meanwhile stay in h11's buffer.
- BODY: an app may answer without reading the body (a 404, a 405). The body is then read and
  discarded before the next request is parsed (up to ``max_drain_bytes`` within
  ``body_timeout``; beyond that the connection closes), so keep-alive survives a body that
  arrives after its answer.
- The connection closes after a response when either side asked for it (``Connection:
  close``, HTTP/1.0), when the app failed, or once shutdown has begun: a request in flight at
  shutdown finishes and its answer says ``connection: close``.
- WEBSOCKET: the app accepts (101) or refuses (403) the upgrade; wsproto frames the messages,
  answers pings and the close handshake. Shutdown closes it with 1001 (going away): a
  WebSocket has no request to finish.

Invariants: exactly one task reads the socket at a time; sends go through one lock (a
WebSocket's reader answers pings while the app sends); no buffer grows without a bound.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager, contextmanager
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

import attrs
import h11
import trio
import wsproto
import wsproto.connection
import wsproto.events

log = logging.getLogger("swarmlib.http1")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

RECV = 65536
ASGI = {"version": "3.0", "spec_version": "2.3"}
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@attrs.frozen(kw_only=True)
class ServerConfig:
    """Limits and timeouts of one listener (seconds, bytes)."""

    keep_alive_timeout: float = 5.0  # an idle connection between requests
    head_timeout: float = 10.0  # a request head, from its first byte
    body_timeout: float = 60.0  # each read of a request body
    send_timeout: float = 60.0  # each write: a client that does not read is dropped
    graceful_timeout: float = 5.0  # shutdown: requests in flight get this long
    lifespan_timeout: float = 5.0  # the app's shutdown (after_serving) gets this long
    max_head_bytes: int = 16 * 1024  # beyond: 431
    max_drain_bytes: int = 1024 * 1024  # an unread body longer than this closes the connection
    max_ws_message: int = 16 * 1024 * 1024
    server_header: str = "swarmlib"


class Drain:
    """The shutdown of one listener's connections, shared by all of them.

    ``begin()`` sets ``closing`` and cancels every scope entered with ``idle()`` (a connection
    waiting for its next request, a WebSocket); busy connections see ``closing`` and stop after
    their current request.
    """

    def __init__(self) -> None:
        self.closing = trio.Event()
        self._scopes: set[trio.CancelScope] = set()

    @contextmanager
    def idle(self, timeout: float = float("inf")) -> Iterator[trio.CancelScope]:
        """A cancel scope that ends after ``timeout`` seconds or at shutdown, whichever first."""
        scope = trio.CancelScope(deadline=trio.current_time() + timeout)
        if self.closing.is_set():
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)

    def begin(self) -> None:
        self.closing.set()
        for scope in list(self._scopes):
            scope.cancel()


class _Date:
    """The ``Date`` header value, formatted once per second."""

    def __init__(self) -> None:
        self.second = -1
        self.value = b""

    def now(self) -> bytes:
        s = int(time.time())
        if s != self.second:
            self.second = s
            self.value = formatdate(s, usegmt=True).encode()
        return self.value


DATE = _Date()


class _Closed(Exception):
    """The connection cannot continue (a write timed out, the peer broke the protocol)."""


GONE = (_Closed, trio.BrokenResourceError, trio.ClosedResourceError)


def _client_gone(exc: BaseException) -> bool:
    """True for an error that only says the client went away, also inside the exception
    group of the app's nursery (quart-trio sends from a task of its own)."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(GONE)[1] is None
    return isinstance(exc, GONE)


def error_response(status: int, reason: str, date: bytes, server: bytes) -> bytes:
    """A whole response that ends the connection, for what never reached the app."""
    body = f"{status} {reason}\n".encode()
    return (f"HTTP/1.1 {status} {reason}\r\n".encode() + b"date: " + date + b"\r\nserver: "
            + server + b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


REASONS = {400: "Bad Request", 403: "Forbidden", 426: "Upgrade Required", 431:
           "Request Header Fields Too Large", 500: "Internal Server Error"}


def _addr(sockname: Any) -> tuple[str, int] | None:
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return str(sockname[0]), int(sockname[1])
    return None


def _head_size(request: h11.Request) -> int:
    """The size of a request head as sent (near enough: white space around values aside)."""
    size = len(request.method) + len(request.target) + 13
    for name, value in request.headers:
        size += len(name) + len(value) + 4
    return size + 2


def _is_websocket(request: h11.Request) -> bool:
    if request.method != b"GET":
        return False
    upgrade = connection = b""
    for name, value in request.headers:
        if name == b"upgrade":
            upgrade += b"," + value.lower()
        elif name == b"connection":
            connection += b"," + value.lower()
    return (b"websocket" in [t.strip() for t in upgrade.split(b",")]
            and b"upgrade" in [t.strip() for t in connection.split(b",")])


async def serve_connection(app: ASGIApp, stream: trio.SocketStream, *, config: ServerConfig,
                           drain: Drain, state: dict[str, Any] | None = None,
                           prefix: bytes = b"") -> None:
    """Serve HTTP/1.1 on ``stream`` until it closes; ``prefix``: bytes already read from it.

    The caller closes the stream. Cancelling leaves the stream in an unknown state.
    """
    conn = _HTTPConnection(app, stream, config, drain, state or {}, prefix)
    await conn.run()


class _HTTPConnection:
    def __init__(self, app: ASGIApp, stream: trio.SocketStream, config: ServerConfig,
                 drain: Drain, state: dict[str, Any], prefix: bytes) -> None:
        self.app = app
        self.stream = stream
        self.config = config
        self.drain = drain
        self.state = state
        self.server = config.server_header.encode()
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_head_bytes)
        self.send_lock = trio.Lock()
        self.eof = False
        # Bytes of the next request already received (h11 keeps them; we only know it).
        self.pending = bool(prefix)
        if prefix:
            self.h11.receive_data(prefix)
        try:
            self.client = _addr(stream.socket.getpeername())
            self.local = _addr(stream.socket.getsockname())
        except OSError:
            self.client = self.local = None

    # -------------------------------------------------------------------- the socket
    async def read(self) -> None:
        """Checkpoint. Feed the next bytes, or the EOF, to h11."""
        data = await self.stream.receive_some(RECV)
        self.h11.receive_data(data)
        if not data:
            self.eof = True

    async def write(self, data: bytes) -> None:
        """Checkpoint. Raises _Closed when the client does not take the bytes in time."""
        if not data:
            return
        async with self.send_lock:
            with trio.move_on_after(self.config.send_timeout) as scope:
                await self.stream.send_all(data)
        if scope.cancelled_caught:
            raise _Closed("send timed out")

    async def reply_error(self, status: int) -> None:
        with trio.move_on_after(1):
            await self.stream.send_all(error_response(status, REASONS.get(status, "Error"),
                                                      DATE.now(), self.server))

    # -------------------------------------------------------------------- the loop
    async def run(self) -> None:
        try:
            while True:
                request = await self._next_request()
                if request is None:
                    return
                if _is_websocket(request):
                    await _WebSocket(self, request).run()
                    return
                if not await self._exchange(request):
                    await self._linger()
                    return
        except GONE:
            return

    async def _next_request(self) -> h11.Request | None:
        """Checkpoint. The next request's head, or None when the connection should close."""
        head_deadline: float | None = None
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                await self.reply_error(exc.error_status_hint)
                return None
            if isinstance(event, h11.Request):
                self.pending = False
                if _head_size(event) > self.config.max_head_bytes:
                    # h11 bounds only a head still incomplete; one that came whole in one
                    # read is measured here.
                    await self.reply_error(431)
                    return None
                names = {name for name, _ in event.headers}
                if b"content-length" in names and b"transfer-encoding" in names:
                    # h11 frames such a body by chunked; a proxy in front may have framed it by
                    # Content-Length, and then the rest would be read as a smuggled request.
                    # RFC 9112 6.3: answer and close, never keep this connection.
                    await self.reply_error(400)
                    return None
                return event
            if event is not h11.NEED_DATA:
                return None  # ConnectionClosed (or PAUSED, which cannot happen here)
            if self.eof:
                return None
            if not self.pending:
                if self.drain.closing.is_set():
                    return None
                with self.drain.idle(self.config.keep_alive_timeout) as idle:
                    await self.read()
                if idle.cancelled_caught:
                    return None  # idle too long, or shutting down
                self.pending = True
                continue
            if head_deadline is None:
                head_deadline = trio.current_time() + self.config.head_timeout
            with trio.CancelScope(deadline=head_deadline) as scope:
                await self.read()
            if scope.cancelled_caught:
                return None  # a head unfinished at the timeout: just close

    async def _exchange(self, request: h11.Request) -> bool:
        """Checkpoint. Run the app for one request; True to keep the connection."""
        exchange = _Exchange(self, request)
        try:
            await self.app(exchange.scope(), exchange.receive, exchange.send)
        except Exception as exc:
            if _client_gone(exc):
                return False
            log.exception("%s %s failed", request.method.decode("latin-1"),
                          request.target.decode("latin-1"))
            if not exchange.head_sent:
                await self.reply_error(500)
            return False
        if not exchange.head_sent:
            log.error("%s %s: the app sent no response", request.method.decode("latin-1"),
                      request.target.decode("latin-1"))
            await self.reply_error(500)
            return False
        if not exchange.done:
            return False
        return await self._next_cycle()

    async def _next_cycle(self) -> bool:
        """Checkpoint. After a response: discard what is left of the request's body, then get
        h11 ready for the next request. False when the connection should close."""
        if self.h11.our_state is not h11.DONE or self.drain.closing.is_set():
            return False
        left = self.config.max_drain_bytes
        with trio.move_on_after(self.config.body_timeout):
            while self.h11.their_state is h11.SEND_BODY:
                try:
                    event = self.h11.next_event()
                except h11.RemoteProtocolError:
                    return False
                if event is h11.NEED_DATA:
                    if self.eof:
                        return False
                    await self.read()
                elif isinstance(event, h11.Data):
                    left -= len(event.data)
                    if left < 0:
                        return False
        if self.h11.their_state is not h11.DONE:
            return False  # body too slow, or the peer is closing
        self.h11.start_next_cycle()
        return True

    async def _linger(self) -> None:
        """Close our side and read (and drop) what the client still sends for a moment, so the
        kernel does not answer it with a reset that could destroy our last response."""
        if self.eof:
            return
        with trio.move_on_after(1):
            try:
                await self.stream.send_eof()
                while await self.stream.receive_some(RECV):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


class _Exchange:
    """One request and its response: the ``receive`` and ``send`` of its ASGI call."""

    def __init__(self, conn: _HTTPConnection, request: h11.Request) -> None:
        self.conn = conn
        self.request = request
        self.head_only = request.method == b"HEAD"
        self.body_done = False
        self.disconnected = False
        self.start: Message | None = None
        self.head_sent = False
        self.done = False

    def scope(self) -> Scope:
        req = self.request
        raw_path, _, query = req.target.partition(b"?")
        return {
            "type": "http", "asgi": ASGI, "http_version": req.http_version.decode(),
            "method": req.method.decode("ascii"), "scheme": "http",
            "path": unquote(raw_path.decode("latin-1")), "raw_path": raw_path,
            "query_string": query, "root_path": "",
            "headers": list(req.headers), "client": self.conn.client,
            "server": self.conn.local, "state": dict(self.conn.state), "extensions": {},
        }

    async def receive(self) -> Message:
        """Checkpoint. The next piece of the body, or ``http.disconnect`` once the response
        is complete or the client has gone (waiting for that is what a long-poll does)."""
        conn = self.conn
        if self.done or self.disconnected:
            await trio.lowlevel.checkpoint()
            return {"type": "http.disconnect"}
        if not self.body_done:
            if conn.h11.client_is_waiting_for_100_continue and not self.head_sent:
                go_on = h11.InformationalResponse(status_code=100, headers=[])
                await conn.write(conn.h11.send(go_on) or b"")
            chunks: list[bytes] = []
            while True:
                try:
                    event = conn.h11.next_event()
                except h11.RemoteProtocolError:
                    self.disconnected = True
                    return {"type": "http.disconnect"}
                if isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    self.body_done = True
                    return {"type": "http.request", "body": b"".join(chunks),
                            "more_body": False}
                elif event is h11.NEED_DATA and not conn.eof:
                    if chunks:
                        return {"type": "http.request", "body": b"".join(chunks),
                                "more_body": True}
                    with trio.move_on_after(conn.config.body_timeout) as scope:
                        await conn.read()
                    if scope.cancelled_caught:
                        self.disconnected = True
                        return {"type": "http.disconnect"}
                else:
                    self.disconnected = True
                    return {"type": "http.disconnect"}
        # The whole body is in: wait until the client hangs up. What it sends meanwhile is the
        # next request; h11 keeps it (up to a bound, then we stop reading).
        got = 0
        while not conn.eof:
            if got > conn.config.max_head_bytes:
                await trio.sleep_forever()
            data = await conn.stream.receive_some(RECV)
            conn.h11.receive_data(data)
            if not data:
                conn.eof = True
            else:
                conn.pending = True
                got += len(data)
        self.disconnected = True
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        """Checkpoint. ``http.response.start`` then ``http.response.body`` messages."""
        kind = message["type"]
        conn = self.conn
        if kind == "http.response.start":
            if self.start is not None:
                raise RuntimeError("http.response.start sent twice")
            self.start = message
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if self.start is None:
            raise RuntimeError("http.response.body before http.response.start")
        if self.done:
            raise RuntimeError("http.response.body after the response ended")
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        out = b""
        if not self.head_sent:
            status = int(self.start["status"])
            headers = [(bytes(k).lower(), bytes(v)) for k, v in self.start.get("headers", [])]
            names = {k for k, _ in headers}
            if (not more and b"content-length" not in names
                    and b"transfer-encoding" not in names and status not in (204, 304)
                    and not self.head_only):
                headers.append((b"content-length", str(len(body)).encode()))
            headers.append((b"date", DATE.now()))
            headers.append((b"server", conn.server))
            if conn.drain.closing.is_set():
                headers.append((b"connection", b"close"))
            try:
                out = conn.h11.send(h11.Response(status_code=status, headers=headers))
            except h11.LocalProtocolError:
                conn.h11.send_failed()
                raise
            self.head_sent = True
        if body and not self.head_only:
            out += conn.h11.send(h11.Data(data=body)) or b""
        if not more:
            out += conn.h11.send(h11.EndOfMessage()) or b""
            self.done = True
        await conn.write(out or b"")


class _WebSocket:
    """One WebSocket connection: the ASGI websocket scope over wsproto's ``Connection``."""

    def __init__(self, conn: _HTTPConnection, request: h11.Request) -> None:
        self.conn = conn
        self.request = request
        self.ws: wsproto.connection.Connection | None = None
        self.accepted = False
        # We sent a close frame, refused the handshake, or the client went away: nothing more
        # is sent (the app's sends are dropped; it learns of the end on receive).
        self.closed = False
        self.disconnected = False  # the app was handed its websocket.disconnect
        self.connected = False
        self.to_app, self.from_peer = trio.open_memory_channel[Message](16)
        self.headers = {k: v for k, v in request.headers}

    def scope(self) -> Scope:
        req = self.request
        raw_path, _, query = req.target.partition(b"?")
        protocols = [p.strip() for p in
                     self.headers.get(b"sec-websocket-protocol", b"").decode("latin-1").split(",")
                     if p.strip()]
        return {
            "type": "websocket", "asgi": ASGI, "http_version": "1.1", "scheme": "ws",
            "path": unquote(raw_path.decode("latin-1")), "raw_path": raw_path,
            "query_string": query, "root_path": "", "headers": list(req.headers),
            "client": self.conn.client, "server": self.conn.local, "subprotocols": protocols,
            "state": dict(self.conn.state), "extensions": {},
        }

    async def run(self) -> None:
        conn = self.conn
        # The upgrade request has no body; h11 now waits for our verdict (PAUSED).
        try:
            event = conn.h11.next_event()
        except h11.RemoteProtocolError:
            event = None
        if not isinstance(event, h11.EndOfMessage) or b"sec-websocket-key" not in self.headers:
            await conn.reply_error(400)
            return
        if self.headers.get(b"sec-websocket-version") != b"13":
            await conn.reply_error(426)
            return
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._on_shutdown)
            try:
                await conn.app(self.scope(), self.receive, self.send)
            except Exception as exc:
                if _client_gone(exc):
                    self.closed = True  # nothing more can be sent
                else:
                    log.exception("WebSocket %s failed", self.request.target.decode("latin-1"))
                    if not self.accepted and not self.closed:
                        self.closed = True
                        await conn.reply_error(500)
                    await self._close(1011)  # accepted: "internal error"
            if not self.accepted and not self.closed:
                log.error("WebSocket %s: the app neither accepted nor closed",
                          self.request.target.decode("latin-1"))
                await conn.reply_error(500)
            elif self.accepted and not self.closed:
                await self._close(1000)
            nursery.cancel_scope.cancel()

    async def _on_shutdown(self) -> None:
        await self.conn.drain.closing.wait()
        if self.accepted and not self.closed:
            self._disconnect(1001)
            await self._close(1001, "server shutting down")
            self.nursery.cancel_scope.deadline = trio.current_time() + 1

    def _disconnect(self, code: int) -> None:
        """Hand the app its websocket.disconnect (once; dropped if its queue is full or
        closed: the app then learns by cancellation at the end of the connection)."""
        if self.disconnected:
            return
        self.disconnected = True
        try:
            self.to_app.send_nowait({"type": "websocket.disconnect", "code": code})
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass

    def _gone(self) -> None:
        """The client went away without a close handshake (EOF, a broken socket)."""
        self.closed = True
        self._disconnect(1006)

    async def _close(self, code: int, reason: str = "") -> None:
        if self.closed or self.ws is None:
            return
        self.closed = True
        try:
            await self.conn.write(self.ws.send(
                wsproto.events.CloseConnection(code=code, reason=reason or None)))
        except (*GONE, wsproto.utilities.LocalProtocolError):
            pass

    async def receive(self) -> Message:
        if not self.connected:
            self.connected = True
            await trio.lowlevel.checkpoint()
            return {"type": "websocket.connect"}
        return await self.from_peer.receive()

    async def send(self, message: Message) -> None:
        kind = message["type"]
        conn = self.conn
        if kind == "websocket.accept":
            if self.accepted or self.closed:
                raise RuntimeError("websocket.accept twice or after close")
            key = self.headers[b"sec-websocket-key"]
            accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
            headers = [(b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
                       (b"sec-websocket-accept", accept)]
            if message.get("subprotocol"):
                headers.append((b"sec-websocket-protocol", message["subprotocol"].encode()))
            headers += [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            out = conn.h11.send(h11.InformationalResponse(status_code=101, headers=headers))
            trailing, _ = conn.h11.trailing_data
            self.ws = wsproto.connection.Connection(wsproto.ConnectionType.SERVER,
                                                    trailing_data=bytes(trailing))
            self.accepted = True
            await conn.write(out or b"")
            self.nursery.start_soon(self._reader)
        elif kind == "websocket.send":
            if not self.accepted:
                raise RuntimeError("websocket.send before websocket.accept")
            if self.closed or self.ws is None:
                # The peer or shutdown closed it; the app learns on receive. A checkpoint, so
                # that an app sending in a loop lets its receiver see the disconnect.
                await trio.lowlevel.checkpoint()
                return
            if message.get("bytes") is not None:
                event: wsproto.events.Event = wsproto.events.BytesMessage(
                    data=bytes(message["bytes"]))
            else:
                event = wsproto.events.TextMessage(data=str(message["text"]))
            try:
                # LocalProtocolError: wsproto saw the client's EOF or close first (the reader
                # may not have told us yet). Either way the client is gone, not the app wrong.
                await conn.write(self.ws.send(event))
            except (*GONE, wsproto.utilities.LocalProtocolError):
                self._gone()
        elif kind == "websocket.close":
            if not self.accepted:
                if not self.closed:
                    self.closed = True
                    await conn.reply_error(403)  # ASGI: a close before accept refuses with 403
                return
            await self._close(int(message.get("code", 1000)), message.get("reason") or "")
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    async def _reader(self) -> None:
        """Frames from the peer to the app; pings answered; the close handshake completed."""
        assert self.ws is not None
        ws = self.ws
        parts: list[Any] = []
        size = 0
        code = 1006
        try:
            if self.conn.eof:
                ws.receive_data(None)
            while True:
                for event in ws.events():
                    if isinstance(event, wsproto.events.Ping):
                        await self.conn.write(ws.send(event.response()))
                    elif isinstance(event, wsproto.events.CloseConnection):
                        code = event.code
                        answer = ws.state is wsproto.connection.ConnectionState.REMOTE_CLOSING
                        if not self.closed:
                            self.closed = True
                            if answer:  # not the 1006 of an EOF (wsproto is CLOSED then)
                                await self.conn.write(ws.send(event.response()))
                        return
                    elif isinstance(event, wsproto.events.Message):
                        parts.append(event.data)
                        size += len(event.data)
                        if size > self.conn.config.max_ws_message:
                            await self._close(1009, "message too big")
                            return
                        if event.message_finished:
                            if isinstance(event, wsproto.events.TextMessage):
                                msg: Message = {"type": "websocket.receive",
                                                "text": "".join(parts)}
                            else:
                                msg = {"type": "websocket.receive", "bytes": b"".join(parts)}
                            parts, size = [], 0
                            await self.to_app.send(msg)
                data = await self.conn.stream.receive_some(RECV)
                if not data:
                    ws.receive_data(None)
                    for _ in ws.events():
                        pass
                    self.closed = True  # wsproto is CLOSED: nothing can be sent any more
                    return
                ws.receive_data(data)
        except (*GONE, wsproto.utilities.RemoteProtocolError):
            code = 1006
            self.closed = True
        finally:
            self._disconnect(code)


@asynccontextmanager
async def lifespan(app: ASGIApp, state: dict[str, Any], *,
                   shutdown_timeout: float = 5.0) -> AsyncIterator[None]:
    """Run the app's lifespan: startup on entry, shutdown (at most ``shutdown_timeout``) on
    exit. The app's lifespan task (quart-trio's ``app.nursery`` lives in it) is shielded
    from the caller's cancellation so that its shutdown still runs; it is cancelled after.

    Raises LifespanFailed when the app reports a failed startup.
    """
    to_app, app_in = trio.open_memory_channel[Message](2)
    started = trio.Event()
    stopped = trio.Event()
    failure: list[str] = []

    async def receive() -> Message:
        return await app_in.receive()

    async def send(message: Message) -> None:
        kind = message["type"]
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            if kind.endswith("failed"):
                failure.append(str(message.get("message", "")))
            started.set()
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            if kind.endswith("failed"):
                log.error("the app's shutdown failed: %s", message.get("message", ""))
            stopped.set()
        await trio.lowlevel.checkpoint()

    shield = trio.CancelScope(shield=True)

    async def run_app() -> None:
        with shield:
            try:
                await app({"type": "lifespan", "asgi": ASGI, "state": state}, receive, send)
            except Exception as exc:
                if not started.is_set():
                    failure.append(f"{type(exc).__name__}: {exc}")
                log.exception("the app's lifespan failed")
            finally:
                started.set()
                stopped.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_app)
        await to_app.send({"type": "lifespan.startup"})
        await started.wait()
        if failure:
            shield.cancel()
        else:
            try:
                yield
            finally:
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(shutdown_timeout):
                        if not stopped.is_set():
                            await to_app.send({"type": "lifespan.shutdown"})
                        await stopped.wait()
                    shield.cancel()
    if failure:  # raised here, outside the nursery, so that it is not wrapped in a group
        raise LifespanFailed(failure[0])


class LifespanFailed(Exception):
    """The app's startup failed (its message says why)."""
