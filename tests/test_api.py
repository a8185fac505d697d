"""swarmd's HTTP handlers without sockets (quart test client), over a fake journal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from swarmd.api import create_app
from swarmd.service import Orchestrator
from tests.conftest import make_orch

WORLD = (Path(__file__).parent / "data" / "world-tree.txt").read_text()


def snapshot(orch: Orchestrator) -> dict[str, Any]:
    return orch.state.to_snapshot()


async def test_status_and_errors(orch: Orchestrator) -> None:
    c = create_app(orch).test_client()
    r = await c.get("/api/status")
    assert r.status_code == 200
    doc = await r.get_json()
    assert doc["status"] == "ok"
    assert "version" in doc
    assert "journal" in doc
    assert "counts" in doc
    r = await c.get("/api/nope")
    assert r.status_code == 404
    assert (await r.get_json())["error"]["code"] == "not_found"
    r = await c.put("/api/status")
    assert r.status_code == 405
    assert (await r.get_json())["error"]["code"] == "method_not_allowed"


async def test_submit_tree_and_queue(orch: Orchestrator) -> None:
    c = create_app(orch).test_client()
    r = await c.post("/api/queue", data=WORLD, headers={"Content-Type": "text/plain"})
    assert r.status_code == 202
    rec = await r.get_json()
    # 7 package rows; gmp's is [binary] (already on a binhost): not queued (SPEC section 12)
    assert rec["queued"] == 6
    assert rec["skipped"] == 0
    assert rec["merged"] == 0
    q = await (await c.get("/api/queue")).get_json()
    by = {e["cpv"]: e for e in q["entries"]}
    assert by["sys-devel/gcc-14.2.1_p20241116"]["deps"] == [
        "dev-libs/mpc-1.3.1", "sys-libs/zlib-1.3.1-r1"]
    assert by["sys-devel/gcc-14.2.1_p20241116"]["state"] == "pending"
    assert "dev-libs/gmp-6.3.0-r1" not in by
    assert by["dev-libs/mpc-1.3.1"]["state"] == "ready"
    assert all(e["atom"] == "=" + e["cpv"] for e in q["entries"])
    # The same packages again: merged into the existing entries, not queued twice.
    r2 = await (await c.post("/api/queue", data=WORLD,
                             headers={"Content-Type": "text/plain"})).get_json()
    assert r2["queued"] == 0
    assert r2["merged"] == 6
    q2 = await (await c.get("/api/queue")).get_json()
    assert len(q2["entries"]) == 6
    r = await c.get("/api/queue?state=ready")
    assert {e["state"] for e in (await r.get_json())["entries"]} == {"ready"}
    r = await c.get("/api/queue?state=bogus")
    assert r.status_code == 400


async def test_bad_submission_changes_nothing(orch: Orchestrator) -> None:
    c = create_app(orch).test_client()
    before = snapshot(orch)
    body = "[ebuild  N    ] dev-libs/ok-1.0\n\n[ebuild  N    ] foo\n[ebuild  N    ] dev-libs/foo-\n"
    r = await c.post("/api/queue", data=body, headers={"Content-Type": "text/plain"})
    assert r.status_code == 400
    err = (await r.get_json())["error"]
    assert [ln["line"] for ln in err["lines"]] == [3, 4]
    assert "line 3" in err["message"]
    assert "line 4" in err["message"]
    assert snapshot(orch) == before
    r = await c.post("/api/queue", json={"packages": ["=dev-libs/a-1", "bogus"]})
    assert r.status_code == 400
    assert "bogus" in (await r.get_json())["error"]["message"]
    r = await c.post("/api/queue", data=b"x" * (8 * 1024 * 1024 + 10),
                     headers={"Content-Type": "text/plain"})
    assert r.status_code == 413
    assert (await r.get_json())["error"]["code"] == "too_large"
    assert snapshot(orch) == before


async def test_json_idempotent_request_id(orch: Orchestrator) -> None:
    c = create_app(orch).test_client()
    body = {"packages": ["=dev-libs/a-1", "=dev-libs/b-2"], "deps": {"=dev-libs/b-2": ["=dev-libs/a-1"]},
            "request_id": "client-key-1"}
    r1 = await c.post("/api/queue", json=body)
    assert r1.status_code == 202
    assert (await r1.get_json())["id"] == "client-key-1"
    r2 = await c.post("/api/queue", json=body)
    assert r2.status_code == 200
    doc = await r2.get_json()
    assert doc["id"] == "client-key-1"
    assert doc["duplicate"] is True
    assert len(orch.state.entries) == 2
    assert len(orch.state.requests) == 1


async def test_cycle_reported_and_broken(orch: Orchestrator) -> None:
    c = create_app(orch).test_client()
    body = {"packages": ["=a/a-1", "=a/b-1", "=a/c-1"],
            "deps": {"=a/a-1": ["=a/c-1"], "=a/b-1": ["=a/a-1"], "=a/c-1": ["=a/b-1"]}}
    r = await c.post("/api/queue", json=body)
    assert r.status_code == 202
    rec = await r.get_json()
    assert len(rec["cycles"]) == 1
    assert set(rec["cycles"][0]) == {"a/a-1", "a/b-1", "a/c-1"}
    assert orch.state.counts["ready"] == 1


async def test_tokens_enforced(tmp_path: Path) -> None:
    o = make_orch(tmp_path, control_token="ctl-secret", drone_token="drone-secret")
    async with trio.open_nursery() as nursery:
        await nursery.start(o.run)
        c = create_app(o).test_client()
        r = await c.post("/api/queue", json={"packages": ["=a/b-1"]})
        assert r.status_code == 401
        assert (await r.get_json())["error"]["code"] == "unauthorized"
        r = await c.post("/api/queue", json={"packages": ["=a/b-1"]},
                         headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = await c.post("/api/queue", json={"packages": ["=a/b-1"]},
                         headers={"Authorization": "Bearer ctl-secret"})
        assert r.status_code == 202
        reg = {"name": "d1", "cores": 4}
        r = await c.post("/api/drones/register", json=reg,
                         headers={"Authorization": "Bearer ctl-secret"})
        assert r.status_code == 401
        r = await c.post("/api/drones/register", json=reg,
                         headers={"Authorization": "Bearer drone-secret"})
        assert r.status_code == 200
        assert (await c.get("/api/status")).status_code == 200
        cfg = await (await c.get("/api/config")).get_json()
        assert cfg["config"]["control_token"] == "<set>"
        assert "ctl-secret" not in str(cfg)
        nursery.cancel_scope.cancel()


async def _register(c: Any, name: str, cores: int, mac: str = "") -> tuple[str, str]:
    r = await c.post("/api/drones/register", json={
        "name": name, "hostname": f"{name}.lan", "ip": "10.0.0.5", "mac": mac, "cores": cores,
        "arch": "amd64", "chost": "x86_64-pc-linux-gnu", "version": "0.1.0"})
    assert r.status_code == 200, await r.get_data()
    doc = await r.get_json()
    return doc["drone_id"], doc["session"]


async def test_drone_protocol_round_trip(orch: Orchestrator) -> None:
    c = create_app(orch).test_client()
    await c.post("/api/queue", json={"packages": ["=dev-libs/a-1", "=dev-libs/b-2"],
                                     "deps": {"=dev-libs/b-2": ["=dev-libs/a-1"]}})
    did, session = await _register(c, "d1", 8, mac="AA-BB-CC-DD-EE-FF")
    assert orch.state.drones[did].mac == "aa:bb:cc:dd:ee:ff"
    r = await c.post(f"/api/drones/{did}/lease", json={"session": session, "slots": 1, "wait_s": 0})
    assert r.status_code == 200
    job = await r.get_json()
    assert job["package"] == "dev-libs/a-1"
    assert job["atom"] == "=dev-libs/a-1"
    bid, lease = job["build_id"], job["lease"]
    # Only one slot: the next lease call gets nothing.
    r = await c.post(f"/api/drones/{did}/lease", json={"session": session, "wait_s": 0})
    assert r.status_code == 204
    r = await c.post(f"/api/builds/{bid}/log", data=b">>> Emerging dev-libs/a-1\n",
                     headers={"X-Swarm-Lease": lease, "Content-Type": "text/plain"})
    assert r.status_code == 200
    hb = await c.post(f"/api/drones/{did}/heartbeat", json={
        "session": session, "status": "building", "load": 1.5,
        "builds": [{"build_id": bid, "lease": lease, "progress": 40}]})
    assert (await hb.get_json()) == {"commands": [], "revoked": []}
    assert orch.state.entries[orch.state.builds[bid].entry_id].state == "building"
    # Bad bodies change nothing.
    before = snapshot(orch)
    for bad in ({"lease": lease, "result": "success", "duration_s": 5},
                {"lease": lease, "result": "success", "duration_s": -1,
                 "artifact": {"path": "a/b/c", "size": 1, "sha256": "0" * 64}},
                {"lease": lease, "result": "maybe"},
                {"lease": lease, "result": "failed", "atom": "=dev-libs/other-1"}):
        r = await c.post(f"/api/builds/{bid}/complete", json=bad)
        assert r.status_code == 400, bad
    r = await c.post("/api/builds/b-9999999/complete", json={"lease": "x", "result": "failed"})
    assert r.status_code == 404
    r = await c.post(f"/api/builds/{bid}/complete", json={"lease": "wrong", "result": "failed"})
    assert r.status_code == 409
    assert snapshot(orch) == before
    art = {"path": "dev-libs/a/a-1-d1-b1.gpkg.tar", "size": 10, "sha256": "a" * 64}
    r = await c.post(f"/api/builds/{bid}/complete", json={
        "lease": lease, "result": "success", "duration_s": 12.5, "artifact": art})
    assert r.status_code == 200
    assert (await r.get_json())["state"] == "built"
    # A repeated report with the spent lease is refused and changes nothing.
    before = snapshot(orch)
    r = await c.post(f"/api/builds/{bid}/complete", json={"lease": lease, "result": "failed"})
    assert r.status_code == 409
    assert snapshot(orch) == before
    pk = await (await c.get("/api/packages")).get_json()
    a = next(p for p in pk["packages"] if p["cpv"] == "dev-libs/a-1")
    assert a["built"]
    assert a["synced"]
    assert a["artifact"]["sha256"] == "a" * 64
    b = await (await c.get(f"/api/builds/{bid}?tail=5")).get_json()
    assert "Emerging" in b["log"]
    assert b["result"] == "success"
    r = await c.post(f"/api/drones/{did}/lease", json={"session": session, "wait_s": 0})
    assert (await r.get_json())["package"] == "dev-libs/b-2"
    # A new session of the same name supersedes the old; the old one is refused.
    did2, session2 = await _register(c, "d1", 8)
    assert did2 == did
    assert session2 != session
    r = await c.post(f"/api/drones/{did}/heartbeat", json={"session": session, "status": "ready"})
    assert r.status_code == 409
    assert (await r.get_json())["error"]["code"] == "session_superseded"
    assert orch.state.counts["ready"] == 1  # b-2 went back to the queue at once
    r = await c.post("/api/drones/d-nope/heartbeat", json={"session": "x", "status": "ready"})
    assert r.status_code == 404


async def test_retries_then_failed_and_blocked(orch: Orchestrator) -> None:
    c = create_app(orch).test_client()
    r = await c.post("/api/queue", json={"packages": ["=a/lib-1", "=a/app-1"],
                                         "deps": {"=a/app-1": ["=a/lib-1"]}})
    rid = (await r.get_json())["id"]
    drones = [await _register(c, f"d{i}", 8) for i in range(3)]
    used = []
    for attempt in range(3):
        got = None
        for did, session in drones:
            r = await c.post(f"/api/drones/{did}/lease", json={"session": session, "wait_s": 0})
            if r.status_code == 200:
                got = (did, await r.get_json())
                break
        assert got is not None, f"attempt {attempt + 1} was not leased"
        used.append(got[0])
        r = await c.post(f"/api/builds/{got[1]['build_id']}/complete", json={
            "lease": got[1]["lease"], "result": "failed", "duration_s": 1, "error": "boom"})
        assert r.status_code == 200
    assert len(set(used)) == 3  # each retry preferred a drone that had not failed it
    q = {e["cpv"]: e for e in (await (await c.get("/api/queue")).get_json())["entries"]}
    assert q["a/lib-1"]["state"] == "failed"
    assert q["a/lib-1"]["attempts"] == 3
    assert q["a/app-1"]["state"] == "blocked"
    assert "a/lib-1" in q["a/app-1"]["reason"]
    req = await (await c.get(f"/api/requests/{rid}")).get_json()
    assert req["state"] == "complete"


async def test_cancel_request_and_entry(orch: Orchestrator) -> None:
    c = create_app(orch).test_client()
    r = await c.post("/api/queue", json={"packages": ["=a/lib-1", "=a/app-1"],
                                         "deps": {"=a/app-1": ["=a/lib-1"]}})
    rid = (await r.get_json())["id"]
    r = await c.post("/api/queue", json={"packages": ["=a/lib-1", "=a/other-1"]})
    rid2 = (await r.get_json())["id"]
    # Cancelling the first request keeps a/lib-1 (shared with the second) and cancels a/app-1.
    r = await c.delete(f"/api/queue/{rid}")
    assert r.status_code == 200
    doc = await r.get_json()
    q = {e["cpv"]: e for e in (await (await c.get("/api/queue")).get_json())["entries"]}
    assert q["a/app-1"]["state"] == "cancelled"
    assert q["a/lib-1"]["state"] == "ready"
    assert q["a/lib-1"]["requests"] == [rid2]
    assert doc["cancelled"] == [q["a/app-1"]["id"]]
    r = await c.delete(f"/api/queue/{rid}")
    assert r.status_code == 409
    # A single entry: its dependents are blocked with the reason.
    r = await c.post("/api/queue", json={"packages": ["=b/lib-1", "=b/app-1"],
                                         "deps": {"=b/app-1": ["=b/lib-1"]}})
    q = {e["cpv"]: e for e in (await (await c.get("/api/queue")).get_json())["entries"]}
    r = await c.delete(f"/api/queue/{q['b/lib-1']['id']}")
    doc = await r.get_json()
    assert doc["blocked"] == [q["b/app-1"]["id"]]
    q = {e["cpv"]: e for e in (await (await c.get("/api/queue")).get_json())["entries"]}
    assert q["b/app-1"]["state"] == "blocked"
    assert "cancelled" in q["b/app-1"]["reason"]
    assert (await c.delete("/api/queue/nope")).status_code == 404


async def test_skipped_when_already_built(orch: Orchestrator) -> None:
    c = create_app(orch).test_client()
    await c.post("/api/queue", json={"packages": ["=a/x-1"]})
    did, session = await _register(c, "d1", 8)
    job = await (await c.post(f"/api/drones/{did}/lease",
                              json={"session": session, "wait_s": 0})).get_json()
    await c.post(f"/api/builds/{job['build_id']}/complete", json={
        "lease": job["lease"], "result": "success", "duration_s": 3,
        "artifact": {"path": "a/x/x-1.gpkg.tar", "size": 1, "sha256": "b" * 64}})
    rec = await (await c.post("/api/queue", json={"packages": ["=a/x-1", "=a/y-1"]})).get_json()
    assert rec["skipped"] == 1
    assert rec["queued"] == 1
    assert rec["skipped_cpvs"] == ["a/x-1"]


async def test_history_and_metrics(orch: Orchestrator) -> None:
    c = create_app(orch).test_client()
    r = await c.post("/api/history", json={"packages": {"dev-lang/rust": 4000}})
    assert (await r.get_json()) == {"recorded": 1}
    r = await c.post("/api/history", json={"packages": {"not an atom": 1}})
    assert r.status_code == 400
    await c.post("/api/queue", json={"packages": ["=dev-lang/rust-1.83.0"]})
    q = (await (await c.get("/api/queue")).get_json())["entries"]
    assert q[0]["estimate_s"] == 4000
    text = (await (await c.get("/metrics")).get_data()).decode()
    assert 'swarm_queue_entries{state="ready"} 1.0' in text
    assert "swarm_journal_appends_total 2.0" in text


async def test_merged_entry_gains_new_dependencies_without_cycles(orch: Orchestrator) -> None:
    c = create_app(orch).test_client()
    await c.post("/api/queue", json={"packages": ["=a/app-1"]})
    q = {e["cpv"]: e for e in (await (await c.get("/api/queue")).get_json())["entries"]}
    assert q["a/app-1"]["state"] == "ready"
    # A second request says a/app-1 needs a/lib-1: the shared entry waits for it.
    await c.post("/api/queue", json={"packages": ["=a/lib-1", "=a/app-1"],
                                     "deps": {"=a/app-1": ["=a/lib-1"]}})
    q = {e["cpv"]: e for e in (await (await c.get("/api/queue")).get_json())["entries"]}
    assert q["a/app-1"]["state"] == "pending"
    assert q["a/app-1"]["deps"] == ["a/lib-1"]
    # A third request claims the reverse edge: adding it would deadlock both, so it is kept out.
    await c.post("/api/queue", json={"packages": ["=a/app-1", "=a/lib-1"],
                                     "deps": {"=a/lib-1": ["=a/app-1"]}})
    q = {e["cpv"]: e for e in (await (await c.get("/api/queue")).get_json())["entries"]}
    assert q["a/lib-1"]["deps"] == []
    assert q["a/lib-1"]["state"] == "ready"
