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

The imagination also sees one step ahead: an entry whose last unbuilt dependencies are being
built right now (on the asking drone or on the faster drones considered) becomes ready when
they finish, and if it ranks ahead of the entry under consideration it claims its faster drone
first. Without this a small drone keeps declining a package "for the fast drone", and the fast
drone, when free, keeps taking the next link of a more critical chain that nobody saw coming:
the declined package starves (on bench/workloads/deep-chains.json: 1.10x the lower bound
without the look-ahead, 1.02x with it; docs/BENCHMARKS-scheduler.md).

A drone with no faster drone around takes the best entry it may build. Estimates are seconds
on 8 cores from ``State.history``; a build that overran its estimate is guessed to need a
quarter of it more.

A drone that already failed a package is skipped for it while another eligible drone exists.
A drone in cool-down (too many failures in a row) gets nothing.

Targets (SPEC section 12): a drone sees only the ready entries of its own ``target_id`` and
those of requests that named no target (``State.ready_by_target``), minus the entries its own
plan refused; faster drones are imagined only for entries they may build (``can_build``). So
work that no drone can build waits in its own list and holds nothing else up.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Container, Iterable, Iterator

from swarmd.state import Build, Drone, Entry, State, can_build

SCAN_LIMIT = 64  # entries looked at per decision; the best ones are at the front
OTHERS_LIMIT = 16  # faster drones considered per decision
LOOK_LIMIT = 16 * OTHERS_LIMIT  # drones examined per decision to find them

Key = tuple[int, float, int, str]


def speed(cores: int) -> float:
    return max(cores, 1) / 8.0


def duration_on(e: Entry, cores: int) -> float:
    return e.estimate_s / speed(cores)


def eligible(d: Drone, now: float) -> bool:
    return d.online and (d.cooldown_until is None or now >= d.cooldown_until)


def expected_end(state: State, b: Build, d: Drone, now: float) -> float:
    """When build ``b`` on drone ``d`` is expected to finish."""
    est = duration_on(state.entries[b.entry_id], d.cores)
    end = b.started + est
    if end <= now:
        # Overran its estimate: it will end some time soon; guess a quarter more.
        end = now + 0.25 * est
    return end


def free_at(state: State, d: Drone, now: float) -> float:
    """When ``d`` is expected to have a free slot."""
    if len(d.builds) < d.slots:
        return now
    ends = [expected_end(state, state.builds[bid], d, now) for bid in d.builds]
    return min(ends) if ends else now


def soon_ready(state: State, drones: Iterable[Drone],
               now: float) -> list[tuple[Key, float, Entry]]:
    """Pending entries whose unbuilt dependencies are all being built on ``drones``, best-first.

    Each comes with the time it is expected to become ready (its last dependency's end).
    """
    count: dict[str, int] = {}
    ready_at: dict[str, float] = {}
    for d in drones:
        for bid in d.builds:
            b = state.builds[bid]
            end = expected_end(state, b, d, now)
            for sid in state.entries[b.entry_id].dependents:
                count[sid] = count.get(sid, 0) + 1
                if end > ready_at.get(sid, 0.0):
                    ready_at[sid] = end
    out = []
    for sid, n in count.items():
        s = state.entries[sid]
        if s.state == "pending" and s.waiting == n:
            out.append(((-s.req_priority, -s.crit_s, s.order, s.id), ready_at[sid], s))
    out.sort(key=lambda t: t[0])
    return out


def ready_for(state: State, drone: Drone) -> Iterator[Key]:
    """The ready entries ``drone`` may be offered, best-first (its target's and any-target)."""
    anyone = state.ready_by_target.get("", [])
    if not drone.target_id:
        return iter(anyone)
    mine = state.ready_by_target.get(drone.target_id, [])
    if not anyone:
        return iter(mine)
    if not mine:
        return iter(anyone)
    return heapq.merge(mine, anyone)


