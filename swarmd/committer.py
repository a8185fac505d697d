"""Group commit, compaction and replay: the one writer of swarmd's durable state.

``Committer.commit(event)`` is the only way durable state changes: the event goes to the
writer task, which drains every event waiting, writes them as one batch, fsyncs once in a worker
thread, then applies them to the state in journal order and wakes each caller with its outcome.
Nothing is acknowledged before its fsync returned; a failed write or fsync raises
JournalWriteFailed out of the writer, which takes the daemon down (the supervisor restarts it
and replay recovers everything that was acknowledged).

The other parts of swarmd see it through ``Durable``: the state to read, the wall clock, and
``commit``.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from swarmd import journal as jr
from swarmd import journal_events as je
from swarmd.config import SwarmdConfig
from swarmd.events import EventHub
from swarmd.state import Outcome, Policy, State

log = logging.getLogger("swarmd")

MAX_BATCH = 4096
# Events that can make work available to a waiting drone (an assignment cannot; a registration
# can only when it returned builds). Waking every lease long-poll costs a fleet-sized scan each.
WAKING: frozenset[type[je.Event]] = frozenset({
    je.Submit, je.Complete, je.Cancel, je.DroneOffline, je.History, je.Published,
    je.PublishFailed, je.DroneTarget})


class Durable(Protocol):
    """What the other parts need of the committer: read the state, stamp events, commit."""

    @property
    def state(self) -> State: ...

    def wall(self) -> float: ...

    async def commit(self, event: je.Event) -> Outcome: ...


@attrs.define
class _Pending:
    event: je.Event
    done: trio.Event = attrs.field(factory=trio.Event)
    outcome: Outcome | None = None


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


class Committer:
    """Owns the state, the journal and the writer task. ``hub`` gets every notice of every
    applied event; ``on_change`` is called after a batch that may have made work available."""

    def __init__(self, cfg: SwarmdConfig, policy: Policy, *, wall: Callable[[], float],
                 hub: EventHub, on_change: Callable[[], None]) -> None:
        self.cfg = cfg
        self.wall = wall
        self.state_dir = Path(cfg.state_dir)
        self.policy = policy
        self.state = State(policy)
        self.journal: jr.Journal | None = None
        self.hub = hub
        self.on_change = on_change
        self.on_batch: Callable[[int, float], None] | None = None  # metrics hook
        self.recovered_events = 0
        self._send, self._recv = trio.open_memory_channel[_Pending](MAX_BATCH)
        self._snapshot_running = False
        self._since_compact = 0  # events journaled since the last snapshot

    # ------------------------------------------------------------------ recovery
    def recover(self) -> None:
        """Replay the journal and open it for appending (blocking; call before serving)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
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

    # ------------------------------------------------------------------ commit
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

    # ------------------------------------------------------------------ the writer task
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer: runs until cancelled; JournalWriteFailed out of it is fatal."""
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
                if out.ok and (type(p.event) in WAKING or (
                        isinstance(p.event, je.Register) and len(out.notices) > 1)):
                    changed = True
                p.done.set()
            if changed:
                self.on_change()
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

    @property
    def snapshot_running(self) -> bool:
        """A forked snapshot writer has not been reaped yet."""
        return self._snapshot_running
