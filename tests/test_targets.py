"""Targets, USE and publishing in the pure state and the scheduler (SPEC section 12)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from swarmd import scheduler
from swarmd.api import online_targets, waiting_reason
from swarmd.state import State
from swarmlib.target import normalize, target_id

T1 = {"arch": "amd64", "chost": "x86_64-pc-linux-gnu", "cflags": "-O2  -pipe",
      "accept_keywords": "~amd64 amd64", "repos": {"gentoo": "git:abc"}}


def register(s: State, name: str, tid: str, cores: int = 8, ts: float = 1.0) -> str:
    out = s.apply({"type": "register", "name": name, "session": "s-" + name, "cores": cores,
                   "slots": 1, "ts": ts, "target_id": tid,
                   "target": {"arch": tid} if tid else None})
    assert out.ok
    return str(out.result["drone_id"])


def submit(s: State, rid: str, pkgs: list[str], tid: str = "",
           use: dict[str, list[str]] | None = None, deps: dict[str, list[str]] | None = None,
           ts: float = 2.0) -> dict[str, Any]:
    ev: dict[str, Any] = {"type": "submit", "request_id": rid, "packages": pkgs,
                          "deps": deps or {}, "ts": ts}
    if tid:
        ev["target_id"] = tid
        ev["target"] = {"arch": tid}
    if use is not None:
        ev["use"] = use
    out = s.apply(ev)
    assert out.ok
    return dict(out.result)


def test_target_id_is_stable_and_normalized() -> None:
    same = {**T1, "cflags": "-O2 -pipe", "accept_keywords": "amd64 ~amd64"}
    assert target_id(T1) == target_id(same)
    assert len(target_id(T1)) == 16
    assert target_id(T1) != target_id({**T1, "repos": {"gentoo": "git:abd"}})
    assert normalize(T1)["accept_keywords"] == "amd64 ~amd64"
    for bad, field in (({**T1, "cflags": 3}, "target.cflags"), ({**T1, "bogus": ""}, "bogus"),
                       ({**T1, "repos": ["x"]}, "target.repos")):
        with pytest.raises(ValueError, match=re.escape(field)):
            normalize(bad)


def test_drone_gets_only_its_targets_work_and_others_wait_visibly() -> None:
    s = State()
    da = register(s, "a", "ta")
    # 100 entries of a target no drone has, queued first and ranked first ...
    submit(s, "r-x", [f"x/p{i}-1" for i in range(100)], tid="tx", ts=2.0)
    # ... do not hold up the one entry of the drone's own target.
    submit(s, "r-a", ["a/mine-1"], tid="ta", ts=3.0)
    e = scheduler.pick(s, s.drones[da], 4.0)
    assert e is not None
    assert e.cpv == "a/mine-1"
    targets = online_targets(s)
    x = next(e for e in s.entries.values() if e.cpv == "x/p0-1")
    assert waiting_reason(x, targets) == "no drone for target tx"
    assert waiting_reason(s.entries[e.id], targets) is None
    # Assigning an entry of another target to the drone is refused and changes nothing.
    out = s.apply({"type": "assign", "entry_id": x.id, "drone_id": da, "session": "s-a",
                   "lease": "L", "ts": 5.0})
    assert not out.ok
    assert x.state == "ready"
    # A request without a target builds anywhere.
    submit(s, "r-any", ["z/any-1"], ts=6.0)
    got = []
    while (e2 := scheduler.pick(s, s.drones[da], 7.0)) is not None:
        got.append(e2.cpv)
        s.apply({"type": "assign", "entry_id": e2.id, "drone_id": da, "session": "s-a",
                 "lease": "L" + e2.id, "ts": 7.0})
        s.apply({"type": "complete", "build_id": e2.build_id, "lease": "L" + e2.id,
                 "result": "success", "ts": 8.0})
    assert sorted(got) == ["a/mine-1", "z/any-1"]


def test_same_cpv_for_two_targets_or_uses_is_two_builds() -> None:
    s = State()
    r1 = submit(s, "r1", ["a/x-1"], tid="t1", use={"a/x-1": ["ssl"]})
    r2 = submit(s, "r2", ["a/x-1"], tid="t2", use={"a/x-1": ["ssl"]})
    r3 = submit(s, "r3", ["a/x-1"], tid="t1", use={"a/x-1": []})
    r4 = submit(s, "r4", ["a/x-1"], tid="t1", use={"a/x-1": ["ssl"]})
    assert (r1["queued"], r2["queued"], r3["queued"]) == (1, 1, 1)
    assert r4["merged"] == 1
    assert r4["queued"] == 0


def test_unbuildable_excludes_the_drone_and_fails_when_none_is_left() -> None:
    s = State()
    d1 = register(s, "d1", "t")
    d2 = register(s, "d2", "t")
    submit(s, "r", ["a/x-1"], tid="t")
    e = next(iter(s.entries.values()))
    for n, d in enumerate((d1, d2)):
        assert scheduler.pick(s, s.drones[d], 3.0) is e
        s.apply({"type": "assign", "entry_id": e.id, "drone_id": d, "session": s.drones[d].session,
                 "lease": f"L{n}", "ts": 3.0})
        out = s.apply({"type": "complete", "build_id": e.build_id, "lease": f"L{n}",
                       "result": "returned", "unbuildable": True,
                       "error": "plan: would compile a/dep-1 from source", "ts": 4.0})
        assert out.ok
        assert d in e.excluded
        if n == 0:
            assert e.state == "ready"
            assert scheduler.pick(s, s.drones[d1], 5.0) is None  # not offered to d1 again
    assert e.state == "failed"
    assert e.reason is not None
    assert "no drone of target t can build it" in e.reason
    assert "plan: would compile a/dep-1" in e.reason
    assert e.attempts == 0  # a refused plan is not a failed build
    assert s.requests["r"].finished is not None


def test_publishing_holds_dependents_until_published() -> None:
    s = State()
    d = register(s, "d", "")
    submit(s, "r", ["a/lib-1", "a/app-1"], deps={"a/app-1": ["a/lib-1"]})
    lib = next(e for e in s.entries.values() if e.cpv == "a/lib-1")
    app = next(e for e in s.entries.values() if e.cpv == "a/app-1")
    s.apply({"type": "assign", "entry_id": lib.id, "drone_id": d, "session": "s-d",
             "lease": "L", "ts": 3.0})
    bid = lib.build_id
    out = s.apply({"type": "complete", "build_id": bid, "lease": "L", "result": "success",
                   "publish": True, "ts": 4.0,
                   "artifact": {"path": "a/lib/lib-1-1.gpkg.tar.b-1.upload", "size": 1,
                                "sha256": "ab" * 32}})
    assert out.ok
    assert lib.state == "building"
    assert s.builds[str(bid)].state == "publishing"
    assert s.drones[d].builds == []  # the drone is free
    assert app.state == "pending"  # not before lib is in the index
    assert "L" not in s.lease_index  # a late report with the old lease is refused
    refused = s.apply({"type": "cancel", "target": lib.id, "ts": 4.5})
    assert not refused.ok
    s.apply({"type": "published", "build_id": bid, "path": "a/lib/lib-1-1.gpkg.tar",
             "size": 1, "sha256": "ab" * 32, "portage_build_id": 1, "ts": 5.0})
    assert lib.state == "built"
    assert app.state == "ready"
    assert s.packages["a/lib-1"].artifact == {
        "path": "a/lib/lib-1-1.gpkg.tar", "size": 1, "sha256": "ab" * 32,
        "portage_build_id": 1}


def test_publish_failed_is_a_failed_attempt() -> None:
    s = State()
    d = register(s, "d", "")
    submit(s, "r", ["a/lib-1"])
    e = next(iter(s.entries.values()))
    s.apply({"type": "assign", "entry_id": e.id, "drone_id": d, "session": "s-d",
             "lease": "L", "ts": 3.0})
    bid = e.build_id
    s.apply({"type": "complete", "build_id": bid, "lease": "L", "result": "success",
             "publish": True, "ts": 4.0, "artifact": {"path": "x", "size": 1, "sha256": "0"}})
    out = s.apply({"type": "publish_failed", "build_id": bid, "error": "corrupt upload",
                   "ts": 5.0})
    assert out.ok
    assert e.state == "ready"
    assert e.attempts == 1
    assert d in e.failed_on
    assert s.builds[str(bid)].error == "publish: corrupt upload"
    again = s.apply({"type": "published", "build_id": bid, "path": "x", "size": 1,
                     "sha256": "0" * 64, "ts": 6.0})
    assert not again.ok


def test_a_plan_that_needs_queued_packages_teaches_the_edge() -> None:
    """emerge --tree prints a package once: in a diamond one parent loses its edge. The drone's
    plan names what it would compile; if that is queued, the package waits for it instead of
    failing, and no drone is excluded."""
    s = State()
    d = register(s, "d", "t")
    submit(s, "r", ["a/lib-1", "a/app-1", "a/other-1"], tid="t")  # no edges known
    app = next(e for e in s.entries.values() if e.cpv == "a/app-1")
    lib = next(e for e in s.entries.values() if e.cpv == "a/lib-1")
    s.apply({"type": "assign", "entry_id": app.id, "drone_id": d, "session": "s-d",
             "lease": "L", "ts": 3.0})
    out = s.apply({"type": "complete", "build_id": app.build_id, "lease": "L",
                   "result": "returned", "unbuildable": True, "needs": ["a/lib-1"],
                   "error": "plan: would compile a/lib-1 from source", "ts": 4.0})
    assert out.ok
    assert app.state == "pending"
    assert app.deps == [lib.id]
    assert app.id in lib.dependents
    assert app.excluded == []
    assert app.attempts == 0
    # Needing a package that is neither queued nor built (emerge's --tree did not list it, or
    # it was unpublished): it is queued for the same request, and the package waits for it.
    other = next(e for e in s.entries.values() if e.cpv == "a/other-1")
    s.apply({"type": "assign", "entry_id": other.id, "drone_id": d, "session": "s-d",
             "lease": "L2", "ts": 5.0})
    s.apply({"type": "complete", "build_id": other.build_id, "lease": "L2",
             "result": "returned", "unbuildable": True, "needs": ["x/elsewhere-1"],
             "error": "plan: would compile x/elsewhere-1 from source", "ts": 6.0})
    assert other.state == "pending"
    new = next(e for e in s.entries.values() if e.cpv == "x/elsewhere-1")
    assert new.state == "ready"
    assert new.requests == ["r"]
    assert new.target_id == "t"
    assert other.deps == [new.id]
    assert new.id in s.requests["r"].entries
    assert s.requests["r"].unfinished == 4


def test_a_plan_that_needs_a_built_package_is_a_refusal() -> None:
    """The package it needs is built already: the drone's view of the binhost is stale (or
    another USE was built): not a missing edge; the drone is excluded."""
    s = State()
    d = register(s, "d", "t")
    submit(s, "r0", ["a/lib-1"], tid="t")
    lib = next(iter(s.entries.values()))
    s.apply({"type": "assign", "entry_id": lib.id, "drone_id": d, "session": "s-d",
             "lease": "L0", "ts": 2.5})
    s.apply({"type": "complete", "build_id": lib.build_id, "lease": "L0", "result": "success",
             "ts": 2.6})
    submit(s, "r", ["a/app-1"], tid="t")
    app = next(e for e in s.entries.values() if e.cpv == "a/app-1")
    s.apply({"type": "assign", "entry_id": app.id, "drone_id": d, "session": "s-d",
             "lease": "L", "ts": 3.0})
    s.apply({"type": "complete", "build_id": app.build_id, "lease": "L", "result": "returned",
             "unbuildable": True, "needs": ["a/lib-1"], "ts": 4.0,
             "error": "plan: would compile a/lib-1 from source"})
    assert app.state == "failed"
    assert d in app.excluded


def test_refused_entry_fails_when_the_last_other_drone_leaves() -> None:
    s = State()
    a = register(s, "a", "t")
    b = register(s, "b", "t")
    submit(s, "r", ["a/x-1"], tid="t")
    e = next(iter(s.entries.values()))
    s.apply({"type": "assign", "entry_id": e.id, "drone_id": a, "session": "s-a",
             "lease": "L", "ts": 3.0})
    s.apply({"type": "complete", "build_id": e.build_id, "lease": "L", "result": "returned",
             "unbuildable": True, "error": "plan: blocked", "ts": 4.0})
    assert e.state == "ready"  # b may still build it
    s.apply({"type": "drone_offline", "drone_id": b, "ts": 5.0})
    assert e.state == "failed"
    assert e.reason is not None
    assert "no drone of target t" in e.reason


def test_cancel_while_publishing_then_publish_fails_is_cancelled_not_rebuilt() -> None:
    s = State()
    d = register(s, "d", "")
    submit(s, "r", ["a/lib-1"])
    e = next(iter(s.entries.values()))
    s.apply({"type": "assign", "entry_id": e.id, "drone_id": d, "session": "s-d",
             "lease": "L", "ts": 3.0})
    bid = e.build_id
    s.apply({"type": "complete", "build_id": bid, "lease": "L", "result": "success",
             "publish": True, "ts": 4.0, "artifact": {"path": "x", "size": 1, "sha256": "0"}})
    s.apply({"type": "cancel", "target": "r", "ts": 4.5})
    assert e.state == "building"
    s.apply({"type": "publish_failed", "build_id": bid, "error": "corrupt", "ts": 5.0})
    assert e.state == "cancelled"
    assert s.requests["r"].finished == 5.0


def test_a_build_id_collision_is_built_again_without_counting_an_attempt() -> None:
    s = State()
    d = register(s, "d", "")
    submit(s, "r", ["a/lib-1"])
    e = next(iter(s.entries.values()))
    s.apply({"type": "assign", "entry_id": e.id, "drone_id": d, "session": "s-d",
             "lease": "L", "ts": 3.0})
    bid = e.build_id
    s.apply({"type": "complete", "build_id": bid, "lease": "L", "result": "success",
             "publish": True, "ts": 4.0, "artifact": {"path": "x", "size": 1, "sha256": "0"}})
    s.apply({"type": "publish_failed", "build_id": bid, "error": "build id collision",
             "collision": True, "ts": 5.0})
    assert e.state == "ready"
    assert e.attempts == 0
    assert s.drones[d].failures_in_row == 0
