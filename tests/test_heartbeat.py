"""Heartbeats, failover and leases in virtual time (autojump clock, fake journal)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from swarmd import journal_events as je
from swarmd.service import Orchestrator
from swarmlib.errors import StaleLease
from tests.conftest import make_orch


async def _drone(orch: Orchestrator, name: str, cores: int = 8) -> tuple[str, str]:
    reg = await orch.register(je.Register(ts=0.0, session="", name=name, hostname=name,
                                          cores=cores, arch="amd64"))
    return reg["drone_id"], reg["session"]


async def test_silent_drone_goes_offline_and_work_moves(
    orch: Orchestrator, autojump_clock: trio.testing.MockClock
) -> None:
    await orch.commit(je.Submit(ts=orch.wall(), request_id="r1", packages=["dev-libs/a-1"]))
    d1, s1 = await _drone(orch, "d1")
    job = await orch.lease(d1, s1, 0)
    assert job is not None
    assert job["package"] == "dev-libs/a-1"
    d2, s2 = await _drone(orch, "d2")
    t0 = trio.current_time()
    got: dict[str, object] = {}

    async def d2_lives(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:  # d2 keeps beating; d1 never beats again
            await orch.heartbeat(d2, s2, "ready", 0.1, [])
            await trio.sleep(29)

    async def d2_polls() -> None:
        while "job" not in got:
            j = await orch.lease(d2, s2, 30)
            if j is not None:
                got["job"] = j
                got["t"] = trio.current_time() - t0

    statuses: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(d2_lives)
        nursery.start_soon(d2_polls)
        for _ in range(200):
            await trio.sleep(1)
            statuses.append(orch.drone_status(d1))
            if "job" in got:
                break
        nursery.cancel_scope.cancel()
    assert "job" in got, "the package was never moved to the live drone"
    assert got["job"]["package"] == "dev-libs/a-1"  # type: ignore[index]
    assert float(got["t"]) <= 90.5  # type: ignore[arg-type]
    assert "degraded" in statuses  # late before offline
    assert orch.drone_status(d1) == "offline"
    e = orch.state.entries["e-000001"]
    assert e.attempts == 0  # no retry counted against the package
    # The old lease is refused and changes nothing.
    before = orch.state.to_snapshot()
    with pytest.raises(StaleLease, match="lease"):
        await orch.complete(je.Complete(ts=0.0, build_id=job["build_id"], lease=job["lease"],
                                              result=je.Report("success"), duration_s=1, error=None))
    assert orch.state.to_snapshot() == before


async def test_drone_beating_every_29s_for_an_hour_stays_ready(
    orch: Orchestrator, autojump_clock: trio.testing.MockClock
) -> None:
    d1, s1 = await _drone(orch, "d1")
    seen: set[str] = set()
    for _ in range(int(3600 / 29) + 1):
        await orch.heartbeat(d1, s1, "ready", 0.5, [])
        for _ in range(29):
            await trio.sleep(1)
            seen.add(orch.drone_status(d1))
    assert seen == {"ready"}


async def test_waiting_lease_gets_new_work_at_once(
    orch: Orchestrator, autojump_clock: trio.testing.MockClock
) -> None:
    d1, s1 = await _drone(orch, "d1")
    result: dict[str, object] = {}

    async def poll() -> None:
        t = trio.current_time()
        result["job"] = await orch.lease(d1, s1, 30)
        result["waited"] = trio.current_time() - t

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.sleep(3)
        await orch.commit(je.Submit(ts=orch.wall(), request_id="r1", packages=["a/b-1"]))
    assert result["job"] is not None
    assert float(result["waited"]) < 3.5  # type: ignore[arg-type]


async def test_restart_gives_one_offline_window(tmp_path: Path,
                                                autojump_clock: trio.testing.MockClock) -> None:
    """Leases survive a restart; a drone that never comes back loses them after one window."""
    o = make_orch(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(o.run)
        await o.commit(je.Submit(ts=o.wall(), request_id="r1", packages=["a/b-1"]))
        d1, s1 = await _drone(o, "d1")
        job = await o.lease(d1, s1, 0)
        assert job is not None
        nursery.cancel_scope.cancel()
    # "Restart": a new orchestrator over the same journal frames.
    o2 = make_orch(tmp_path)
    from swarmd.state import State

    st = State(o.policy)
    import json

    for fr in o.journal.frames:  # type: ignore[union-attr]
        st.apply(json.loads(fr[10:]))
    o2.committer.state = st
    o2.journal = o.journal
    async with trio.open_nursery() as nursery:
        await nursery.start(o2.run)
        assert o2.state.entries["e-000001"].state == "assigned"
        await trio.sleep(60)
        await o2.heartbeat(d1, s1, "building", 1.0,
                           [{"build_id": job["build_id"], "lease": job["lease"]}])
        await trio.sleep(80)
        assert o2.state.entries["e-000001"].state == "building"  # kept: it beat in time
        await trio.sleep(100)
        assert o2.drone_status(d1) == "offline"
        assert o2.state.entries["e-000001"].state == "ready"
        nursery.cancel_scope.cancel()


async def test_failing_drone_cools_down(tmp_path: Path,
                                        autojump_clock: trio.testing.MockClock) -> None:
    orch = make_orch(tmp_path, max_retries=0)  # every failure is a different package
    async with trio.open_nursery() as nursery:
        await nursery.start(orch.run)
        await _cooldown_checks(orch)
        nursery.cancel_scope.cancel()


async def _cooldown_checks(orch: Orchestrator) -> None:
    pk = [f"a/p{i}-1" for i in range(6)]
    await orch.commit(je.Submit(ts=orch.wall(), request_id="r1", packages=pk))
    d1, s1 = await _drone(orch, "bad")
    for i in range(4):
        assert orch.drone_status(d1) == "ready", i
        job = await orch.lease(d1, s1, 0)
        assert job is not None
        await orch.complete(je.Complete(ts=0.0, build_id=job["build_id"], lease=job["lease"],
                                              result=je.Report("failed"), duration_s=1, error="x"))
    assert orch.drone_status(d1) == "degraded"
    assert await orch.lease(d1, s1, 0) is None  # paused: must not eat the queue
    for _ in range(11):  # keeps beating through the 300 s cool-down
        await orch.heartbeat(d1, s1, "ready", 0, [])
        assert await orch.lease(d1, s1, 0) is None
        await trio.sleep(29)
    await orch.heartbeat(d1, s1, "ready", 0, [])
    assert orch.drone_status(d1) == "ready"
    assert await orch.lease(d1, s1, 0) is not None


async def test_build_the_drone_never_got_is_returned(
    orch: Orchestrator, autojump_clock: trio.testing.MockClock
) -> None:
    """The assignment was journaled but the lease reply never reached the drone (swarmd died
    in between): the drone beats with no builds and its only slot must not stay taken."""
    await orch.commit(je.Submit(ts=orch.wall(), request_id="r1", packages=["a/b-1"]))
    d1, s1 = await _drone(orch, "d1")
    job = await orch.lease(d1, s1, 0)
    assert job is not None
    out = await orch.heartbeat(d1, s1, "ready", 0.1, [])  # within the grace: kept
    assert out["revoked"] == []
    assert orch.state.entries["e-000001"].state == "assigned"
    await trio.sleep(61)
    await orch.heartbeat(d1, s1, "ready", 0.1, [])
    out = await orch.heartbeat(d1, s1, "ready", 0.1, [])
    e = orch.state.entries["e-000001"]
    assert e.attempts == 0
    again = await orch.lease(d1, s1, 0)
    assert again is not None
    assert again["package"] == "a/b-1"
    assert again["build_id"] != job["build_id"]
