"""The status page in a browser at scale: 1,000 drones, 20,000 queued packages, 50 events/s.

    .venv/bin/python -m bench.page [--drones 1000] [--queued 20000] [--rate 50] [--seconds 180]
                                   [--loads 6] [--load-s 10]

A fake swarmd (a child process: Quart-Trio on Hypercorn, this module's ``fake`` mode) serves
the operator API the gateway reads (``/api/status``, ``/api/drones``, ``/api/queue``,
``/api/builds``, ``/api/requests``) for ``drones`` drones and ``queued`` unfinished packages,
and ``/api/events`` at ``rate`` events/s: each build is ``build_progress`` finished,
``queue_update``, ``build_progress`` started (the next package, same drone), ``drone_status``
and two ``build_progress`` progress (on other drones); finished packages are replaced by new
ones, so the queue stays at ``queued``; a request (1,000 packages) that finishes sends
``build_complete``. The real gatewayd (``--cache-ttl-s 10``) sits in front of it, and Debian's
chromium (headless, Playwright for Python, ``executable_path``) loads the page.

1. First render, ``loads`` times in a fresh browser context: from navigation start to
   ``loadEventEnd`` (the server-rendered page), to the script's ``cc-data`` mark (the public
   API fetched and rendered) and to ``cc-live`` (the first render after a socket message);
   "complete" is the latest of the three. A load during which the gateway refilled a route's
   cache (its ``gatewayd_cache_misses_total`` moved) is reported apart as cold.
2. Keeping up: one page for ``seconds`` (after 20 s of warm-up) with the stream at ``rate``.
   Chrome's own counters (DevTools ``Performance.getMetrics``): main-thread task time per
   event received, JS heap and DOM nodes after a forced garbage collection every 15 s. About one
   build start a second is a probe package (``probe/pN-1``): an init script's MutationObserver
   notes when its name first appears in the drone list; minus the fake's send time (same
   clock), that is the event -> on-the-page latency (gateway sanitizing and fan-out included).
3. The gateway's cached ``build-swarm`` route (a 1,000-drone answer) under ``bench.gateway``'s
   100 keep-alive clients for ``load_s`` with the page open, then with no browser.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import httpx

from bench.common import REPO, cpu_seconds, free_port, machine, pct
from swarmlib.timefmt import iso

CHROMIUM = os.environ.get("SWARM_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TARGET = "5e1f0c2a9b7d4e3f" + "0" * 48
OTHER_TARGET = "a7c3e9d1f2b4c6e8" + "0" * 48
REQUEST_SIZE = 1000
PROBE_EVERY = 8  # every 8th build start is a probe (about 1/s at 50 events/s)
WARMUP_S = 20.0
SAMPLE_S = 15.0

# Notes when a probe package first shows in the drone list (wall clock, as the fake's).
PROBE_SCRIPT = """
window.__probes = {};
const seen = (text) => {
  for (const m of text.matchAll(/probe\\/p(\\d+)-1/g)) {
    if (!(m[1] in window.__probes)) window.__probes[m[1]] = Date.now();
  }
};
new MutationObserver((muts) => {
  for (const mu of muts) for (const n of mu.addedNodes) {
    if (n.nodeType === 1 || n.nodeType === 3) seen(n.textContent || "");
  }
}).observe(document, { childList: true, subtree: true });
"""


# ---------------------------------------------------------------------------- the fake swarmd
class FakeSwarm:
    """swarmd's operator API and event stream for a large swarm, in memory."""

    def __init__(self, drones: int, queued: int, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.t0 = time.time()
        self.seq = 0
        self.n_entries = 0
        self.builds: deque[dict[str, Any]] = deque(maxlen=100)
        self.counts = {s: 0 for s in ("pending", "ready", "assigned", "building", "built",
                                      "failed", "blocked", "cancelled")}
        self.entries: dict[str, dict[str, Any]] = {}  # unfinished, in queue order
        self.pending: deque[str] = deque()
        self.requests: dict[str, dict[str, Any]] = {}
        self.drones: list[dict[str, Any]] = []
        self.running: deque[int] = deque()  # drone indexes, oldest build first
        self.probe_no = 0
        self.starts = 0
        for i in range(drones):
            status = "building" if i < drones * 0.8 else "ready" if i < drones * 0.95 else \
                "offline"
            self.drones.append({
                "id": f"d-{i:04d}", "name": f"drone-{i:04d}", "hostname": f"bench-node-{i:04d}.lan",
                "ip": f"10.{40 + i // 250}.{i % 250}.{10 + i % 200}",
                "mac": f"52:54:00:{i // 65536:02x}:{i // 256 % 256:02x}:{i % 256:02x}",
                "cores": rng.choice([4, 8, 16, 32]), "arch": "amd64", "status": status,
                "target_id": TARGET, "current_builds": []})
        for _ in range(queued):
            self._new_entry()
        for i, d in enumerate(self.drones):
            if d["status"] == "building":
                self._start(i, when=time.time() - rng.uniform(0, 300))

    # -- state ------------------------------------------------------------------------------
    def _new_entry(self) -> None:
        n = self.n_entries
        self.n_entries += 1
        rid = f"bench-r{n // REQUEST_SIZE:03d}"
        r = self.requests.get(rid)
        if r is None:
            r = self.requests[rid] = {
                "id": rid, "state": "open", "created": iso(time.time()), "finished": None,
                "packages": 0, "priority": 0, "entries": [], "cycles": [],
                "counts": {**dict.fromkeys(self.counts, 0), "skipped": 0},
            }
        eid = f"e-{n:06d}"
        other = n % 50 == 7  # 2 %: a target no drone has, so they wait
        est = float(self.rng.choice([30, 60, 120, 300, 600, 1800]))
        self.entries[eid] = {
            "id": eid, "cpv": f"cat-{n % 97}/pkg{n}-1.{n % 13}", "state": "pending",
            "target_id": OTHER_TARGET if other else TARGET,
            "waiting": f"no drone for target {OTHER_TARGET}" if other else None,
            "requests": [rid], "estimate_s": est, "priority": est * 3,
            "request_priority": 0, "build_id": None, "drone": None,
            "created": iso(time.time()),
        }
        if not other:
            self.pending.append(eid)
        r["entries"].append(eid)
        r["packages"] += 1
        r["counts"]["pending"] += 1
        self.counts["pending"] += 1

    def _move(self, e: dict[str, Any], state: str) -> None:
        r = self.requests[e["requests"][0]]
        r["counts"][e["state"]] -= 1
        r["counts"][state] += 1
        self.counts[e["state"]] -= 1
        self.counts[state] += 1
        e["state"] = state

    def _start(self, i: int, when: float | None = None) -> dict[str, Any] | None:
        if not self.pending:
            return None
        eid = self.pending.popleft()
        e = self.entries[eid]
        self.starts += 1
        probe = None
        if self.starts % PROBE_EVERY == 0:
            self.probe_no += 1
            probe = self.probe_no
            e["cpv"] = f"probe/p{probe}-1"
        d = self.drones[i]
        bid = f"b-{eid}"
        e["build_id"], e["drone"] = bid, d["id"]
        self._move(e, "building")
        d["status"] = "building"
        d["current_builds"] = [{"build_id": bid, "cpv": e["cpv"], "progress": 0.0,
                                "started": iso(when or time.time()), "entry": eid,
                                "t": when or time.time()}]
        self.running.append(i)
        return {"entry": e, "drone": d, "probe": probe}

    def _finish(self) -> tuple[dict[str, Any], dict[str, Any], str, int] | None:
        if not self.running:
            return None
        i = self.running.popleft()
        d = self.drones[i]
        b = d["current_builds"][0]
        e = self.entries.pop(b["entry"])
        result = "failed" if self.rng.random() < 0.05 else "success"
        self._move(e, "built" if result == "success" else "failed")
        took = max(time.time() - b["t"], 1.0)
        self.builds.append({"id": b["build_id"], "cpv": e["cpv"], "drone": d["id"],
                            "drone_name": d["name"], "result": result, "started": b["started"],
                            "finished": iso(time.time()), "duration_s": round(took, 1)})
        d["current_builds"] = []
        self._new_entry()
        return e, d, result, i

    # -- events -----------------------------------------------------------------------------
    def _event(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        return {"seq": self.seq, "type": kind, "timestamp": iso(time.time()), "data": data}

    def _drone_event(self, d: dict[str, Any]) -> dict[str, Any]:
        cur = d["current_builds"][0]["cpv"] if d["current_builds"] else None
        return self._event("drone_status", {
            "drone_id": d["id"], "name": d["name"], "hostname": d["hostname"], "ip": d["ip"],
            "cores": d["cores"], "status": d["status"], "current_package": cur})

    def _queue_event(self) -> dict[str, Any]:
        c = self.counts
        return self._event("queue_update", {
            "pending": c["pending"] + c["ready"], "building": c["assigned"] + c["building"],
            "completed": c["built"], "failed": c["failed"] + c["blocked"]})

    def cycle(self) -> list[tuple[dict[str, Any], int | None]]:
        """One build's worth of events (6): (raw event, probe number or None)."""
        out: list[tuple[dict[str, Any], int | None]] = []
        got = self._finish()
        drone_i = 0
        if got is not None:
            e, d, result, drone_i = got
            out.append((self._event("build_progress", {
                "build_id": e["build_id"], "package": e["cpv"], "drone": d["name"],
                "drone_id": d["id"], "phase": "finished", "percent": 100.0,
                "elapsed_s": self.builds[-1]["duration_s"], "estimate_s": e["estimate_s"],
                "result": result}), None))
            r = self.requests[e["requests"][0]]
            c = r["counts"]
            if r["packages"] >= REQUEST_SIZE and not any(c[s] for s in (
                    "pending", "ready", "assigned", "building")):
                r["state"], r["finished"] = "complete", iso(time.time())
                out.append((self._event("build_complete", {
                    "request_id": r["id"], "packages": r["packages"], "built": c["built"],
                    "failed": c["failed"], "blocked": 0, "cancelled": 0,
                    "duration_s": 1.0}), None))
        out.append((self._queue_event(), None))
        started = self._start(drone_i)
        if started is not None:
            e, d = started["entry"], started["drone"]
            out.append((self._event("build_progress", {
                "build_id": e["build_id"], "package": e["cpv"], "drone": d["name"],
                "drone_id": d["id"], "phase": "started", "percent": 0.0, "elapsed_s": 0.0,
                "estimate_s": e["estimate_s"], "result": None}), started["probe"]))
            out.append((self._drone_event(d), None))
        for _ in range(2):
            if not self.running:
                break
            k = self.running[self.rng.randrange(len(self.running))]
            d = self.drones[k]
            b = d["current_builds"][0]
            b["progress"] = min(99.0, b["progress"] + self.rng.uniform(1, 10))
            e = self.entries[b["entry"]]
            out.append((self._event("build_progress", {
                "build_id": b["build_id"], "package": b["cpv"], "drone": d["name"],
                "drone_id": d["id"], "phase": "progress", "percent": round(b["progress"], 1),
                "elapsed_s": round(time.time() - b["t"], 1), "estimate_s": e["estimate_s"],
                "result": None}), None))
        return out

    # -- HTTP answers -----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        by: dict[str, int] = {"ready": 0, "building": 0, "degraded": 0, "offline": 0}
        for d in self.drones:
            by[d["status"]] += 1
        return {"status": "ok", "version": "0.1.0-bench", "uptime_s": round(time.time() - self.t0, 1),
                "hostname": "bench-orch.lan", "counts": dict(self.counts), "drones": by}

    def drones_doc(self) -> dict[str, Any]:
        return {"drones": [{**d, "current_builds": [
            {k: v for k, v in b.items() if k not in ("entry", "t")} for b in d["current_builds"]]}
            for d in self.drones]}

    def queue_doc(self, states: set[str] | None) -> dict[str, Any]:
        return {"entries": [e for e in self.entries.values()
                            if states is None or e["state"] in states],
                "counts": dict(self.counts)}

    def requests_doc(self) -> dict[str, Any]:
        out = []
        for r in self.requests.values():
            c = r["counts"]
            out.append({**r, "summary": {
                "request_id": r["id"], "packages": r["packages"], "built": c["built"],
                "failed": c["failed"], "blocked": c["blocked"], "cancelled": c["cancelled"],
                "duration_s": 1.0}})
        return {"requests": out}


async def _fake_main(port: int, drones: int, queued: int, rate: float) -> None:
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve
    from quart import Response, request, websocket
    from quart_trio import QuartTrio

    fake = FakeSwarm(drones, queued)
    app = QuartTrio("bench-fake-swarmd")
    subscribers: set[Any] = set()

    def js(doc: Any) -> Response:
        return Response(json.dumps(doc, separators=(",", ":")), mimetype="application/json")

    @app.get("/api/status")
    async def status() -> Response:
        return js(fake.status())

    @app.get("/api/drones")
    async def drones_() -> Response:
        return js(fake.drones_doc())

    @app.get("/api/queue")
    async def queue() -> Response:
        want = request.args.get("state")
        return js(fake.queue_doc(set(want.split(",")) if want else None))

    @app.get("/api/builds")
    async def builds() -> Response:
        return js({"builds": list(reversed(fake.builds))})

    @app.get("/api/requests")
    async def requests_() -> Response:
        return js(fake.requests_doc())

    @app.websocket("/api/events")
    async def events() -> None:
        await websocket.accept()
        send, recv = trio.open_memory_channel[str](100_000)
        subscribers.add(send)
        try:
            async for msg in recv:
                await websocket.send(msg)
        finally:
            subscribers.discard(send)

    async def generate() -> None:
        start = trio.current_time()
        n = 0
        batch: deque[tuple[dict[str, Any], int | None]] = deque()
        while True:
            if not batch:
                batch.extend(fake.cycle())
            await trio.sleep_until(start + n / rate)
            raw, probe = batch.popleft()
            text = json.dumps(raw, separators=(",", ":"))
            sent = time.time()
            for s in list(subscribers):
                try:
                    s.send_nowait(text)
                except trio.WouldBlock:
                    pass
            if probe is not None:
                print(f"probe {probe} {sent!r}", flush=True)
            n += 1

    cfg = Config()
    cfg.bind = [f"127.0.0.1:{port}"]
    cfg.accesslog = None
    cfg.errorlog = None
    async with trio.open_nursery() as nursery:
        await nursery.start(serve, app, cfg)
        print("ready", flush=True)
        nursery.start_soon(generate)


class FakeProc:
    """The fake swarmd in a child process; collects its probe send times."""

    def __init__(self, drones: int, queued: int, rate: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sent: dict[int, float] = {}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.page", "--fake", "--port", str(self.port),
             "--drones", str(drones), "--queued", str(queued), "--rate", str(rate)],
            stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"fake swarmd did not start: {line!r}")
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "probe":
                self.sent[int(parts[1])] = float(parts[2])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------------- measurements
MISS_RE = re.compile(r'^gatewayd_cache_misses_total\{route="([^"]+)"\} ([0-9.e+]+)$', re.M)


def _misses(admin_url: str) -> dict[str, float]:
    text = httpx.get(admin_url + "/metrics", timeout=10).text
    return {m.group(1): float(m.group(2)) for m in MISS_RE.finditer(text)}


def summary(values: list[float], nd: int = 0) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(pct(values, 50), nd), "p95": round(pct(values, 95), nd),
            "min": round(min(values), nd), "max": round(max(values), nd)}


