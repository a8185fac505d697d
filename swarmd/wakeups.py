"""Wake-ups of lease long-polls: a drone waiting for work is woken when work may be there.

``poke`` wakes every waiting drone (something that may make work available changed), but only
when something is ready at all: a fleet of idle drones in long-polls would otherwise all wake
for every change. ``nudge`` wakes a few drones by id (work was left for them). The 5 s re-check
in ``DroneOps.lease`` covers what time alone changes (cool-downs ending, estimates aging).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import trio


class Wakeups:
    def __init__(self, has_work: Callable[[], bool]) -> None:
        self._has_work = has_work
        self._waiting: dict[str, trio.Event] = {}  # drone id -> its long-poll's wake-up

    def poke(self) -> None:
        """Wake every waiting long-poll, if anything is ready. Not a checkpoint."""
        if not self._has_work():
            return
        waiting, self._waiting = self._waiting, {}
        for ev in waiting.values():
            ev.set()

    def nudge(self, drone_ids: Iterable[str]) -> None:
        """Wake the long-polls of these drones only. Not a checkpoint."""
        for did in drone_ids:
            ev = self._waiting.pop(did, None)
            if ev is not None:
                ev.set()

    def waiting(self) -> int:
        """How many drones are waiting now."""
        return len(self._waiting)

    async def wait(self, drone_id: str) -> None:
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
