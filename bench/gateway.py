"""The gateway's cached public endpoints under 100 concurrent clients: requests/s, latency, and
how many calls reach swarmd per cache TTL (target: one backend fetch per route per 10 s).

    PORTAGE_OVERRIDE_EPREFIX=/ .venv/bin/python -m bench.gateway [--seconds 20] [--clients 100]

Real processes: swarmd (with a control token, a few hundred queued packages and four drones
registered over the drone protocol, two of them building) and gatewayd (``--cache-ttl-s 10``,
admin key and control token in its environment, a temporary spool). gatewayd talks to swarmd
through a tiny counting proxy in this process, which records every request line swarmd receives:
calls with the control token are the gateway's data fetches, calls without it are the health
probe (every 30 s). gatewayd's own ``gatewayd_cache_misses_total{route}`` (admin ``/metrics``)
is read at each 10 s boundary of the measuring window, so the route fetches are counted per TTL
by both sides.

The clients are one Trio program of ``clients`` raw HTTP/1.1 keep-alive connections (a minimal
client: a few tens of microseconds per request, so the gateway, not the load generator, is the
bottleneck on a 2-core machine; its CPU is reported). Per route: one request fills the cache,
load runs unmeasured for 5 s (so the TTL expiries fall mid-window, not on a boundary), then
``seconds`` of measured load. Bounded: about 10 s of set-up plus 2 x (5 + ``seconds``) s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.common import (
    BIN,
    KeepAliveConn,
    Swarmd,
    cpu_seconds,
    free_port,
    machine,
    pct,
    world_tree,
)

ADMIN_KEY = "bench-admin-key-1"
CONTROL = "bench-control-token-1"
TTL_S = 10.0
WARM_S = 5.0
ROUTES = ("build-swarm", "queue")
PACKAGES = 300
DRONES = 4
MISS_RE = re.compile(r'^gatewayd_cache_misses_total\{route="([^"]+)"\} ([0-9.e+]+)$', re.M)


# ---------------------------------------------------------------------------- counting proxy
class CountingProxy:
    """A TCP proxy in front of swarmd that records each HTTP request it forwards:
    ``(trio time, method, path, has Authorization)``. Bytes pass through unchanged; after an
    Upgrade (gatewayd's /api/events WebSocket) the connection is passed through unparsed."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.calls: list[tuple[float, str, str, bool]] = []

    async def serve(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(int(listeners[0].socket.getsockname()[1]))
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
        except OSError:
            await client.aclose()
            return
        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._requests, client, upstream, nursery.cancel_scope)
            nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)

    @staticmethod
    async def _pump(src: trio.SocketStream, dst: trio.SocketStream,
                    scope: trio.CancelScope) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    async def _requests(self, src: trio.SocketStream, dst: trio.SocketStream,
                        scope: trio.CancelScope) -> None:
        buf = bytearray()
        skip = 0
        raw = False
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
                if raw:
                    continue
                buf += data
                while buf:
                    if skip:
                        n = min(skip, len(buf))
                        del buf[:n]
                        skip -= n
                        continue
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
                    del buf[:end + 4]
                    method, target = (lines[0].split(" ") + ["", ""])[:2]
                    headers = {k.strip().lower(): v.strip()
                               for k, _, v in (ln.partition(":") for ln in lines[1:])}
                    self.calls.append((trio.current_time(), method, target.split("?")[0],
                                       "authorization" in headers))
                    if "upgrade" in headers:
                        raw = True
                        buf.clear()
                        break
                    skip = int(headers.get("content-length", "0") or 0)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()


