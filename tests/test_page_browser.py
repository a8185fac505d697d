"""The status page in a real browser: Debian's chromium, headless, driven by Playwright for
Python (never a downloaded browser), against real swarmd and gatewayd processes, through a
small reverse proxy that serves the gateway under ``/api/gateway/`` as the seed's site does.

Checked: the drones appear with their states; a build that starts shows up without a reload
within 2 s and finishes on the page; its request is listed open, then complete; with scripts off the page still shows the swarm; stopping
swarmd shows the orchestrator down and the data stale; no canary (real names, addresses, MACs,
keys) in the DOM, in anything the page fetched or in any WebSocket frame; no console error; no
request to another origin; no horizontal scrolling at 390 px.

Chromium missing is a failure with a message, not a skip: `.ci/run` installs it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SwarmdProc, free_port
from tests.test_gateway_integration import ADMIN, CANARIES, CONTROL, GatewayProc

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("SWARM_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PREFIX = "/api/gateway/"
LIVE_BUDGET_S = 2.0


def _require_browser() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium; "
                    ".ci/run does) or set SWARM_TEST_CHROMIUM; the status page is tested in a "
                    "real browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[test]' (never run "
                    "`playwright install`; the tests use the system chromium)")
    return sync_playwright


class PrefixProxy:
    """A reverse proxy on 127.0.0.1 that maps ``/api/gateway/X`` to the gateway's ``/X``,
    WebSocket upgrades included (after the request head it only copies bytes). One request per
    connection for plain HTTP (it sends ``Connection: close`` upstream), so every request head
    passes through the rewrite."""

    def __init__(self, upstream_port: int, prefix: str = PREFIX) -> None:
        self.upstream_port = upstream_port
        self.prefix = prefix.encode()
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.seen: list[str] = []

    def __enter__(self) -> PrefixProxy:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.split(b"\r\n")
        method, target, version = lines[0].split(b" ", 2)
        self.seen.append(target.decode(errors="replace"))
        if not target.startswith(self.prefix):
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        headers = [h for h in lines[1:] if h]
        upgrade = any(h.lower().startswith(b"upgrade:") for h in headers)
        if not upgrade:
            headers = [h for h in headers if not h.lower().startswith(b"connection:")]
            headers.append(b"Connection: close")
        new_target = b"/" + target[len(self.prefix):]
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        up_w.write(b" ".join([method, new_target, version]) + b"\r\n"
                   + b"\r\n".join(headers) + b"\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass

        tasks = [asyncio.ensure_future(pipe(reader, up_w)), asyncio.ensure_future(pipe(up_r, writer))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for w in (writer, up_w):
                w.close()


class Drone:
    """A drone over the real protocol, driven step by step by the test, with canary identity."""

    def __init__(self, sd_url: str, name: str, hostname: str, ip: str, mac: str) -> None:
        self.c = httpx.Client(base_url=sd_url, timeout=10)
        reg = self.c.post("/api/drones/register", json={
            "name": name, "hostname": hostname, "ip": ip, "mac": mac, "cores": 8,
            "arch": "amd64", "chost": "x86_64-pc-linux-gnu", "version": "t"})
        reg.raise_for_status()
        self.id, self.session = reg.json()["drone_id"], reg.json()["session"]
        self.job: dict[str, Any] | None = None

    def lease(self) -> dict[str, Any]:
        r = self.c.post(f"/api/drones/{self.id}/lease", json={"session": self.session,
                                                               "wait_s": 0})
        assert r.status_code == 200, r.text
        self.job = r.json()
        return self.job

    def beat(self) -> None:
        builds = [] if self.job is None else [
            {"build_id": self.job["build_id"], "lease": self.job["lease"], "progress": 50}]
        self.c.post(f"/api/drones/{self.id}/heartbeat", json={
            "session": self.session, "status": "building" if builds else "ready", "load": 1.0,
            "builds": builds}).raise_for_status()

    def complete(self) -> None:
        assert self.job is not None
        self.c.post(f"/api/builds/{self.job['build_id']}/complete", json={
            "lease": self.job["lease"], "result": "success", "duration_s": 3.0,
            "artifact": {"path": "a/b/b-1-1.gpkg.tar", "size": 1, "sha256": "c" * 64},
        }).raise_for_status()
        self.job = None


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[tuple[SwarmdProc, GatewayProc]]:
    sd = SwarmdProc(tmp_path / "state", tmp_path / "swarmd.log",
                    env={"SWARM_CONTROL_TOKEN": CONTROL},
                    extra=["--heartbeat-interval-s", "5", "--offline-after-s", "300"]).start()
    gw = GatewayProc(tmp_path, sd.url)
    try:
        gw.start()
        yield sd, gw
    finally:
        if gw.proc is not None:
            gw.stop()
        if sd.proc is not None and sd.proc.poll() is None:
            sd.stop()


def _no_canary(text: str, where: str) -> None:
    low = text.lower()
    for c in [*CANARIES, "altair.lan", "10.42.0.78", "aa:bb:cc:dd:ee:02"]:
        assert c.lower() not in low, f"canary {c!r} in {where}: {text[:300]}"


def test_status_page_in_chromium(swarm: tuple[SwarmdProc, GatewayProc]) -> None:
    sync_playwright = _require_browser()
    sd, gw = swarm
    vega = Drone(sd.url, "drone-Secretbox", "secretbox.lan", "10.42.0.77", "AA-BB-CC-DD-EE-01")
    Drone(sd.url, "drone-Altair", "altair.lan", "10.42.0.78", "aa:bb:cc:dd:ee:02").beat()
    vega.beat()

    requests: list[str] = []
    bodies: list[tuple[str, str]] = []
    frames: list[str] = []
    errors: list[str] = []
    timings: dict[str, float] = {}

    with PrefixProxy(gw.port) as proxy, sync_playwright() as pw:
        origin = f"http://127.0.0.1:{proxy.port}"
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # Scripts off: the server-rendered page alone shows the swarm.
            ctx = browser.new_context(java_script_enabled=False)
            static = ctx.new_page()
            static.goto(origin + PREFIX)
            assert static.locator('#drone-list li[data-name="drone-Vega"] .state').inner_text() \
                == "ready"
            _no_canary(static.content(), "page without scripts")
            ctx.close()

            ctx = browser.new_context(viewport={"width": 390, "height": 844})
            page = ctx.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))

            def on_response(resp: Any) -> None:
                try:
                    bodies.append((resp.url, resp.text()))
                except Exception:  # noqa: BLE001 - a body that is gone (304, redirect)
                    pass

            page.on("response", on_response)
            sockets: list[str] = []

            def on_socket(ws: Any) -> None:
                sockets.append(ws.url)
                ws.on("framereceived", lambda payload: frames.append(str(payload)))

            page.on("websocket", on_socket)
            page.goto(origin + PREFIX)

            # The drones with their states, and the socket connected (through the proxy).
            vega_card = page.locator('#drone-list li[data-name="drone-Vega"]')
            page.wait_for_function(
                "() => document.getElementById('live').textContent.startsWith('Live')", timeout=10000)
            assert vega_card.locator(".state").inner_text() == "ready"
            assert page.locator("#drone-list li.drone").count() == 2
            assert page.locator("#orch-state").inner_text() == "up"

            # A build starts: on the page without a reload within 2 s.
            r = httpx.post(gw.url + "/api/swarm-admin/queue", headers={"X-Admin-Key": ADMIN},
                           json={"packages": ["=app-misc/livebuild-1"], "request_id": "page1"},
                           timeout=10)
            assert r.status_code in (200, 202), r.text
            deadline = time.monotonic() + 10
            while True:
                try:
                    vega.lease()
                    break
                except AssertionError:
                    assert time.monotonic() < deadline, "the drone got no lease"
                    time.sleep(0.1)
            t0 = time.monotonic()
            page.wait_for_function(
                """() => { const li = document.querySelector('#drone-list li[data-name="drone-Vega"]');
                           return li && li.textContent.includes('app-misc/livebuild-1')
                                  && li.querySelector('.state').textContent === 'building'; }""",
                timeout=LIVE_BUDGET_S * 1000)
            timings["start shown"] = time.monotonic() - t0
            vega.beat()
            # The request is listed as open with its progress (requests route, re-fetched
            # after the queue changed).
            page.wait_for_function(
                """() => { const li = document.querySelector('#request-list li[data-id="page1"]');
                           return li && li.querySelector('.badge').textContent === 'open'
                                  && li.textContent.includes('0/1 done'); }""", timeout=6000)

            # It finishes: in the recent builds with its result, the drone idle again.
            vega.complete()
            t0 = time.monotonic()
            page.wait_for_function(
                """() => { const t = document.getElementById('history-table').textContent;
                           const li = document.querySelector('#drone-list li[data-name="drone-Vega"]');
                           return t.includes('app-misc/livebuild-1') && t.includes('success')
                                  && li.textContent.includes('idle'); }""",
                timeout=LIVE_BUDGET_S * 1000)
            timings["finish shown"] = time.monotonic() - t0
            gantt = page.locator('#gantt .gantt-row[data-drone="drone-Vega"]')
            assert "app-misc/livebuild-1" in (gantt.text_content() or "")
            assert page.locator("#count-completed").inner_text() == "1"
            page.locator("#request-list").wait_for(state="visible", timeout=2000)
            page.wait_for_function(
                """() => { const li = document.querySelector('#request-list li[data-id="page1"]');
                           return li && li.querySelector('.badge').textContent === 'complete'
                                  && li.textContent.includes('1/1 done \u00b7 1 built'); }""",
                timeout=LIVE_BUDGET_S * 1000)

            # Readable on a phone: nothing wider than the 390 px viewport.
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"horizontal scrolling at 390 px: scrollWidth {width}"

            # swarmd stops: the page shows the orchestrator down and its data stale.
            sd.stop()
            t0 = time.monotonic()
            page.wait_for_function(
                "() => document.getElementById('orch-state').textContent === 'down'", timeout=15000)
            timings["down shown"] = time.monotonic() - t0
            assert page.locator("#banner").is_visible()
            assert "stale" in page.locator("#live").inner_text()

            dom = page.content()
            page.close()
            ctx.close()
        finally:
            browser.close()

    print("status page timings (s):", {k: round(v, 2) for k, v in timings.items()})
    _no_canary(dom, "DOM")
    for url, body in bodies:
        _no_canary(body, f"response {url}")
    assert frames, "no WebSocket frame reached the page"
    for f in frames:
        _no_canary(f, "WebSocket frame")
    assert not errors, errors
    foreign = [u for u in requests if not u.startswith(origin + PREFIX)]
    assert not foreign, f"requests outside {origin}{PREFIX}: {foreign}"
    ws_origin = origin.replace("http://", "ws://", 1)
    assert sockets, "the page opened no WebSocket"
    assert all(u == f"{ws_origin}{PREFIX}ws/build-status" for u in sockets), sockets
    assert f"{PREFIX}ws/build-status" in proxy.seen
    assert any("/api/v1/services/public/" in u for u in requests)
