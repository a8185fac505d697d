"""Property tests of the pure queue state (swarmd.state) with Hypothesis.

- Random DAGs, submitted and driven to completion by fake drones: nothing is built before its
  dependencies, and everything gets built.
- Random event sequences (a RuleBasedStateMachine): after every step the live state equals its
  own snapshot round trip and the replay of every journaled event, the invariants of the
  module docstring hold, and a refused event changes nothing.
"""

from __future__ import annotations

import collections
import functools
import json
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from swarmd import scheduler
from swarmd.state import (
    ACTIVE,
    ENTRY_STATES,
    FINAL,
    SNAPSHOT_TABLES,
    Outcome,
    Policy,
    State,
    can_build,
    records,
)

# ------------------------------------------------------------------ invariants


def held_entries(s: State, rid: str) -> list[str]:
    """The entries request ``rid`` still holds (a cancelled request lets go of shared ones)."""
    return [eid for eid in s.requests[rid].entries if rid in s.entries[eid].requests]


def check_invariants(s: State) -> None:
    # builds being published hold no lease and no drone slot; their entry is still building
    unfinished_builds = {bid: b for bid, b in s.builds.items()
                         if b.state not in ("finished", "publishing")}
    publishing = {b.entry_id: b for b in s.builds.values() if b.state == "publishing"}
    by_entry = collections.defaultdict(list)
    for b in unfinished_builds.values():
        by_entry[b.entry_id].append(b)

    for e in s.entries.values():
        assert e.state in ENTRY_STATES
        deps = [s.entries[d] for d in e.deps]
        all_built = all(d.state == "built" for d in deps)
        # ready iff unfinished, unassigned and every dependency built
        if e.state in ("pending", "ready"):
            assert (e.state == "ready") == all_built, (e.id, e.state, [d.state for d in deps])
            assert e.waiting == sum(1 for d in deps if d.state != "built"), e.id
            assert e.build_id is None, e.id
            assert e.drone is None, e.id
        if e.state not in FINAL:
            # a failed, cancelled or blocked dependency blocks everything downstream
            assert all(d.state == "built" or d.state not in FINAL for d in deps), e.id
            assert s.active_by_cpv.get(e.key or e.cpv) == e.id
        if e.id in publishing:
            assert e.state == "building", e.id
            assert e.build_id == publishing[e.id].id, e.id
            assert by_entry[e.id] == [], e.id
        elif e.state in ACTIVE:
            assert all_built, e.id
            # exactly one active build, with a valid lease, held by an online drone
            assert len(by_entry[e.id]) == 1, e.id
            b = by_entry[e.id][0]
            assert e.build_id == b.id
            assert s.lease_index[b.lease] == b.id
            assert b.state == ("assigned" if e.state == "assigned" else "building")
            d = s.drones[b.drone_id]
            assert d.online
            assert b.id in d.builds
            assert b.session == d.session
        else:
            assert by_entry[e.id] == [], e.id
        if e.state == "built":
            assert (e.key or e.cpv) in s.packages
        for did in e.deps:
            assert e.id in s.entries[did].dependents
        assert e.attempts <= s.policy.max_retries + 1
    # one unfinished entry per CPV
    assert s.active_by_cpv == {e.key or e.cpv: e.id for e in s.entries.values()
                               if e.state not in FINAL}
    # leases index exactly the unfinished builds
    assert s.lease_index == {b.lease: bid for bid, b in unfinished_builds.items()}
    for d in s.drones.values():
        assert sorted(d.builds) == sorted(b.id for b in unfinished_builds.values()
                                          if b.drone_id == d.id)
        assert len(d.builds) <= d.slots
        if not d.online:
            assert d.builds == []
        assert s.drone_by_name[d.name] == d.id
    # a request is finished iff every entry it holds is final
    for r in s.requests.values():
        held = held_entries(s, r.id)
        unfinished = sum(1 for eid in held if s.entries[eid].state not in FINAL)
        assert r.unfinished == unfinished, r.id
        assert (r.finished is not None) == (unfinished == 0), r.id
        for eid in r.entries:
            assert eid in s.entries
    # derived indexes match the entries
    assert s.counts == {k: sum(1 for e in s.entries.values() if e.state == k)
                        for k in ENTRY_STATES}
    assert s.ready_index == sorted(s._key(e) for e in s.entries.values() if e.state == "ready")
    by_target: dict[str, list[Any]] = {}
    for k in s.ready_index:
        by_target.setdefault(s.entries[k[3]].target_id, []).append(k)
    assert s.ready_by_target == by_target
    # the scheduler's drone indexes: every online drone by its cores, the free ones apart
    online: dict[int, set[str]] = {}
    free: dict[int, set[str]] = {}
    for d in s.drones.values():
        if d.online:
            online.setdefault(d.cores, set()).add(d.id)
            if len(d.builds) < d.slots:
                free.setdefault(d.cores, set()).add(d.id)
    assert {c: set(ids) for c, ids in s.online_by_cores.items()} == online
    assert {c: set(ids) for c, ids in s.free_by_cores.items()} == free
    # the snapshot's fast records are attrs.asdict
    for table in SNAPSHOT_TABLES:
        objs = list(getattr(s, table).values())
        assert records(objs) == [attrs.asdict(o) for o in objs], table


