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
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve as hyper_serve

from swarmd import journal
from swarmd.api import create_app
from swarmd.config import SwarmdConfig
from swarmd.service import Orchestrator
from swarmlib import config as cfgmod
from swarmlib import logsetup
from swarmlib.errors import ConfigError, JournalCorrupt, JournalWriteFailed
from swarmlib.sdnotify import notify

log = logging.getLogger("swarmd")


def hyper_config(listen: str) -> HyperConfig:
    host, port = cfgmod.parse_hostport(listen, "listen")
    hc = HyperConfig()
    hc.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    hc.graceful_timeout = 5.0
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.keep_alive_timeout = 75.0
    return hc


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
    app = create_app(orch)
    hc = hyper_config(cfg.listen)
    if not cfg.control_token:
        log.warning("SWARM_CONTROL_TOKEN is not set: mutations and the event stream are open "
                    "to anyone who can reach %s (internal network trust)", cfg.listen)
    if not cfg.drone_token:
        log.warning("SWARM_DRONE_TOKEN is not set: the drone protocol is open to anyone who "
                    "can reach %s", cfg.listen)
    async with trio.open_nursery() as nursery:
        await nursery.start(orch.run)
        async with trio.open_nursery() as web:
            binds: list[str] = await web.start(
                functools.partial(hyper_serve, app, hc, shutdown_trigger=shutdown.wait)
            )
            log.info("swarmd listening on %s, state in %s", ", ".join(binds), cfg.state_dir)
            notify("READY=1")
            task_status.started(binds)
        # Hypercorn returned: the HTTP side has drained. Stop the writer and the watchers.
        notify("STOPPING=1")
        nursery.cancel_scope.cancel()
    if orch.journal is not None:
        orch.journal.close()


async def _main_async(cfg: SwarmdConfig) -> None:
    shutdown = trio.Event()

    async def _signals(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
            task_status.started()
            async for sig in sigs:
                log.info("received %s: draining and stopping", signal.Signals(sig).name)
                shutdown.set()
                return

    async with trio.open_nursery() as nursery:
        await nursery.start(_signals)
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
        fatal = _find(group, (JournalWriteFailed, JournalCorrupt))
        if fatal is not None:
            log.critical("fatal: %s; exiting (nothing unacknowledged was answered)", fatal)
            return 1
        if _find(group, (KeyboardInterrupt,)) is not None:
            return 0
        raise
    except OSError as exc:
        print(f"swarmd: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    log.info("swarmd stopped")
    return 0


def _find(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> Any:
    if isinstance(exc, kinds):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = _find(sub, kinds)
            if found is not None:
                return found
    return None


if __name__ == "__main__":
    sys.exit(main())
