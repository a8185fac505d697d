"""``gatewayd``: the task tree, the listeners, signals and the systemd notification.

Task tree (``run``)::

    run
    +-- probe            GET /api/status every probe_interval_s
    +-- replayer         forwards the spool when swarmd is up
    +-- admin listener   Hypercorn (hypercorn.trio.serve) on admin_listen (admin routes,
    |                    /health, /metrics)
    +-- public listener  wsfront.serve_public (swarmlib.front + swarmlib.http1: HTTP and
    |                    /ws/build-status) on listen
    +-- hub subscriber   swarmd's /api/events -> WebSocket clients

``main()`` adds the signal watcher: SIGTERM/SIGINT stop the listeners from accepting, give
in-flight requests ``DRAIN_S`` to finish, cancel the rest and exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from typing import Any

import attrs
import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from gatewayd import push, wsfront
from gatewayd.app import Gateway, create_app
from gatewayd.config import GatewayConfig, load_config
from gatewayd.probe import run_probe
from swarmlib import logsetup, sdnotify
from swarmlib.daemon import LISTEN_HINTS, ListenFailed, find, start_error, watch_signals
from swarmlib.errors import ConfigError
from swarmlib.http1 import ServerConfig

log = logging.getLogger("gatewayd")

DRAIN_S = 5.0
PUBLIC_CONFIG = ServerConfig(graceful_timeout=DRAIN_S)


@attrs.frozen
class Ports:
    public: int
    admin: int


def _hypercorn_config(host: str, port: int) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    hc.graceful_timeout = DRAIN_S
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    return hc


async def serve_http(
    app: Any,
    host: str,
    port: int,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with Hypercorn on host:port until cancelled or ``shutdown`` is set (then
    in-flight requests get DRAIN_S). ``task_status.started(bound_port)``."""
    config = _hypercorn_config(host, port)
    trigger: Callable[[], Awaitable[None]] | None = (
        shutdown.wait if shutdown is not None else None)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(hypercorn_serve, app, config, shutdown_trigger=trigger))
        task_status.started(int(str(binds[0]).rsplit(":", 1)[1]))


async def run(
    cfg: GatewayConfig,
    *,
    shutdown: trio.Event | None = None,
    http: httpx.AsyncClient | None = None,
    task_status: trio.TaskStatus[Ports] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the gateway until cancelled, or until ``shutdown`` is set and the listeners have
    drained. ``task_status.started(Ports(public, admin))`` once both listeners accept."""
    public_host, public_port = cfg.listen_addr()
    admin_host, admin_port = cfg.admin_listen_addr()
    own_http = http is None
    client = http or httpx.AsyncClient(
        timeout=httpx.Timeout(cfg.request_timeout_s, connect=min(5.0, cfg.request_timeout_s)),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
    )
    try:
        gw = Gateway.create(cfg, client)
        if not gw.auth.enabled:
            log.warning("no SWARM_ADMIN_KEY configured: the admin API is disabled "
                        "(every /api/swarm-admin call gets 401)")
        if not cfg.control_token:
            log.warning("no SWARM_CONTROL_TOKEN configured: calls to swarmd carry no token")
        if gw.spool.depth:
            log.info("%d spooled request(s) from an earlier run will be forwarded",
                     gw.spool.depth)
        public_app = create_app(gw, public=True)
        admin_app = create_app(gw, public=False)
        async with trio.open_nursery() as background:
            await background.start(partial(
                run_probe, gw.probe, client, cfg.orchestrator,
                interval_s=cfg.probe_interval_s, timeout_s=cfg.probe_timeout_s))
            await background.start(gw.replayer.run)
            async with trio.open_nursery() as listeners:
                with _naming(admin_host, admin_port):
                    bound_admin = await listeners.start(partial(
                        serve_http, admin_app, admin_host, admin_port, shutdown=shutdown))
                bound_public = await listeners.start(partial(  # swarmlib.front names its address
                    _serve_public, gw, public_app, public_host, public_port, shutdown=shutdown))
                log.info("gatewayd %s listening: public %s:%d, admin %s:%d",
                         _version(), public_host, bound_public, admin_host, bound_admin)
                task_status.started(Ports(bound_public, bound_admin))
                if shutdown is not None:
                    await shutdown.wait()
                    # The listeners drain on their own; this is the backstop.
                    listeners.cancel_scope.deadline = trio.current_time() + DRAIN_S + 1
            background.cancel_scope.cancel()
    finally:
        if own_http:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await client.aclose()


@contextlib.contextmanager
def _naming(host: str, port: int) -> Iterator[None]:
    """Hypercorn binds the admin listener inside ``serve``: a bind error (busy, foreign or
    privileged address) becomes a ``ListenFailed`` that names the address (one line in main);
    anything else passes unchanged."""
    try:
        yield
    except BaseException as exc:
        oserr = find(exc, (OSError,))
        if oserr is None or isinstance(oserr, ListenFailed) or oserr.errno not in LISTEN_HINTS:
            raise
        raise ListenFailed(f"{host}:{port}", oserr) from exc


async def _serve_public(
    gw: Gateway,
    app: Any,
    host: str,
    port: int,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The public listener: the Quart app and ``/ws/build-status`` on one port
    (``gatewayd.wsfront``), fed by the push hub's subscription to swarmd's events."""
    cfg = gw.cfg
    hub = push.Hub(
        gw.sanitizer,
        buffer=cfg.ws_client_buffer,
        max_clients=cfg.ws_max_clients,
        ping_interval_s=cfg.ws_ping_interval_s,
        pong_timeout_s=cfg.ws_pong_timeout_s,
        metrics_clients_gauge=gw.metrics.ws_clients,
        queue_history=gw.queue_history,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(
            hub.run_subscriber, cfg.orchestrator, cfg.control_token, gw.http))
        try:
            async with trio.open_nursery() as public:
                bound = await public.start(partial(
                    wsfront.serve_public, app, host, port, hub, config=PUBLIC_CONFIG,
                    shutdown=shutdown))
                task_status.started(bound)
            # serve_public returned: shutdown came and the requests in flight have finished.
        finally:
            nursery.cancel_scope.cancel()  # the subscriber has nobody left to feed


def _version() -> str:
    import swarmlib

    return swarmlib.__version__


async def _main(cfg: GatewayConfig) -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:

        def drain() -> None:
            sdnotify.stopping()
            shutdown.set()
            # run() returns after the drain; a second signal or this deadline cuts it short.
            nursery.cancel_scope.deadline = trio.current_time() + DRAIN_S + 5

        async def serve(*, task_status: trio.TaskStatus[Ports] = trio.TASK_STATUS_IGNORED) -> None:
            await run(cfg, shutdown=shutdown, task_status=task_status)
            nursery.cancel_scope.cancel()  # drained: stop watching for signals

        await nursery.start(watch_signals, drain, nursery.cancel_scope.cancel)
        await nursery.start(serve)
        sdnotify.ready()


def main(argv: Sequence[str] | None = None) -> None:
    try:
        cfg = load_config(argv)
        logsetup.setup(cfg.log_format)
    except ConfigError as exc:
        print(f"gatewayd: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        trio.run(_main, cfg)
    except (KeyboardInterrupt, OSError, BaseExceptionGroup) as exc:
        if find(exc, (KeyboardInterrupt,)) is not None:
            sys.exit(0)
        oserr = find(exc, (OSError,))
        if oserr is None:
            raise
        # A listener that cannot bind, a spool directory that cannot be created: one line.
        sys.exit(start_error("gatewayd", oserr))
    sys.exit(0)


if __name__ == "__main__":
    main()