def roundtrip(snap: dict[str, Any]) -> dict[str, Any]:
    """What the journal would give back (the snapshot is written as JSON)."""
    out: dict[str, Any] = json.loads(json.dumps(snap))
    return out


def derived(s: State) -> tuple[Any, ...]:
    return (s.ready_index, s.counts, s.active_by_cpv, s.lease_index, s.drone_by_name,
            s.online_by_cores, s.free_by_cores, s.ready_by_target,
            {x for x in s.refused if s.entries[x].state not in FINAL})


# ------------------------------------------------------------------ (a) random DAGs


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[str], dict[str, list[str]]]:
    """A random DAG over CPVs: package i may depend only on packages listed before it in a
    hidden topological order; the submission order is shuffled."""
    n = draw(st.integers(1, 25))
    topo = [f"cat-{i % 4}/pkg{i}-1.{i}" for i in range(n)]
    deps = {
        topo[i]: draw(st.lists(st.sampled_from(topo[:i]), unique=True, max_size=4)) if i else []
        for i in range(n)
    }
    order = draw(st.permutations(topo))
    return list(order), deps


def make_drones(s: State, ts: float, cores: list[int]) -> None:
    for i, c in enumerate(cores):
        out = s.apply({"type": "register", "name": f"drone{i}", "session": f"s{i}",
                       "cores": c, "slots": 1 + i % 2, "ts": ts})
        assert out.ok


def drive(s: State, data: st.DataObject, ts: float) -> list[str]:
    """Assign ready work to the fake drones and finish builds in a random order until the
    queue is empty; returns the CPVs in the order they were built."""
    built: list[str] = []
    leases = 0
    returns = 0
    while True:
        for d in s.drones.values():
            while len(d.builds) < d.slots:
                e = scheduler.pick(s, d, ts)
                if e is None:
                    break
                leases += 1
                out = s.apply({"type": "assign", "entry_id": e.id, "drone_id": d.id,
                               "session": d.session, "lease": f"L{leases}", "ts": ts})
                assert out.ok, out
        running = [b for b in s.builds.values() if b.state != "finished"]
        if not running:
            break
        b = data.draw(st.sampled_from(sorted(running, key=lambda b: b.id)), label="finish")
        ts += 10.0
        result = "success"
        if returns < 5 and data.draw(st.integers(0, 9), label="return?") == 0:
            result = "returned"
            returns += 1
        e = s.entries[b.entry_id]
        if result == "success":
            # the property: every dependency is built before its dependent
            for dep in e.deps:
                assert s.entries[dep].state == "built"
                assert s.entries[dep].cpv in built
        out = s.apply({"type": "complete", "build_id": b.id, "lease": b.lease,
                       "result": result, "duration_s": 30.0, "ts": ts})
        assert out.ok, out
        if result == "success":
            built.append(e.cpv)
        check_invariants(s)
    return built


