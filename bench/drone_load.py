"""Drone protocol load: N simulated drones over real HTTP against one real swarmd process.

    python -m bench.drone_load [--drones 100,1000,5000] [--seconds 30] [--interval-s 30]

Per N, a fresh swarmd (``--heartbeat-interval-s 30 --offline-after-s 40``) gets a flat queue of
20,000 packages; then N drones register (spread over a 10 s ramp) and for ``seconds`` of steady
load each one, like swarm-drone, keeps two keep-alive connections: one beats every interval
(at a random phase, on a fixed schedule so a slow answer does not shift the next beat; the
beat carries the drone's current build), the other leases (``wait_s`` 2) and, when it gets a
package, holds it for a simulated build time (uniform 10-50 s, mean 30 s: the build itself is
instant, the hold keeps the request rate what real builds would produce) and completes it with
an artifact. With the 30 s interval the request rate is a real swarm's: 5,000 drones send ~167
heartbeats/s plus ~167 leases and ~167 completions/s.

The offline threshold is 40 s instead of the default 90 so that, within a bounded run, a beat
held up by more than 10 s anywhere in swarmd (event loop, journal) turns into a (false)
offline transition: a stricter test than production's 60 s of slack. False offline = drones
that kept beating but that swarmd marked offline: counted from ``GET /api/drones`` at the end
and from the ``offline`` lines of swarmd's log.

The client is a minimal HTTP/1.1 keep-alive client on raw Trio sockets (httpx would need more
CPU than swarmd itself at 5,000 drones on a 2-core machine); its CPU and swarmd's are reported.
Latency is request sent -> response read, measured in the client, for requests started inside
the steady window.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.common import REPO, HttpError, KeepAliveConn, Swarmd, cpu_seconds, pct

PACKAGES = 20_000


class Conn(KeepAliveConn):
    """A drone's keep-alive connection: JSON POSTs."""

    async def post(self, path: str, doc: dict[str, Any]) -> tuple[int, bytes]:
        body = json.dumps(doc).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        return await self.request(head + body)


class Stats:
    def __init__(self) -> None:
        self.window: tuple[float, float] = (float("inf"), float("inf"))
        self.lat: dict[str, list[float]] = {}
        self.codes: dict[str, dict[int, int]] = {}
        self.errors: list[str] = []
        self.total = 0
        self.beat_gap_max = 0.0  # longest time between two answered beats of one drone
        self.inflight: dict[int, tuple[str, float]] = {}
        self.unanswered = 0
        self.slow: list[tuple[float, float]] = []  # (start s into the window, latency s) > 250 ms

    def close_window(self, now: float) -> None:
        """Requests started in the window and still unanswered count with their age so far."""
        for ep, t0 in self.inflight.values():
            if self.window[0] <= t0 < self.window[1]:
                self.lat.setdefault(ep, []).append(now - t0)
                self.unanswered += 1
                self.total += 1

    def add(self, ep: str, t0: float, t1: float, status: int) -> None:
        if ep == "lease" and status == 204:
            ep = "lease_204"  # an empty long-poll: it waits wait_s by design
        if self.window[0] <= t0 < self.window[1]:
            self.lat.setdefault(ep, []).append(t1 - t0)
            if t1 - t0 > 0.25 and ep != "lease_204":
                self.slow.append((t0 - self.window[0], t1 - t0))
            c = self.codes.setdefault(ep, {})
            c[status] = c.get(status, 0) + 1
            self.total += 1


