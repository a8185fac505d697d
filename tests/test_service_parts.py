"""The parts of swarmd's service through their own interfaces, each with fakes for its
neighbours (virtual time, a fake journal): committer, wake-ups, soft state, build logs, drone
operations, heartbeat supervisor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from harness.memory_journal import MemoryJournal
from swarmd import journal_events as je
from swarmd.buildlogs import BuildLogs
from swarmd.committer import Committer, Durable, replay
from swarmd.config import SwarmdConfig
from swarmd.droneops import DroneOps
from swarmd.dronesoft import SoftState
from swarmd.events import EventHub
from swarmd.heartbeat import Supervisor
from swarmd.state import Outcome, Policy, State
from swarmd.wakeups import Wakeups
from swarmlib.errors import StaleLease

T0 = 1_700_000_000.0


def _wall() -> float:
    return T0 + trio.current_time()


def _committer(tmp_path: Path, **kw: Any) -> tuple[Committer, list[int]]:
    changes: list[int] = []
    c = Committer(SwarmdConfig(state_dir=str(tmp_path / "state"), **kw), Policy(), wall=_wall,
                  hub=EventHub(window=100), on_change=lambda: changes.append(1))
    c.journal = MemoryJournal()  # type: ignore[assignment]
    return c, changes


class FakeDurable:
    """A Durable without a journal: applies at once and keeps what was committed."""

    def __init__(self) -> None:
        self.state = State()
        self.events: list[je.Event] = []

    def wall(self) -> float:
        return _wall()

    async def commit(self, event: je.Event) -> Outcome:
        await trio.lowlevel.checkpoint()
        self.events.append(event)
        return self.state.apply(event, len(self.events))


# ------------------------------------------------------------------ committer
async def test_committer_journals_before_it_answers_and_groups_commits(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    c, changes = _committer(tmp_path)
    durable: Durable = c  # the committer is what the other parts see as Durable
    outs: list[Outcome] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(c.run)

        async def one(i: int) -> None:
            outs.append(await durable.commit(je.History(ts=durable.wall(),
                                                        packages={f"a/p{i}": 1.0})))

        async with trio.open_nursery() as writers:
            for i in range(20):
                writers.start_soon(one, i)
        nursery.cancel_scope.cancel()
    j = c.journal
    assert isinstance(j, MemoryJournal)
    assert all(o.ok for o in outs)
    assert j.appends == 20
    assert j.fsyncs < 20  # group commit: waiting events share an fsync
    assert c.state.seq == 20
    assert len(c.state.history) == 20
    assert changes  # history may make work available: the wake-up callback ran


async def test_committer_does_not_wake_for_an_assignment(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    c, changes = _committer(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(c.run)
        await c.commit(je.Register(ts=_wall(), name="d1", session="s1"))
        assert changes == []  # a registration returning no builds
        await c.commit(je.Submit(ts=_wall(), request_id="r1", packages=["a/b-1"]))
        assert changes == [1]
        await c.commit(je.Assign(ts=_wall(), entry_id="e-000001", drone_id="d-0001",
                                 session="s1", lease="L"))
        assert changes == [1]
        nursery.cancel_scope.cancel()


async def test_committer_recovers_what_it_journaled(tmp_path: Path) -> None:
    c, _ = _committer(tmp_path)
    c.journal = None
    c.recover()  # a real journal in tmp_path
    async with trio.open_nursery() as nursery:
        await nursery.start(c.run)
        await c.commit(je.Submit(ts=1.0, request_id="r1", packages=["a/b-1", "a/c-1"],
                                 deps={"a/c-1": ["a/b-1"]}))
        await c.commit(je.Cancel(ts=2.0, target="r1"))
        nursery.cancel_scope.cancel()
    assert c.journal is not None
    c.journal.close()
    again, loaded = replay(tmp_path / "state", Policy())
    assert again.to_snapshot() == c.state.to_snapshot()
    assert [type(e) for e in loaded.events] == [je.Submit, je.Cancel]


# ------------------------------------------------------------------ wake-ups
async def test_wakeups_poke_only_when_work_is_ready(
        autojump_clock: trio.testing.MockClock) -> None:
    ready = [False]
    w = Wakeups(lambda: ready[0])
    woken: list[str] = []

    async def waiter(did: str) -> None:
        await w.wait(did)
        woken.append(did)

    async with trio.open_nursery() as nursery:
        for did in ("d1", "d2", "d3"):
            nursery.start_soon(waiter, did)
        await trio.testing.wait_all_tasks_blocked()
        assert w.waiting() == 3
        w.poke()  # nothing ready: nobody is woken
        await trio.testing.wait_all_tasks_blocked()
        assert woken == []
        w.nudge(["d2"])  # work left for d2 only
        await trio.testing.wait_all_tasks_blocked()
        assert woken == ["d2"]
        ready[0] = True
        w.poke()
    assert sorted(woken) == ["d1", "d2", "d3"]
    assert w.waiting() == 0


async def test_cancelled_wait_leaves_nothing(autojump_clock: trio.testing.MockClock) -> None:
    w = Wakeups(lambda: True)
    with trio.move_on_after(1):
        await w.wait("d1")
    assert w.waiting() == 0


# ------------------------------------------------------------------ build logs
async def test_build_logs_are_capped_and_tailed(tmp_path: Path) -> None:
    logs = BuildLogs(tmp_path / "logs", limit=20)
    logs.create()
    assert await logs.append("b-1", b"line 1\nline 2\n") == 14
    kept = await logs.append("b-1", b"line 3\nline 4\n")
    assert kept == 6 + len(b"\n[build-swarm: log truncated]\n")
    assert await logs.append("b-1", b"more\n") == 0  # full: nothing more is kept
    assert logs.read("b-1", tail=1) == "[build-swarm: log truncated]"
    assert logs.read("b-1").startswith("line 1\nline 2\nline 3")
    assert logs.read("b-2") == ""


# ------------------------------------------------------------------ soft state
async def test_soft_state_lateness_degrades_publishes_and_pokes(
        autojump_clock: trio.testing.MockClock) -> None:
    durable = FakeDurable()
    await durable.commit(je.Register(ts=_wall(), name="d1", session="s1"))
    hub = EventHub(window=100)
    pokes: list[int] = []
    w = Wakeups(lambda: True)
    w.poke = lambda: pokes.append(1)  # type: ignore[method-assign]
    soft = SoftState(durable, hub, w, _wall)
    assert soft.unavailable("d-0001")  # never heard from
    soft.touch("d-0001")
    assert soft.status("d-0001") == "ready"
    soft.set_late("d-0001", True)
    assert soft.status("d-0001") == "degraded"
    assert soft.unavailable("d-0001")
    assert pokes == [1]
    assert hub.window[-1]["data"]["status"] == "degraded"
    soft.set_late("d-0001", True)  # no change: no second notice
    assert pokes == [1]
    soft.clear_late("d-0001")
    assert soft.status("d-0001") == "ready"
    await trio.sleep(41)  # a free slot and no lease call for 40 s: stuck
    assert soft.unavailable("d-0001")


# ------------------------------------------------------------------ drone operations
class FakeWatcher:
    def __init__(self) -> None:
        self.watched: list[tuple[str, str]] = []
        self.beats: list[str] = []

    def watch(self, drone_id: str, session: str) -> None:
        self.watched.append((drone_id, session))

    def beat(self, drone_id: str) -> None:
        self.beats.append(drone_id)


class FakePublisher:
    def __init__(self) -> None:
        self.queued: list[str] = []

    def enqueue(self, build_id: str) -> None:
        self.queued.append(build_id)


def _ops(tmp_path: Path) -> tuple[DroneOps, FakeDurable, FakeWatcher, FakePublisher]:
    durable = FakeDurable()
    hub = EventHub(window=100)
    w = Wakeups(lambda: bool(durable.state.ready_index))
    ops = DroneOps(durable, SoftState(durable, hub, w, _wall), w, BuildLogs(tmp_path / "logs"),
                   heartbeat_interval_s=30.0)
    watcher, publisher = FakeWatcher(), FakePublisher()
    ops.attach(watcher, publisher)
    return ops, durable, watcher, publisher


async def test_drone_ops_register_lease_complete(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    ops, durable, watcher, publisher = _ops(tmp_path)
    reg = await ops.register(je.Register(ts=0.0, session="", name="d1", cores=8))
    did, session = reg["drone_id"], reg["session"]
    assert watcher.watched == [(did, session)]
    assert durable.events[-1] == je.Register(ts=_wall(), session=session, name="d1", cores=8)
    assert await ops.lease(did, session, 0) is None  # nothing queued
    await durable.commit(je.Submit(ts=_wall(), request_id="r1", packages=["a/b-1"]))
    job = await ops.lease(did, session, 0)
    assert job is not None
    assert ops.package_of(job["build_id"]) == "a/b-1"
    with pytest.raises(StaleLease):
        await ops.complete(je.Complete(ts=0.0, build_id=job["build_id"], lease="wrong",
                                       result=je.Report.SUCCESS))
    out = await ops.complete(je.Complete(ts=0.0, build_id=job["build_id"], lease=job["lease"],
                                         result=je.Report.SUCCESS, duration_s=5.0,
                                         artifact={"path": "a/b/x", "size": 1,
                                                   "sha256": "0" * 64}))
    assert out["state"] == "building"  # waits for the publisher
    assert publisher.queued == [job["build_id"]]
    last = durable.events[-1]
    assert isinstance(last, je.Complete)
    assert last.publish


async def test_drone_ops_long_poll_is_woken_by_work(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    ops, durable, _w, _p = _ops(tmp_path)
    wakeups = ops.wakeups
    reg = await ops.register(je.Register(ts=0.0, session="", name="d1", cores=8))
    got: dict[str, Any] = {}

    async def poll() -> None:
        got["job"] = await ops.lease(reg["drone_id"], reg["session"], 30)
        got["t"] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.sleep(2)
        await durable.commit(je.Submit(ts=_wall(), request_id="r1", packages=["a/b-1"]))
        wakeups.poke()  # what the committer's on_change does
    assert got["job"] is not None
    assert got["t"] < 2.5


async def test_drone_ops_end_polls_answers_waiting_polls_at_once(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Shutdown (``end_polls``): a poll waiting with wait_s 25 returns None ("no work") at
    once, and a later one leases nothing even with work queued."""
    ops, durable, _w, _p = _ops(tmp_path)
    reg = await ops.register(je.Register(ts=0.0, session="", name="d1", cores=8))
    got: dict[str, Any] = {}

    async def poll() -> None:
        got["job"] = await ops.lease(reg["drone_id"], reg["session"], 25)
        got["t"] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.sleep(2)
        assert "t" not in got  # still waiting
        ops.end_polls()
    assert got == {"job": None, "t": 2}
    await durable.commit(je.Submit(ts=_wall(), request_id="r1", packages=["a/b-1"]))
    assert await ops.lease(reg["drone_id"], reg["session"], 25) is None
    assert trio.current_time() == 2
    assert not [e for e in durable.events if isinstance(e, je.Assign)]


