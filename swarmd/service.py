"""The Trio shell around the pure state: group-commit journal writer, soft drone state, leases.

``Orchestrator.commit(event)`` is the only way durable state changes: the event goes to the
writer task, which drains every event waiting, writes them as one batch, fsyncs once in a worker
thread, then applies them to the state in journal order and wakes each caller with its outcome.
Nothing is acknowledged before its fsync returned; a failed write or fsync raises
JournalWriteFailed out of the writer, which takes the daemon down (the supervisor restarts it
and replay recovers everything that was acknowledged).
"""

from __future__ import annotations

import gc
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from swarmd import journal as jr
from swarmd import journal_events as je
from swarmd import scheduler
from swarmd.config import SwarmdConfig
from swarmd.events import EventHub
from swarmd.publish import Publisher
from swarmd.state import ACTIVE, Outcome, Policy, State
from swarmlib.errors import Conflict, NotFound, StaleLease
from swarmlib.target import target_id

log = logging.getLogger("swarmd")

MAX_BATCH = 4096
WAKING: frozenset[type[je.Event]] = frozenset({
    je.Submit, je.Complete, je.Cancel, je.DroneOffline, je.History, je.Published,
    je.PublishFailed, je.DroneTarget})
LOG_LIMIT = 32 * 1024 * 1024  # bytes of build log kept per build


@attrs.define
class _Pending:
    event: je.Event
    done: trio.Event = attrs.field(factory=trio.Event)
    outcome: Outcome | None = None


@attrs.define
class DroneSoft:
    """What heartbeats tell between journal writes; rebuilt from the next beats."""

    last_beat: float  # trio clock
    last_beat_wall: float
    load: float = 0.0
    reported: str = "ready"
    late: bool = False
    progress: dict[str, float] = attrs.field(factory=dict)
    polling: int = 0  # lease long-polls in progress
    last_poll: float = -1e9  # trio clock of the last lease call


def replay(state_dir: Path, policy: Policy) -> tuple[State, jr.Loaded]:
    """The live state is exactly the snapshot plus every journaled event, applied in order."""
    was_enabled = gc.isenabled()
    gc.disable()  # what is built here is the live state: collecting it could only cost time
    try:
        loaded = jr.load(state_dir, decode=je.decode)
        state = State.from_snapshot(loaded.snapshot, policy) if loaded.snapshot else State(policy)
        apply = state.apply
        for seq, ev in zip(loaded.seqs, loaded.events, strict=True):
            apply(ev, seq)
        state.seq = loaded.last_seq
    finally:
        if was_enabled:
            gc.enable()
    return state, loaded


