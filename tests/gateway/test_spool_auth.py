"""The durable spool (write, restart, replay once, dead letters, bounds) and the admin key."""

from __future__ import annotations

import json
import random
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from gatewayd.app import Gateway
from gatewayd.auth import AdminAuth, Outcome
from gatewayd.spool import Replayer, Spool, SpoolFull, inline
from tests.gateway.fakes import Rig

KEY1 = "key-one-0123456789"
KEY2 = "key-two-9876543210"


def test_spool_survives_a_restart_in_order(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_requests=10, max_bytes=1 << 20)
    s.put("r-1", "application/json", b'{"packages": ["=a/b-1"], "request_id": "r-1"}')
    s.put("r-2", "text/plain", b"[ebuild  N    ] a/c-2\n")
    assert s.put("r-1", "application/json", b"{}") == ("r-1", False)  # not stored twice
    (tmp_path / "tmp" / "000000000099.json").write_bytes(b"half a rec")  # a torn write
    again = Spool(tmp_path, max_requests=10, max_bytes=1 << 20)
    assert [i.request_id for i in again.pending()] == ["r-1", "r-2"]
    assert again.pending()[1].body == b"[ebuild  N    ] a/c-2\n"
    assert not list((tmp_path / "tmp").iterdir())
    again.put("r-3", "text/plain", b"x")
    assert [i.name for i in again.pending()] == sorted(i.name for i in again.pending())
    assert again.depth == 3


def test_spool_is_bounded(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_requests=2, max_bytes=1 << 20)
    s.put("a", "text/plain", b"1")
    s.put("b", "text/plain", b"2")
    with pytest.raises(SpoolFull):
        s.put("c", "text/plain", b"3")
    small = Spool(tmp_path / "small", max_requests=100, max_bytes=400)
    small.put("a", "text/plain", b"x" * 10)
    with pytest.raises(SpoolFull):
        small.put("b", "text/plain", b"x" * 400)


_FAILING_PUT = """
import resource, signal, sys
from gatewayd.spool import Spool
s = Spool(sys.argv[1], max_requests=10, max_bytes=1 << 20)
s.put("ok", "text/plain", b"stored before the disk filled")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write itself fails (EFBIG), as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (16, resource.RLIM_INFINITY))
try:
    s.put("late", "text/plain", b"x" * 4096)
except OSError as e:
    print("refused", e.errno)
else:
    print("accepted")
"""


def test_a_write_that_fails_on_disk_is_refused_and_leaves_nothing_half_stored(
        tmp_path: Path) -> None:
    # A real failing write(2) in a child process (RLIMIT_FSIZE), whatever Python call the spool
    # writes through: put() raises (gatewayd answers 503, never 202), and a restarted spool
    # holds exactly what was stored before.
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _FAILING_PUT, str(tmp_path)], check=True,
                         capture_output=True, text=True, timeout=60).stdout.split()
    assert out[0] == "refused", out
    again = Spool(tmp_path, max_requests=10, max_bytes=1 << 20)
    assert [i.request_id for i in again.pending()] == ["ok"]
    assert not list((tmp_path / "tmp").iterdir())