async def test_drone_ops_restart_is_repeated_until_the_agent_registers_again(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """At least once: the reply carrying the restart may be lost on the way, so every reply of
    the session carries it (journaled once), until the agent registers a new session."""
    ops, durable, watcher, _p = _ops(tmp_path)
    reg = await ops.register(je.Register(ts=0.0, session="", name="d1", cores=8))
    did, session = reg["drone_id"], reg["session"]
    await ops.queue_restart(did)
    first = await ops.heartbeat(did, session, "ready", 0.0, [])  # say this reply is lost
    second = await ops.heartbeat(did, session, "ready", 0.0, [])
    assert first["commands"] == [{"command": "restart"}]
    assert second["commands"] == [{"command": "restart"}]
    assert watcher.beats == [did, did]
    assert [type(e) for e in durable.events].count(je.RestartDelivered) == 1
    again = await ops.register(je.Register(ts=0.0, session="", name="d1", cores=8))  # restarted
    third = await ops.heartbeat(did, again["session"], "ready", 0.0, [])
    assert third["commands"] == []


# ------------------------------------------------------------------ heartbeat supervisor
async def test_supervisor_marks_late_then_offline(
        autojump_clock: trio.testing.MockClock) -> None:
    durable = FakeDurable()
    await durable.commit(je.Register(ts=_wall(), name="d1", session="s1"))
    hub = EventHub(window=100)
    w = Wakeups(lambda: True)
    soft = SoftState(durable, hub, w, _wall)
    soft.touch("d-0001")
    sup = Supervisor(durable, soft, w, interval=30.0, offline_after=90.0)
    statuses: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        sup.watch("d-0001", "s1")
        for _ in range(100):
            await trio.sleep(1)
            statuses.append(soft.status("d-0001"))
        nursery.cancel_scope.cancel()
    assert "degraded" in statuses
    assert statuses[-1] == "offline"
    offline = [e for e in durable.events if isinstance(e, je.DroneOffline)]
    assert len(offline) == 1
    assert offline[0].session == "s1"
    assert 89 <= offline[0].ts - T0 <= 91
