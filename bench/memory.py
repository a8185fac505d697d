"""swarmd's memory with 20,000 queued packages and 1,000 registered drones (target < 300 MB RSS).

    python -m bench.memory [--packages 20000] [--drones 1000]

A real swarmd process on a fresh state dir: RSS right after start, after a 20,000-package
``emerge --tree`` submission (with its dependency edges), after 1,000 drones registered (each
with its heartbeat watcher task and an open keep-alive connection), and after every drone leased
one package and reported it in a heartbeat (1,000 active builds). RSS and peak (VmHWM) are read
from /proc/PID/status.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.common import REPO, Swarmd, world_tree
from bench.drone_load import Conn


def _vm(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _drones(port: int, n: int, sd: Swarmd, out: dict[str, Any]) -> None:
    conns = [Conn(port) for _ in range(n)]
    ids: list[tuple[str, str]] = [("", "")] * n
    builds: list[dict[str, Any] | None] = [None] * n
    limit = trio.CapacityLimiter(100)

    async def register(i: int) -> None:
        async with limit:
            status, body = await conns[i].post("/api/drones/register", {
                "name": f"mem-drone-{i:04d}", "hostname": f"mem-drone-{i:04d}.lan",
                "ip": f"10.1.{i // 256}.{i % 256}", "mac": f"52:54:00:00:{i >> 8:02x}:{i & 255:02x}", "cores": 8, "arch": "amd64",
                "chost": "x86_64-pc-linux-gnu", "version": "bench"})
            assert status == 200, body[:200]
            doc = json.loads(body)
            ids[i] = (doc["drone_id"], doc["session"])

    async def lease_and_beat(i: int) -> None:
        async with limit:
            did, session = ids[i]
            status, body = await conns[i].post(f"/api/drones/{did}/lease",
                                               {"session": session, "slots": 1, "wait_s": 0})
            if status == 200:
                builds[i] = b = json.loads(body)
                status, body = await conns[i].post(f"/api/drones/{did}/heartbeat", {
                    "session": session, "status": "building", "load": 1.0,
                    "builds": [{"build_id": b["build_id"], "lease": b["lease"],
                                "progress": 10}]})
                assert status == 200, body[:200]

    assert sd.proc is not None
    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(register, i)
    out["rss_mb_after_drones"] = round(_vm(sd.proc.pid, "VmRSS"), 1)
    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(lease_and_beat, i)
    out["active_builds"] = sum(1 for b in builds if b)
    out["rss_mb_after_leases"] = round(_vm(sd.proc.pid, "VmRSS"), 1)
    for c in conns:
        await c.close()


def run(packages: int = 20_000, drones: int = 1000) -> dict[str, Any]:
    (REPO / ".bench").mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="memory-", dir=REPO / ".bench"))
    out: dict[str, Any] = {"packages": packages, "drones": drones}
    sd = Swarmd(tmp / "state")
    try:
        sd.start()
        assert sd.proc is not None
        out["rss_mb_empty"] = round(sd.rss_mb(), 1)
        r = httpx.post(sd.url + "/api/queue", content=world_tree(packages, prefix="m"),
                       headers={"Content-Type": "text/plain"}, timeout=120)
        assert r.status_code == 202, r.text[:300]
        assert r.json()["queued"] == packages, r.text[:300]
        out["rss_mb_after_queue"] = round(sd.rss_mb(), 1)
        trio.run(_drones, sd.port, drones, sd, out)
        # A client reading the whole queue (the web UI, the gateway) costs memory too.
        q = httpx.get(sd.url + "/api/queue", timeout=120)
        assert q.status_code == 200
        out["queue_json_mb"] = round(len(q.content) / 2**20, 1)
        out["rss_mb"] = round(sd.rss_mb(), 1)
        out["peak_rss_mb"] = round(_vm(sd.proc.pid, "VmHWM"), 1)
    finally:
        sd.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--packages", type=int, default=20_000)
    p.add_argument("--drones", type=int, default=1000)
    a = p.parse_args()
    print(json.dumps(run(a.packages, a.drones), indent=1))


if __name__ == "__main__":
    main()
