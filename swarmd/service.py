"""swarmd's service: the parts that make the orchestrator, composed, and their tasks.

Each part has one job and a narrow interface:

- ``committer.Committer``: group commit, compaction, replay; the state. Others see it as
  ``committer.Durable`` (read the state, stamp and commit events).
- ``wakeups.Wakeups``: lease long-polls woken when work may be there.
- ``dronesoft.SoftState``: heartbeat times, load, progress, lateness (not journaled).
- ``buildlogs.BuildLogs``: build log files.
- ``droneops.DroneOps``: the drone protocol's operations, restart commands included.
- ``heartbeat.Supervisor``: one watcher task per drone; ``publish.Publisher``: the binhost.

``Orchestrator`` builds them, runs their tasks (``run``), and keeps a few one-line shortcuts
that tests and tools use (``commit``, ``state``, ``register``, ``lease`` ...).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from swarmd import journal as jr
from swarmd import journal_events as je
from swarmd.buildlogs import BuildLogs
from swarmd.committer import Committer, replay
from swarmd.config import SwarmdConfig
from swarmd.droneops import DroneOps
from swarmd.dronesoft import SoftState
from swarmd.events import EventHub
from swarmd.heartbeat import Supervisor
from swarmd.journal_events import DroneStatus
from swarmd.publish import Publisher
from swarmd.state import Outcome, Policy, State
from swarmd.wakeups import Wakeups

__all__ = ["Orchestrator", "replay"]

log = logging.getLogger("swarmd")


class Orchestrator:
    def __init__(self, cfg: SwarmdConfig, *, wall: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.wall = wall
        self.state_dir = Path(cfg.state_dir)
        self.policy = Policy(max_retries=cfg.max_retries, failure_streak=cfg.failure_streak,
                             cooldown_s=cfg.cooldown_s)
        self.started_wall = wall()
        self.hub = EventHub(window=cfg.event_window)
        self.wakeups = Wakeups(lambda: bool(self.committer.state.ready_index))
        self.committer = Committer(cfg, self.policy, wall=wall, hub=self.hub,
                                   on_change=self.wakeups.poke)
        self.soft = SoftState(self.committer, self.hub, self.wakeups, wall)
        self.logs = BuildLogs(self.state_dir / "logs")
        self.ops = DroneOps(self.committer, self.soft, self.wakeups, self.logs,
                            heartbeat_interval_s=cfg.heartbeat_interval_s)
        self.heartbeats: Supervisor | None = None  # set by run()
        self.publisher: Publisher | None = None  # set by run() when binhost_dir is configured

    # ------------------------------------------------------------------ the committer's
    @property
    def state(self) -> State:
        return self.committer.state

    @property
    def journal(self) -> jr.Journal | None:
        return self.committer.journal

    @journal.setter
    def journal(self, j: jr.Journal | None) -> None:
        self.committer.journal = j  # tests put a fake journal here

    async def commit(self, event: je.Event) -> Outcome:
        return await self.committer.commit(event)

    def recover(self) -> None:
        """Replay the journal (blocking; call before serving)."""
        self.committer.recover()
        self.logs.create()

    # ------------------------------------------------------------------ tasks
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.committer.journal is None:
            self.recover()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.committer.run)
            if self.cfg.binhost_dir:
                self.publisher = Publisher(self.committer, Path(self.cfg.binhost_dir))
                await nursery.start(self.publisher.run)
            else:
                log.warning("binhost_dir is not set: swarmd publishes nothing; successful builds "
                            "count as built as soon as their drone reports them")
                for bid in sorted(b.id for b in self.state.builds.values()
                                  if b.state == "publishing"):
                    # Left by a run that had a binhost: nobody will publish them now.
                    await self.commit(je.PublishFailed(
                        ts=self.wall(), build_id=bid, error="binhost_dir is no longer set"))
            self.heartbeats = Supervisor(self.committer, self.soft, self.wakeups,
                                         interval=self.cfg.heartbeat_interval_s,
                                         offline_after=self.cfg.offline_after_s)
            await nursery.start(self.heartbeats.run)
            self.ops.attach(self.heartbeats, self.publisher)
            # After a restart every online drone gets one full offline window to beat again.
            for d in self.state.drones.values():
                if d.online:
                    self.soft.touch(d.id)
                    self.heartbeats.watch(d.id, d.session)
            task_status.started()

    # ------------------------------------------------------------------ shortcuts
    def drone_status(self, drone_id: str) -> DroneStatus:
        return self.soft.status(drone_id)

    async def register(self, body: je.Register) -> dict[str, Any]:
        return await self.ops.register(body)

    async def heartbeat(self, drone_id: str, session: str, status: str, load: float,
                        builds: list[dict[str, Any]],
                        target: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.ops.heartbeat(drone_id, session, status, load, builds, target)

    async def lease(self, drone_id: str, session: str, wait_s: float) -> dict[str, Any] | None:
        return await self.ops.lease(drone_id, session, wait_s)

    async def complete(self, report: je.Complete) -> dict[str, Any]:
        return await self.ops.complete(report)

    async def queue_restart(self, drone_id: str) -> dict[str, Any]:
        return await self.ops.queue_restart(drone_id)
