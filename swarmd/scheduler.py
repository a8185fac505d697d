"""Which ready package a drone asking for work gets. Pure: no I/O, time is a parameter.

The ready entries are kept best-first by (request priority, critical path, emerge order) in
``State.ready_index``: a library that fifteen packages wait for has the longest path below it
and goes first.

A drone's speed is modelled by its cores: a package estimated at ``t`` seconds on 8 cores takes
``t * 8 / cores`` on a drone with ``cores``. The asking drone does not simply take the best
entry: walking the entries best-first, each one is placed, in imagination, on whichever drone
would finish it first - the asking drone (free now) or a faster drone that is busy but will be
free soon (or idle and about to ask). The first entry whose earliest finish is on the asking
drone is the answer. So a long package is not given to a small drone while a much faster one is
about to be free, and small packages still go to whatever is free.

A drone that already failed a package is skipped for it while another eligible drone exists.
A drone in cool-down (too many failures in a row) gets nothing.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from swarmd.state import Drone, Entry, State

SCAN_LIMIT = 256  # entries looked at per decision; the best ones are at the front
OTHERS_LIMIT = 16  # faster drones considered per decision


def speed(cores: int) -> float:
    return max(cores, 1) / 8.0


def duration_on(e: Entry, cores: int) -> float:
    return e.estimate_s / speed(cores)


def eligible(d: Drone, now: float) -> bool:
    return d.online and (d.cooldown_until is None or now >= d.cooldown_until)


def free_at(state: State, d: Drone, now: float) -> float:
    """When ``d`` is expected to have a free slot."""
    if len(d.builds) < d.slots:
        return now
    ends = []
    for bid in d.builds:
        b = state.builds[bid]
        est = duration_on(state.entries[b.entry_id], d.cores)
        end = b.started + est
        if end <= now:
            # Overran its estimate: it will end some time soon; guess a quarter more.
            end = now + 0.25 * est
        ends.append(end)
    return min(ends) if ends else now


def pick(
    state: State,
    drone: Drone,
    now: float,
    busy: Callable[[str], bool] | None = None,
) -> Entry | None:
    """The entry ``drone`` should build now, or None (nothing ready, or better left to others).

    ``busy(drone_id)`` may say a drone is unavailable for reasons only the shell knows
    (late heartbeat); such drones are not waited for.
    """
    if not eligible(drone, now) or len(drone.builds) >= drone.slots:
        return None
    if not state.ready_index:
        return None
    faster = [
        d for d in state.drones.values()
        if d.cores > drone.cores and d.id != drone.id and eligible(d, now)
        and (busy is None or not busy(d.id))
    ]
    virtual_free = {d.id: free_at(state, d, now) for d in faster}
    # Only the few faster drones that free up first can matter for the next decisions.
    others = heapq.nsmallest(OTHERS_LIMIT, faster, key=lambda d: virtual_free[d.id])
    any_other = any(
        d.id != drone.id and eligible(d, now) for d in state.drones.values()
    )
    for i, key in enumerate(state.ready_index):
        if i >= SCAN_LIMIT:
            break
        e = state.entries[key[3]]
        if drone.id in e.failed_on and any_other and _someone_else_can(state, e, drone, now):
            continue
        mine = now + duration_on(e, drone.cores)
        best_other: Drone | None = None
        best_end = mine
        for d in others:
            if d.id in e.failed_on:
                continue
            end = virtual_free[d.id] + duration_on(e, d.cores)
            if end < best_end:
                best_end = end
                best_other = d
        if best_other is None:
            return e
        # Reserve the faster drone for this entry and look at the next one.
        virtual_free[best_other.id] = best_end
    return None


def _someone_else_can(state: State, e: Entry, drone: Drone, now: float) -> bool:
    return any(
        d.id != drone.id and d.id not in e.failed_on and eligible(d, now)
        for d in state.drones.values()
    )