async def _timed(conn: Conn, stats: Stats, ep: str, path: str,
                 doc: dict[str, Any]) -> tuple[int, bytes]:
    t0 = time.perf_counter()
    key = id(conn)
    stats.inflight[key] = (ep, t0)
    try:
        status, body = await conn.post(path, doc)
    except (OSError, HttpError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        stats.errors.append(f"{ep}: {exc!r}")
        return 0, b""
    finally:
        stats.inflight.pop(key, None)
    stats.add(ep, t0, time.perf_counter(), status)
    return status, body


class Drone:
    def __init__(self, i: int, port: int, stats: Stats, interval: float, build_s: float,
                 rng: random.Random) -> None:
        self.name = f"bench-drone-{i:05d}"
        self.i = i
        self.stats = stats
        self.interval = interval
        self.build_s = build_s
        self.rng = rng
        self.beat_conn = Conn(port)
        self.work_conn = Conn(port)
        self.id = ""
        self.session = ""
        self.build: dict[str, Any] | None = None
        self.last_beat_ok = 0.0

    async def register(self) -> bool:
        status, body = await _timed(self.work_conn, self.stats, "register",
                                    "/api/drones/register", {
                                        "name": self.name, "hostname": self.name + ".lan",
                                        "ip": f"10.{self.i // 65536}.{self.i // 256 % 256}."
                                              f"{self.i % 256}",
                                        "mac": f"52:54:00:{self.i >> 16 & 255:02x}:{self.i >> 8 & 255:02x}:{self.i & 255:02x}",
                                        "cores": self.rng.choice([4, 8, 16, 32]),
                                        "arch": "amd64", "chost": "x86_64-pc-linux-gnu",
                                        "version": "bench"})
        if status != 200:
            self.stats.errors.append(f"register: {status} {body[:200]!r}")
            return False
        doc = json.loads(body)
        self.id, self.session = doc["drone_id"], doc["session"]
        self.last_beat_ok = time.perf_counter()
        return True

    async def beats(self) -> None:
        nxt = trio.current_time() + self.rng.uniform(0, self.interval)
        while True:
            await trio.sleep_until(nxt)
            nxt += self.interval
            b = self.build
            builds = [{"build_id": b["build_id"], "lease": b["lease"], "progress": 50}] if b \
                else []
            status, body = await _timed(self.beat_conn, self.stats, "heartbeat",
                                        f"/api/drones/{self.id}/heartbeat",
                                        {"session": self.session, "load": 1.0, "builds": builds,
                                         "status": "building" if b else "ready"})
            now = time.perf_counter()
            if status == 200:
                self.stats.beat_gap_max = max(self.stats.beat_gap_max, now - self.last_beat_ok)
                self.last_beat_ok = now
            elif status:
                self.stats.errors.append(f"heartbeat: {status} {body[:200]!r}")

    async def work(self) -> None:
        while True:
            status, body = await _timed(self.work_conn, self.stats, "lease",
                                        f"/api/drones/{self.id}/lease",
                                        {"session": self.session, "slots": 1, "wait_s": 2})
            if status == 204:
                continue
            if status != 200:
                if status:
                    self.stats.errors.append(f"lease: {status} {body[:200]!r}")
                await trio.sleep(1)
                continue
            self.build = json.loads(body)
            hold = self.rng.uniform(self.build_s / 3, self.build_s * 5 / 3)
            await trio.sleep(hold)
            # Like swarm-drone, the build stays in the heartbeats until its completion is
            # answered: a beat between the two would tell swarmd the drone does not hold it.
            b = self.build
            cpv = b["package"]
            status, body = await _timed(
                self.work_conn, self.stats, "complete", f"/api/builds/{b['build_id']}/complete",
                {"lease": b["lease"], "result": "success", "duration_s": round(hold, 1),
                 "artifact": {"path": f"{cpv.rsplit('-', 1)[0]}/{cpv.split('/')[1]}-1.gpkg.tar",
                              "size": 12345, "sha256": "ab" * 32}, "error": None})
            self.build = None
            if status != 200 and status:
                self.stats.errors.append(f"complete: {status} {body[:200]!r}")


async def _load(port: int, n: int, seconds: float, ramp_s: float, interval: float,
                build_s: float, pid: int) -> dict[str, Any]:
    stats = Stats()
    rng = random.Random(n)
    drones = [Drone(i, port, stats, interval, build_s, random.Random(rng.random()))
              for i in range(n)]
    out: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        t_reg = time.perf_counter()
        registered = 0

        async def start(d: Drone) -> None:
            nonlocal registered
            if await d.register():
                registered += 1
                nursery.start_soon(d.beats)
                nursery.start_soon(d.work)

        # Bounded: if swarmd cannot keep up with the ramp, go on with those registered.
        with trio.move_on_after(ramp_s + 45):
            async with trio.open_nursery() as reg:
                for k, d in enumerate(drones):
                    delay = t_reg + ramp_s * k / n - time.perf_counter()
                    if delay > 0:
                        await trio.sleep(delay)
                    reg.start_soon(start, d)
        out["register_s"] = round(time.perf_counter() - t_reg, 2)
        print(f"   {n} drones: {registered} registered in {out['register_s']} s",
              file=sys.stderr, flush=True)
        out["registered"] = registered
        await trio.sleep(1.0)  # let the first leases settle
        stats.window = (time.perf_counter(), time.perf_counter() + seconds)
        cpu_c0, cpu_s0 = time.process_time(), cpu_seconds(pid)
        await trio.sleep(seconds)
        print(f"   {n} drones: window over, {stats.total} requests", file=sys.stderr, flush=True)
        cpu_c1, cpu_s1 = time.process_time(), cpu_seconds(pid)
        stats.close_window(time.perf_counter())
        # Beats keep flowing while swarmd is asked for its view: nobody should be offline.
        statuses: dict[str, int] = {}
        queue: Any = None
        try:
            async with httpx.AsyncClient(timeout=60) as c:
                r = await c.get(f"http://127.0.0.1:{port}/api/drones")
                for d in r.json()["drones"]:
                    statuses[d["status"]] = statuses.get(d["status"], 0) + 1
                queue = (await c.get(f"http://127.0.0.1:{port}/api/status")).json().get("queue")
        except httpx.HTTPError as exc:
            stats.errors.append(f"GET /api/drones: {exc!r}")
            statuses["unknown (swarmd did not answer in 60 s)"] = n
        nursery.cancel_scope.cancel()
    for d in drones:  # close the sockets now, so swarmd's graceful stop is quick
        await d.beat_conn.close()
        await d.work_conn.close()
    out.update({
        "drones": n, "seconds": seconds, "requests": stats.total,
        "req_per_s": round(stats.total / seconds, 1),
        "endpoints": {ep: {"n": len(v), "per_s": round(len(v) / seconds, 1),
                           "p50_ms": round(pct(v, 50) * 1000, 1),
                           "p99_ms": round(pct(v, 99) * 1000, 1),
                           "max_ms": round(max(v) * 1000, 1),
                           "codes": stats.codes.get(ep, {})}
                      for ep, v in sorted(stats.lat.items())},
        "p99_ms_worst_endpoint": round(max((pct(v, 99) for ep, v in stats.lat.items()
                                            if ep != "lease_204"), default=0.0) * 1000, 1),
        "unanswered_at_window_end": stats.unanswered,
        # When the slow answers (> 250 ms) started, by second of the window: a stall shows
        # as one burst.
        "slow_by_second": _by_second(stats.slow),
        "drone_statuses": statuses,
        "offline_at_end": statuses.get("offline", 0),
        "max_beat_gap_s": round(stats.beat_gap_max, 2),
        "errors": len(stats.errors), "error_samples": stats.errors[:5],
        "client_cpu_pct": round(100 * (cpu_c1 - cpu_c0) / seconds, 1),
        "swarmd_cpu_pct": round(100 * (cpu_s1 - cpu_s0) / seconds, 1),
        "queue": queue,
    })
    return out


def _by_second(slow: list[tuple[float, float]]) -> dict[int, list[float]]:
    """{second of the window: [count, worst latency ms]}"""
    out: dict[int, list[float]] = {}
    for at, lat in slow:
        b = out.setdefault(int(at), [0, 0.0])
        b[0] += 1
        b[1] = max(b[1], round(lat * 1000, 1))
    return dict(sorted(out.items()))


def run_one(n: int, seconds: float = 30.0, interval: float = 30.0, offline_after: float = 40.0,
            build_s: float = 30.0, ramp_s: float = 10.0,
            profile: Path | None = None, keep: bool = False) -> dict[str, Any]:
    (REPO / ".bench").mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"drones-{n}-", dir=REPO / ".bench"))
    log = tmp / "swarmd.log"
    sd = Swarmd(tmp / "state", "--heartbeat-interval-s", str(interval),
                "--offline-after-s", str(offline_after), log=log)
    spy: Any = None
    try:
        sd.start()
        assert sd.proc is not None
        pkgs = [f"bench-cat-{i % 50}/pkg{i}-1.{i % 7}" for i in range(PACKAGES)]
        r = httpx.post(sd.url + "/api/queue", json={"packages": pkgs, "request_id": "load"},
                       timeout=120)
        assert r.status_code == 202, r.text[:300]
        if profile is not None:
            spy_bin = shutil.which("py-spy", path=str(Path(sys.executable).parent))
            if spy_bin:
                spy = subprocess.Popen([spy_bin, "record", "-o", str(profile), "-f", "raw",
                                        "-d", str(int(seconds + ramp_s + 5)), "-p",
                                        str(sd.proc.pid)], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        out = trio.run(_load, sd.port, n, seconds, ramp_s, interval, build_s, sd.proc.pid)
        out["rss_mb"] = round(sd.rss_mb(), 1)
    finally:
        sd.stop()
        if spy is not None:
            spy.wait(60)
    text = log.read_text(errors="replace") if log.exists() else ""
    offline_lines = [ln for ln in text.splitlines() if re.search(r"\boffline\b", ln)
                     and "drone" in ln]
    late_lines = [ln for ln in text.splitlines() if " is late" in ln]
    out.update(interval_s=interval, offline_after_s=offline_after, build_s=build_s,
               offline_log_lines=len(offline_lines), late_log_lines=len(late_lines),
               offline_log_samples=offline_lines[:3])
    # Every drone beat until the end, so any offline transition is a false one.
    out["false_offline"] = max(out["offline_at_end"], len(offline_lines))
    if keep:
        out["kept"] = str(tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def run(drones: tuple[int, ...] = (100, 1000, 5000), seconds: float = 30.0,
        interval: float = 30.0, offline_after: float = 40.0,
        build_s: float = 30.0, fast: tuple[int, ...] = ()) -> dict[str, Any]:
    """Each N of ``drones`` at ``interval``; then each N of ``fast`` beating every second
    (offline after 5 s, builds of 5 s): the heaviest request rate per drone a fleet makes."""
    runs = [run_one(n, seconds, interval, offline_after, build_s) for n in drones]
    runs += [run_one(n, seconds, 1.0, 5.0, 5.0) for n in fast]
    return {"runs": runs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--drones", default="100,1000,5000")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--interval-s", type=float, default=30.0)
    p.add_argument("--offline-after-s", type=float, default=40.0)
    p.add_argument("--build-s", type=float, default=30.0)
    p.add_argument("--profile", type=Path, help="py-spy raw profile of swarmd (one N only)")
    p.add_argument("--keep", action="store_true", help="keep swarmd's state dir and log")
    a = p.parse_args()
    ns = tuple(int(x) for x in a.drones.split(","))
    if a.profile is not None or a.keep:
        res = {"runs": [run_one(ns[0], a.seconds, a.interval_s, a.offline_after_s, a.build_s,
                                profile=a.profile, keep=a.keep)]}
    else:
        res = run(ns, a.seconds, a.interval_s, a.offline_after_s, a.build_s)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
