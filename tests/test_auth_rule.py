"""One token rule for both daemons (swarmlib.auth): the Bearer scheme is case-insensitive
(RFC 9110, section 11.1), secrets are compared in constant time, every configured key is tried."""

from __future__ import annotations

import pytest

from swarmlib.auth import bearer_ok, secret_in


@pytest.mark.parametrize("header", [
    "Bearer s3cret", "bearer s3cret", "BEARER s3cret", "Bearer   s3cret", "Bearer s3cret ",
])
def test_bearer_scheme_is_case_insensitive(header: str) -> None:
    assert bearer_ok("s3cret", header)


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Bearer ", "Basic s3cret", "Bearer s3cre", "Bearer s3cretX",
    "Bearers3cret", "Token s3cret",
])
def test_bearer_refuses(header: str | None) -> None:
    assert not bearer_ok("s3cret", header)


def test_no_token_configured_is_open() -> None:
    assert bearer_ok("", None)
    assert bearer_ok("", "Bearer anything")


def test_secret_in_tries_every_key() -> None:
    keys = ["old-key", "new-key"]
    assert secret_in(keys, "new-key")
    assert secret_in(keys, "old-key")
    assert not secret_in(keys, "")
    assert not secret_in(keys, None)
    assert not secret_in(keys, "new-ke")
    assert not secret_in([], "x")


async def test_swarmd_accepts_lower_case_bearer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import trio

    from swarmd.api import create_app
    from tests.conftest import make_orch

    orch = make_orch(tmp_path, control_token="ctl", drone_token="drn")
    async with trio.open_nursery() as n:
        await n.start(orch.run)
        c = create_app(orch).test_client()
        body = {"packages": ["=a/b-1"]}
        r = await c.post("/api/queue", json=body, headers={"Authorization": "bearer ctl"})
        assert r.status_code == 202
        r = await c.post("/api/queue", json=body, headers={"Authorization": "bearer nope"})
        assert r.status_code == 401
        r = await c.post("/api/drones/register", json={"name": "d", "cores": 2},
                         headers={"Authorization": "BEARER drn"})
        assert r.status_code == 200
        n.cancel_scope.cancel()
