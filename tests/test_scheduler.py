"""The scheduler's decisions on hand-made cases, and its quality on the shipped workloads.

Every case is built with the events the shell journals (register, history, submit, assign,
complete) and asks the real ``pick``; time is a parameter, nothing sleeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("PORTAGE_OVERRIDE_EPREFIX", "/")

from bench.simulate import bounds, dependency_violations, run, simulate  # noqa: E402
from swarmd.scheduler import pick  # noqa: E402
from swarmd.state import Drone, Policy, State  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = REPO / "bench" / "workloads"


class Swarm:
    """A State driven by events, with the few moves these tests need."""

    def __init__(self, drones: dict[str, int], policy: Policy | None = None) -> None:
        self.state = State(policy)
        self.now = 0.0
        self.ids: dict[str, str] = {}
        self.leases: dict[str, tuple[str, str]] = {}  # cpv -> (build id, lease)
        for name, cores in drones.items():
            out = self.apply({"type": "register", "name": name, "session": "s-" + name,
                              "cores": cores})
            self.ids[name] = out.result["drone_id"]

    def apply(self, ev: dict[str, Any]) -> Any:
        out = self.state.apply({"ts": self.now, **ev})
        assert out.ok, out.message
        return out

    def drone(self, name: str) -> Drone:
        return self.state.drones[self.ids[name]]

    def submit(self, packages: dict[str, float], deps: dict[str, list[str]] | None = None,
               ) -> None:
        from swarmd.atoms import cp_of

        self.apply({"type": "history", "packages": {cp_of(c): s for c, s in packages.items()}})
        self.apply({"type": "submit", "request_id": f"r{len(self.state.requests)}",
                    "packages": list(packages), "deps": deps or {}})

    def ask(self, name: str) -> str | None:
        e = pick(self.state, self.drone(name), self.now)
        return None if e is None else e.cpv

    def assign(self, name: str, cpv: str) -> None:
        d = self.drone(name)
        eid = self.state.active_by_cpv[cpv]
        lease = f"lease-{cpv}-{len(self.state.builds)}"
        out = self.apply({"type": "assign", "entry_id": eid, "drone_id": d.id,
                          "session": d.session, "lease": lease})
        self.leases[cpv] = (out.result["build_id"], lease)

    def take(self, name: str) -> str | None:
        """``name`` asks and is given what it asked for."""
        cpv = self.ask(name)
        if cpv is not None:
            self.assign(name, cpv)
        return cpv

    def complete(self, cpv: str, result: str = "success") -> None:
        bid, lease = self.leases.pop(cpv)
        self.apply({"type": "complete", "build_id": bid, "lease": lease, "result": result,
                    "duration_s": 1.0, "error": None if result == "success" else "boom"})


def test_long_package_goes_to_the_big_drone_when_both_are_free() -> None:
    sw = Swarm({"small": 4, "big": 32})
    sw.submit({"dev-lang/rust-1.80.1": 4000.0, "dev-libs/libfoo-1.0": 60.0})
    # The small drone asks first, but leaves rust to the big one and takes the small package.
    assert sw.take("small") == "dev-libs/libfoo-1.0"
    assert sw.take("big") == "dev-lang/rust-1.80.1"


def test_small_drone_alone_with_a_long_package_waits_for_the_idle_big_drone() -> None:
    sw = Swarm({"small": 4, "big": 32})
    sw.submit({"dev-lang/rust-1.80.1": 4000.0})
    assert sw.ask("small") is None
    assert sw.take("big") == "dev-lang/rust-1.80.1"


def test_small_drone_does_not_take_a_long_package_while_a_faster_one_is_free_soon() -> None:
    sw = Swarm({"small": 4, "big": 32})
    sw.submit({"dev-libs/libbar-2.0": 400.0})  # 100 s on the big drone
    sw.assign("big", "dev-libs/libbar-2.0")
    sw.submit({"sys-devel/llvm-18.1.8": 2500.0})
    sw.now = 60.0  # the big drone is free in 40 s; llvm takes 625 s there, 5000 s here
    assert sw.ask("small") is None
    # But not forever: a big drone that is busy for much longer is not worth waiting for.
    sw2 = Swarm({"small": 16, "big": 32})
    sw2.submit({"www-client/chromium-128.0": 9000.0})  # 2250 s on the big drone
    sw2.assign("big", "www-client/chromium-128.0")
    sw2.submit({"dev-libs/boost-1.85.0": 640.0})  # 320 s here, 160 s on the big one
    assert sw2.ask("small") == "dev-libs/boost-1.85.0"


def test_small_packages_still_go_to_the_small_drone() -> None:
    sw = Swarm({"small": 4, "big": 32})
    sw.submit({"dev-lang/rust-1.80.1": 4000.0})
    sw.assign("big", "dev-lang/rust-1.80.1")
    sw.submit({"dev-libs/libfoo-1.0": 30.0, "dev-python/pyfoo-1.0": 20.0})
    assert sw.take("small") == "dev-libs/libfoo-1.0"
    sw.now = 60.0
    sw.complete("dev-libs/libfoo-1.0")
    assert sw.take("small") == "dev-python/pyfoo-1.0"


def test_a_package_about_to_become_ready_claims_the_fast_drone_first() -> None:
    # The big drone is finishing link 1 of a long chain; link 2 (ready in 10 s) outranks the
    # medium package, so the small drone must not wait for the big one to take the medium one:
    # the big one will be busy with link 2 (the starvation the one-step look-ahead prevents).
    sw = Swarm({"small": 8, "big": 32})
    sw.submit({"dev-haskell/chain-a-1.0": 40.0, "dev-haskell/chain-b-1.0": 400.0},
              {"dev-haskell/chain-b-1.0": ["dev-haskell/chain-a-1.0"]})
    sw.assign("big", "dev-haskell/chain-a-1.0")  # 10 s on the big drone
    sw.submit({"dev-libs/medium-1.0": 80.0})  # 80 s here; 20 s on the big one
    assert sw.ask("small") == "dev-libs/medium-1.0"
    # Without the chain, waiting 10 s for the big drone (done at 30 s, not 80 s) is right.
    sw2 = Swarm({"small": 8, "big": 32})
    sw2.submit({"dev-haskell/chain-a-1.0": 40.0})
    sw2.assign("big", "dev-haskell/chain-a-1.0")
    sw2.submit({"dev-libs/medium-1.0": 80.0})
    assert sw2.ask("small") is None


def test_a_drone_that_failed_a_package_gets_it_again_only_when_it_is_the_only_one() -> None:
    sw = Swarm({"a": 8, "b": 8})
    sw.submit({"dev-libs/flaky-1.0": 100.0})
    sw.assign("a", "dev-libs/flaky-1.0")
    sw.complete("dev-libs/flaky-1.0", "failed")
    assert sw.ask("a") is None
    assert sw.take("b") == "dev-libs/flaky-1.0"
    sw.complete("dev-libs/flaky-1.0", "failed")
    # Both have failed it now: neither is preferred, so a drone asking gets it (last attempt).
    assert sw.ask("a") == "dev-libs/flaky-1.0"

    sw1 = Swarm({"a": 8, "b": 8})
    sw1.submit({"dev-libs/flaky-1.0": 100.0})
    sw1.assign("a", "dev-libs/flaky-1.0")
    sw1.complete("dev-libs/flaky-1.0", "failed")
    sw1.apply({"type": "drone_offline", "drone_id": sw1.ids["b"]})
    assert sw1.ask("a") == "dev-libs/flaky-1.0"  # the only eligible drone left


def test_a_faster_drone_that_failed_a_package_is_not_waited_for() -> None:
    sw = Swarm({"small": 4, "big": 32})
    sw.submit({"sys-devel/llvm-18.1.8": 2500.0})
    sw.assign("big", "sys-devel/llvm-18.1.8")
    sw.complete("sys-devel/llvm-18.1.8", "failed")
    assert sw.ask("small") == "sys-devel/llvm-18.1.8"


def test_a_drone_in_cool_down_gets_nothing() -> None:
    sw = Swarm({"a": 8, "b": 8}, Policy(failure_streak=2, cooldown_s=300.0))
    sw.submit({"dev-libs/one-1.0": 10.0, "dev-libs/two-1.0": 10.0, "dev-libs/three-1.0": 10.0})
    for cpv in ("dev-libs/one-1.0", "dev-libs/two-1.0"):
        sw.assign("a", cpv)
        sw.complete(cpv, "failed")
    assert sw.drone("a").cooldown_until == 300.0
    assert sw.ask("a") is None  # "three" is ready, and a has never failed it
    assert sw.ask("b") == "dev-libs/one-1.0"
    sw.now = 300.0
    assert sw.ask("a") == "dev-libs/three-1.0"


def test_the_scheduler_core_does_not_import_trio() -> None:
    code = "import sys, swarmd.scheduler, bench.simulate; print('trio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True,
                         env={**os.environ, "PORTAGE_OVERRIDE_EPREFIX": "/"})
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- the simulator and quality
def test_lower_bound_of_a_tiny_workload() -> None:
    w = {"drones": [{"name": "a", "cores": 8}, {"name": "b", "cores": 16, "slots": 2}],
         "packages": [
             {"cpv": "dev-libs/a-1", "seconds_on_8_cores": 100.0, "deps": []},
             {"cpv": "dev-libs/b-1", "seconds_on_8_cores": 300.0, "deps": ["dev-libs/a-1"]},
             {"cpv": "dev-libs/c-1", "seconds_on_8_cores": 20.0, "deps": []},
         ]}
    b = bounds(w)
    assert b["critical_path_s"] == pytest.approx((100 + 300) * 8 / 16)
    assert b["work_bound_s"] == pytest.approx(420 * 8 / (8 + 16 * 2))
    r = simulate(w)
    # a and b run on the 16-core drone back to back; c on whatever is free.
    assert r["makespan_s"] == pytest.approx(200.0)
    assert r["ratio"] == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["world-1500", "deep-chains", "flat"])
def test_shipped_workload_is_within_ten_percent_of_the_lower_bound(name: str) -> None:
    workload = json.loads((WORKLOADS / f"{name}.json").read_text())
    sched = run(workload, "critical")
    assert sorted(sched.end) == sorted(p["cpv"] for p in workload["packages"])
    assert dependency_violations(workload, sched) == []
    # Each package took exactly its modelled time on the drone that built it.
    cores = {d["name"]: d["cores"] for d in workload["drones"]}
    for p in workload["packages"]:
        took = sched.end[p["cpv"]] - sched.start[p["cpv"]]
        assert took == pytest.approx(p["seconds_on_8_cores"] * 8 / cores[sched.drone[p["cpv"]]])
    lb = bounds(workload)["lower_bound_s"]
    assert sched.makespan_s / lb <= 1.10
    fifo = run(workload, "fifo")
    assert dependency_violations(workload, fifo) == []
    assert sched.makespan_s <= fifo.makespan_s


def test_simulate_command_prints_one_json_object() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.simulate", str(WORKLOADS / "flat.json"),
         "--policy", "fifo"],
        cwd=REPO, capture_output=True, text=True, check=True,
        env={**os.environ, "PORTAGE_OVERRIDE_EPREFIX": "/"},
    )
    r = json.loads(out.stdout)
    assert r["policy"] == "fifo"
    assert r["makespan_s"] == r["fifo_makespan_s"]
    assert r["ratio"] >= 1.0
    assert {"lower_bound_s", "fifo_ratio", "critical_path_s", "work_bound_s"} <= set(r)


def test_small_drone_works_when_the_queue_is_deeper_than_faster_drones_can_take() -> None:
    """Twenty idle 32-core drones and one 4-core drone, 400 ready packages: the fast drones
    cannot take them all soon, so the small one gets work instead of standing idle; with
    only a handful of packages it leaves them to the fast drones."""
    fleet = {f"big{i}": 32 for i in range(20)}
    fleet["small"] = 4
    sw = Swarm(fleet)
    sw.submit({f"cat/p{i}-1": 600.0 for i in range(400)})
    got = sw.ask("small")
    assert got is not None
    ranked = [sw.state.entries[k[3]].cpv for k in sw.state.ready_index]
    assert ranked.index(got) >= 20  # the best-ranked ones stay for the fast drones
    few = Swarm(fleet)
    few.submit({f"cat/q{i}-1": 600.0 for i in range(5)})
    assert few.ask("small") is None