async def test_replay_forwards_once_in_order_and_dead_letters_4xx(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    s = Spool(tmp_path, max_requests=10, max_bytes=1 << 20)
    for rid in ("r-1", "r-bad", "r-3"):
        s.put(rid, "application/json", json.dumps({"request_id": rid}).encode())
    seen: list[str] = []
    answers = {"r-bad": 400}
    up = trio.Event()
    flaky = {"r-3": 2}  # swarmd unreachable twice for r-3, then fine

    async def forward(item: Any) -> tuple[int, bytes] | None:
        seen.append(item.request_id)
        if flaky.get(item.request_id, 0) > 0:
            flaky[item.request_id] -= 1
            return None
        return answers.get(item.request_id, 202), b'{"error": {"code": "bad_request"}}'

    r = Replayer(s, forward, up.wait, rng=random.Random(0), offload=inline)
    async with trio.open_nursery() as n:
        await n.start(r.run)
        await trio.sleep(100)
        assert seen == []  # swarmd is down: nothing is sent
        up.set()
        await trio.sleep(100)
        n.cancel_scope.cancel()
    assert seen == ["r-1", "r-bad", "r-3", "r-3", "r-3"]
    assert s.depth == 0
    assert s.dead_names() == ["000000000002.json"]
    reason = json.loads((tmp_path / "dead" / "000000000002.reason.json").read_text())
    assert reason["status"] == 400
    assert reason["request_id"] == "r-bad"
    # A restart finds nothing to replay.
    assert Spool(tmp_path, max_requests=10, max_bytes=1 << 20).pending() == []


async def test_submit_while_down_is_spooled_then_replayed_exactly_once_after_restart(
    make_rig: Any, autojump_clock: trio.testing.MockClock
) -> None:
    r: Rig = make_rig()
    r.fake.up = False
    body = {"packages": ["=dev-libs/foo-1.0"], "request_id": "client-42"}
    resp = await r.client.post("/api/swarm-admin/queue", headers={"X-Admin-Key": KEY1}, json=body)
    assert resp.status_code == 202
    doc = json.loads(await resp.get_data())
    assert doc["id"] == "client-42"
    assert doc["spooled"] is True
    resp = await r.client.post("/api/swarm-admin/queue",
                               headers={"X-Admin-Key": KEY1, "Content-Type": "text/plain"},
                               data=b"[ebuild  N    ] dev-libs/bar-2.0\n")
    minted = json.loads(await resp.get_data())["id"]
    assert resp.status_code == 202
    assert minted.startswith("gw-")
    # The client retries the same request: still one record.
    resp = await r.client.post("/api/swarm-admin/queue", headers={"X-Admin-Key": KEY1}, json=body)
    assert resp.status_code == 202
    assert r.gw.spool.depth == 2
    health = json.loads(await (await r.client.get("/health")).get_data())
    assert health["spool_depth"] == 2

    # "Restart" the gateway over the same spool dir, swarmd back up.
    fake = r.fake
    fake.up = True
    gw2 = Gateway.create(r.cfg, httpx.AsyncClient(transport=fake.transport()),
                         alias_key=b"test-alias-key", offload=inline)
    assert gw2.spool.depth == 2
    async with trio.open_nursery() as n:
        await n.start(gw2.replayer.run)
        gw2.probe.success()
        await trio.sleep(10)
        n.cancel_scope.cancel()
    assert gw2.spool.depth == 0
    assert sorted(fake.queued) == sorted(["client-42", minted])
    posted = [p.headers["x-request-id"] for p in fake.posts]
    assert posted == ["client-42", minted]
    assert json.loads(fake.posts[0].content)["request_id"] == "client-42"
    assert fake.posts[0].headers["authorization"] == "Bearer control-token-abcdef"


async def test_replay_after_crash_before_unlink_is_deduplicated(
    make_rig: Any, autojump_clock: trio.testing.MockClock
) -> None:
    r: Rig = make_rig()
    r.fake.up = False
    await r.client.post("/api/swarm-admin/queue", headers={"X-Admin-Key": KEY1},
                        json={"packages": ["=a/b-1"], "request_id": "once"})
    saved = {p.name: p.read_bytes() for p in (Path(r.cfg.spool_dir) / "pending").iterdir()}
    r.fake.up = True
    async with trio.open_nursery() as n:
        await n.start(r.gw.replayer.run)
        r.gw.probe.success()
        r.gw.replayer.kick()
        await trio.sleep(5)
        n.cancel_scope.cancel()
    assert r.gw.spool.depth == 0
    for name, data in saved.items():  # the record comes back, as if the unlink never happened
        (Path(r.cfg.spool_dir) / "pending" / name).write_bytes(data)
    gw2 = Gateway.create(r.cfg, r.http, alias_key=b"k", offload=inline)
    async with trio.open_nursery() as n:
        await n.start(gw2.replayer.run)
        gw2.probe.success()
        await trio.sleep(5)
        n.cancel_scope.cancel()
    assert gw2.spool.depth == 0
    assert list(r.fake.queued) == ["once"]
    assert len(r.fake.posts) == 2  # sent twice, queued once


async def test_full_spool_is_503_with_retry_after(make_rig: Any) -> None:
    r: Rig = make_rig(spool_max_requests=2)
    r.fake.up = False
    codes = []
    for i in range(3):
        resp = await r.client.post("/api/swarm-admin/queue", headers={"X-Admin-Key": KEY1},
                                   json={"packages": ["=a/b-1"], "request_id": f"r{i}"})
        codes.append(resp.status_code)
    assert codes == [202, 202, 503]
    assert resp.headers["Retry-After"] == "30"
    assert json.loads(await resp.get_data())["error"]["code"] == "spool_full"


async def test_submit_while_up_forwards_and_mints_a_request_id(rig: Rig) -> None:
    resp = await rig.client.post("/api/swarm-admin/queue", headers={"X-Admin-Key": KEY1},
                                 json={"packages": ["=a/b-1"]})
    assert resp.status_code == 202
    doc = json.loads(await resp.get_data())
    assert doc["id"].startswith("gw-")
    assert "spooled" not in doc
    assert json.loads(rig.fake.posts[0].content)["request_id"] == doc["id"]
    resp = await rig.client.post("/api/swarm-admin/queue", headers={"X-Admin-Key": KEY1},
                                 json={"packages": ["=a/b-1"], "request_id": "bad id!"})
    assert resp.status_code == 400


# -- auth ------------------------------------------------------------------------------------------


def test_auth_core() -> None:
    a = AdminAuth([KEY1, KEY2], max_failures=3, window_s=60, lockout_s=300)
    assert a.check("c", KEY1, 0).ok
    assert a.check("c", KEY2, 0).ok
    assert a.check("c", None, 0).outcome is Outcome.UNAUTHORIZED
    assert a.check("c", KEY1[:-1], 1).outcome is Outcome.UNAUTHORIZED
    v = a.check("c", "x", 2)
    assert v.outcome is Outcome.LOCKED
    assert v.retry_after_s == 300
    assert a.check("c", KEY1, 100).outcome is Outcome.LOCKED  # even the right key
    assert a.check("other", KEY1, 100).ok
    assert a.check("c", KEY1, 303).ok
    # Failures spread wider than the window never lock.
    for t in range(0, 1000, 61):
        assert a.check("slow", "x", t).outcome is Outcome.UNAUTHORIZED
    assert AdminAuth([]).check("c", "", 0).outcome is Outcome.DISABLED
    assert not AdminAuth([KEY1]).key_matches("")


async def test_admin_auth_over_http(rig: Rig, autojump_clock: trio.testing.MockClock) -> None:
    path = "/api/swarm-admin/status"
    ok = await rig.client.get(path, headers={"X-Admin-Key": KEY1})
    assert ok.status_code == 200
    rotated = await rig.client.get(path, headers={"X-Admin-Key": KEY2})
    assert rotated.status_code == 200
    missing = await rig.client.get(path)
    wrong = await rig.client.get(path, headers={"X-Admin-Key": "nope"})
    assert missing.status_code == wrong.status_code == 401
    assert await missing.get_data() == await wrong.get_data()
    assert b"nope" not in await wrong.get_data()
    in_query = await rig.client.get(path + f"?key={KEY1}")
    assert in_query.status_code == 400
    assert KEY1.encode() not in await in_query.get_data()
    in_query = await rig.client.get(path + f"?admin_key={KEY1}", headers={"X-Admin-Key": KEY1})
    assert in_query.status_code == 400  # refused even alongside the header
    codes = []
    for _ in range(12):
        resp = await rig.client.get(path, headers={"X-Admin-Key": "guess"})
        codes.append(resp.status_code)
    assert 429 in codes
    assert codes[-1] == 429
    assert int(resp.headers["Retry-After"]) > 0
    assert (await rig.client.get(path, headers={"X-Admin-Key": KEY1})).status_code == 429
    # Another address is not affected.
    other = await rig.client.get(path, headers={"X-Admin-Key": KEY1},
                                 scope_base={"client": ("203.0.113.9", 4000)})
    assert other.status_code == 200
    await trio.sleep(rig.cfg.auth_lockout_s + 1)
    assert (await rig.client.get(path, headers={"X-Admin-Key": KEY1})).status_code == 200


async def test_no_key_configured_refuses_every_admin_call(
    make_rig: Any, caplog: pytest.LogCaptureFixture
) -> None:
    r: Rig = make_rig(admin_key="")
    r.gw.probe.success()
    for method, path in [("GET", "/api/swarm-admin/status"), ("POST", "/api/swarm-admin/queue"),
                         ("DELETE", "/api/swarm-admin/queue/x"), ("GET", "/api/swarm-admin/logs"),
                         ("POST", "/api/swarm-admin/drones/d-1/restart")]:
        resp = await r.client.open(path, method=method, headers={"X-Admin-Key": ""})
        assert resp.status_code == 401, path
    assert r.fake.calls.total() == 0


async def test_run_logs_why_admin_is_disabled(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    from gatewayd.main import run
    from tests.gateway.fakes import FakeSwarmd, make_config

    cfg = make_config(tmp_path, admin_key="", listen="127.0.0.1:0", admin_listen="127.0.0.1:0")
    http = httpx.AsyncClient(transport=FakeSwarmd().transport())
    with caplog.at_level("WARNING"):
        async with trio.open_nursery() as n:
            ports = await n.start(partial(run, cfg, http=http))
            assert ports.public > 0
            assert ports.admin > 0
            n.cancel_scope.cancel()
    assert any("SWARM_ADMIN_KEY" in rec.getMessage() for rec in caplog.records)