def first_renders(browser: Any, url: str, admin_url: str, loads: int) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for _ in range(loads):
        ctx = browser.new_context(viewport={"width": 1200, "height": 900})
        page = ctx.new_page()
        before = _misses(admin_url)
        page.goto(url, wait_until="load", timeout=60000)
        page.wait_for_function("() => performance.getEntriesByName('cc-live').length > 0 && "
                               "performance.getEntriesByName('cc-data').length > 0",
                               timeout=60000)
        t: dict[str, Any] = page.evaluate("""() => {
            const n = performance.getEntriesByType('navigation')[0];
            const m = (k) => performance.getEntriesByName(k)[0].startTime;
            return {response_start: n.responseStart, response_end: n.responseEnd,
                    dom_content_loaded: n.domContentLoadedEventEnd, load: n.loadEventEnd,
                    data: m('cc-data'), live: m('cc-live'), html_bytes: n.encodedBodySize,
                    drones: document.querySelectorAll('#drone-list li.drone').length,
                    queue_rows: document.querySelectorAll('#queue tbody tr').length,
                    requests: document.querySelectorAll('#request-list li').length}; }""")
        after = _misses(admin_url)
        t["complete"] = max(t["load"], t["data"], t["live"])
        t["cold_routes"] = sorted(k for k in after
                                  if after[k] > before.get(k, 0) and k != "identities")
        runs.append({k: round(v, 1) if isinstance(v, float) else v for k, v in t.items()})
        ctx.close()
        time.sleep(2.5)
    warm = [r for r in runs if not r["cold_routes"]]
    cold = [r for r in runs if r["cold_routes"]]
    return {
        "runs": runs,
        "warm": {k: summary([r[k] for r in warm]) for k in ("response_start", "load", "data",
                                                          "live", "complete")},
        "cold": {k: summary([r[k] for r in cold]) for k in ("response_start", "load",
                                                          "complete")},
        "html_bytes": runs[-1]["html_bytes"] if runs else None,
    }


