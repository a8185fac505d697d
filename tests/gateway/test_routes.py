"""Public and admin routes through Quart's test client, against the fake swarmd."""

from __future__ import annotations

import json
from typing import Any

from tests.gateway.fakes import CONTROL_TOKEN, Rig

KEY = {"X-Admin-Key": "key-one-0123456789"}


async def get_json(client: Any, path: str, **kw: Any) -> tuple[int, Any]:
    resp = await client.get(path, **kw)
    return resp.status_code, json.loads(await resp.get_data())


async def test_build_swarm_is_sanitized_and_in_the_envelope(rig: Rig) -> None:
    status, doc = await get_json(rig.client, "/api/v1/services/public/build-swarm")
    assert status == 200
    assert doc["status"] == "ok"
    assert set(doc) == {"status", "timestamp", "data"}
    data = doc["data"]
    assert data["swarm_version"] == "0.1.0"
    assert data["orchestrator"] == "orch-Izar"
    assert data["orchestrator_status"] == "up"
    assert data["queue"] == {"pending": 3, "building": 2, "completed": 5, "failed": 2}
    assert data["drones"][0] == {"name": "drone-Izar", "cores": 16, "status": "building",
                                 "current_package": "sys-libs/glibc-2.39", "target": None,
                                 "progress": 40.0, "started": "2026-02-23T10:25:00Z"}
    assert data["drones"][1]["name"] == "drone-Vega"
    body = json.dumps(doc).lower()
    for secret in ("izar-host", "secretbox", "10.42.0.201", "192.168.20.7", "aa:bb", "00-11"):
        assert secret not in body


async def test_other_public_routes(rig: Rig) -> None:
    status, doc = await get_json(rig.client, "/api/v1/services/public/build-history")
    assert status == 200
    assert doc["data"]["builds"] == [{
        "package": "sys-libs/glibc-2.39", "drone": "drone-Izar", "result": "success",
        "started": "2026-02-23T10:00:00Z", "finished": "2026-02-23T10:20:00Z",
        "duration_s": 1200.0}]
    status, doc = await get_json(rig.client, "/api/v1/services/public/infrastructure")
    assert status == 200
    assert doc["data"]["orchestrator"]["status"] == "up"
    assert doc["data"]["drones"]["total"] == 2
    assert doc["data"]["binhost_url"] == "https://binhost.example.org/amd64"
    status, doc = await get_json(rig.client, "/api/v1/services/public/queue")
    assert status == 200
    assert doc["data"]["packages"] == [
        {"package": "dev-libs/openssl-3.3.2", "state": "building", "position": 1},
        {"package": "app-misc/foo-1.0", "state": "pending", "position": 2},
    ]
    assert doc["data"]["waiting"] == []
    # ?limit= cuts the list only (the status page asks for its 50 rows).
    status, doc = await get_json(rig.client, "/api/v1/services/public/queue?limit=1")
    assert status == 200
    assert [p["position"] for p in doc["data"]["packages"]] == [1]
    assert doc["data"]["queued"] == 2
    status, doc = await get_json(rig.client, "/api/v1/services/public/queue?limit=x")
    assert status == 400
    status, doc = await get_json(rig.client, "/api/v1/services/public/nope")
    assert status == 404
    assert doc["error"]["code"] == "not_found"


async def test_health_binhost_and_discovery(rig: Rig) -> None:
    status, doc = await get_json(rig.client, "/health")
    assert status == 200
    assert doc["status"] == "ok"
    assert doc["orchestrator"]["state"] == "up"
    assert doc["orchestrator"]["consecutive_failures"] == 0
    assert doc["spool_depth"] == 0
    status, doc = await get_json(rig.client, "/api/v1/binhost")
    assert doc["data"] == {"url": "https://binhost.example.org/amd64"}
    status, doc = await get_json(rig.client, "/api/v1/services")
    assert status == 200
    assert doc["data"]["orchestrator"]["status"] == "up"
    assert doc["data"]["binhost"]["url"] == "https://binhost.example.org/amd64"


async def test_discovery_shows_real_address_only_with_a_key(make_rig: Any) -> None:
    r = make_rig(orchestrator="http://10.42.0.201:8080")
    r.gw.probe.success()
    _, doc = await get_json(r.client, "/api/v1/services")
    assert doc["data"]["orchestrator"]["url"] == "http://192.0.2.201:8080"
    _, doc = await get_json(r.client, "/api/v1/services", headers=KEY)
    assert doc["data"]["orchestrator"]["url"] == "http://10.42.0.201:8080"
    status, _ = await get_json(r.client, "/api/v1/services", headers={"X-Admin-Key": "wrong"})
    assert status == 401


