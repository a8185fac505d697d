"""The server side of the public WebSocket: wsproto (sans-IO) on a Trio stream we own.

Theory of operation
-------------------
``ServerWebSocket`` wraps one accepted TCP stream (a ``trio.SocketStream`` or the front's
``ReplayStream``, which first replays the request head the front already read). wsproto turns
bytes into events and events into bytes; this module does the I/O, so writing, pinging and
aborting the connection are ours, through public interfaces only (wsproto's documented API, the
stream's ``socket`` attribute).

States: *connecting* (``receive_request``, then ``accept`` or ``reject``; a malformed upgrade
is answered 400, or 426 for a version we do not speak, with the reason in the body), *open*,
*closed* (``closed`` holds the ``CloseReason``; set once, never cleared). Everything that ends
the connection (a close handshake either way, EOF, a broken socket, ``abort``) sets ``closed``.

One task reads (``receive_until_closed``): it answers pings, matches pongs to our ``ping``,
answers a close and throws client messages away (bounded: a message over
``max_message_size`` is closed with 1009). Writers share the stream under ``send_lock``;
``try_send`` is the synchronous fast path for the hub's fan-out: one non-blocking ``write``
when no send is in flight. Frames the server sends are plain: no extension is ever negotiated,
so the hub can build one ``text_frame`` for all clients.

Frames never interleave. A frame begun on the socket (by the fast path's partial write, or by
a send cancelled mid-way) leaves its unsent rest *owed* on the connection: every send, data or
control, first writes what is owed under ``send_lock``, and ``try_send`` refuses while anything
is owed. So a ping, a pong or a close can only start between two whole frames.
"""

from __future__ import annotations

import os
import socket
import struct
from contextlib import suppress
from typing import Any

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
)
from wsproto.utilities import RemoteProtocolError

RECEIVE_BYTES = 65536


@attrs.frozen
class CloseReason:
    """Why the connection ended: an RFC 6455 close code (1006: no close frame) and reason."""

    code: int
    reason: str = ""


class ConnectionClosed(Exception):
    """The WebSocket is closed (``reason`` says how); raised by sends and ``ping``."""

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(reason)
        self.reason = reason


def text_frame(message: str) -> bytes:
    """One unmasked, unfragmented WebSocket text frame (what a server sends; RFC 6455 5.2).

    Built once per event and shared by every client: no per-client framing.
    """
    payload = message.encode()
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x81, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 127, n)
    return head + payload