class Orchestrator:
    def __init__(self, cfg: SwarmdConfig, *, wall: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.wall = wall
        self.state_dir = Path(cfg.state_dir)
        self.policy = Policy(max_retries=cfg.max_retries, failure_streak=cfg.failure_streak,
                             cooldown_s=cfg.cooldown_s)
        self.state = State(self.policy)
        self.journal: jr.Journal | None = None
        self.hub = EventHub(window=cfg.event_window)
        self.soft: dict[str, DroneSoft] = {}
        self.started_wall = wall()
        self._send, self._recv = trio.open_memory_channel[_Pending](MAX_BATCH)
        self._waiting: dict[str, trio.Event] = {}  # drone id -> its lease long-poll's wake-up
        self._claimed: set[str] = set()  # entries picked whose assignment is not yet applied
        self._snapshot_running = False
        self.heartbeats: Any = None  # swarmd.heartbeat.Supervisor, set by run()
        self.recovered_events = 0
        self._since_compact = 0  # events journaled since the last snapshot
        self.on_batch: Callable[[int, float], None] | None = None  # metrics hook
        self.publisher: Publisher | None = None  # set by run() when binhost_dir is configured

    # ------------------------------------------------------------------ recovery
    def recover(self) -> None:
        """Replay the journal (blocking; call before serving)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        t0 = time.perf_counter()
        was_enabled = gc.isenabled()
        gc.collect()  # nothing built yet: quick, and no garbage gets frozen below
        gc.disable()
        try:
            self.state, loaded = replay(self.state_dir, self.policy)
            # The recovered state lives as long as swarmd: out of the collector's sight from
            # now on (else its first collections walk millions of young objects, about 0.5 s);
            # swarmd.main.gc_housekeeping freezes what is built later.
            gc.freeze()
        finally:
            if was_enabled:
                gc.enable()
        self.recovered_events = len(loaded.events)
        self._since_compact = len(loaded.events)
        self.journal = jr.Journal(self.state_dir, loaded.last_seq + 1)
        log.info(
            "recovered state from %s: snapshot seq %s, %d journal events replayed in %.3f s; "
            "%d entries, %d drones",
            self.state_dir, loaded.snapshot["seq"] if loaded.snapshot else "none",
            len(loaded.events), time.perf_counter() - t0,
            len(self.state.entries), len(self.state.drones),
        )

    # ------------------------------------------------------------------ tasks
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from swarmd.heartbeat import Supervisor

        if self.journal is None:
            self.recover()
        async with trio.open_nursery() as nursery:
            await nursery.start(self._writer)
            if self.cfg.binhost_dir:
                self.publisher = Publisher(self, Path(self.cfg.binhost_dir))
                await nursery.start(self.publisher.run)
            else:
                log.warning("binhost_dir is not set: swarmd publishes nothing; successful builds "
                            "count as built as soon as their drone reports them")
                for bid in sorted(b.id for b in self.state.builds.values()
                                  if b.state == "publishing"):
                    # Left by a run that had a binhost: nobody will publish them now.
                    await self.commit(je.PublishFailed(
                        ts=self.wall(), build_id=bid, error="binhost_dir is no longer set"))
            self.heartbeats = Supervisor(self)
            await nursery.start(self.heartbeats.run)
            # After a restart every online drone gets one full offline window to beat again.
            for d in self.state.drones.values():
                if d.online:
                    self.touch(d.id)
                    self.heartbeats.watch(d.id, d.session)
            task_status.started()

    async def _writer(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert self.journal is not None
        j = self.journal
        task_status.started()
        # Snapshot writes run here, beside the writer; a failure there is fatal like any other.
        async with trio.open_nursery() as background:
            await self._write_loop(j, background)

    async def _write_loop(self, j: Any, background: trio.Nursery) -> None:
        async for first in self._recv:
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._recv.receive_nowait())
                except trio.WouldBlock:
                    break
            t0 = time.perf_counter()
            seqs = await self._append([p.event for p in batch])
            if self.on_batch is not None:
                self.on_batch(len(batch), time.perf_counter() - t0)
            changed = False
            for p, seq in zip(batch, seqs, strict=True):
                out = self.state.apply(p.event, seq)
                p.outcome = out
                for notice in out.notices:
                    self.hub.publish(notice, p.event.ts)
                # Only these can make work available to a waiting drone; an assignment or a
                # registration without returned builds cannot, and waking every long-poll for
                # them costs a fleet-sized scan each.
                if out.ok and (type(p.event) in WAKING or (
                        isinstance(p.event, je.Register) and len(out.notices) > 1)):
                    changed = True
                p.done.set()
            if changed:
                self.poke()
            self._since_compact += len(batch)
            if not self._snapshot_running and (
                    j.bytes > self.cfg.compact_after_bytes
                    or self._since_compact > self.cfg.compact_after_events):
                await self._compact(background)
                self._since_compact = 0

    async def _append(self, events: list[je.Event]) -> list[int]:
        """Number, frame, write and fsync ``events`` (only the writer task calls this); their
        sequence numbers.

        Raises JournalWriteFailed: fatal, nothing of the batch may be acknowledged.
        """
        assert self.journal is not None
        seq = self.state.seq
        frames = []
        seqs = []
        for ev in events:
            seq += 1
            seqs.append(seq)
            frames.append(jr.encode_event(ev, seq))
        if getattr(self.journal, "in_memory", False):
            self.journal.append_batch(frames)  # a test's fake journal: no thread, no real time
            await trio.lowlevel.checkpoint()
        else:
            await trio.to_thread.run_sync(self.journal.append_batch, frames)
        return seqs

    async def _compact(self, background: trio.Nursery) -> None:
        """Prune, snapshot, and drop the segments the snapshot covers.

        Only the writer task changes durable state, so a snapshot taken here, between two
        batches, is consistent. The journal starts a new segment, and a forked child (see
        ``journal.fork_snapshot_writer``) copies, encodes and writes the snapshot from its
        copy-on-write image of the state, then removes the old segments; the writer goes on
        at once. Holding commits for the copy and encoding instead stalled swarmd for about a
        second with 20,000 entries and 5,000 drones (docs/BENCHMARKS.md, drone load).

        A failed snapshot is logged and tried again after the next threshold: the journal
        it would have shortened is still complete.
        """
        assert self.journal is not None
        t0 = time.perf_counter()
        # Forget old finished history first, so the snapshot holds the live state only.
        now = self.wall()
        prune = je.Prune(ts=now, before=now - self.cfg.retention_s)
        [seq] = await self._append([prune])
        self.state.apply(prune, seq)
        if getattr(self.journal, "in_memory", False):
            self.journal.compact(self.state.to_snapshot())
            return
        seq = self.state.seq
        older = self.journal.rotate(seq)
        try:
            pid, fd = jr.fork_snapshot_writer(self.state.to_snapshot, self.state_dir, older)
        except OSError as exc:
            log.error("could not fork the snapshot writer (%s): the journal keeps growing; "
                      "trying again after the next %d events", exc, self.cfg.compact_after_events)
            return
        held = time.perf_counter() - t0
        self._snapshot_running = True

        async def reap() -> None:
            # Shielded: even when swarmd is stopping, the child is waited for (a second or
            # two), never left behind.
            with trio.CancelScope(shield=True):
                try:
                    why = await trio.to_thread.run_sync(jr.reap_snapshot_writer, pid, fd)
                finally:
                    self._snapshot_running = False
            if why is None:
                log.info("journal compacted at seq %d in %.3f s (writes held up %.3f s)",
                         seq, time.perf_counter() - t0, held)
            else:
                log.error("snapshot at seq %d failed: %s; the journal is intact and keeps "
                          "growing; trying again after the next %d events", seq, why,
                          self.cfg.compact_after_events)

        background.start_soon(reap)

    async def commit(self, event: je.Event) -> Outcome:
        """Journal ``event`` (fsync), apply it, return the outcome. Checkpoint.

        If the caller is cancelled after the event was handed to the writer, the event is still
        journaled and applied: it just is not answered.
        """
        p = _Pending(event)
        await self._send.send(p)
        await p.done.wait()
        assert p.outcome is not None
        return p.outcome

    # ------------------------------------------------------------------ change signal
    def poke(self) -> None:
        """Wake every lease long-poll: something that may make work available changed.

        With nothing ready there is nothing to hand out, so nobody is woken (a fleet of idle
        drones in long-polls would otherwise all wake for every change); the 5 s re-check in
        ``lease`` covers what time alone changes (cool-downs ending, estimates aging).
        """
        if not self.state.ready_index:
            return
        waiting, self._waiting = self._waiting, {}
        for ev in waiting.values():
            ev.set()

    def nudge(self, drone_ids: list[str]) -> None:
        """Wake the long-polls of these drones only (work was left for them)."""
        for did in drone_ids:
            ev = self._waiting.pop(did, None)
            if ev is not None:
                ev.set()

    async def wait_changed(self, drone_id: str) -> None:
        """Return at the next poke or nudge of ``drone_id``. Checkpoint; cancelling it
        leaves nothing behind."""
        ev = self._waiting.get(drone_id)
        if ev is None:
            ev = self._waiting[drone_id] = trio.Event()
        try:
            await ev.wait()
        finally:
            if self._waiting.get(drone_id) is ev:
                del self._waiting[drone_id]

    # ------------------------------------------------------------------ soft state
    def touch(self, drone_id: str) -> DroneSoft:
        s = self.soft.get(drone_id)
        if s is None:
            s = DroneSoft(last_beat=trio.current_time(), last_beat_wall=self.wall())
            self.soft[drone_id] = s
        else:
            s.last_beat = trio.current_time()
            s.last_beat_wall = self.wall()
        return s

    def is_late(self, drone_id: str) -> bool:
        s = self.soft.get(drone_id)
        return s is not None and s.late

    def unavailable(self, drone_id: str) -> bool:
        """Not worth waiting for: late, or it has a free slot but has not asked for work lately
        (a stuck or misconfigured agent must not make smaller drones pass on packages)."""
        s = self.soft.get(drone_id)
        if s is None or s.late:
            return True
        d = self.state.drones.get(drone_id)
        free_slot = d is not None and len(d.builds) < d.slots
        return free_slot and s.polling == 0 and trio.current_time() - s.last_poll > 40.0

    def drone_status(self, drone_id: str) -> str:
        d = self.state.drones[drone_id]
        st = self.state.drone_status(d, self.wall())
        if st in ("ready", "building") and self.is_late(drone_id):
            return "degraded"
        return st

    def set_late(self, drone_id: str, late: bool) -> None:
        s = self.soft.get(drone_id)
        if s is None or s.late == late:
            return
        s.late = late
        d = self.state.drones.get(drone_id)
        if d is None:
            return
        if late:
            log.warning("drone %s is late: no heartbeat for %.0f s", d.name,
                        trio.current_time() - s.last_beat, extra={"ids": {"drone": d.id}})
        notice = self.state._drone_notice(d, self.wall())
        notice["data"]["status"] = self.drone_status(drone_id)
        self.hub.publish(notice)
        self.poke()

    # ------------------------------------------------------------------ drone protocol
    async def register(self, body: je.Register) -> dict[str, Any]:
        """Register a drone: ``body`` as the agent sent it; its ``session`` and ``ts`` are
        minted here."""
        session = secrets.token_urlsafe(18)
        out = await self.commit(attrs.evolve(body, session=session, ts=self.wall()))
        did = out.result["drone_id"]
        self.soft.pop(did, None)
        self.touch(did)
        self.heartbeats.watch(did, session)
        log.info("drone %s registered (%s cores) as %s", body.name, body.cores, did,
                 extra={"ids": {"drone": did}})
        return {"drone_id": did, "session": session,
                "heartbeat_interval_s": self.cfg.heartbeat_interval_s}

    async def heartbeat(self, drone_id: str, session: str, status: str, load: float,
                        builds: list[dict[str, Any]],
                        target: dict[str, Any] | None = None) -> dict[str, Any]:
        d = self.state.check_session(drone_id, session)
        if target is not None:
            tid = target_id(target)
            if tid != d.target_id:
                log.info("drone %s: target changed from %s to %s", d.name,
                         d.target_id or "none", tid, extra={"ids": {"drone": d.id}})
                await self.commit(je.DroneTarget(ts=self.wall(), drone_id=drone_id,
                                                 session=session, target=target, target_id=tid))
        s = self.touch(drone_id)
        s.load = load
        s.reported = status
        self.heartbeats.beat(drone_id)
        if s.late:
            self.set_late(drone_id, False)
        revoked: list[str] = []
        valid = self.state.lease_index
        for item in builds:
            lease = str(item.get("lease", ""))
            bid = valid.get(lease)
            if bid is None or bid != item.get("build_id") or bid not in d.builds:
                revoked.append(lease)
                continue
            b = self.state.builds[bid]
            if b.state == "assigned":
                await self.commit(je.Started(ts=self.wall(), build_id=bid, lease=lease))
            pct = item.get("progress")
            e = self.state.entries[b.entry_id]
            est = scheduler.duration_on(e, d.cores)
            elapsed = self.wall() - b.started
            if not isinstance(pct, int | float):
                pct = min(99.0, 100.0 * elapsed / est) if est > 0 else 0.0
            s.progress[bid] = float(pct)
            notice = self.state._progress_notice(b, "progress", self.wall())
            notice["data"]["percent"] = round(float(pct), 1)
            self.hub.publish(notice)
        # Builds swarmd thinks the drone holds but the drone does not report: the lease reply
        # was lost (swarmd or the network died between journaling the assignment and the
        # drone reading it) or the agent lost track of it. After a grace of two heartbeat
        # intervals (a lease granted a moment ago may not be in this beat yet) the package
        # goes back to the queue with no attempt counted: nothing waits forever.
        reported = {str(i.get("build_id")) for i in builds}
        grace = 2 * self.cfg.heartbeat_interval_s
        for bid in list(d.builds):
            b = self.state.builds[bid]
            if bid not in reported and self.wall() - b.started > grace:
                log.warning("drone %s does not hold build %s of %s: returning it to the queue",
                            d.name, bid, b.cpv, extra={"ids": {"build": bid, "drone": d.id}})
                await self.commit(je.Complete(
                    ts=self.wall(), build_id=bid, lease=b.lease, result=je.Report.RETURNED,
                    error="the drone does not hold this build"))
                revoked.append(b.lease)
        commands: list[dict[str, Any]] = []
        if d.commands:
            # Journaled before the reply carries them: a restart is delivered once.
            out = await self.commit(je.RestartDelivered(ts=self.wall(), drone_id=drone_id,
                                                        session=session))
            if out.ok:
                commands = out.result["commands"]
        return {"commands": commands, "revoked": sorted(set(revoked))}

    async def lease(self, drone_id: str, session: str, wait_s: float) -> dict[str, Any] | None:
        deadline = trio.current_time() + wait_s
        soft = self.touch(drone_id)
        soft.polling += 1
        try:
            return await self._lease_loop(drone_id, session, deadline)
        finally:
            soft.polling -= 1
            soft.last_poll = trio.current_time()

    async def _lease_loop(self, drone_id: str, session: str,
                          deadline: float) -> dict[str, Any] | None:
        while True:
            d = self.state.check_session(drone_id, session)
            self.touch(drone_id)
            reserved: list[str] = []
            e = scheduler.pick(self.state, d, self.wall(), busy=self.unavailable,
                               reserved=reserved, claimed=self._claimed)
            if e is not None:
                # Until the assignment is applied, other decisions pass this entry over.
                self._claimed.add(e.id)
                try:
                    out = await self.commit(je.Assign(
                        ts=self.wall(), entry_id=e.id, drone_id=d.id, session=session,
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
            self.nudge(reserved)
            # Woken at once when work appears; re-decide at least every 5 s as estimates age.
            with trio.move_on_after(min(remaining, 5.0)):
                await self.wait_changed(drone_id)

    def check_lease(self, build_id: str, lease: str) -> None:
        b = self.state.builds.get(build_id)
        if b is None:
            raise NotFound(f"no build with id {build_id!r}")
        if b.state == "finished" or self.state.lease_index.get(lease) != build_id:
            raise StaleLease(build_id, "lease is no longer valid (the package was moved or "
                                       "finished); stop this build")

    async def append_log(self, build_id: str, lease: str, chunk: bytes) -> int:
        self.check_lease(build_id, lease)
        b = self.state.builds[build_id]
        if b.state == "assigned":
            await self.commit(je.Started(ts=self.wall(), build_id=build_id, lease=lease))
        path = self.state_dir / "logs" / f"{build_id}.log"

        def _append() -> int:
            size = path.stat().st_size if path.exists() else 0
            data = chunk
            if size >= LOG_LIMIT:
                return 0
            if size + len(data) > LOG_LIMIT:
                data = data[: LOG_LIMIT - size] + b"\n[build-swarm: log truncated]\n"
            with path.open("ab") as fh:
                fh.write(data)
            return len(data)

        return await trio.to_thread.run_sync(_append)

    def read_log(self, build_id: str, tail: int | None) -> str:
        path = self.state_dir / "logs" / f"{build_id}.log"
        if not path.exists():
            return ""
        data = path.read_bytes()
        if tail is not None:
            lines = data.splitlines()[-tail:] if tail > 0 else []
            data = b"\n".join(lines)
        return data.decode("utf-8", "replace")

    async def complete(self, report: je.Complete) -> dict[str, Any]:
        """A drone's report of its build (``report.ts`` is stamped here)."""
        build_id = report.build_id
        self.check_lease(build_id, report.lease)
        b = self.state.builds[build_id]
        e = self.state.entries[b.entry_id]
        if e.state not in ACTIVE:
            raise Conflict(f"entry {e.id} is {e.state}")
        publish = self.publisher is not None and report.result == je.Report.SUCCESS
        out = await self.commit(attrs.evolve(report, ts=self.wall(), publish=publish))
        if not out.ok:
            raise StaleLease(build_id, out.message)
        if publish and self.publisher is not None:
            self.publisher.enqueue(build_id)
        soft = self.soft.get(b.drone_id)
        if soft is not None:
            soft.progress.pop(build_id, None)
        log.info("build %s of %s on %s: %s", build_id, b.cpv, b.drone_name, report.result,
                 extra={"ids": {"build": build_id, "drone": b.drone_id}})
        return out.result

    async def queue_restart(self, drone_id: str) -> dict[str, Any]:
        """Journal a restart command for the drone's agent; its next heartbeat reply carries
        it (also after a restart of swarmd). Checkpoint."""
        if drone_id not in self.state.drones:
            raise NotFound(f"no drone with id {drone_id!r}")
        out = await self.commit(je.RestartRequested(ts=self.wall(), drone_id=drone_id))
        if not out.ok:
            raise NotFound(out.message)
        return out.result