# ---------------------------------------------------------------------------- load client
class Conn(KeepAliveConn):
    """One keep-alive HTTP/1.1 connection sending GETs of one path."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__(port)
        self.req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()

    async def get(self) -> tuple[int, bytes]:
        return await self.request(self.req)


# ---------------------------------------------------------------------------- processes
class Gatewayd:
    def __init__(self, tmp: Path, orchestrator: str) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        cfg = tmp / "gatewayd.toml"
        cfg.write_text('[identity.hosts]\n"izar-host" = "Izar"\n"vega-host" = "Vega"\n'
                       '[identity.networks]\n"10.42.0.0/24" = "192.0.2.0/24"\n')
        self.argv = [str(BIN / "gatewayd"), "--config", str(cfg),
                     "--listen", f"127.0.0.1:{self.port}",
                     "--admin-listen", f"127.0.0.1:{self.admin_port}",
                     "--orchestrator", orchestrator, "--spool-dir", str(tmp / "spool"),
                     "--cache-ttl-s", str(TTL_S),
                     "--public-binhost-url", "https://binhost.example.org/amd64"]
        self.log = tmp / "gatewayd.log"
        self.env = {**os.environ, "SWARM_ADMIN_KEY": ADMIN_KEY, "SWARM_CONTROL_TOKEN": CONTROL,
                    "PORTAGE_OVERRIDE_EPREFIX": "/"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         env=self.env)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gatewayd exited with {self.proc.returncode}: "
                                   f"{self.log.read_text()[-500:]}")
            try:
                h = httpx.get(self.url + "/health", timeout=1)
                if h.status_code == 200 and h.json()["orchestrator"]["state"] == "up":
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("gatewayd did not report the orchestrator up")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def seed_swarmd(url: str) -> dict[str, Any]:
    """A few hundred queued packages and DRONES drones (two building, one build finished)."""
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/api/queue", content=world_tree(PACKAGES, prefix="gw", seed=4),
                   headers={"Content-Type": "text/plain", "Authorization": f"Bearer {CONTROL}"})
        r.raise_for_status()
        names = ["izar-host", "vega-host", "rigel-host", "deneb-host"][:DRONES]
        building = 0
        for i, host in enumerate(names):
            reg = c.post("/api/drones/register", json={
                "name": f"drone-{host}", "hostname": f"{host}.lan", "ip": f"10.42.0.{10 + i}",
                "mac": f"52:54:00:00:00:{i:02x}", "cores": [8, 16, 4, 32][i % 4],
                "arch": "amd64", "chost": "x86_64-pc-linux-gnu", "version": "bench"})
            reg.raise_for_status()
            did, sess = reg.json()["drone_id"], reg.json()["session"]
            if i >= 2:
                c.post(f"/api/drones/{did}/heartbeat", json={"session": sess, "status": "ready"})
                continue
            job = c.post(f"/api/drones/{did}/lease", json={"session": sess, "wait_s": 0})
            if job.status_code != 200:
                continue
            j = job.json()
            if i == 0:  # one finished build for the history, then a second lease
                c.post(f"/api/builds/{j['build_id']}/complete", json={
                    "lease": j["lease"], "result": "success", "duration_s": 42.0,
                    "artifact": {"path": "a/b/b-1-1.gpkg.tar", "size": 1, "sha256": "c" * 64}})
                job = c.post(f"/api/drones/{did}/lease", json={"session": sess, "wait_s": 0})
                if job.status_code != 200:
                    continue
                j = job.json()
            c.post(f"/api/drones/{did}/heartbeat", json={
                "session": sess, "status": "building", "load": 1.0,
                "builds": [{"build_id": j["build_id"], "lease": j["lease"], "progress": 30}]})
            building += 1
        queue = c.get("/api/queue").json()
    return {"packages_queued": PACKAGES, "drones": DRONES, "drones_building": building,
            "queue_entries": len(queue.get("entries", []))}


# ---------------------------------------------------------------------------- one route
async def _misses(http: httpx.AsyncClient, admin_url: str) -> dict[str, float]:
    text = (await http.get(admin_url + "/metrics")).text
    return {m.group(1): float(m.group(2)) for m in MISS_RE.finditer(text)}


async def _route_run(route: str, gw: Gatewayd, proxy: CountingProxy, swarmd_pid: int,
                     seconds: float, clients: int) -> dict[str, Any]:
    path = f"/api/v1/services/public/{route}"
    assert gw.proc is not None
    gw_pid = gw.proc.pid
    lat: list[float] = []
    errors: dict[str, int] = {}
    not_ok = 0
    async with httpx.AsyncClient(timeout=10) as http:
        first = await http.get(gw.url + path)  # fills the cache: the TTL starts here
        if first.status_code != 200 or first.json().get("status") != "ok":
            raise RuntimeError(f"{route}: {first.status_code} {first.text[:300]}")
        sample = first.json()
        t_fill = trio.current_time()
        t0 = t_fill + WARM_S
        t_end = t0 + seconds
        n_windows = max(1, int(seconds // TTL_S))
        bounds = [t0 + k * TTL_S for k in range(n_windows + 1)]
        snaps: list[dict[str, float]] = []
        cpu: dict[str, float] = {}

        async def client() -> None:
            nonlocal not_ok
            conn = Conn(gw.port, path)
            try:
                while (start := trio.current_time()) < t_end:
                    p0 = time.perf_counter()
                    try:
                        status, body = await conn.get()
                    except OSError as exc:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                        await conn.close()
                        await trio.sleep(0.01)
                        continue
                    if start >= t0:
                        lat.append((time.perf_counter() - p0) * 1000)
                        if status != 200:
                            errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1
                        elif not body.startswith(b'{"status":"ok"'):
                            not_ok += 1
            finally:
                await conn.close()

        async def boundaries() -> None:
            for k, b in enumerate(bounds):
                await trio.sleep_until(b)
                if k == 0:
                    cpu.update(client=time.process_time(), gw=cpu_seconds(gw_pid),
                               swarmd=cpu_seconds(swarmd_pid), wall=trio.current_time())
                snaps.append(await _misses(http, gw.admin_url))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(boundaries)
            for _ in range(clients):
                nursery.start_soon(client)
        wall = trio.current_time() - cpu["wall"]
        gw_cpu_s = cpu_seconds(gw_pid) - cpu["gw"]
        cpu_pct = {
            "gatewayd_cpu_ms_per_req": round(1000 * gw_cpu_s / max(1, len(lat)), 3),
            "client_cpu_pct": round(100 * (time.process_time() - cpu["client"]) / wall, 1),
            "gatewayd_cpu_pct": round(100 * gw_cpu_s / wall, 1),
            "swarmd_cpu_pct": round(100 * (cpu_seconds(swarmd_pid) - cpu["swarmd"]) / wall, 1),
        }
    # Route fetches (gatewayd's cache misses) in each full TTL window of the measured time.
    fills = [int(snaps[k + 1].get(route, 0) - snaps[k].get(route, 0)) for k in range(n_windows)]
    ident = [int(snaps[k + 1].get("identities", 0) - snaps[k].get("identities", 0))
             for k in range(n_windows)]
    # What swarmd received (the proxy), per window and per path.
    window_end = bounds[-1]
    data_calls = [c for c in proxy.calls if t0 <= c[0] < window_end and c[3]]
    probe_calls = [c for c in proxy.calls if t0 <= c[0] < window_end and not c[3]]
    per_path: dict[str, list[int]] = {}
    times: dict[str, list[float]] = {}
    for t, method, p, _auth in data_calls:
        key = f"{method} {p}"
        per_path.setdefault(key, [0] * n_windows)[int((t - t0) // TTL_S)] += 1
    for t, method, p, _auth in proxy.calls:
        if t_fill - 1 <= t < t_end and _auth:
            times.setdefault(f"{method} {p}", []).append(t)
    # Successive fills of a path: calls less than 1 s apart are one fill (a build-swarm fill
    # asks /api/status twice: once for the sanitizer's identities, once for the data).
    gaps: list[float] = []
    for ts in times.values():
        fills_at = [t for i, t in enumerate(ts) if i == 0 or t - ts[i - 1] >= 1.0]
        gaps += [b - a for a, b in zip(fills_at, fills_at[1:], strict=False)]
    n = len(lat)
    return {
        "route": path,
        "req_per_s": round(n / seconds, 1),
        "backend_calls_per_route_per_10s": max(fills) if fills else 0,
        "backend_calls_per_route_per_10s_min": min(fills) if fills else 0,
        "requests": n,
        "seconds": seconds,
        "clients": clients,
        "p50_ms": round(pct(lat, 50), 2),
        "p99_ms": round(pct(lat, 99), 2),
        "max_ms": round(max(lat), 2) if lat else 0.0,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "answers_not_ok": not_ok,
        **cpu_pct,
        "route_fetches_per_window": fills,
        "identity_fetches_per_window": ident,
        "swarmd_requests_per_window": per_path,
        "swarmd_requests_total": len(data_calls) + len(probe_calls),
        "probe_requests": len(probe_calls),
        "min_gap_between_fills_of_a_path_s": round(min(gaps), 3) if gaps else None,
        "response_bytes": len(first.content),
        "sample_queue": sample.get("data", {}).get("queue") or sample.get("data", {}).get(
            "counts"),
    }


def run(seconds: float = 20.0, clients: int = 100) -> dict[str, Any]:
    os.environ.setdefault("PORTAGE_OVERRIDE_EPREFIX", "/")
    out: dict[str, Any] = {"loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp_s:
        tmp = Path(tmp_s)
        sd = Swarmd(tmp / "state", env={"SWARM_CONTROL_TOKEN": CONTROL},
                    log=tmp / "swarmd.log").start()
        try:
            state = seed_swarmd(sd.url)
            assert sd.proc is not None
            swarmd_pid = sd.proc.pid

            async def main_task() -> None:
                proxy = CountingProxy(sd.port)
                async with trio.open_nursery() as nursery:
                    proxy_port = await nursery.start(proxy.serve)
                    gw = Gatewayd(tmp, f"http://127.0.0.1:{proxy_port}")
                    try:
                        await trio.to_thread.run_sync(gw.start)
                        for route in ROUTES:
                            out[route] = await _route_run(route, gw, proxy, swarmd_pid,
                                                          seconds, clients)
                    finally:
                        await trio.to_thread.run_sync(gw.stop)
                        nursery.cancel_scope.cancel()

            trio.run(main_task)
        finally:
            sd.stop()
    out["setup"] = {**state, "cache_ttl_s": TTL_S, "warm_s": WARM_S,
                    "total_s": round(time.perf_counter() - t_all, 1)}
    out["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out["machine"] = machine()
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.gateway")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per route")
    p.add_argument("--clients", type=int, default=100)
    a = p.parse_args()
    print(json.dumps(run(a.seconds, a.clients), indent=1))


if __name__ == "__main__":
    main()