def _plain(status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> list[Any]:
    """The events of a refusal with a text body."""
    return [
        RejectConnection(status_code=status, has_body=True, headers=[
            *(headers or []), (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]),
        RejectData(data=body),
    ]


class ServerWebSocket:
    """One server-side WebSocket connection on ``stream`` (see the module's docstring)."""

    def __init__(self, stream: trio.abc.HalfCloseableStream, *,
                 max_message_size: int = 16 * 1024) -> None:
        self.stream = stream
        self.max_message_size = max_message_size
        self.conn = WSConnection(ConnectionType.SERVER)
        self.request: Request | None = None
        self.closed: CloseReason | None = None
        self.send_lock = trio.Lock()
        # The socket under the stream (trio.SocketStream.socket), for the fast path and abort;
        # None for an in-memory stream (tests): everything then goes through send_all.
        self.socket: Any = getattr(stream, "socket", None)
        self.fd: int | None = self.socket.fileno() if self.socket is not None else None
        self.remote: Any = None
        if self.socket is not None:
            with suppress(OSError):
                self.remote = self.socket.getpeername()
        # The unsent rest of a frame already begun on the socket: written before anything else.
        self._owed = memoryview(b"")
        self.message_bytes = 0
        self.ping_count = 0
        self.pong_waiter: tuple[bytes, trio.Event] | None = None

    # -- the opening handshake ---------------------------------------------------------------

    async def receive_request(self) -> Request | None:
        """Read the upgrade request. Checkpoint.

        Returns None if the peer went away first, or sent a request wsproto refuses: that one
        has been answered (400, or 426 with ``Sec-WebSocket-Version: 13``) with the reason.
        """
        while True:
            try:
                data = await self.stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not data:
                return None
            try:
                self.conn.receive_data(bytes(data))
            except RemoteProtocolError as exc:
                hint = exc.event_hint
                status = hint.status_code if isinstance(hint, RejectConnection) else 400
                headers = list(hint.headers) if isinstance(hint, RejectConnection) else []
                await self._refuse(status, f"{exc}\n".encode(), headers)
                return None
            for event in self.conn.events():
                if isinstance(event, Request):
                    self.request = event
                    return event

    async def accept(self) -> None:
        """Answer 101 (no subprotocol, no extension). Checkpoint; raises ConnectionClosed."""
        await self.send(self.conn.send(AcceptConnection()))

    async def reject(self, status: int, body: bytes) -> None:
        """Refuse the upgrade with ``status`` and a text body, then close. Checkpoint."""
        await self._refuse(status, body, [])

    async def _refuse(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        data = b"".join(self.conn.send(e) for e in _plain(status, body, headers))
        with suppress(ConnectionClosed):
            await self.send(data)
        self.closed = CloseReason(1006, f"refused with {status}")
        await trio.aclose_forcefully(self.stream)

    # -- sending -----------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Send ready-made bytes (whole frames) under ``send_lock``, after what is owed.
        Checkpoint.

        Raises ConnectionClosed if the connection is (or becomes) closed. Cancelled mid-way on
        a socket, the rest of what was begun stays owed and the next send writes it first, so
        the peer still sees whole frames; on a stream without a socket (tests), part of
        ``data`` may have been sent and the connection is unusable (abort it).
        """
        if self.closed is not None:
            raise ConnectionClosed(self.closed)
        async with self.send_lock:
            try:
                await self._write_owed()
                self._owed = memoryview(data)
                await self._write_owed()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                if self.closed is None:
                    self.closed = CloseReason(1006, "broken")
                raise ConnectionClosed(self.closed) from None

    async def _write_owed(self) -> None:
        """Write everything owed; call under ``send_lock``. A trio socket's ``send`` either
        sends or is cancelled, never both, so a cancelled call leaves exactly the unsent rest
        owed."""
        if self.socket is None:
            data, self._owed = self._owed, memoryview(b"")
            await self.stream.send_all(data)
            return
        while self._owed:
            sent = await self.socket.send(self._owed)
            self._owed = self._owed[sent:]

    @property
    def owes(self) -> bool:
        """Whether the rest of a begun frame waits to be written (by the next ``send``)."""
        return bool(self._owed)

    def try_send(self, data: bytes) -> bool:
        """Write whole frames without blocking if no other send is in flight and nothing is
        owed on this connection.

        Returns True if the connection took ``data``: all of it written, or the rest owed
        (``owes``; the next ``send``, even ``send(b"")``, writes it first). Returns False if
        nothing was sent (no socket, a send in flight, something owed, a full socket buffer).
        Raises OSError if the socket is broken or the connection closed. Synchronous: nothing
        can interleave.
        """
        if self.closed is not None:
            raise BrokenPipeError("websocket closed")
        if self.fd is None or self.send_lock.locked() or self._owed:
            return False
        try:
            sent = os.write(self.fd, data)
        except BlockingIOError:
            return False
        self._owed = memoryview(data)[sent:]
        return True

    async def ping(self) -> None:
        """Send a ping and wait for its pong. Checkpoint; raises ConnectionClosed.

        Needs a task in ``receive_until_closed`` (it sees the pong). One ping at a time.
        """
        self.ping_count += 1
        payload = struct.pack("!I", self.ping_count)
        waiter = trio.Event()
        self.pong_waiter = (payload, waiter)
        await self.send(self.conn.send(Ping(payload=payload)))
        await waiter.wait()
        if self.closed is not None:
            raise ConnectionClosed(self.closed)

    # -- receiving and closing ---------------------------------------------------------------

    async def receive_until_closed(self) -> CloseReason:
        """Read and handle everything the peer sends until the connection is closed. Checkpoint.

        Client messages are thrown away. Returns ``closed``. At most one task reads.
        """
        while self.closed is None:
            try:
                data = await self.stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self._set_closed(CloseReason(1006, "connection lost"))
                break
            self.conn.receive_data(bytes(data))
            for event in self.conn.events():
                await self._handle(event)
                if self.closed is not None:
                    break
        assert self.closed is not None
        return self.closed

    async def _handle(self, event: Any) -> None:
        if isinstance(event, Ping):
            with suppress(ConnectionClosed):
                await self.send(self.conn.send(event.response()))
        elif isinstance(event, Pong):
            if self.pong_waiter is not None and self.pong_waiter[0] == event.payload:
                self.pong_waiter[1].set()
                self.pong_waiter = None
        elif isinstance(event, CloseConnection):
            reason = CloseReason(event.code, event.reason or "")
            state = self.conn.state
            if state is ConnectionState.REMOTE_CLOSING:  # the peer's close: answer it
                await self._close_now(event.response(), reason)
            elif state is ConnectionState.OPEN:  # a frame wsproto refused (ParseFailed)
                await self._close_now(CloseConnection(event.code, event.reason), reason)
            else:  # CLOSED: the answer to our own close (aclose)
                self._set_closed(reason)
                await trio.aclose_forcefully(self.stream)
        elif isinstance(event, Message):
            self.message_bytes += len(event.data)
            if self.message_bytes > self.max_message_size:
                await self._close_now(CloseConnection(1009, "message too big"),
                                      CloseReason(1009, "message too big"))
            elif event.message_finished:
                self.message_bytes = 0

    async def _close_now(self, frame: Any, reason: CloseReason) -> None:
        """Send a close frame and close TCP without waiting for an answer (the server closes
        first, RFC 6455 7.1.1): for the answer to the peer's close, and for a peer that broke
        the protocol or the size limit. Checkpoint."""
        with suppress(ConnectionClosed):
            await self.send(self.conn.send(frame))
        self._set_closed(reason)
        await trio.aclose_forcefully(self.stream)

    def _set_closed(self, reason: CloseReason) -> None:
        if self.closed is None:
            self.closed = reason
        if self.pong_waiter is not None:  # a ping waiting for a pong that can never come
            self.pong_waiter[1].set()
            self.pong_waiter = None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close with a close handshake: send ``code``, wait for the peer's answer. Checkpoint.

        Reads the stream itself: call it only when no task is in ``receive_until_closed``.
        Bound it with a cancel scope; cancelled, the connection is left half-closed (abort it).
        """
        if self.closed is not None:
            return
        if self.conn.state is ConnectionState.OPEN:
            try:
                await self.send(self.conn.send(CloseConnection(code, reason)))
            except ConnectionClosed:
                return
        await self.receive_until_closed()

    async def abort(self) -> None:
        """Close the TCP connection at once with a reset (RST), no close handshake.

        Checkpoint (but the socket is closed even if cancelled). For a peer that is dead or too
        slow: a close handshake it would never finish is not waited on.
        """
        self._set_closed(CloseReason(1006, "aborted"))
        if self.socket is not None:
            with suppress(OSError):
                self.socket.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await trio.aclose_forcefully(self.stream)
