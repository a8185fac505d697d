"""The health probe in virtual time, and the cache's single flight."""

from __future__ import annotations

import json
import random
from functools import partial
from typing import Any

import httpx
import trio
import trio.testing

from gatewayd.cache import FetchFailed, TTLCache
from gatewayd.probe import Probe, ProbeState, run_probe
from tests.gateway.fakes import FakeSwarmd, Rig


def test_probe_state_machine() -> None:
    st = ProbeState(3)
    assert st.state == "down"
    assert st.success("t1")
    assert st.up
    assert not st.failure("x")
    assert not st.failure("x")
    assert st.up
    assert st.failure("x")
    assert st.state == "down"
    assert st.consecutive_failures == 3
    assert st.success("t2")
    assert st.health() == {"state": "up", "last_success": "t2", "consecutive_failures": 0}


def test_probe_is_faster_during_a_failure_streak() -> None:
    st = ProbeState(3)
    rng = random.Random(1)
    calm = [st.next_delay(30, rng) for _ in range(100)]
    assert all(27 <= d <= 33 for d in calm)
    assert len({round(d, 3) for d in calm}) > 50  # jitter
    st.failure("x")
    assert all(9 <= st.next_delay(30, rng) <= 11 for _ in range(100))


async def test_probe_marks_down_after_three_failures_and_up_after_success(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeSwarmd()
    probe = Probe(3)
    async with httpx.AsyncClient(transport=fake.transport()) as http, trio.open_nursery() as n:
        await n.start(partial(run_probe, probe, http, "http://swarmd", interval_s=30,
                              timeout_s=5, rng=random.Random(0)))
        await trio.sleep(1)
        assert probe.up
        fake.up = False
        died = trio.current_time()
        while probe.up:  # noqa: ASYNC110 - polling the state is the point, in virtual time
            await trio.sleep(0.5)
        # Down within three probe intervals of the death, after exactly 3 failures.
        assert trio.current_time() - died <= 3 * 30
        assert probe.st.consecutive_failures == 3
        assert fake.calls["GET /api/status"] == 4
        fake.up = True
        back = trio.current_time()
        while not probe.up:  # noqa: ASYNC110
            await trio.sleep(0.5)
        assert trio.current_time() - back <= 11  # next (fast) probe
        assert probe.st.consecutive_failures == 0
        n.cancel_scope.cancel()


async def test_probe_timeout_counts_as_failure(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeSwarmd()
    fake.delay = 1000
    probe = Probe(3)
    async with httpx.AsyncClient(transport=fake.transport()) as http, trio.open_nursery() as n:
        await n.start(partial(run_probe, probe, http, "http://swarmd", interval_s=30,
                              timeout_s=5))
        await trio.sleep(60)
        assert probe.st.consecutive_failures >= 3
        assert not probe.up
        assert probe.st.last_error is not None
        assert "5 s" in probe.st.last_error
        n.cancel_scope.cancel()


async def test_cache_single_flight_and_ttl(autojump_clock: trio.testing.MockClock) -> None:
    cache: TTLCache[int] = TTLCache(10)
    calls = 0

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        await trio.sleep(1)
        return calls

    results: list[int] = []

    async def one() -> None:
        results.append((await cache.get("k", fetch, lambda: "now")).value)

    async with trio.open_nursery() as n:
        for _ in range(100):
            n.start_soon(one)
    assert calls == 1
    assert results == [1] * 100
    await trio.sleep(5)
    await one()
    assert calls == 1
    await trio.sleep(5)
    await one()
    assert calls == 2


async def test_cache_failure_is_shared_and_keeps_the_old_entry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache: TTLCache[int] = TTLCache(10)

    async def ok() -> int:
        return 7

    async def bad() -> int:
        await trio.sleep(1)
        raise RuntimeError("boom")

    await cache.get("k", ok, lambda: "t")
    await trio.sleep(11)
    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await cache.get("k", bad, lambda: "t")
        except FetchFailed as exc:
            errors.append(exc.cause)

    async with trio.open_nursery() as n:
        for _ in range(10):
            n.start_soon(one)
    assert len(errors) == 10
    entry = cache.peek("k")
    assert entry is not None
    assert entry.value == 7


async def test_cache_cancelled_fetcher_lets_a_waiter_fetch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache: TTLCache[str] = TTLCache(10)
    calls = 0

    async def fetch() -> str:
        nonlocal calls
        calls += 1
        await trio.sleep(5)
        return "v"

    got: list[str] = []
    async with trio.open_nursery() as n:
        first = trio.CancelScope()
        n.start_soon(_cancelled_get, cache, fetch, first)
        await trio.sleep(1)

        async def waiter() -> None:
            got.append((await cache.get("k", fetch, lambda: "t")).value)

        n.start_soon(waiter)
        await trio.sleep(0.5)
        first.cancel()
    assert got == ["v"]
    assert calls == 2


async def _cancelled_get(cache: TTLCache[str], fetch: Any, scope: trio.CancelScope) -> None:
    with scope:
        await cache.get("k", fetch, lambda: "t")


async def test_public_route_one_backend_call_per_ttl_under_100_clients(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    rig.fake.delay = 0.5
    statuses: list[int] = []

    async def client() -> None:
        resp = await rig.client.get("/api/v1/services/public/queue")
        statuses.append(resp.status_code)
        assert json.loads(await resp.get_data())["status"] == "ok"

    async with trio.open_nursery() as n:
        for _ in range(100):
            n.start_soon(client)
    assert statuses == [200] * 100
    assert rig.fake.calls["GET /api/queue"] == 1
    assert rig.fake.calls["GET /api/drones"] == 1  # the sanitizer's identities, also once
    await trio.sleep(5)
    async with trio.open_nursery() as n:
        for _ in range(100):
            n.start_soon(client)
    assert rig.fake.calls["GET /api/queue"] == 1
    await trio.sleep(6)
    async with trio.open_nursery() as n:
        for _ in range(100):
            n.start_soon(client)
    assert rig.fake.calls["GET /api/queue"] == 2
