"""Drone soft state: what heartbeats and lease calls tell between journal writes.

Not journaled (heartbeat times, load, progress, lateness, lease polls): it is rebuilt from the
drones' next heartbeats after a restart. ``status`` combines it with the durable state: a drone
that is ``ready`` or ``building`` in the journal but late with its heartbeats is ``degraded``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from swarmd.events import EventHub
from swarmd.journal_events import DroneStatus
from swarmd.wakeups import Wakeups

if TYPE_CHECKING:
    from swarmd.committer import Durable

log = logging.getLogger("swarmd")

POLL_STALE_S = 40.0  # a drone with a free slot that has not asked for work this long is stuck


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


class SoftState:
    def __init__(self, durable: Durable, hub: EventHub, wakeups: Wakeups,
                 wall: Callable[[], float]) -> None:
        self._durable = durable
        self._hub = hub
        self._wakeups = wakeups
        self._wall = wall
        self._soft: dict[str, DroneSoft] = {}

    def get(self, drone_id: str) -> DroneSoft | None:
        return self._soft.get(drone_id)

    def forget(self, drone_id: str) -> None:
        """Drop what is known of ``drone_id`` (a new session starts from nothing)."""
        self._soft.pop(drone_id, None)

    def touch(self, drone_id: str) -> DroneSoft:
        """The drone was heard from now."""
        s = self._soft.get(drone_id)
        if s is None:
            s = DroneSoft(last_beat=trio.current_time(), last_beat_wall=self._wall())
            self._soft[drone_id] = s
        else:
            s.last_beat = trio.current_time()
            s.last_beat_wall = self._wall()
        return s

    def progress(self, drone_id: str, build_id: str) -> float | None:
        s = self._soft.get(drone_id)
        return s.progress.get(build_id) if s is not None else None

    def is_late(self, drone_id: str) -> bool:
        s = self._soft.get(drone_id)
        return s is not None and s.late

    def unavailable(self, drone_id: str) -> bool:
        """Not worth waiting for: late, or it has a free slot but has not asked for work lately
        (a stuck or misconfigured agent must not make smaller drones pass on packages)."""
        s = self._soft.get(drone_id)
        if s is None or s.late:
            return True
        d = self._durable.state.drones.get(drone_id)
        free_slot = d is not None and len(d.builds) < d.slots
        return (free_slot and s.polling == 0
                and trio.current_time() - s.last_poll > POLL_STALE_S)

    def status(self, drone_id: str) -> DroneStatus:
        """ready, building, degraded or offline (durable state, and lateness)."""
        st = self._durable.state
        d = st.drones[drone_id]
        status = st.drone_status(d, self._wall())
        if status in (DroneStatus.READY, DroneStatus.BUILDING) and self.is_late(drone_id):
            return DroneStatus.DEGRADED
        return status

    def set_late(self, drone_id: str, late: bool) -> None:
        """The heartbeat watcher's verdict: publish the status change and re-decide leases."""
        s = self._soft.get(drone_id)
        if s is None or s.late == late:
            return
        s.late = late
        d = self._durable.state.drones.get(drone_id)
        if d is None:
            return
        if late:
            log.warning("drone %s is late: no heartbeat for %.0f s", d.name,
                        trio.current_time() - s.last_beat, extra={"ids": {"drone": d.id}})
        notice = self._durable.state.drone_notice(d, self._wall())
        notice["data"]["status"] = self.status(drone_id)
        self._hub.publish(notice)
        self._wakeups.poke()

    def clear_late(self, drone_id: str) -> None:
        """Forget lateness without a notice (the drone was declared offline)."""
        s = self._soft.get(drone_id)
        if s is not None:
            s.late = False

    def publish(self, notice: dict[str, Any]) -> None:
        """Publish a live notice of soft state (build progress) on the event hub."""
        self._hub.publish(notice)
