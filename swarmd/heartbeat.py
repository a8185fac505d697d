"""Heartbeat watchers: one task per registered drone, in one nursery.

Each watcher waits for its drone's beats on a memory channel under a cancel scope. No beat
for two intervals (the expected one is late by more than an interval): the drone is
``degraded`` (soft state, published). No beat for ``offline_after_s``: a ``drone_offline``
event is journaled, which revokes its leases and puts its packages back in the queue with no
retry counted. A new session (re-register) replaces the watcher; the old one is cancelled.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from swarmd import journal_events as je

if TYPE_CHECKING:
    from swarmd.committer import Durable
    from swarmd.dronesoft import SoftState
    from swarmd.wakeups import Wakeups

log = logging.getLogger("swarmd.heartbeat")


class _Watch:
    def __init__(self, session: str) -> None:
        self.session = session
        self.scope = trio.CancelScope()
        self.send, self.recv = trio.open_memory_channel[None](1)


class Supervisor:
    def __init__(self, durable: Durable, soft: SoftState, wakeups: Wakeups, *,
                 interval: float, offline_after: float) -> None:
        self.durable = durable
        self.soft = soft
        self.wakeups = wakeups
        self.interval = interval
        self.offline_after = offline_after
        self.watches: dict[str, _Watch] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def watch(self, drone_id: str, session: str) -> None:
        """Start (or replace) the watcher of ``drone_id`` for ``session``."""
        assert self._nursery is not None
        old = self.watches.pop(drone_id, None)
        if old is not None:
            old.scope.cancel()
        w = _Watch(session)
        self.watches[drone_id] = w
        self._nursery.start_soon(self._watch, drone_id, w)

    def beat(self, drone_id: str) -> None:
        w = self.watches.get(drone_id)
        if w is None:
            return
        try:
            w.send.send_nowait(None)
        except trio.WouldBlock:
            pass  # a beat is already waiting to be seen: one is enough

    async def _watch(self, drone_id: str, w: _Watch) -> None:
        with w.scope:
            last = trio.current_time()
            late = False
            while True:
                deadline = last + (self.offline_after if late else 2 * self.interval)
                if not late:
                    deadline = min(deadline, last + self.offline_after)
                got = False
                with trio.move_on_at(deadline):
                    await w.recv.receive()
                    got = True
                if got:
                    last = trio.current_time()
                    if late:
                        late = False
                        self.soft.set_late(drone_id, False)
                    continue
                if not late and trio.current_time() < last + self.offline_after:
                    late = True
                    self.soft.set_late(drone_id, True)
                    continue
                break
            d = self.durable.state.drones.get(drone_id)
            name = d.name if d else drone_id
            log.warning("drone %s offline: no heartbeat for %.0f s; its builds go back to the "
                        "queue", name, trio.current_time() - last, extra={"ids": {"drone": drone_id}})
            out = await self.durable.commit(je.DroneOffline(
                ts=self.durable.wall(), drone_id=drone_id, session=w.session,
                why=f"drone offline: no heartbeat for {self.offline_after:.0f} s"))
            self.soft.clear_late(drone_id)
            if out.ok:
                self.wakeups.poke()
        if self.watches.get(drone_id) is w:
            del self.watches[drone_id]
