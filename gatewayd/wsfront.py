"""The public listener: one port, two servers behind the small Trio front of swarmlib.front.

For each TCP connection the front reads the request head (bounded in size and time). A
``GET /ws/build-status`` with ``Upgrade: websocket`` goes to the push hub on our own
wsproto layer (``wsserver``), whose ``ping()`` waits for the pong (ASGI cannot send pings);
every other connection goes to the HTTP/1.1 server of ``swarmlib.http1`` running the Quart
app, so keep-alive, pipelining, timeouts and errors are its. Both get the bytes the front
already read.

The decision is made once per connection, on its first request: a later upgrade request on a
keep-alive HTTP connection reaches the Quart app (which answers 404). Browsers open a fresh
connection for each WebSocket. On shutdown push clients are closed at once (1001) with the
idle connections; requests in flight get the graceful timeout.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from gatewayd.push import Hub
from gatewayd.wsserver import ConnectionClosed, ServerWebSocket
from swarmlib.front import (
    HEAD_TIMEOUT_S,
    MAX_HEAD_BYTES,
    Handoff,
    ReplayStream,
    parse_head,
    read_head,
    serve_front,
)
from swarmlib.http1 import ServerConfig

__all__ = ["MAX_HEAD_BYTES", "ReplayStream", "is_push_request", "parse_head", "read_head",
           "serve_public"]

log = logging.getLogger("gatewayd.wsfront")

WS_PATH = "/ws/build-status"
# What a public client may send us: nothing useful, so little.
WS_MAX_MESSAGE = 16 * 1024


def is_push_request(head: bytes) -> bool:
    parsed = parse_head(head)
    if parsed is None:
        return False
    method, path, headers = parsed
    upgrade = {t.strip().lower() for t in headers.get("upgrade", "").split(",")}
    return method == "GET" and path == WS_PATH and "websocket" in upgrade


class _Front:
    def __init__(self, hub: Hub):
        self.hub = hub

    async def handle(self, stream: trio.SocketStream, handoff: Handoff) -> None:
        """One TCP connection (swarmlib.front closes it and contains its failures)."""
        head = b""  # a head not finished within HEAD_TIMEOUT_S: the connection is just closed
        with trio.move_on_after(HEAD_TIMEOUT_S):
            head = await read_head(stream)
        if not head or not head.strip():
            return
        if is_push_request(head):
            with handoff.drain.idle():  # a push client is closed at once on shutdown
                await self._serve_push(ReplayStream(stream, head))
        else:
            await handoff(stream, head)

    async def _serve_push(self, replay: ReplayStream) -> None:
        ws = ServerWebSocket(replay, max_message_size=WS_MAX_MESSAGE)
        with trio.move_on_after(HEAD_TIMEOUT_S):
            await ws.receive_request()
        if ws.request is None:  # refused (answered 400 or 426 already), gone, or too slow
            return
        if not self.hub.accepting():
            with trio.move_on_after(1):
                await ws.reject(503, b"too many clients\n")
            return
        try:
            await ws.accept()
        except ConnectionClosed:
            return
        await self.hub.handle_client(ws)


async def serve_public(
    app: Any,
    host: str,
    port: int,
    hub: Hub,
    *,
    config: ServerConfig | None = None,
    lifespan: bool = True,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the Quart app and ``/ws/build-status`` on one port until cancelled, or until
    ``shutdown`` is set and the requests in flight have finished.

    ``port`` 0 picks a free port; ``task_status.started(actual_port)``. Lifespan and shutdown
    as in ``swarmlib.front.serve_front``.
    """
    await serve_front(app, host, port, _Front(hub).handle, config=config, lifespan=lifespan,
                      shutdown=shutdown, task_status=task_status)