def pick(
    state: State,
    drone: Drone,
    now: float,
    busy: Callable[[str], bool] | None = None,
    reserved: list[str] | None = None,
    claimed: Container[str] = (),
) -> Entry | None:
    """The entry ``drone`` should build now, or None (nothing ready, or better left to others).

    ``busy(drone_id)`` may say a drone is unavailable for reasons only the shell knows
    (late heartbeat); such drones are not waited for. When the answer is None because entries
    were left to faster drones, their ids are appended to ``reserved`` (the shell wakes them).
    ``claimed`` holds ids of entries already picked for other drones whose assignment is not
    yet applied (the shell's group commit): they are passed over, so concurrent decisions do
    not all pick the same entry and then retry.
    """
    if not eligible(drone, now) or len(drone.builds) >= drone.slots:
        return None
    if not state.ready_index:
        return None
    others, virtual_free = _faster_drones(state, drone, now, busy)
    if not others:
        # Nobody could finish anything sooner: the best entry this drone may build.
        for i, key in enumerate(ready_for(state, drone)):
            if i >= SCAN_LIMIT:
                break
            if key[3] in claimed:
                continue
            e = state.entries[key[3]]
            if e.excluded and drone.id in e.excluded:
                continue
            if drone.id in e.failed_on and _someone_else_can(state, e, drone, now):
                continue
            return e
        return None
    # Seconds per estimated second (estimates are on 8 cores), hoisted out of the loops.
    my_factor = 1.0 / speed(drone.cores)
    factors = [(d, 1.0 / speed(d.cores)) for d in others]
    best_factor = min(f for _, f in factors)
    min_vf = min(virtual_free[d.id] for d in others)
    upcoming = soon_ready(state, [drone, *others], now)
    u = 0
    for i, key in enumerate(ready_for(state, drone)):
        if i >= SCAN_LIMIT:
            break
        # Entries about to become ready that rank ahead of this one claim their drones first.
        while u < len(upcoming) and upcoming[u][0] < key:
            _, at, s = upcoming[u]
            u += 1
            _reserve(s, at, drone, others, virtual_free)
            min_vf = min(virtual_free[d.id] for d in others)
        if key[3] in claimed:
            continue
        e = state.entries[key[3]]
        if e.excluded and drone.id in e.excluded:
            continue
        if e.failed_on and drone.id in e.failed_on and _someone_else_can(state, e, drone, now):
            continue
        est = e.estimate_s
        mine = now + est * my_factor
        # Cheap bound first: no faster drone can beat the asking one on this entry.
        if min_vf + est * best_factor >= mine:
            return e
        best_other: Drone | None = None
        best_end = mine
        for d, factor in factors:
            if e.failed_on and d.id in e.failed_on:
                continue
            if (e.target_id or e.excluded) and not can_build(d, e):
                continue
            end = virtual_free[d.id] + est * factor
            if end < best_end:
                best_end = end
                best_other = d
        if best_other is None:
            return e
        # Reserve the faster drone for this entry and look at the next one.
        virtual_free[best_other.id] = best_end
        min_vf = min(virtual_free[d.id] for d in others)
        if reserved is not None and best_other.id not in reserved:
            reserved.append(best_other.id)
    # Every scanned entry is better off on a faster drone, but the queue is deeper than what
    # they can take soon: there is work for everyone, so take the next one down the list
    # rather than stand idle.
    for key in itertools.islice(ready_for(state, drone), SCAN_LIMIT, 2 * SCAN_LIMIT):
        if key[3] in claimed:
            continue
        e = state.entries[key[3]]
        if e.excluded and drone.id in e.excluded:
            continue
        if not (e.failed_on and drone.id in e.failed_on
                and _someone_else_can(state, e, drone, now)):
            return e
    return None


def _faster_drones(
    state: State, drone: Drone, now: float, busy: Callable[[str], bool] | None
) -> tuple[list[Drone], dict[str, float]]:
    """The (at most OTHERS_LIMIT) faster drones that free up first, and when each does.

    Only the few faster drones that free up first can matter for the next decisions. Drones
    with a free slot are free now, the earliest possible: they come from the state's index of
    free drones by core count, fastest first, and once OTHERS_LIMIT of them are found the search
    stops. Otherwise a sample of busy faster drones (at most 4 * OTHERS_LIMIT, fastest first)
    fills the rest by when ``free_at`` says they free up. Each of the two passes examines at
    most LOOK_LIMIT drones (skipped ones count), so the cost of a decision is bounded by these
    limits, not by the size of the fleet.
    """
    classes = sorted((c for c in state.online_by_cores if c > drone.cores), reverse=True)
    free: list[Drone] = []
    looked = 0  # drones examined, skipped ones (cooling down, late) included
    for c in classes:
        for did in state.free_by_cores.get(c, ()):
            looked += 1
            if looked > LOOK_LIMIT:
                break
            d = state.drones[did]
            if not eligible(d, now) or (busy is not None and busy(did)):
                continue
            free.append(d)
            if len(free) >= OTHERS_LIMIT:
                return free, {d.id: now for d in free}
    virtual_free = {d.id: now for d in free}
    busy_ones: list[Drone] = []
    looked = 0
    for c in classes:
        free_here = state.free_by_cores.get(c, {})
        for did in state.online_by_cores[c]:
            looked += 1
            if looked > LOOK_LIMIT:
                break
            if did in free_here:
                continue
            d = state.drones[did]
            if not eligible(d, now) or (busy is not None and busy(did)):
                continue
            busy_ones.append(d)
            if len(busy_ones) >= 4 * OTHERS_LIMIT:
                break
        if len(busy_ones) >= 4 * OTHERS_LIMIT:
            break
    if not busy_ones:
        return free, virtual_free
    for d in busy_ones:
        virtual_free[d.id] = free_at(state, d, now)
    rest = heapq.nsmallest(OTHERS_LIMIT - len(free), busy_ones, key=lambda d: virtual_free[d.id])
    return [*free, *rest], virtual_free


def _reserve(e: Entry, at: float, drone: Drone, others: list[Drone],
             virtual_free: dict[str, float]) -> None:
    """Book ``e`` (ready at ``at``) on the faster drone that would finish it first, if any
    finishes it before the asking drone would (were it still free at ``at``)."""
    best_other: Drone | None = None
    best_end = at + duration_on(e, drone.cores)
    for d in others:
        if d.id in e.failed_on or not can_build(d, e):
            continue
        end = max(virtual_free[d.id], at) + duration_on(e, d.cores)
        if end < best_end:
            best_end = end
            best_other = d
    if best_other is not None:
        virtual_free[best_other.id] = best_end


def _someone_else_can(state: State, e: Entry, drone: Drone, now: float) -> bool:
    return any(
        d.id != drone.id and d.id not in e.failed_on and eligible(d, now) and can_build(d, e)
        for d in state.drones.values()
    )