@settings(max_examples=200, deadline=None, derandomize=True)
@given(dags(), st.lists(st.sampled_from([2, 8, 32]), min_size=1, max_size=3), st.data())
def test_random_dag_is_built_in_dependency_order(
    dag: tuple[list[str], dict[str, list[str]]], cores: list[int], data: st.DataObject
) -> None:
    order, deps = dag
    s = State()
    make_drones(s, 1.0, cores)
    out = s.apply({"type": "submit", "request_id": "r1", "packages": order,
                   "deps": {p: deps[p] for p in order}, "ts": 2.0})
    assert out.ok
    assert out.result["queued"] == len(order)
    check_invariants(s)
    # priority is the critical path: the longest chain of estimates from an entry to the end
    by_cpv = {e.cpv: e for e in s.entries.values()}
    dependents: dict[str, list[str]] = {p: [] for p in order}
    for p, ds in deps.items():
        for d in ds:
            dependents[d].append(p)

    @functools.cache
    def crit(p: str) -> float:
        return by_cpv[p].estimate_s + max((crit(q) for q in dependents[p]), default=0.0)

    for p in order:
        assert by_cpv[p].crit_s == pytest.approx(crit(p)), p
    built = drive(s, data, 3.0)
    # everything was built, exactly once, after all of its dependencies
    assert sorted(built) == sorted(order)
    pos = {cpv: i for i, cpv in enumerate(built)}
    for p, ds in deps.items():
        for d in ds:
            assert pos[d] < pos[p], (d, p)
    assert all(e.state == "built" for e in s.entries.values())
    assert s.requests["r1"].finished is not None
    assert s.ready_index == []


@settings(max_examples=100, deadline=None, derandomize=True)
@given(dags(), st.data())
def test_overlapping_requests_share_entries_and_respect_order(
    dag: tuple[list[str], dict[str, list[str]]], data: st.DataObject
) -> None:
    """Several requests over one DAG: a CPV queued twice is one entry; each request's edges
    (within what was queued when it came) are respected; everything ends built."""
    order, deps = dag
    s = State()
    make_drones(s, 1.0, [8, 8])
    nreq = data.draw(st.integers(1, 4), label="requests")
    edges: list[tuple[str, str]] = []
    asked: set[str] = set()
    for k in range(nreq):
        pkgs = data.draw(st.lists(st.sampled_from(order), min_size=1, unique=True), label="pkgs")
        sub_deps = {p: [d for d in deps[p] if d in pkgs] for p in pkgs}
        out = s.apply({"type": "submit", "request_id": f"r{k}", "packages": pkgs,
                       "deps": sub_deps, "ts": 2.0 + k})
        assert out.ok
        asked |= set(pkgs)
        for p in pkgs:
            e = s.entries[s.active_by_cpv[p]]
            if e.requests[0] == f"r{k}":  # created by this request: it got this request's edges
                edges += [(d, p) for d in sub_deps[p]]
        assert out.result["queued"] + out.result["merged"] == len(pkgs)
        check_invariants(s)
    built = drive(s, data, 10.0)
    assert sorted(built) == sorted(asked)  # never built twice
    pos = {cpv: i for i, cpv in enumerate(built)}
    for d, p in edges:
        assert pos[d] < pos[p], (d, p)
    assert all(r.finished is not None for r in s.requests.values())


def test_resubmitting_a_built_cpv_is_skipped_and_a_duplicate_request_is_the_first() -> None:
    s = State()
    make_drones(s, 1.0, [8])
    first = s.apply({"type": "submit", "request_id": "r1", "packages": ["a/x-1", "a/y-1"],
                     "deps": {"a/y-1": ["a/x-1"]}, "ts": 2.0})
    assert first.result["queued"] == 2
    assert [e.state for e in s.entries.values()] == ["ready", "pending"]
    dup = s.apply({"type": "submit", "request_id": "r1", "packages": ["a/z-1"], "ts": 3.0})
    assert dup.result["duplicate"] is True
    assert dup.result["entries"] == first.result["entries"]
    assert len(s.entries) == 2
    e = s.entries[s.active_by_cpv["a/x-1"]]
    s.apply({"type": "assign", "entry_id": e.id, "drone_id": "d-0001", "session": "s0",
             "lease": "L1", "ts": 4.0})
    s.apply({"type": "complete", "build_id": e.build_id, "lease": "L1", "result": "success",
             "ts": 5.0})
    again = s.apply({"type": "submit", "request_id": "r2", "packages": ["a/x-1", "a/y-1"],
                     "ts": 6.0})
    assert again.result["skipped_cpvs"] == ["a/x-1"]
    assert again.result["merged_cpvs"] == ["a/y-1"]
    assert again.result["queued"] == 0
    check_invariants(s)


