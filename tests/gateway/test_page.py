"""The status page without a browser: the server-rendered first paint, its headers, the static
files and the queue depth history (tests/test_page_browser.py runs it in Chromium)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from gatewayd import page
from gatewayd.push import Hub, QueueHistory
from tests.gateway.fakes import Rig

CANARIES = ("izar-host", "secretbox", "10.42.0.201", "192.168.20.7", "aa:bb:cc", "00-11-22",
            "control-token", "key-one")


async def get_page(rig: Rig) -> tuple[int, Any, str]:
    resp = await rig.client.get("/")
    return resp.status_code, resp.headers, (await resp.get_data()).decode()


async def test_page_is_server_rendered_from_public_data(rig: Rig) -> None:
    status, headers, body = await get_page(rig)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    # The drones, by alias, with their state in words, cores and current package.
    assert 'data-name="drone-Izar"' in body
    assert 'data-name="drone-Vega"' in body
    assert '<span class="badge st-building state">building</span>' in body
    assert "16 cores" in body
    assert "sys-libs/glibc-2.39" in body
    assert "orch-Izar" in body
    assert 'id="orch-state" class="badge st-up">up<' in body
    assert "https://binhost.example.org/amd64" in body
    # Queue counts and queued packages, recent builds with result and duration.
    assert 'id="count-pending">3<' in body
    assert "app-misc/foo-1.0" in body
    assert '<span class="badge r-success">success</span>' in body
    assert "20m 00s" in body
    low = body.lower()
    for canary in CANARIES:
        assert canary not in low, canary


async def test_page_uses_only_relative_urls_and_no_inline_code(rig: Rig) -> None:
    _, _, body = await get_page(rig)
    urls = re.findall(r'(?:src|href|action)="([^"]*)"', body)
    assert "static/app.js" in urls
    assert "static/app.css" in urls
    for u in urls:
        assert not u.startswith(("/", "http:", "https:", "//")), u
    # No inline script or style (the CSP would block them): one external module only.
    assert re.findall(r"<script[^>]*>", body) == ['<script type="module" src="static/app.js">']
    assert " style=" not in body
    assert "<style" not in body
    assert re.search(r"\son[a-z]+=", body) is None


async def test_gantt_and_waiting_reasons(rig: Rig) -> None:
    now = datetime.now(UTC)
    started = now.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    rig.fake.state["builds"] = [
        {"cpv": "dev-libs/a-1", "drone_name": "drone-Izar-Host", "result": "failed",
         "started": started, "finished": started, "duration_s": 75.0},
        {"cpv": "dev-libs/b-1", "drone_name": "drone-secretbox", "result": None,
         "started": started, "finished": None, "duration_s": None},
    ]
    rig.fake.state["queue"]["entries"].append(
        {"id": "e-9", "cpv": "x11-libs/gtk-3", "state": "pending",
         "target_id": "77aa0c1d9e3b5f10", "waiting": "no drone for target 77aa0c1d9e3b5f10"})
    _, _, body = await get_page(rig)
    assert 'class="gantt-row" data-drone="drone-Izar"' in body
    assert '<rect class="bar r-failed"' in body
    assert "<title>dev-libs/a-1: failed, 1m 15s</title>" in body
    assert '<rect class="bar r-running"' in body  # a running build is a bar up to now
    assert "no drone for target 77aa0c1d" in body
    assert "77aa0c1d9e3b5f10" not in body
    assert "<strong>1</strong> waiting: no drone for target 77aa0c1d" in body
    # The route says why over the whole queue, also when its list is cut (as the page asks).
    resp = await rig.client.get("/api/v1/services/public/queue?limit=0")
    doc = json.loads(await resp.get_data())
    assert doc["data"]["packages"] == []
    assert doc["data"]["queued"] == 3
    assert doc["data"]["waiting"] == [{"reason": "no drone for target 77aa0c1d", "count": 1}]


async def test_page_before_any_data_and_while_down(make_rig: Any) -> None:
    rig = make_rig()
    rig.fake.up = False
    status, headers, body = await get_page(rig)
    assert status == 200
    assert "No data yet" in body
    assert 'id="orch-state" class="badge st-down">down<' in body
    # With data cached, then swarmd down: the last data, said to be stale.
    rig.fake.up = True
    rig.gw.probe.success()
    assert (await rig.client.get("/")).status_code == 200
    rig.fake.up = False
    for _ in range(3):
        rig.gw.probe.failure("test")
    _, _, body = await get_page(rig)
    assert "drone-Izar" in body
    assert "The orchestrator is down" in body
    assert "stale" in body


async def test_static_files_have_validators(rig: Rig) -> None:
    for name, ctype in (("app.js", "text/javascript"), ("app.css", "text/css"),
                        ("favicon.svg", "image/svg+xml")):
        resp = await rig.client.get(f"/static/{name}")
        assert resp.status_code == 200
        assert resp.headers["Content-Type"].startswith(ctype)
        etag = resp.headers["ETag"]
        assert etag.startswith('"')
        assert resp.headers["Last-Modified"].endswith("GMT")
        again = await rig.client.get(f"/static/{name}", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert await again.get_data() == b""
        other = await rig.client.get(f"/static/{name}", headers={"If-None-Match": '"nope"'})
        assert other.status_code == 200
    for bad in ("/static/nope.js", "/static/..%2Fapp.py", "/static/../app.py"):
        assert (await rig.client.get(bad)).status_code == 404


def test_static_js_uses_relative_urls_only() -> None:
    js = (page.STATIC_DIR / "app.js").read_text()
    assert 'new URL("ws/build-status", document.baseURI)' in js
    assert "document.baseURI" in js
    # No absolute path or other origin in a string of the module.
    for literal in re.findall(r'["`]([^"`]*)["`]', js):
        assert not literal.startswith(("/", "//")), literal
        if literal == "http://www.w3.org/2000/svg":
            continue  # the SVG namespace name, never fetched
        assert "http://" not in literal, literal
        assert "https://" not in literal, literal
    css = (page.STATIC_DIR / "app.css").read_text()
    assert "url(" not in css
    assert "@import" not in css


def test_queue_history_ring_is_bounded_and_coalesced() -> None:
    qh = QueueHistory(capacity=3, min_interval_s=5)

    def msg(t: str, pending: int) -> dict[str, Any]:
        return {"type": "queue_update", "timestamp": t,
                "data": {"pending": pending, "building": 0, "completed": 0, "failed": 0}}

    qh.add(msg("2026-02-23T10:00:00Z", 1))
    qh.add(msg("2026-02-23T10:00:01Z", 2))  # within 5 s: replaces the value, keeps the time
    assert [(s["t"], s["pending"]) for s in qh.recent()] == [("2026-02-23T10:00:00Z", 2)]
    qh.add(msg("2026-02-23T10:00:10Z", 2))  # no change: not stored
    qh.add(msg("2026-02-23T10:00:20Z", 3))
    qh.add(msg("2026-02-23T10:00:30Z", 4))
    qh.add(msg("2026-02-23T10:00:40Z", 5))
    assert [s["pending"] for s in qh.recent()] == [3, 4, 5]
    qh.add({"type": "drone_status", "timestamp": "2026-02-23T10:01:00Z", "data": {}})
    qh.add(msg("not a time", 9))
    assert len(qh.recent()) == 3


async def test_queue_history_route_from_the_hub(rig: Rig) -> None:
    hub = Hub(rig.gw.sanitizer, queue_history=rig.gw.queue_history)
    hub.publish({"seq": 1, "type": "queue_update", "timestamp": "2026-02-23T10:00:00Z",
                 "data": {"pending": 4, "building": 1, "completed": 2, "failed": 0,
                          "hostname": "izar-host"}})
    hub.publish({"seq": 2, "type": "queue_update", "timestamp": "2026-02-23T10:00:30Z",
                 "data": {"pending": 3, "building": 2, "completed": 2, "failed": 0}})
    resp = await rig.client.get("/api/v1/services/public/queue-history")
    assert resp.status_code == 200
    doc = json.loads(await resp.get_data())
    assert doc["status"] == "ok"
    from tests.test_openapi import ApiSchema

    ApiSchema("openapi-gateway.yaml").validate(
        "GET", "/api/v1/services/public/queue-history", 200, doc)
    assert doc["data"] == {"samples": [
        {"t": "2026-02-23T10:00:00Z", "pending": 4, "building": 1, "completed": 2, "failed": 0},
        {"t": "2026-02-23T10:00:30Z", "pending": 3, "building": 2, "completed": 2, "failed": 0},
    ]}
    _, _, body = await get_page(rig)
    assert 'class="line pending" points="' in body
    assert "now 3 pending, 2 building" in body


def test_sanitizer_queue_history_is_an_allowlist(rig: Rig) -> None:
    data = rig.gw.sanitizer.queue_history([
        {"t": "2026-02-23T10:00:00Z", "pending": 1, "building": "x", "host": "izar-host"},
        {"t": "izar-host", "pending": 1},
        "junk",
    ])
    assert data == {"samples": [{"t": "2026-02-23T10:00:00Z", "pending": 1, "building": 0,
                                 "completed": 0, "failed": 0}]}


def test_etag_matching() -> None:
    assert page.etag_matches('"a", W/"b"', '"b"')
    assert page.etag_matches("*", '"b"')
    assert not page.etag_matches(None, '"b"')
    assert not page.etag_matches('"c"', '"b"')


async def test_requests_route_is_sanitized_with_an_estimate(rig: Rig) -> None:
    resp = await rig.client.get("/api/v1/services/public/requests")
    assert resp.status_code == 200
    doc = json.loads(await resp.get_data())
    from tests.test_openapi import ApiSchema

    ApiSchema("openapi-gateway.yaml").validate(
        "GET", "/api/v1/services/public/requests", 200, doc)
    data = doc["data"]
    assert data["open"] == 1
    assert data["drones_available"] == 2
    first, done = data["requests"]
    # Open first. Work left: openssl 600 s x (1 - 40 %) + foo 300 s = 660 s on 8 cores, over
    # 16 + 8 cores = 3 eight-core drones: 220 s; the critical path (900 s on 8 cores) on the
    # 16-core drone takes 450 s, which wins.
    assert {k: first[k] for k in ("request_id", "state", "packages", "built", "remaining",
                                  "estimate_s", "waiting")} == {
        "request_id": "r-1", "state": "open", "packages": 3, "built": 1, "remaining": 2,
        "estimate_s": 450, "waiting": None}
    assert first["estimated_finish"] is not None
    # A minted gw-<hex> id would be redacted: it gets a stable alias instead.
    assert done["state"] == "complete"
    assert done["request_id"].startswith("req-")
    assert "0123456789abcdef" not in json.dumps(doc)
    assert (done["built"], done["failed"], done["finished"]) == (1, 1, "2026-02-23T09:30:00Z")
    # The socket names the request the same way.
    msg = rig.gw.sanitizer.public_event({"type": "build_complete", "timestamp":
                                         "2026-02-23T09:30:00Z", "data": {
                                             "request_id": "gw-0123456789abcdef0123456789abcdef",
                                             "packages": 2, "built": 1, "failed": 1}})
    assert msg is not None
    assert msg["data"]["request_id"] == done["request_id"]


def test_request_estimate_without_a_drone_for_the_target(rig: Rig) -> None:
    tid = "77aa0c1d9e3b5f10"
    requests = {"requests": [{"id": "arm", "state": "open", "packages": 1, "priority": 0,
                              "entries": ["e-1"], "counts": {"pending": 1}, "summary": {},
                              "created": "2026-02-23T10:00:00Z", "finished": None}]}
    queue = {"entries": [{"id": "e-1", "state": "pending", "estimate_s": 60, "target_id": tid}]}
    drones = {"drones": [{"name": "x", "cores": 8, "status": "ready", "target_id": "ffff0000"}]}
    now = datetime(2026, 2, 23, 10, 0, tzinfo=UTC)
    data = rig.gw.sanitizer.requests(requests, queue, drones, now=now)
    (r,) = data["requests"]
    assert (r["estimate_s"], r["estimated_finish"]) == (None, None)
    assert r["waiting"] == "no drone for target 77aa0c1d"
    # With a drone of that target: 60 s of work on 8 cores.
    drones["drones"].append({"name": "y", "cores": 8, "status": "building", "target_id": tid})
    (r,) = rig.gw.sanitizer.requests(requests, queue, drones, now=now)["requests"]
    assert (r["estimate_s"], r["estimated_finish"]) == (60, "2026-02-23T10:01:00Z")


async def test_page_shows_requests_and_build_progress(rig: Rig) -> None:
    _, _, body = await get_page(rig)
    # Requests in the first paint: done/total with a bar, failures, the estimate.
    assert '<section id="requests" class="card wide">' in body
    assert 'data-id="r-1"' in body
    assert '<progress max="3" value="1" aria-label="request r-1 done">1/3</progress>' in body
    assert "1/3 done \u00b7 1 built \u00b7 0 failed \u00b7 0 blocked \u00b7 finish ~" in body
    assert "1 open" in body
    assert "1 built \u00b7 1 failed" in body
    assert "finished 09:30:00 UTC" in body
    # The building drone has a progress bar from the public progress and start time.
    assert ('<progress max="100" value="40" aria-label="sys-libs/glibc-2.39 progress">40%'
            "</progress>") in body
    assert re.search(r'<p class="eta">40% \u00b7 [0-9hm ]+ of ~[0-9hm ]+</p>', body)
    low = body.lower()
    for canary in (*CANARIES, "0123456789abcdef"):
        assert canary not in low, canary


def test_page_caps_the_timeline_rows() -> None:
    now = datetime(2026, 2, 23, 12, 0, tzinfo=UTC)
    builds = [{"package": f"a/p{i}-1", "drone": f"drone-{i:03d}", "result": "success",
               "started": f"2026-02-23T11:{i % 60:02d}:00Z",
               "finished": f"2026-02-23T11:{i % 60:02d}:30Z", "duration_s": 30}
              for i in range(60)]
    html = page._render_gantt({"builds": builds}, now)
    assert html.count('class="gantt-row"') == page.MAX_GANTT_ROWS
    assert "and 20 more drones" in html
    assert 'data-drone="drone-059"' in html  # the latest are shown
    assert 'data-drone="drone-000"' not in html
