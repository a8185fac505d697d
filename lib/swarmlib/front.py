"""A small Trio listener in front of the HTTP/1.1 server, shared by both daemons.

Each TCP connection goes to a handler that may serve it itself (the gateway's WebSocket push,
swarmd's drone lane) and hands it to ``swarmlib.http1`` running the ASGI (Quart) app as soon
as it sees something it does not serve: keep-alive, pipelining, timeouts and errors of
everything else are http1's. The hand-off passes the bytes the handler already read, so it may
happen at any request boundary.

``serve_front``: the app's lifespan, and on ``shutdown`` no new connections (the listening
sockets close), the idle connections (waiting for a next request, WebSockets) closed at once,
long waits ended by the caller's ``on_drain``, requests in flight given
``config.graceful_timeout`` seconds to finish, then cancelled, then the app's lifespan
shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from swarmlib import http1
from swarmlib.daemon import ListenFailed
from swarmlib.http1 import ASGIApp, Drain, ServerConfig, serve_connection

log = logging.getLogger("swarmlib.front")

MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT_S = 10.0


class ReplayStream(trio.abc.HalfCloseableStream):
    """A socket stream whose first reads return bytes that were already read from it.

    Exposes ``socket`` (for the peer and local addresses)."""

    def __init__(self, inner: trio.SocketStream, prefix: bytes) -> None:
        self.inner = inner
        self._prefix = prefix

    @property
    def socket(self) -> Any:
        return self.inner.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            n = len(self._prefix) if max_bytes is None else max_bytes
            chunk, self._prefix = self._prefix[:n], self._prefix[n:]
            return chunk
        return bytes(await self.inner.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]] | None:
    """``(method, path, headers)`` of a request head (lower-case header names), or None."""
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    method, target, _version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            break
        name, sep, value = line.partition(":")
        if not sep:
            return None
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    path = target.split("?", 1)[0]
    return method, path, headers


def head_end(buf: bytes | bytearray) -> tuple[int, int]:
    """(offset, length) of the blank line that ends a request head, or (-1, 0).

    h11 (and RFC 9112, section 2.2) accept lines ended by a bare LF, so ``\n\n`` ends a head
    as well as ``\r\n\r\n``: whichever comes first."""
    crlf = buf.find(b"\r\n\r\n")
    lf = buf.find(b"\n\n")
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf, 2
    return (crlf, 4) if crlf >= 0 else (-1, 0)


async def read_head(stream: trio.abc.ReceiveStream, buf: bytearray | None = None,
                    limit: int = MAX_HEAD_BYTES) -> bytes:
    """Read until the end of a request head, EOF, or ``limit`` bytes. Checkpoint.

    Returns everything read, after what ``buf`` already held (possibly more than the head:
    pipelined bytes are kept).
    """
    buf = bytearray() if buf is None else buf
    while head_end(buf)[0] < 0 and len(buf) < limit:
        data = await stream.receive_some(limit)
        if not data:
            break
        buf += data
    return bytes(buf)


class Handoff:
    """Serves the rest of a connection with the HTTP/1.1 server (``swarmlib.http1``).

    ``drain`` is the listener's shutdown: a handler that serves requests itself waits for its
    next request inside ``drain.idle(timeout)`` (closed at shutdown) and looks at
    ``drain.closing`` after each request.
    """

    def __init__(self, app: ASGIApp, config: ServerConfig, state: dict[str, Any]) -> None:
        self.app = app
        self.config = config
        self.state = state
        self.drain = Drain()

    async def __call__(self, stream: trio.SocketStream, prefix: bytes) -> None:
        await serve_connection(self.app, stream, config=self.config, drain=self.drain,
                               state=self.state, prefix=prefix)


ConnectionHandler = Callable[[trio.SocketStream, Handoff], Awaitable[None]]


async def http_only(stream: trio.SocketStream, handoff: Handoff) -> None:
    """The trivial handler: everything to the HTTP/1.1 server."""
    await handoff(stream, b"")


async def serve_front(
    app: Any,
    host: str,
    port: int,
    handle: ConnectionHandler = http_only,
    *,
    config: ServerConfig | None = None,
    lifespan: bool = True,
    shutdown: trio.Event | None = None,
    on_drain: Callable[[], None] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` behind ``handle`` on host:port until cancelled or ``shutdown`` is set.

    ``port`` 0 picks a free port; ``task_status.started(actual_port)``. With
    ``lifespan`` the app's startup runs before listening and its shutdown
    (after_serving) runs at the end, shielded, for at most ``config.lifespan_timeout``; pass
    False when the same app object is served (with its lifespan) by another server in the
    process as well.

    ``handle(stream, handoff)`` owns one connection (a failure there ends that connection
    only); ``await handoff(stream, already_read)`` gives it to the HTTP/1.1 server. After
    ``shutdown`` this returns once the connections have finished (or were cancelled after the
    graceful timeout) and the lifespan has shut down. ``on_drain()`` is called once the
    connections have been told to close (``drain.closing`` is set): the place to end waits
    that are neither idle nor about to finish by themselves (swarmd's lease long-polls), so
    that they answer, with ``connection: close``, instead of being cancelled unanswered.
    """
    config = config if config is not None else ServerConfig()
    state: dict[str, Any] = {}
    handoff = Handoff(app, config, state)

    async def one(stream: trio.SocketStream) -> None:
        try:
            await handle(stream, handoff)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:
            log.exception("connection failed")
        finally:
            await trio.aclose_forcefully(stream)

    async with _maybe_lifespan(app, state, config, lifespan):
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:  # the daemon's one line names the address (swarmlib.daemon)
            raise ListenFailed(f"{host}:{port}", exc) from exc
        actual = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as connections:
            try:
                async with trio.open_nursery() as accepting:
                    await accepting.start(partial(
                        trio.serve_listeners, one, listeners, handler_nursery=connections))
                    task_status.started(actual)
                    if shutdown is None:
                        await trio.sleep_forever()
                    await shutdown.wait()
                    accepting.cancel_scope.cancel()
            finally:
                # serve_listeners closed the listening sockets: new connections are refused.
                # Idle connections close now, busy ones get the graceful timeout.
                handoff.drain.begin()
                if on_drain is not None:
                    on_drain()
                connections.cancel_scope.deadline = (
                    trio.current_time() + config.graceful_timeout)


def _maybe_lifespan(app: Any, state: dict[str, Any], config: ServerConfig,
                    enabled: bool) -> Any:
    if not enabled:
        return _nothing()
    return http1.lifespan(app, state, shutdown_timeout=config.lifespan_timeout)


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield
