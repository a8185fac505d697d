"""Replay a scheduling workload through the real scheduler in virtual time (SPEC section 11).

``python -m bench.simulate WORKLOAD.json [--policy critical|fifo]`` prints one JSON object.

The simulation drives the real core, nothing else: ``swarmd.state.State`` receives the same
events the shell would journal (``register``, ``history``, ``submit``, ``assign``,
``complete``) and ``swarmd.scheduler.pick`` makes every decision. It is discrete-event: no
trio, no sleeping, time is a float that jumps from one completion to the next.

- Every drone registers at t=0 with the workload's ``cores`` and ``slots`` (default 1).
- The workload's ``seconds_on_8_cores`` is fed as history (keyed by ``cat/pn``), then one
  request is submitted with the packages in emerge order and their dependencies.
- Whenever drones have a free slot they ask, in the workload's drone order, and keep asking
  (an assignment is a state change that may change another drone's answer) until a full round
  assigns nothing. A drone that got None waits for the next completion.
- A package takes ``seconds_on_8_cores * 8 / cores`` on the drone that builds it (the speed
  model the SPEC fixes); it completes with success, ``duration_s`` and an artifact.

Lower bound (both terms are valid for any schedule under that speed model):

- critical path: the longest dependency path, every package timed on the drone with the
  most cores (``seconds_on_8_cores * 8 / max_cores``);
- work: total core-seconds ``sum(seconds_on_8_cores * 8)`` over the total capacity
  ``sum(cores * slots)`` (a slot runs at its drone's full speed in this model).

``lower_bound_s`` is the larger of the two; ``ratio = makespan_s / lower_bound_s``.

The baseline ``fifo`` gives an asking drone the first ready entry in emerge order, blind to
cores, estimates and critical paths.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from swarmd import scheduler
from swarmd.atoms import cp_of
from swarmd.state import Drone, Entry, State

POLICIES = ("critical", "fifo")
Picker = Callable[[State, Drone, float], Entry | None]


@attrs.frozen(kw_only=True)
class Schedule:
    """What one simulated run did: per CPV, where and when it was built."""

    policy: str
    makespan_s: float
    start: dict[str, float]
    end: dict[str, float]
    drone: dict[str, str]
    picks: int  # calls to the policy, None answers included


def fifo_pick(state: State, drone: Drone, now: float) -> Entry | None:
    """The baseline: the first ready entry in emerge order, whoever asks."""
    if len(drone.builds) >= drone.slots or not state.ready_index:
        return None
    entries = state.entries
    return min((entries[k[3]] for k in state.ready_index), key=lambda e: e.order)


def critical_pick(state: State, drone: Drone, now: float) -> Entry | None:
    return scheduler.pick(state, drone, now)


PICKERS: dict[str, Picker] = {"critical": critical_pick, "fifo": fifo_pick}


def _check(workload: dict[str, Any]) -> None:
    seen: set[str] = set()
    for p in workload["packages"]:
        if p["cpv"] in seen:
            raise ValueError(f"package {p['cpv']} is listed twice")
        seen.add(p["cpv"])
    for p in workload["packages"]:
        for d in p.get("deps", []):
            if d not in seen:
                raise ValueError(f"{p['cpv']} depends on {d}, which is not in the workload")
    if not workload["drones"]:
        raise ValueError("the workload has no drones")


def run(workload: dict[str, Any], policy: str = "critical") -> Schedule:
    """Simulate ``workload`` under ``policy`` and return the schedule it produced."""
    if policy not in PICKERS:
        raise ValueError(f"unknown policy {policy!r}; one of {', '.join(POLICIES)}")
    _check(workload)
    choose = PICKERS[policy]
    packages = workload["packages"]
    seconds8 = {p["cpv"]: float(p["seconds_on_8_cores"]) for p in packages}
    state = State()
    apply = state.apply

    drones: list[Drone] = []
    for spec in workload["drones"]:
        out = apply({"type": "register", "ts": 0.0, "name": spec["name"],
                     "session": "sim-" + spec["name"], "cores": int(spec["cores"]),
                     "slots": int(spec.get("slots", 1))})
        drones.append(state.drones[out.result["drone_id"]])
    apply({"type": "history", "ts": 0.0,
           "packages": {cp_of(p["cpv"]): float(p["seconds_on_8_cores"]) for p in packages}})
    out = apply({"type": "submit", "ts": 0.0, "request_id": "sim",
                 "packages": [p["cpv"] for p in packages],
                 "deps": {p["cpv"]: list(p.get("deps", [])) for p in packages}})
    if not out.ok:
        raise ValueError(f"submit refused: {out.message}")

    start: dict[str, float] = {}
    end: dict[str, float] = {}
    where: dict[str, str] = {}
    running: list[tuple[float, int, str, str, float]] = []  # (end, n, build, lease, duration)
    now = 0.0
    n = 0
    picks = 0
    total = len(packages)
    while True:
        assigned = True
        while assigned:  # ask until a full round changes nothing
            assigned = False
            for d in drones:
                while len(d.builds) < d.slots:
                    picks += 1
                    e = choose(state, d, now)
                    if e is None:
                        break
                    n += 1
                    lease = f"lease-{n}"
                    res = apply({"type": "assign", "ts": now, "entry_id": e.id,
                                 "drone_id": d.id, "session": d.session, "lease": lease})
                    if not res.ok:
                        raise RuntimeError(f"assign of {e.cpv} to {d.name} refused: "
                                           f"{res.message}")
                    duration = seconds8[e.cpv] * 8.0 / d.cores
                    start[e.cpv] = now
                    where[e.cpv] = d.name
                    heapq.heappush(running, (now + duration, n, res.result["build_id"], lease,
                                             duration))
                    assigned = True
        if not running:
            break
        now = running[0][0]
        while running and running[0][0] <= now:
            _, _, bid, lease, duration = heapq.heappop(running)
            cpv = state.builds[bid].cpv
            res = apply({"type": "complete", "ts": now, "build_id": bid, "lease": lease,
                         "result": "success", "duration_s": duration,
                         "artifact": {"path": f"sim/{cpv}.gpkg.tar",
                                      "size": int(seconds8[cpv] * 1000),
                                      "sha256": hashlib.sha256(cpv.encode()).hexdigest()}})
            if not res.ok:
                raise RuntimeError(f"completion of {cpv} refused: {res.message}")
            end[cpv] = now
    if len(end) != total:
        stuck = sorted(set(seconds8) - set(end))[:5]
        raise RuntimeError(f"{policy}: {total - len(end)} packages never built, e.g. {stuck}")
    return Schedule(policy=policy, makespan_s=max(end.values(), default=0.0), start=start,
                    end=end, drone=where, picks=picks)


def dependency_violations(workload: dict[str, Any], sched: Schedule) -> list[str]:
    """Packages that started before one of their dependencies had finished."""
    return [
        f"{p['cpv']} started at {sched.start[p['cpv']]:.1f} before {d} ended at "
        f"{sched.end[d]:.1f}"
        for p in workload["packages"]
        for d in p.get("deps", [])
        if sched.start[p["cpv"]] < sched.end[d]
    ]


def bounds(workload: dict[str, Any]) -> dict[str, float]:
    """The two lower bounds on any schedule's makespan (see the module docstring)."""
    drones = workload["drones"]
    max_cores = max(int(d["cores"]) for d in drones)
    capacity = sum(int(d["cores"]) * int(d.get("slots", 1)) for d in drones)
    finish: dict[str, float] = {}
    work = 0.0
    # The packages are in emerge order, but do not rely on it: memoised depth-first walk.
    by_cpv = {p["cpv"]: p for p in workload["packages"]}
    for root in by_cpv:
        stack = [root]
        while stack:
            cpv = stack[-1]
            if cpv in finish:
                stack.pop()
                continue
            todo = [d for d in by_cpv[cpv].get("deps", []) if d not in finish]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            before = max((finish[d] for d in by_cpv[cpv].get("deps", [])), default=0.0)
            finish[cpv] = before + float(by_cpv[cpv]["seconds_on_8_cores"]) * 8.0 / max_cores
    for p in workload["packages"]:
        work += float(p["seconds_on_8_cores"]) * 8.0
    critical = max(finish.values(), default=0.0)
    return {"critical_path_s": critical, "work_bound_s": work / capacity,
            "lower_bound_s": max(critical, work / capacity)}


