"""``swarm-drone``: the console entry point (``droned.main:main``).

Builds the task tree: the agent, and a signal watcher. The first SIGTERM/SIGINT starts the
graceful stop (see ``Agent.run``: running builds get ``stop_grace_s``, then are killed and
reported ``returned``); a second one cancels at once (build process groups are still killed).
Exit status 0 after a stop, 2 for bad configuration (one line on stderr). After a ``restart``
command the process re-executes itself with the same argv (same pid, new session).
"""

from __future__ import annotations

import logging
import os
import sys

import trio

from droned.agent import Agent
from droned.config import DroneConfig, load_config
from droned.identity import detect
from swarmlib import logsetup
from swarmlib.daemon import watch_signals
from swarmlib.errors import ConfigError

log = logging.getLogger("droned")


async def serve(cfg: DroneConfig) -> bool:
    """Run the agent until a signal or a restart command; True when it should re-execute."""
    identity = await trio.to_thread.run_sync(
        lambda: detect(name=cfg.name, cores=cfg.cores, orchestrator=cfg.orchestrator)
    )
    agent = Agent(cfg, identity=identity)
    log.info(
        "swarm-drone %s starting", identity.version,
        extra={"ids": {"name": cfg.name, "orchestrator": cfg.orchestrator, "cores": cfg.cores,
                       "slots": cfg.slots, "ip": identity.ip, "chost": identity.chost}},
    )
    async with trio.open_nursery() as nursery:
        # The first signal lets the running build finish and be reported; a second stops now.
        await nursery.start(watch_signals, agent.stop, nursery.cancel_scope.cancel)
        await agent.run()
        nursery.cancel_scope.cancel()
    return agent.restart_requested


def main(argv: list[str] | None = None) -> None:
    try:
        cfg = load_config(argv)
        logsetup.setup(cfg.log_format)
    except ConfigError as exc:
        print(f"swarm-drone: {exc}", file=sys.stderr)
        sys.exit(2)
    restart = trio.run(serve, cfg)
    if restart:
        log.info("re-executing: %s", " ".join(sys.orig_argv))
        logging.shutdown()
        os.execv(sys.executable, sys.orig_argv)
    sys.exit(0)


if __name__ == "__main__":
    main()