def _metrics(cdp: Any) -> dict[str, float]:
    cdp.send("HeapProfiler.collectGarbage")
    got = cdp.send("Performance.getMetrics")
    return {m["name"]: m["value"] for m in got["metrics"]}


def steady(browser: Any, url: str, fake: FakeProc, seconds: float) -> tuple[dict[str, Any], Any]:
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    ctx.add_init_script(PROBE_SCRIPT)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    frames = [0]

    def on_socket(ws: Any) -> None:
        ws.on("framereceived", lambda _payload: frames.__setitem__(0, frames[0] + 1))

    page.on("websocket", on_socket)
    page.goto(url, wait_until="load", timeout=60000)
    page.wait_for_function("() => performance.getEntriesByName('cc-live').length > 0",
                           timeout=60000)
    # Probes sent from here on count (the first paint shows earlier ones, started long ago).
    t_live = time.time() + 1.0
    cdp = ctx.new_cdp_session(page)
    cdp.send("Performance.enable")
    page.wait_for_timeout(WARMUP_S * 1000)
    samples = []
    t_start = time.monotonic()
    while True:
        m = _metrics(cdp)
        samples.append({"t": round(time.monotonic() - t_start, 1), "frames": frames[0],
                        "heap_mb": round(m["JSHeapUsedSize"] / 2**20, 2),
                        "nodes": int(m["Nodes"]), "listeners": int(m["JSEventListeners"]),
                        "task_s": m["TaskDuration"], "script_s": m["ScriptDuration"],
                        "layout_s": m["LayoutDuration"], "style_s": m["RecalcStyleDuration"]})
        if time.monotonic() - t_start >= seconds:
            break
        page.wait_for_timeout(SAMPLE_S * 1000)
    seen = page.evaluate("() => window.__probes")
    first, last = samples[0], samples[-1]
    wall = last["t"] - first["t"]
    events = last["frames"] - first["frames"]
    # The GC forced for each sample counts in TaskDuration: left out by sample, approximately,
    # by measuring one forced GC on its own.
    t0 = _metrics(cdp)["TaskDuration"]
    gc_s = _metrics(cdp)["TaskDuration"] - t0
    task = last["task_s"] - first["task_s"] - gc_s * (len(samples) - 1)
    t_end = time.time() - 5.0  # a probe sent in the last seconds may still be on its way
    probes_sent = [k for k, sent in fake.sent.items() if t_live <= sent <= t_end]
    lat = [(seen[str(k)] / 1000 - fake.sent[k]) * 1000 for k in sorted(probes_sent)
           if str(k) in seen]
    n = len(samples)
    xs = [s["t"] for s in samples]
    ys = [s["heap_mb"] for s in samples]
    mx, my = sum(xs) / n, sum(ys) / n
    slope = (sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
             / max(sum((x - mx) ** 2 for x in xs), 1e-9)) * 60
    out = {
        "seconds": round(wall, 1),
        "events_received": events,
        "events_per_s": round(events / wall, 1),
        "main_thread_ms_per_event": round(1000 * task / max(events, 1), 3),
        "main_thread_busy_pct": round(100 * task / wall, 1),
        "script_ms_per_event": round(1000 * (last["script_s"] - first["script_s"])
                                     / max(events, 1), 3),
        "layout_style_ms_per_s": round(1000 * (last["layout_s"] - first["layout_s"]
                                               + last["style_s"] - first["style_s"]) / wall, 1),
        "gc_forced_ms": round(gc_s * 1000, 1),
        "heap_mb_first_last_max": [ys[0], ys[-1], max(ys)],
        "heap_slope_mb_per_min": round(slope, 3),
        "nodes_first_last_max": [samples[0]["nodes"], samples[-1]["nodes"],
                                 max(s["nodes"] for s in samples)],
        "listeners_first_last": [samples[0]["listeners"], samples[-1]["listeners"]],
        "probe_latency_ms": summary(lat),
        "probes_sent": len(probes_sent),
        "probes_not_seen": len(probes_sent) - len(lat),
        "console_errors": errors[:5],
        # One sample a minute in the record (and the last).
        "samples": [{k: v for k, v in s.items() if k in ("t", "heap_mb", "nodes")}
                    for i, s in enumerate(samples) if i % 4 == 0 or i == len(samples) - 1],
    }
    return out, (ctx, page)