def simulate(workload: dict[str, Any], policy: str = "critical", *,
             baseline: bool = True) -> dict[str, Any]:
    """Simulate ``workload`` under ``policy`` (and the FIFO baseline) and summarise.

    Raises RuntimeError if a package was built before one of its dependencies.
    """
    b = bounds(workload)
    lb = b["lower_bound_s"]
    sched = run(workload, policy)
    bad = dependency_violations(workload, sched)
    if bad:
        raise RuntimeError(f"{len(bad)} dependency violations, e.g. {bad[0]}")
    out: dict[str, Any] = {
        "workload": workload.get("name", ""),
        "policy": policy,
        "packages": len(workload["packages"]),
        "drones": len(workload["drones"]),
        "cores": sorted((int(d["cores"]) for d in workload["drones"]), reverse=True),
        "makespan_s": round(sched.makespan_s, 1),
        "lower_bound_s": round(lb, 1),
        "ratio": round(sched.makespan_s / lb, 4) if lb else 1.0,
        "critical_path_s": round(b["critical_path_s"], 1),
        "work_bound_s": round(b["work_bound_s"], 1),
        "picks": sched.picks,
    }
    if baseline:
        fifo = sched if policy == "fifo" else run(workload, "fifo")
        out["fifo_makespan_s"] = round(fifo.makespan_s, 1)
        out["fifo_ratio"] = round(fifo.makespan_s / lb, 4) if lb else 1.0
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.simulate", description=__doc__.split(
        "\n")[0])
    ap.add_argument("workload", type=Path, help="workload JSON (SPEC section 11)")
    ap.add_argument("--policy", choices=POLICIES, default="critical")
    args = ap.parse_args(argv)
    workload = json.loads(args.workload.read_text())
    json.dump(simulate(workload, args.policy), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
