"""The drone protocol's operations (SPEC section 4) on swarmd's parts, independent of HTTP.

``swarmd.droneproto`` validates the bodies and calls these; each journals what must survive
(``register``, ``assign``, ``started``, ``complete``, ``drone_target``, restart commands) before
it answers, and keeps the rest in the drones' soft state.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from swarmd import journal_events as je
from swarmd import scheduler
from swarmd.state import ACTIVE
from swarmlib.errors import Conflict, NotFound, StaleLease
from swarmlib.target import target_id

if TYPE_CHECKING:
    from swarmd.buildlogs import BuildLogs
    from swarmd.committer import Durable
    from swarmd.dronesoft import SoftState
    from swarmd.wakeups import Wakeups

log = logging.getLogger("swarmd")

RECHECK_S = 5.0  # a waiting lease re-decides at least this often (estimates age)


class Watcher(Protocol):
    """The heartbeat supervisor, as the drone operations use it."""

    def watch(self, drone_id: str, session: str) -> None: ...

    def beat(self, drone_id: str) -> None: ...


class PublishQueue(Protocol):
    """The publisher, as the drone operations use it."""

    def enqueue(self, build_id: str) -> None: ...


class DroneOps:
    def __init__(self, durable: Durable, soft: SoftState, wakeups: Wakeups, logs: BuildLogs,
                 *, heartbeat_interval_s: float) -> None:
        self._durable = durable
        self._soft = soft
        self.wakeups = wakeups  # the long-polls this part waits in
        self._logs = logs
        self.heartbeat_interval_s = heartbeat_interval_s
        self.watcher: Watcher | None = None  # set once the supervisor runs
        self.publisher: PublishQueue | None = None  # set when a binhost is configured
        self._claimed: set[str] = set()  # entries picked whose assignment is not yet applied
        # Shutdown: once set, lease polls answer "no work" at once instead of waiting (and
        # lease nothing new); the scopes are those of the polls waiting now.
        self._polls_ended = False
        self._poll_waits: set[trio.CancelScope] = set()

    def end_polls(self) -> None:
        """Shutdown has begun: every waiting lease poll returns None ("no work", 204) now, and
        later ones at once, so their answers (with ``connection: close``) go out before the
        graceful timeout instead of being cut off by it. Not a checkpoint."""
        self._polls_ended = True
        for scope in list(self._poll_waits):
            scope.cancel()

    def attach(self, watcher: Watcher, publisher: PublishQueue | None) -> None:
        self.watcher = watcher
        self.publisher = publisher

    def _watcher(self) -> Watcher:
        assert self.watcher is not None, "DroneOps used before Orchestrator.run started"
        return self.watcher

    # ------------------------------------------------------------------ lookups
    def check_session(self, drone_id: str, session: str) -> None:
        """Raise NotFound / SessionSuperseded unless ``session`` is the drone's current one."""
        self._durable.state.check_session(drone_id, session)

    def package_of(self, build_id: str) -> str | None:
        """The CPV a build is of, None for an unknown build."""
        b = self._durable.state.builds.get(build_id)
        return b.cpv if b is not None else None

    # ------------------------------------------------------------------ register / heartbeat
    async def register(self, body: je.Register) -> dict[str, Any]:
        """Register a drone: ``body`` as the agent sent it; its ``session`` and ``ts`` are
        minted here. Checkpoint."""
        session = secrets.token_urlsafe(18)
        out = await self._durable.commit(attrs.evolve(body, session=session,
                                                      ts=self._durable.wall()))
        did = out.result["drone_id"]
        self._soft.forget(did)
        self._soft.touch(did)
        self._watcher().watch(did, session)
        log.info("drone %s registered (%s cores) as %s", body.name, body.cores, did,
                 extra={"ids": {"drone": did}})
        return {"drone_id": did, "session": session,
                "heartbeat_interval_s": self.heartbeat_interval_s}

    async def heartbeat(self, drone_id: str, session: str, status: str, load: float,
                        builds: list[dict[str, Any]],
                        target: dict[str, Any] | None = None) -> dict[str, Any]:
        durable = self._durable
        state = durable.state
        d = state.check_session(drone_id, session)
        if target is not None:
            tid = target_id(target)
            if tid != d.target_id:
                log.info("drone %s: target changed from %s to %s", d.name,
                         d.target_id or "none", tid, extra={"ids": {"drone": d.id}})
                await durable.commit(je.DroneTarget(ts=durable.wall(), drone_id=drone_id,
                                                    session=session, target=target,
                                                    target_id=tid))
        s = self._soft.touch(drone_id)
        s.load = load
        s.reported = status
        self._watcher().beat(drone_id)
        if s.late:
            self._soft.set_late(drone_id, False)
        revoked: list[str] = []
        valid = state.lease_index
        for item in builds:
            lease = str(item.get("lease", ""))
            bid = valid.get(lease)
            if bid is None or bid != item.get("build_id") or bid not in d.builds:
                revoked.append(lease)
                continue
            b = state.builds[bid]
            if b.state == "assigned":
                await durable.commit(je.Started(ts=durable.wall(), build_id=bid, lease=lease))
            pct = item.get("progress")
            e = state.entries[b.entry_id]
            est = scheduler.duration_on(e, d.cores)
            elapsed = durable.wall() - b.started
            if not isinstance(pct, int | float):
                pct = min(99.0, 100.0 * elapsed / est) if est > 0 else 0.0
            s.progress[bid] = float(pct)
            notice = state.progress_notice(b, "progress", durable.wall())
            notice["data"]["percent"] = round(float(pct), 1)
            self._soft.publish(notice)
        # Builds swarmd thinks the drone holds but the drone does not report: the lease reply
        # was lost (swarmd or the network died between journaling the assignment and the
        # drone reading it) or the agent lost track of it. After a grace of two heartbeat
        # intervals (a lease granted a moment ago may not be in this beat yet) the package
        # goes back to the queue with no attempt counted: nothing waits forever.
        reported = {str(i.get("build_id")) for i in builds}
        grace = 2 * self.heartbeat_interval_s
        for bid in list(d.builds):
            b = state.builds[bid]
            if bid not in reported and durable.wall() - b.started > grace:
                log.warning("drone %s does not hold build %s of %s: returning it to the queue",
                            d.name, bid, b.cpv, extra={"ids": {"build": bid, "drone": d.id}})
                await durable.commit(je.Complete(
                    ts=durable.wall(), build_id=bid, lease=b.lease, result=je.Report.RETURNED,
                    error="the drone does not hold this build"))
                revoked.append(b.lease)
        commands: list[dict[str, Any]] = []
        if d.commands and d.commands_sent_to == session:
            commands = state.commands_for(d)  # again: the reply that carried them may be lost
        elif d.commands:
            # Journaled (once per session) before the first reply carries them; every reply
            # carries them until the agent registers a new session.
            out = await durable.commit(je.RestartDelivered(ts=durable.wall(), drone_id=drone_id,
                                                           session=session))
            if out.ok:
                commands = out.result["commands"]
        return {"commands": commands, "revoked": sorted(set(revoked))}

    # ------------------------------------------------------------------ leases
    async def lease(self, drone_id: str, session: str, wait_s: float) -> dict[str, Any] | None:
        """The next build for the drone, or None after ``wait_s`` without one, or at once
        after ``end_polls``. Checkpoint."""
        deadline = trio.current_time() + wait_s
        soft = self._soft.touch(drone_id)
        soft.polling += 1
        try:
            return await self._lease_loop(drone_id, session, deadline)
        finally:
            soft.polling -= 1
            soft.last_poll = trio.current_time()

    async def _lease_loop(self, drone_id: str, session: str,
                          deadline: float) -> dict[str, Any] | None:
        durable = self._durable
        while True:
            d = durable.state.check_session(drone_id, session)
            if self._polls_ended:
                return None  # shutting down: no new assignment whose answer may be cut off
            self._soft.touch(drone_id)
            reserved: list[str] = []
            e = scheduler.pick(durable.state, d, durable.wall(), busy=self._soft.unavailable,
                               reserved=reserved, claimed=self._claimed)
            if e is not None:
                # Until the assignment is applied, other decisions pass this entry over.
                self._claimed.add(e.id)
                try:
                    out = await durable.commit(je.Assign(
                        ts=durable.wall(), entry_id=e.id, drone_id=d.id, session=session,
                        lease=secrets.token_urlsafe(24)))
                finally:
                    self._claimed.discard(e.id)
                if out.ok:
                    log.info("leased %s to %s", e.cpv, d.name,
                             extra={"ids": {"build": out.result["build_id"], "drone": d.id}})
                    return out.result
                continue
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                return None
            # The faster drones this one left work for decide now, not at their next wake-up.
            self.wakeups.nudge(reserved)
            # Woken at once when work appears; re-decide at least every RECHECK_S.
            with trio.move_on_after(min(remaining, RECHECK_S)) as waiting:
                self._poll_waits.add(waiting)
                try:
                    await self.wakeups.wait(drone_id)
                finally:
                    self._poll_waits.discard(waiting)

    def check_lease(self, build_id: str, lease: str) -> None:
        """Raise NotFound / StaleLease unless ``lease`` is ``build_id``'s current lease."""
        state = self._durable.state
        b = state.builds.get(build_id)
        if b is None:
            raise NotFound(f"no build with id {build_id!r}")
        if b.state == "finished" or state.lease_index.get(lease) != build_id:
            raise StaleLease(build_id, "lease is no longer valid (the package was moved or "
                                       "finished); stop this build")

    # ------------------------------------------------------------------ builds
    async def append_log(self, build_id: str, lease: str, chunk: bytes) -> int:
        """Append a chunk of the build's log (the first one marks it started). Checkpoint."""
        self.check_lease(build_id, lease)
        b = self._durable.state.builds[build_id]
        if b.state == "assigned":
            await self._durable.commit(je.Started(ts=self._durable.wall(), build_id=build_id,
                                                  lease=lease))
        return await self._logs.append(build_id, chunk)

    async def complete(self, report: je.Complete) -> dict[str, Any]:
        """A drone's report of its build (``report.ts`` is stamped here). Checkpoint."""
        state = self._durable.state
        build_id = report.build_id
        self.check_lease(build_id, report.lease)
        b = state.builds[build_id]
        e = state.entries[b.entry_id]
        if e.state not in ACTIVE:
            raise Conflict(f"entry {e.id} is {e.state}")
        publish = self.publisher is not None and report.result == je.Report.SUCCESS
        out = await self._durable.commit(attrs.evolve(report, ts=self._durable.wall(),
                                                      publish=publish))
        if not out.ok:
            raise StaleLease(build_id, out.message)
        if publish and self.publisher is not None:
            self.publisher.enqueue(build_id)
        soft = self._soft.get(b.drone_id)
        if soft is not None:
            soft.progress.pop(build_id, None)
        log.info("build %s of %s on %s: %s", build_id, b.cpv, b.drone_name, report.result,
                 extra={"ids": {"build": build_id, "drone": b.drone_id}})
        return out.result

    # ------------------------------------------------------------------ commands
    async def queue_restart(self, drone_id: str) -> dict[str, Any]:
        """Journal a restart command for the drone's agent; its next heartbeat reply carries
        it (also after a restart of swarmd). Checkpoint."""
        if drone_id not in self._durable.state.drones:
            raise NotFound(f"no drone with id {drone_id!r}")
        out = await self._durable.commit(je.RestartRequested(ts=self._durable.wall(),
                                                             drone_id=drone_id))
        if not out.ok:
            raise NotFound(out.message)
        return out.result