def gateway_load(port: int, seconds: float, clients: int = 100) -> dict[str, Any]:
    import trio

    from bench.gateway import Conn

    path = "/api/v1/services/public/build-swarm"
    lat: list[float] = []
    errors = 0
    t_end = 0.0

    async def client() -> None:
        nonlocal errors
        conn = Conn(port, path)
        try:
            while trio.current_time() < t_end:
                p0 = time.perf_counter()
                try:
                    status, _body = await conn.get()
                except OSError:
                    errors += 1
                    await conn.close()
                    await trio.sleep(0.01)
                    continue
                lat.append((time.perf_counter() - p0) * 1000)
                if status != 200:
                    errors += 1
        finally:
            await conn.close()

    async def main() -> None:
        nonlocal t_end
        t_end = trio.current_time() + seconds
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(client)

    trio.run(main)
    return {"route": path, "clients": clients, "seconds": seconds,
            "req_per_s": round(len(lat) / seconds, 1), "p50_ms": round(pct(lat, 50), 1),
            "p99_ms": round(pct(lat, 99), 1), "errors": errors}


# ---------------------------------------------------------------------------- the run
def run(drones: int = 1000, queued: int = 20000, rate: float = 50.0, seconds: float = 180.0,
        loads: int = 6, load_s: float = 10.0) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from bench.gateway import Gatewayd

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} not found: apt-get install chromium")
    os.environ.setdefault("PORTAGE_OVERRIDE_EPREFIX", "/")
    out: dict[str, Any] = {"drones": drones, "queued": queued, "rate_per_s": rate,
                           "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    t_all = time.perf_counter()
    fake = FakeProc(drones, queued, rate)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-page-") as tmp:
            gw = Gatewayd(Path(tmp), fake.url)
            gw.start(timeout=60)
            assert gw.proc is not None
            try:
                for route in ("build-swarm", "queue", "requests", "build-history",
                              "infrastructure"):
                    r = httpx.get(f"{gw.url}/api/v1/services/public/{route}", timeout=60)
                    out.setdefault("route_bytes", {})[route] = len(r.content)
                time.sleep(2)
                with sync_playwright() as pw:
                    browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                    try:
                        out["first_render"] = first_renders(browser, gw.url + "/",
                                                            gw.admin_url, loads)
                        cpu0 = cpu_seconds(gw.proc.pid), time.monotonic()
                        out["steady"], (ctx, _page) = steady(browser, gw.url + "/", fake,
                                                             seconds)
                        out["steady"]["gatewayd_cpu_pct"] = round(
                            100 * (cpu_seconds(gw.proc.pid) - cpu0[0])
                            / (time.monotonic() - cpu0[1]), 1)
                        if load_s > 0:
                            out["gateway_with_page"] = gateway_load(gw.port, load_s)
                        ctx.close()
                    finally:
                        browser.close()
                if load_s > 0:
                    time.sleep(2)
                    out["gateway_without_page"] = gateway_load(gw.port, load_s)
            finally:
                gw.stop()
    finally:
        fake.stop()
    out["total_s"] = round(time.perf_counter() - t_all, 1)
    out["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out["machine"] = machine()
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.page")
    p.add_argument("--drones", type=int, default=1000)
    p.add_argument("--queued", type=int, default=20000)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--seconds", type=float, default=180.0, help="the steady run, measured")
    p.add_argument("--loads", type=int, default=6, help="first renders")
    p.add_argument("--load-s", type=float, default=10.0,
                   help="gateway load with and without the page (0: skip)")
    p.add_argument("--fake", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.fake:
        import trio

        trio.run(_fake_main, a.port, a.drones, a.queued, a.rate)
        return
    print(json.dumps(run(a.drones, a.queued, a.rate, a.seconds, a.loads, a.load_s), indent=1))


if __name__ == "__main__":
    main()