def test_critical_path_goes_first() -> None:
    """A library that many packages wait for is handed out before a leaf."""
    s = State()
    make_drones(s, 1.0, [8])
    pkgs = ["x/leaf-1", "x/lib-1"] + [f"x/app{i}-1" for i in range(3)]
    deps = {f"x/app{i}-1": ["x/lib-1"] for i in range(3)}
    s.apply({"type": "submit", "request_id": "r", "packages": pkgs, "deps": deps, "ts": 2.0})
    e = scheduler.pick(s, s.drones["d-0001"], 3.0)
    assert e is not None
    assert e.cpv == "x/lib-1"


# ------------------------------------------------------------------ (b) random event sequences

CPVS = [f"app-misc/p{i}-1.{i}" for i in range(7)]
NAMES = ["alpha", "beta", "gamma"]
MOSTLY = st.sampled_from([True, True, True, True, False])


class QueueMachine(RuleBasedStateMachine):
    """Applies random events to a live State and journals them (as JSON) in a list."""

    def __init__(self) -> None:
        super().__init__()
        self.policy = Policy(max_retries=1, failure_streak=2, cooldown_s=10.0,
                             cooldown_max_s=40.0)
        self.live = State(self.policy)
        # Fed only the journaled events, in order, from an empty state: a replay kept up to
        # date step by step (a full replay from scratch is done at teardown).
        self.replica = State(self.policy)
        self.journal: list[str] = []
        self.outcomes: list[dict[str, Any]] = []
        self.ts = 1000.0
        self.n = 0
        self.refused = 0
        self.snap = self.live.to_snapshot()

    def mint(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def commit(self, event: dict[str, Any]) -> Outcome:
        """As the shell does it: sequence number, journal, then apply the journaled event."""
        self.ts += 7.5
        event = {**event, "ts": self.ts, "seq": len(self.journal) + 1}
        line = json.dumps(event, sort_keys=True)
        self.journal.append(line)
        before = self.snap  # taken by the invariants after the previous step
        out = self.live.apply(json.loads(line))
        self.outcomes.append(json.loads(json.dumps(attrs.asdict(out))))
        assert json.loads(json.dumps(attrs.asdict(self.replica.apply(json.loads(line))))) \
            == self.outcomes[-1]
        if not out.ok:
            self.refused += 1
            after = self.live.to_snapshot()
            assert after["seq"] == event["seq"]
            after["seq"] = before["seq"]
            assert after == before, f"refused {event['type']} changed the state"
            assert out.notices == []
        return out

    # ---- rules
    @rule(data=st.data())
    def submit(self, data: st.DataObject) -> None:
        pkgs = data.draw(st.lists(st.sampled_from(CPVS), min_size=1, max_size=5, unique=True))
        # edges only from a higher to a lower CPV index: the graph stays acyclic across requests
        deps = {p: data.draw(st.lists(st.sampled_from(CPVS[:CPVS.index(p)]), unique=True,
                                      max_size=3)) if CPVS.index(p) else [] for p in pkgs}
        rid = self.mint("r-")
        if self.live.requests and data.draw(st.integers(0, 5)) == 0:
            rid = data.draw(st.sampled_from(sorted(self.live.requests)))
        dup = rid in self.live.requests
        ev: dict[str, Any] = {"type": "submit", "request_id": rid, "packages": pkgs,
                              "deps": deps, "priority": data.draw(st.integers(-2, 2)),
                              "cycles": []}
        tid = data.draw(st.sampled_from(["", "", "t1", "t2"]))
        if tid:
            ev["target_id"] = tid
            ev["target"] = {"arch": tid}
        if data.draw(st.booleans()):
            ev["use"] = {p: data.draw(st.sampled_from([[], ["a"], ["a", "b"]])) for p in pkgs}
        out = self.commit(ev)
        assert out.ok
        assert out.result["duplicate"] is dup
        if not dup:
            r = out.result
            assert r["queued"] + r["merged"] + r["skipped"] == len(pkgs)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        s = self.live
        live_targets = sorted(r.id for r in s.requests.values() if r.finished is None) + sorted(
            e.id for e in s.entries.values() if e.state not in FINAL)
        if data.draw(MOSTLY) and live_targets:
            target = data.draw(st.sampled_from(live_targets))
        else:
            target = data.draw(st.sampled_from(sorted(s.requests) + sorted(s.entries) + ["nope"]))
        out = self.commit({"type": "cancel", "target": target})
        if target == "nope":
            assert out.code == "not_found"
        elif out.ok and target in self.live.entries:
            assert self.live.entries[target].state == "cancelled"
        elif out.ok:
            assert self.live.requests[target].finished is not None

    @rule(name=st.sampled_from(NAMES), cores=st.sampled_from([1, 4, 16]),
          slots=st.integers(1, 2), tid=st.sampled_from(["", "t1", "t2"]))
    def register(self, name: str, cores: int, slots: int, tid: str) -> None:
        out = self.commit({"type": "register", "name": name, "session": self.mint("s-"),
                           "cores": cores, "slots": slots, "hostname": name + ".lan",
                           "target_id": tid, "target": {"arch": tid} if tid else None})
        assert out.ok
        d = self.live.drones[out.result["drone_id"]]
        assert d.online
        assert d.builds == []

    @precondition(lambda self: bool(self.live.drones) and bool(self.live.entries))
    @rule(data=st.data())
    def assign(self, data: st.DataObject) -> None:
        s = self.live
        ready = [key[3] for key in s.ready_index]
        if data.draw(MOSTLY) and ready:
            eid = data.draw(st.sampled_from(ready))
        else:
            eid = data.draw(st.sampled_from(sorted(s.entries)))
        d = s.drones[data.draw(st.sampled_from(sorted(s.drones)))]
        session = d.session if data.draw(MOSTLY) else "stale-session"
        should = (s.entries[eid].state == "ready" and d.online and session == d.session
                  and len(d.builds) < d.slots and can_build(d, s.entries[eid]))
        out = self.commit({"type": "assign", "entry_id": eid, "drone_id": d.id,
                           "session": session, "lease": self.mint("lease-")})
        assert out.ok == should
        if out.ok:
            assert s.entries[eid].state == "assigned"

    @precondition(lambda self: bool(self.live.ready_index))
    @rule(data=st.data())
    def lease_best(self, data: st.DataObject) -> None:
        """What the shell does when a drone asks for work: the scheduler picks, assign."""
        s = self.live
        free = [d for d in s.drones.values() if d.online and len(d.builds) < d.slots]
        if not free:
            return
        d = data.draw(st.sampled_from(sorted(free, key=lambda d: d.id)))
        e = scheduler.pick(s, d, self.ts)
        if e is None:
            return
        out = self.commit({"type": "assign", "entry_id": e.id, "drone_id": d.id,
                           "session": d.session, "lease": self.mint("lease-")})
        assert out.ok

    @precondition(lambda self: bool(self.live.lease_index))
    @rule(data=st.data(), result=st.sampled_from(["success", "success", "success", "failed"]))
    def finish_running(self, data: st.DataObject, result: str) -> None:
        """A drone reports a build it holds, with its valid lease."""
        s = self.live
        b = s.builds[data.draw(st.sampled_from(sorted(s.lease_index.values())))]
        out = self.commit({"type": "complete", "build_id": b.id, "lease": b.lease,
                           "result": result, "duration_s": 42.0})
        assert out.ok
        if result == "success":
            assert s.entries[b.entry_id].state == "built"
            e = s.entries[b.entry_id]
            assert s.packages[e.key or b.cpv].build_id == b.id

    def _build(self, data: st.DataObject) -> tuple[str, str, bool]:
        s = self.live
        running = sorted(bid for bid, b in s.builds.items()
                         if b.state not in ("finished", "publishing"))
        if data.draw(MOSTLY) and running:
            bid = data.draw(st.sampled_from(running))
        else:
            bid = data.draw(st.sampled_from(sorted(s.builds)))
        b = s.builds[bid]
        lease = b.lease if data.draw(MOSTLY) else "stale-lease"
        valid = b.state not in ("finished", "publishing") and lease == b.lease
        return bid, lease, valid

    @precondition(lambda self: bool(self.live.builds))
    @rule(data=st.data())
    def started(self, data: st.DataObject) -> None:
        bid, lease, valid = self._build(data)
        out = self.commit({"type": "started", "build_id": bid, "lease": lease})
        assert out.ok == valid
        if not valid:
            assert out.code == "stale_lease"

    @precondition(lambda self: bool(self.live.builds))
    @rule(data=st.data(),
          result=st.sampled_from(["success", "success", "failed", "failed", "returned"]),
          duration=st.sampled_from([0.0, 12.5, 600.0]))
    def complete(self, data: st.DataObject, result: str, duration: float) -> None:
        bid, lease, valid = self._build(data)
        publish = result == "success" and data.draw(st.booleans())
        unbuildable = result == "returned" and data.draw(st.booleans())
        ev: dict[str, Any] = {"type": "complete", "build_id": bid, "lease": lease,
                              "result": result, "duration_s": duration,
                              "artifact": {"path": "x.gpkg.tar", "sha256": "ab" * 32},
                              "error": None if result == "success" else "boom"}
        if publish:
            ev["publish"] = True
        if unbuildable:
            ev["unbuildable"] = True
            if data.draw(st.booleans()):
                ev["needs"] = data.draw(st.lists(st.sampled_from(CPVS), max_size=2, unique=True))
        out = self.commit(ev)
        assert out.ok == valid
        if valid:
            b = self.live.builds[bid]
            e = self.live.entries[b.entry_id]
            expect = {"success": {"built"}, "returned": {"ready"},
                      "failed": {"ready", "failed"}}[result]
            if publish:
                expect = {"building"}
                assert b.state == "publishing"
            if unbuildable and e.state == "pending":
                expect = {"pending"}  # waits for the queued packages its drone's plan needs
                assert b.drone_id not in e.excluded
            elif unbuildable:
                expect = {"ready", "failed"}
                assert b.drone_id in e.excluded
            assert e.state in expect

    @precondition(lambda self: any(b.state == "publishing" for b in self.live.builds.values()))
    @rule(data=st.data(), ok=st.booleans())
    def publish_done(self, data: st.DataObject, ok: bool) -> None:
        s = self.live
        bid = data.draw(st.sampled_from(sorted(
            b.id for b in s.builds.values() if b.state == "publishing")))
        if ok:
            out = self.commit({"type": "published", "build_id": bid, "path": "c/p/x-1.gpkg.tar",
                               "size": 10, "sha256": "cd" * 32, "portage_build_id": 1})
        else:
            out = self.commit({"type": "publish_failed", "build_id": bid, "error": "corrupt",
                               "collision": data.draw(st.booleans())})
        assert out.ok
        e = s.entries[s.builds[bid].entry_id]
        assert e.state in ({"built"} if ok else {"ready", "failed", "cancelled"})

    @precondition(lambda self: bool(self.live.drones))
    @rule(data=st.data(), tid=st.sampled_from(["", "t1", "t2"]))
    def drone_target(self, data: st.DataObject, tid: str) -> None:
        d = self.live.drones[data.draw(st.sampled_from(sorted(self.live.drones)))]
        out = self.commit({"type": "drone_target", "drone_id": d.id, "session": d.session,
                           "target_id": tid, "target": {"arch": tid} if tid else None})
        assert out.ok
        assert d.target_id == tid

    @precondition(lambda self: bool(self.live.drones))
    @rule(data=st.data())
    def drone_offline(self, data: st.DataObject) -> None:
        d = self.live.drones[data.draw(st.sampled_from(sorted(self.live.drones)))]
        ev: dict[str, Any] = {"type": "drone_offline", "drone_id": d.id, "why": "timeout"}
        kind = data.draw(st.integers(0, 2))
        if kind == 1:
            ev["session"] = d.session
        elif kind == 2:
            ev["session"] = "stale-session"
        out = self.commit(ev)
        assert out.ok == (kind != 2)
        if out.ok:
            assert not d.online
            assert d.builds == []

    @rule(data=st.data())
    def history(self, data: st.DataObject) -> None:
        cps = data.draw(st.dictionaries(st.sampled_from(["app-misc/p1", "app-misc/p3", "x/y"]),
                                        st.floats(1.0, 5000.0), max_size=2))
        out = self.commit({"type": "history", "packages": cps})
        assert out.result == {"recorded": len(cps)}

    # ---- invariants
    @invariant()
    def snapshot_and_replay_equal_live(self) -> None:
        self.snap = snap = self.live.to_snapshot()
        # from_snapshot(live.to_snapshot()) == live, through JSON as the journal stores it
        assert roundtrip(snap) == snap
        again = State.from_snapshot(roundtrip(snap), self.policy)
        assert again.to_snapshot() == snap
        assert derived(again) == derived(self.live)
        # replay(journal) == live
        assert self.replica.to_snapshot() == snap
        assert derived(self.replica) == derived(self.live)

    def teardown(self) -> None:
        replayed = State(self.policy)
        for line, live_out in zip(self.journal, self.outcomes, strict=True):
            out = replayed.apply(json.loads(line))
            assert json.loads(json.dumps(attrs.asdict(out))) == live_out
        assert replayed.to_snapshot() == self.live.to_snapshot()
        assert derived(replayed) == derived(self.live)

    @invariant()
    def docstring_invariants(self) -> None:
        check_invariants(self.live)


QueueMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
TestQueueMachine = QueueMachine.TestCase


# ------------------------------------------------------------------ refusals change nothing


def _busy_state() -> tuple[State, str, str]:
    s = State()
    make_drones(s, 1.0, [8])
    s.apply({"type": "submit", "request_id": "r1", "packages": ["a/x-1", "a/y-1"],
             "deps": {"a/y-1": ["a/x-1"]}, "ts": 2.0})
    eid = s.active_by_cpv["a/x-1"]
    out = s.apply({"type": "assign", "entry_id": eid, "drone_id": "d-0001", "session": "s0",
                   "lease": "L1", "ts": 3.0})
    return s, out.result["build_id"], eid


@pytest.mark.parametrize(
    "event",
    [
        # the build was returned and re-assigned: the old lease is stale
        {"type": "complete", "build_id": "b-0000001", "lease": "L1", "result": "success"},
        {"type": "started", "build_id": "b-0000001", "lease": "L1"},
        {"type": "complete", "build_id": "b-0000002", "lease": "L1", "result": "failed"},
        {"type": "complete", "build_id": "b-9999999", "lease": "L2", "result": "success"},
        {"type": "assign", "entry_id": "e-000002", "drone_id": "d-0001", "session": "s-new",
         "lease": "L9"},
        {"type": "assign", "entry_id": "e-000001", "drone_id": "d-0001", "session": "s-new",
         "lease": "L9"},
        {"type": "cancel", "target": "no-such"},
        {"type": "drone_offline", "drone_id": "d-0001", "session": "s0"},
        {"type": "drone_offline", "drone_id": "d-0404"},
    ],
)
def test_refused_event_changes_nothing(event: dict[str, Any]) -> None:
    s, bid, eid = _busy_state()
    # a new session returns the build, then the entry is leased again with a new lease
    s.apply({"type": "register", "name": "drone0", "session": "s-new", "ts": 4.0})
    assert s.entries[eid].state == "ready"
    out = s.apply({"type": "assign", "entry_id": eid, "drone_id": "d-0001",
                   "session": "s-new", "lease": "L2", "ts": 5.0})
    assert out.result["build_id"] == "b-0000002"
    before = s.to_snapshot()
    derived_before = json.dumps(derived(s), sort_keys=True, default=list)
    out = s.apply({**event, "ts": 6.0})
    assert not out.ok
    assert out.code in ("stale_lease", "not_found", "session_superseded", "conflict")
    assert s.to_snapshot() == before
    assert json.dumps(derived(s), sort_keys=True, default=list) == derived_before
    check_invariants(s)


def test_stale_complete_after_drone_offline() -> None:
    s, bid, eid = _busy_state()
    s.apply({"type": "drone_offline", "drone_id": "d-0001", "ts": 4.0})
    assert s.entries[eid].state == "ready"
    assert s.entries[eid].attempts == 0  # no retry counted
    before = s.to_snapshot()
    out = s.apply({"type": "complete", "build_id": bid, "lease": "L1", "result": "success",
                   "ts": 5.0})
    assert (out.ok, out.code) == (False, "stale_lease")
    assert s.to_snapshot() == before
    assert "a/x-1" not in s.packages


def test_cancel_blocks_dependents_with_reason() -> None:
    s, bid, eid = _busy_state()
    out = s.apply({"type": "cancel", "target": eid, "ts": 4.0})
    assert out.ok
    y = s.entries[s.requests["r1"].entries[1]]
    assert y.state == "blocked"
    assert y.reason == "dependency a/x-1 cancelled"
    assert out.result == {"id": eid, "cancelled": [eid], "blocked": [y.id]}
    assert s.builds[bid].result == "cancelled"
    assert s.lease_index == {}
    assert s.requests["r1"].finished == 4.0
    check_invariants(s)
