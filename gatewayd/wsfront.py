"""The public listener: one port, two servers behind a small Trio front.

For each TCP connection the front reads the request head (bounded in size and time). A
``GET /ws/build-status`` with ``Upgrade: websocket`` goes to trio-websocket, whose ``ping()``
waits for the pong (Hypercorn's ping option never checks pongs and ASGI cannot send pings);
every other connection goes to Hypercorn's own Trio ``TCPServer`` running the Quart app, so
keep-alive, pipelining, timeouts and errors stay Hypercorn's. Both get a stream that first
replays the bytes the front already read.

The decision is made once per connection, on its first request: a later upgrade request on a
keep-alive HTTP connection reaches the Quart app (which answers 404). Browsers open a fresh
connection for each WebSocket.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, cast

import trio
import trio_websocket
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import wrap_app

from gatewayd.push import Hub

log = logging.getLogger("gatewayd.wsfront")

WS_PATH = "/ws/build-status"
MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT_S = 10.0
# What a public client may send us: nothing useful, so little.
WS_MAX_MESSAGE = 16 * 1024
# Bounded shutdown of the app's lifespan (after_serving) once the front is cancelled.
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
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        return None
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


def is_push_request(head: bytes) -> bool:
    parsed = parse_head(head)
    if parsed is None:
        return False
    method, path, headers = parsed
    upgrade = {t.strip().lower() for t in headers.get("upgrade", "").split(",")}
    return method == "GET" and path == WS_PATH and "websocket" in upgrade


async def read_head(stream: trio.SocketStream) -> bytes:
    """Read until the end of the request head, EOF, or MAX_HEAD_BYTES. Checkpoint.

    Returns everything read (possibly more than the head: pipelined bytes are kept).
    """
    buf = bytearray()
    while b"\r\n\r\n" not in buf and len(buf) < MAX_HEAD_BYTES:
        data = await stream.receive_some(MAX_HEAD_BYTES)
        if not data:
            break
        buf += data
    return bytes(buf)


class _Front:
    def __init__(self, app: Any, config: Config, context: WorkerContext, state: Any, hub: Hub):
        self.app = app
        self.config = config
        self.context = context
        self.state = state
        self.hub = hub

    async def handle(self, stream: trio.SocketStream) -> None:
        """One TCP connection; a task boundary (a failure here ends this connection only)."""
        try:
            with trio.move_on_after(HEAD_TIMEOUT_S):
                head = await read_head(stream)
            if not head or not head.strip():
                return
            replay = ReplayStream(stream, head)
            if is_push_request(head):
                await self._serve_push(replay)
            else:
                # TCPServer is typed for SSLStream but takes any stream with ``.socket``.
                server_stream = cast(Any, replay)
                await TCPServer(self.app, self.config, self.context, self.state, server_stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:
            log.exception("public connection failed")
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve_push(self, replay: ReplayStream) -> None:
        async with trio.open_nursery() as nursery:
            with trio.move_on_after(HEAD_TIMEOUT_S) as scope:
                request = await trio_websocket.wrap_server_stream(
                    nursery, replay, message_queue_size=4, max_message_size=WS_MAX_MESSAGE
                )
            if scope.cancelled_caught:  # a head wsproto refused: it answered 400 already
                nursery.cancel_scope.cancel()
                return
            if not self.hub.accepting():
                with trio.move_on_after(1):
                    await request.reject(503, body=b"too many clients\n")
                nursery.cancel_scope.cancel()
                return
            ws = await request.accept()
            await self.hub.handle_client(ws)
            nursery.cancel_scope.cancel()


async def serve_public(
    app: Any,
    host: str,
    port: int,
    hub: Hub,
    *,
    hypercorn_config: Any = None,
    lifespan: bool = True,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the Quart app and ``/ws/build-status`` on one port until cancelled.

    ``port`` 0 picks a free port; ``task_status.started(actual_port)``. With ``lifespan`` the
    app's startup runs before listening and its shutdown (after_serving) runs on cancellation,
    shielded, for at most LIFESPAN_SHUTDOWN_S; pass ``lifespan=False`` when the same app object
    is served (with its lifespan) by another server in the process as well.
    """
    config: Config = hypercorn_config if hypercorn_config is not None else Config()
    wrapped = wrap_app(app, config.wsgi_max_body_size, None)
    context = WorkerContext(None)
    state: dict[str, Any] = {}
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
            front = _Front(wrapped, config, context, state, hub)
            async with trio.open_nursery() as server_nursery:
                await server_nursery.start(
                    partial(trio.serve_listeners, front.handle, listeners)
                )
                log.info("public listener on %s:%s", host, actual)
                task_status.started(actual)
                await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await context.terminated.set()
                if life is not None:
                    with trio.move_on_after(LIFESPAN_SHUTDOWN_S):
                        await life.wait_for_shutdown()
                    life_scope.cancel()
