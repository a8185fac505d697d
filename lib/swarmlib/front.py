"""A small Trio listener in front of Hypercorn, shared by both daemons.

Each TCP connection goes to a handler that may serve it itself (the gateway's WebSocket push,
swarmd's drone lane) and hands it to Hypercorn's own Trio ``TCPServer`` running the Quart app
as soon as it sees something it does not serve: keep-alive, pipelining, timeouts and errors
of everything else stay Hypercorn's. Hypercorn gets a stream that first replays the bytes the
handler already read, so a hand-off may happen at any request boundary.

``serve_front`` mirrors ``hypercorn.trio.serve``: the app's lifespan, and on ``shutdown`` no
new connections, the idle connections of a handler that registers them (``idle_scopes``) closed
at once, and everything else (requests in flight, Hypercorn's own connections) given
``graceful_timeout`` seconds, then cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import wrap_app

log = logging.getLogger("swarmlib.front")

MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT_S = 10.0
# Bounded shutdown of the app's lifespan (after_serving) once the front stops.
LIFESPAN_SHUTDOWN_S = 5.0


class ReplayStream(trio.abc.HalfCloseableStream):
    """A socket stream whose first reads return bytes that were already read from it.

    Exposes ``socket`` (Hypercorn reads the peer and local addresses from it) and, on purpose,
    no ``do_handshake`` (Hypercorn takes that as "not TLS").
    """

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
    """Serves the rest of a connection with Hypercorn.

    ``closing`` is set on shutdown; a handler that serves requests itself puts the cancel scope
    of its idle wait (between requests) in ``idle_scopes``, and those are cancelled then.
    """

    def __init__(self, app: Any, config: Config, context: WorkerContext,
                 state: dict[str, Any]) -> None:
        self.app = app
        self.config = config
        self.context = context
        self.state = state
        self.closing = trio.Event()
        self.idle_scopes: set[trio.CancelScope] = set()

    async def __call__(self, stream: trio.SocketStream, prefix: bytes) -> None:
        # TCPServer is typed for SSLStream but takes any stream with ``.socket``.
        server_stream = cast(Any, ReplayStream(stream, prefix))
        await TCPServer(self.app, self.config, self.context, self.state, server_stream)


ConnectionHandler = Callable[[trio.SocketStream, Handoff], Awaitable[None]]


async def hypercorn_only(stream: trio.SocketStream, handoff: Handoff) -> None:
    """The trivial handler: everything to Hypercorn."""
    await handoff(stream, b"")


async def serve_front(
    app: Any,
    host: str,
    port: int,
    handle: ConnectionHandler,
    *,
    hypercorn_config: Config | None = None,
    lifespan: bool = True,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` behind ``handle`` on host:port until cancelled or ``shutdown`` is set.

    ``port`` 0 picks a free port; ``task_status.started(actual_port)``. With ``lifespan`` the
    app's startup runs before listening and its shutdown (after_serving) runs at the end,
    shielded, for at most LIFESPAN_SHUTDOWN_S; pass ``lifespan=False`` when the same app object
    is served (with its lifespan) by another server in the process as well.

    ``handle(stream, handoff)`` owns one connection (a failure there ends that connection
    only); ``await handoff(stream, already_read)`` gives it to Hypercorn.
    """
    config: Config = hypercorn_config if hypercorn_config is not None else Config()
    wrapped = wrap_app(app, config.wsgi_max_body_size, None)
    context = WorkerContext(None)
    state: dict[str, Any] = {}
    handoff = Handoff(wrapped, config, context, state)

    async def one(stream: trio.SocketStream) -> None:
        try:
            await handle(stream, handoff)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:
            log.exception("connection failed")
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as lifespan_nursery:
        life: Lifespan | None = None
        if lifespan:
            life = Lifespan(wrapped, config, state)
            # The lifespan task is shielded from our caller's cancellation so that its shutdown
            # can still run; it is cancelled explicitly below.
            life_scope = trio.CancelScope(shield=True)

            async def run_lifespan() -> None:
                with life_scope:
                    await life.handle_lifespan()

            lifespan_nursery.start_soon(run_lifespan)
            await life.wait_for_startup()
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
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
                    # Draining (or cancelled): idle connections close now, busy ones get
                    # graceful_timeout.
                    handoff.closing.set()
                    for scope in list(handoff.idle_scopes):
                        scope.cancel()
                    await context.terminated.set()
                    connections.cancel_scope.deadline = (
                        trio.current_time() + config.graceful_timeout)
        finally:
            with trio.CancelScope(shield=True):
                await context.terminated.set()
                if life is not None:
                    with trio.move_on_after(LIFESPAN_SHUTDOWN_S):
                        await life.wait_for_shutdown()
                    life_scope.cancel()
