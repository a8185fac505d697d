"""X-Swarm-Target (SPEC section 12): forwarded to swarmd with a submission, kept in the spool
while swarmd is down and sent again with the replay; a header that is no target is a 400."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from gatewayd.app import Gateway
from gatewayd.spool import Spool, inline
from tests.gateway.fakes import Rig

KEY1 = "key-one-0123456789"
TARGET = {"arch": "amd64", "chost": "x86_64-pc-linux-gnu", "cflags": "-O2 -pipe",
          "cxxflags": "-O2 -pipe", "ldflags": "-Wl,-O1", "profile": "default/linux/amd64/23.0",
          "accept_keywords": "amd64", "binpkg_format": "gpkg", "repos": {"gentoo": "git:abc"}}
HEADER = json.dumps(TARGET, separators=(",", ":"))
BODY = b"[ebuild  N    ] dev-libs/bar-2.0\n"


def admin(**extra: str) -> dict[str, str]:
    return {"X-Admin-Key": KEY1, "Content-Type": "text/plain", **extra}


async def test_forwarded_while_swarmd_is_up(rig: Rig) -> None:
    resp = await rig.client.post("/api/swarm-admin/queue",
                                 headers=admin(**{"X-Swarm-Target": HEADER}), data=BODY)
    assert resp.status_code == 202
    (post,) = rig.fake.posts
    assert post.headers["x-swarm-target"] == HEADER  # as sent: swarmd normalizes it
    assert post.content == BODY
    # without the header none is invented
    resp = await rig.client.post("/api/swarm-admin/queue", headers=admin(), data=BODY)
    assert resp.status_code == 202
    assert "x-swarm-target" not in rig.fake.posts[1].headers


async def test_json_submission_with_the_header_forwards_it_too(rig: Rig) -> None:
    resp = await rig.client.post(
        "/api/swarm-admin/queue", headers={"X-Admin-Key": KEY1, "X-Swarm-Target": HEADER},
        json={"packages": ["=dev-libs/foo-1.0"], "request_id": "j-1"})
    assert resp.status_code == 202
    assert rig.fake.posts[0].headers["x-swarm-target"] == HEADER


async def test_spooled_then_replayed_with_the_header_after_restart(
    make_rig: Any, autojump_clock: trio.testing.MockClock
) -> None:
    r: Rig = make_rig()
    r.fake.up = False
    resp = await r.client.post("/api/swarm-admin/queue",
                               headers=admin(**{"X-Swarm-Target": HEADER, "X-Request-Id": "t-1"}),
                               data=BODY)
    assert resp.status_code == 202
    assert json.loads(await resp.get_data())["spooled"] is True
    resp = await r.client.post("/api/swarm-admin/queue",
                               headers=admin(**{"X-Request-Id": "t-2"}), data=BODY)
    assert resp.status_code == 202
    (rec1, rec2) = [json.loads(p.read_bytes())
                    for p in sorted((Path(r.cfg.spool_dir) / "pending").iterdir())]
    assert rec1["target"] == HEADER
    assert "target" not in rec2

    fake = r.fake
    fake.up = True
    gw2 = Gateway.create(r.cfg, httpx.AsyncClient(transport=fake.transport()),
                         alias_key=b"test-alias-key", offload=inline)
    assert [i.target for i in gw2.spool.pending()] == [HEADER, None]
    async with trio.open_nursery() as n:
        await n.start(gw2.replayer.run)
        gw2.probe.success()
        await trio.sleep(10)
        n.cancel_scope.cancel()
    assert gw2.spool.depth == 0
    assert [p.headers["x-request-id"] for p in fake.posts] == ["t-1", "t-2"]
    assert fake.posts[0].headers["x-swarm-target"] == HEADER
    assert "x-swarm-target" not in fake.posts[1].headers


def test_old_spool_records_without_target_still_replay(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_requests=10, max_bytes=1 << 20)
    s.put("old", "text/plain", BODY)
    s.put("new", "text/plain", BODY, target=HEADER)
    again = Spool(tmp_path, max_requests=10, max_bytes=1 << 20)
    assert [(i.request_id, i.target) for i in again.pending()] == [("old", None), ("new", HEADER)]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("{not json", "X-Swarm-Target: "),
        (json.dumps({**TARGET, "cflags": 7}), "X-Swarm-Target: target.cflags"),
        (json.dumps({**TARGET, "colour": "blue"}), "X-Swarm-Target: target: unknown field"),
        ("[]", "X-Swarm-Target: target: expected a JSON object"),
    ],
)
async def test_a_header_that_is_no_target_is_400_and_nothing_is_forwarded_or_spooled(
    make_rig: Any, value: str, match: str
) -> None:
    r: Rig = make_rig()
    for up in (True, False):
        r.fake.up = up
        if up:
            r.gw.probe.success()
        resp = await r.client.post("/api/swarm-admin/queue",
                                   headers=admin(**{"X-Swarm-Target": value}), data=BODY)
        assert resp.status_code == 400
        assert match in json.loads(await resp.get_data())["error"]["message"]
    assert r.fake.posts == []
    assert r.gw.spool.depth == 0
