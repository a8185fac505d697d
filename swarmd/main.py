"""swarmd: the orchestrator's entry point.

    swarmd [--config FILE] [--listen HOST:PORT] [--state-dir DIR] ...   run the daemon
    swarmd journal check --state-dir DIR                                  verify the journal
    swarmd journal repair --truncate-at-damage --state-dir DIR            cut at the damage

The daemon never forks; SIGTERM/SIGINT drain the HTTP server and exit 0. Bad configuration:
one line on stderr, exit 2. A journal that cannot be read or written: exit 1 (the supervisor
restarts it; replay recovers everything acknowledged).
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from swarmd import journal
from swarmd.api import create_app
from swarmd.config import SwarmdConfig
from swarmd.front import DroneLane
from swarmd.metrics import Metrics
from swarmd.service import Orchestrator
from swarmlib import config as cfgmod
from swarmlib import logsetup
from swarmlib.daemon import find, start_error, watch_signals
from swarmlib.errors import ConfigError, JournalCorrupt, JournalWriteFailed
from swarmlib.front import serve_front
from swarmlib.http1 import ServerConfig
from swarmlib.sdnotify import notify

log = logging.getLogger("swarmd")


# Drones keep their connection between beats (30 s by default): idle connections stay open
# longer than that, so that a beat never pays for a new connection.
HTTP_CONFIG = ServerConfig(keep_alive_timeout=75.0, graceful_timeout=5.0)


async def serve(
    cfg: SwarmdConfig,
    shutdown: trio.Event,
    *,
    orch: Orchestrator | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run swarmd until ``shutdown`` is set; ``task_status.started(binds)`` once listening."""
    orch = orch or Orchestrator(cfg)
    if orch.journal is None:
        orch.recover()
    metrics = Metrics(orch)
    app = create_app(orch, metrics)
    if not cfg.control_token:
        log.warning("SWARM_CONTROL_TOKEN is not set: mutations and the event stream are open "
                    "to anyone who can reach %s (internal network trust)", cfg.listen)
    if not cfg.drone_token:
        log.warning("SWARM_DRONE_TOKEN is not set: the drone protocol is open to anyone who "
                    "can reach %s", cfg.listen)
    host, port = cfgmod.parse_hostport(cfg.listen, "listen")
    lane = DroneLane(orch, metrics)
    async with trio.open_nursery() as nursery:
        await nursery.start(orch.run)
        async with trio.open_nursery() as web:
            bound: int = await web.start(functools.partial(
                serve_front, app, host, port, lane.handle, config=HTTP_CONFIG,
                shutdown=shutdown, on_drain=orch.ops.end_polls))
            shown = f"[{host}]" if ":" in host else host
            binds = [f"http://{shown}:{bound}"]
            log.info("swarmd listening on %s, state in %s", ", ".join(binds), cfg.state_dir)
            notify("READY=1")
            task_status.started(binds)
        # The listener returned: the HTTP side has drained. Stop the writer and the watchers.
        notify("STOPPING=1")
        nursery.cancel_scope.cancel()
    if orch.journal is not None:
        orch.journal.close()


async def _main_async(cfg: SwarmdConfig) -> None:
    shutdown = trio.Event()

    async with trio.open_nursery() as nursery:
        # The first signal drains (requests in flight answered, the journal closed); a second
        # one stops at once: what is acknowledged is journaled already.
        await nursery.start(watch_signals, shutdown.set, nursery.cancel_scope.cancel)
        nursery.start_soon(gc_housekeeping)  # the daemon's process only: not in-process tests
        await serve(cfg, shutdown)
        nursery.cancel_scope.cancel()


