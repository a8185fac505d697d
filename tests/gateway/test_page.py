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