async def test_degraded_while_down_then_error_before_any_data(rig: Rig) -> None:
    status, first = await get_json(rig.client, "/api/v1/services/public/build-swarm")
    assert first["status"] == "ok"
    rig.fake.up = False
    for _ in range(3):
        rig.gw.probe.failure("test")
    assert not rig.gw.probe.up
    status, doc = await get_json(rig.client, "/api/v1/services/public/build-swarm")
    assert status == 200
    assert doc["status"] == "degraded"
    assert doc["data"]["orchestrator_status"] == "down"
    assert doc["data"]["drones"] == first["data"]["drones"]
    status, doc = await get_json(rig.client, "/api/v1/services/public/infrastructure")
    assert status == 503
    assert doc["status"] == "error"
    assert doc["error"]["code"] == "orchestrator_unavailable"


async def test_fetch_failure_while_up_serves_stale_as_degraded(rig: Rig) -> None:
    await get_json(rig.client, "/api/v1/services/public/queue")
    rig.gw.cache.clear()
    status, doc = await get_json(rig.client, "/api/v1/services/public/queue")
    assert status == 200  # refetched fine
    entry = rig.gw.cache.peek("queue")
    assert entry is not None
    rig.fake.fail_status = 500
    rig.gw.cache.ttl_s = 0
    status, doc = await get_json(rig.client, "/api/v1/services/public/queue")
    assert status == 200
    assert doc["status"] == "degraded"
    assert rig.gw.probe.st.consecutive_failures == 1  # a failed call counts


async def test_admin_forwards_with_control_token_and_passes_errors(rig: Rig) -> None:
    status, doc = await get_json(rig.client, "/api/swarm-admin/drones", headers=KEY)
    assert status == 200
    assert doc["drones"][0]["ip"] == "10.42.0.201"  # unsanitized
    assert rig.fake.auth_seen[-1] == f"Bearer {CONTROL_TOKEN}"
    status, doc = await get_json(rig.client, "/api/swarm-admin/logs?limit=5", headers=KEY)
    assert doc["query"] == "limit=5"
    resp = await rig.client.delete("/api/swarm-admin/queue/r-404", headers=KEY)
    assert resp.status_code == 404
    assert json.loads(await resp.get_data())["error"]["code"] == "not_found"
    resp = await rig.client.post("/api/swarm-admin/drones/d-1/restart", headers=KEY)
    assert resp.status_code == 202
    for path in ("status", "queue", "config"):
        resp = await rig.admin_client.get(f"/api/swarm-admin/{path}", headers=KEY)
        assert resp.status_code == 200, path
    resp = await rig.client.post("/api/swarm-admin/queue", headers=KEY,
                                 json={"packages": ["bad/atom"]})
    assert resp.status_code == 400
    assert "bad/atom" in json.loads(await resp.get_data())["error"]["message"]


async def test_admin_while_down_is_503_with_clear_error(rig: Rig) -> None:
    rig.fake.up = False
    for _ in range(3):
        rig.gw.probe.failure("test")
    resp = await rig.client.get("/api/swarm-admin/status", headers=KEY)
    assert resp.status_code == 503
    assert "Retry-After" in resp.headers
    doc = json.loads(await resp.get_data())
    assert doc["error"]["code"] == "orchestrator_down"


async def test_admin_listener_has_metrics_but_no_public_routes(rig: Rig) -> None:
    resp = await rig.admin_client.get("/metrics")
    assert resp.status_code == 200
    assert b"gatewayd_orchestrator_up 1.0" in await resp.get_data()
    resp = await rig.admin_client.get("/api/v1/services/public/build-swarm")
    assert resp.status_code == 404
    resp = await rig.client.get("/metrics")
    assert resp.status_code == 404
    resp = await rig.admin_client.get("/health")
    assert resp.status_code == 200


async def test_body_limit_and_errors_are_json(rig: Rig) -> None:
    resp = await rig.client.post("/api/swarm-admin/queue", headers={**KEY,
                                 "Content-Type": "text/plain"}, data=b"x" * (8 * 1024 * 1024 + 1))
    assert resp.status_code == 413
    assert json.loads(await resp.get_data())["error"]["code"] == "too_large"
    resp = await rig.client.put("/api/swarm-admin/queue", headers=KEY)
    assert resp.status_code == 405
    assert json.loads(await resp.get_data())["error"]["code"] == "method_not_allowed"