def _journal_cmd(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="swarmd journal")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="verify the journal and snapshot; changes nothing")
    c.add_argument("--state-dir", default="/var/lib/build-swarm")
    r = sub.add_parser("repair", help="cut the journal at its first damage (after a backup!)")
    r.add_argument("--state-dir", default="/var/lib/build-swarm")
    r.add_argument("--truncate-at-damage", action="store_true", required=True)
    a = p.parse_args(list(argv))
    d = Path(a.state_dir)
    if not d.is_dir():
        print(f"swarmd journal: state directory {d} does not exist", file=sys.stderr)
        return 2
    if a.cmd == "check":
        ok, lines = journal.check(d)
        for line in lines:
            print(line)
        print("journal OK" if ok else "journal DAMAGED: start-up would refuse")
        return 0 if ok else 1
    for line in journal.repair_truncate_at_damage(d):
        print(line)
    ok, lines = journal.check(d)
    print("journal OK" if ok else "journal still DAMAGED")
    return 0 if ok else 1


GC_SLOW_S = 0.1


def watch_gc() -> None:
    """Log every garbage collection that stops swarmd for more than GC_SLOW_S: the whole event
    loop waits for it, so it shows as a burst of slow answers (docs/OPERATIONS.md)."""
    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        if took > GC_SLOW_S:
            log.warning("garbage collection (generation %d, %d objects collected) stopped swarmd "
                        "for %.0f ms", info.get("generation", -1), info.get("collected", 0),
                        took * 1000)

    gc.callbacks.append(callback)


FREEZE_EVERY_S = 10.0
FULL_GC_EVERY_S = 3600.0


async def gc_housekeeping(*, freeze_every_s: float = FREEZE_EVERY_S,
                          full_every_s: float = FULL_GC_EVERY_S) -> None:
    """Keep the garbage collector's full collections off the request path.

    swarmd's state is millions of long-lived objects (entries, builds, drones, connections).
    A full collection walks all of them and stops the event loop: 0.2-0.7 s with 20,000
    entries and 5,000 drones, every few seconds, mostly finding nothing (docs/BENCHMARKS.md).
    So every ``freeze_every_s`` the young generations are collected (milliseconds) and what
    survives is frozen (``gc.freeze``): automatic full collections then walk only what was
    allocated since. Garbage cycles among frozen objects (a closed connection's Trio tasks)
    are reclaimed by one real full collection every ``full_every_s``, logged with its cost.
    Objects freed by reference counting, nearly all of them, are freed at once regardless.
    """
    last_full = trio.current_time()
    gc.collect(1)
    gc.freeze()  # the recovered state
    while True:
        await trio.sleep(freeze_every_s)
        if trio.current_time() - last_full >= full_every_s:
            t0 = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            last_full = trio.current_time()
            log.info("full garbage collection: %d objects reclaimed in %.0f ms", found,
                     (time.perf_counter() - t0) * 1000)
        else:
            gc.collect(1)
        gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "journal":
        logsetup.setup("text")
        return _journal_cmd(args[1:])
    try:
        cfg = cfgmod.load(SwarmdConfig, "swarmd", "SWARMD", args,
                          description="build-swarm orchestrator")
        logsetup.setup(cfg.log_format)
    except ConfigError as exc:
        print(f"swarmd: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        Path(cfg.state_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"swarmd: configuration error: state_dir {cfg.state_dir}: {exc.strerror}",
              file=sys.stderr)
        return 2
    watch_gc()
    try:
        trio.run(_main_async, cfg)
    except JournalCorrupt as exc:
        log.critical("%s", exc)
        print(f"swarmd: {exc}", file=sys.stderr)
        return 1
    except JournalWriteFailed as exc:
        log.critical("fatal: %s; exiting so that the supervisor restarts swarmd and replays "
                     "the journal", exc)
        return 1
    except BaseExceptionGroup as group:
        fatal = find(group, (JournalWriteFailed, JournalCorrupt))
        if fatal is not None:
            log.critical("fatal: %s; exiting (nothing unacknowledged was answered)", fatal)
            return 1
        if find(group, (KeyboardInterrupt,)) is not None:
            return 0
        bad = find(group, (ConfigError,))
        if bad is not None:
            print(f"swarmd: configuration error: {bad}", file=sys.stderr)
            return 2
        oserr = find(group, (OSError,))
        if oserr is not None:
            return start_error("swarmd", oserr)
        raise
    except ConfigError as exc:
        print(f"swarmd: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        return start_error("swarmd", exc)
    except KeyboardInterrupt:
        return 0
    log.info("swarmd stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
