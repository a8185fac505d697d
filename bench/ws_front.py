"""What the public WebSocket front costs HTTP: requests/s through ``wsfront.serve_public`` vs
plain ``hypercorn.trio.serve``, same Quart app, server in its own process, httpx as the client.

    .venv/bin/python -m bench.ws_front [--seconds 3] [--rounds 3] [--concurrency 16]

Two shapes: keep-alive (the front reads one head per connection, then only forwards bytes) and
one request per connection (the front's head read and replay on every request). The server's
CPU time per request is the steadier number: on 2 cores the httpx client is the bottleneck.
Bounded: 12 loads of 3 s plus 2 warm-ups, alternating between the two servers (about 45 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from functools import partial
from typing import Any

import httpx
import trio

from bench.common import REPO, machine, pct

TICK = os.sysconf("SC_CLK_TCK")


def make_app() -> Any:
    from quart import jsonify
    from quart_trio import QuartTrio

    app = QuartTrio("bench-front")

    @app.route("/api/v1/ping")
    async def ping() -> Any:
        return jsonify({"status": "ok", "data": {"pong": True}})

    return app


async def serve(mode: str) -> None:
    """Child process: serve on 127.0.0.1:0, print the port, run until killed."""
    from hypercorn.config import Config

    app = make_app()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        if mode == "front":
            from gatewayd.push import Hub
            from gatewayd.wsfront import serve_public

            class NoSanitizer:
                def public_event(self, event: dict[str, Any]) -> dict[str, Any] | None:
                    return None

            port = await nursery.start(partial(
                serve_public, app, "127.0.0.1", 0, Hub(NoSanitizer())
            ))
        else:
            from hypercorn.trio import serve as hypercorn_serve

            binds = await nursery.start(hypercorn_serve, app, config)
            port = int(str(binds[0]).rsplit(":", 1)[1])
        print(port, flush=True)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def load(port: int, seconds: float, concurrency: int, keepalive: bool) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    headers = {} if keepalive else {"Connection": "close"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, headers=headers
    ) as http:
        deadline = trio.current_time() + seconds

        async def worker() -> None:
            nonlocal errors
            while trio.current_time() < deadline:
                t0 = time.perf_counter()
                try:
                    r = await http.get("/api/v1/ping")
                    r.raise_for_status()
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": round(pct(latencies, 50) * 1000, 2),
        "p99_ms": round(pct(latencies, 99) * 1000, 2),
    }


async def start_server(mode: str) -> tuple[trio.Process, int]:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "bench.ws_front", "--serve", mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env={**os.environ, "PORTAGE_OVERRIDE_EPREFIX": "/"},
    )
    assert proc.stdout is not None
    with trio.fail_after(20):
        line = b""
        while not line.endswith(b"\n"):
            chunk = await proc.stdout.receive_some(64)
            if not chunk:
                raise RuntimeError(f"server ({mode}) exited before listening")
            line += chunk
    return proc, int(line)


async def run(seconds: float = 3.0, concurrency: int = 16, rounds: int = 3) -> dict[str, Any]:
    """Both servers run side by side; loads alternate between them ``rounds`` times, so a
    neighbour's load on this shared machine hits both alike. About 2 * 2 * rounds * seconds."""
    load_before = os.getloadavg()
    totals: dict[tuple[str, bool], dict[str, Any]] = {}
    samples: dict[tuple[str, bool], list[float]] = {}
    servers: dict[str, tuple[trio.Process, int]] = {}
    try:
        for mode in ("plain", "front"):
            servers[mode] = await start_server(mode)
        for _proc, port in servers.values():
            await load(port, 1.0, concurrency, True)  # warm-up, not counted
        for _ in range(rounds):
            for keepalive in (True, False):
                for mode, (proc, port) in servers.items():
                    cpu0 = cpu_seconds(proc.pid)
                    r = await load(port, seconds, concurrency, keepalive)
                    cpu = cpu_seconds(proc.pid) - cpu0
                    t = totals.setdefault(
                        (mode, keepalive), {"requests": 0, "errors": 0, "cpu": 0.0}
                    )
                    t["requests"] += r["requests"]
                    t["errors"] += r["errors"]
                    t["cpu"] += cpu
                    samples.setdefault((mode, keepalive), []).append(r["rps"])
    finally:
        for proc, _port in servers.values():
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
    runs = []
    for (mode, keepalive), t in totals.items():
        runs.append({
            "server": mode, "keepalive": keepalive, "requests": t["requests"],
            "errors": t["errors"], "rps": round(t["requests"] / (seconds * rounds), 1),
            "rps_per_round": samples[(mode, keepalive)],
            "server_cpu_us_per_req": round(t["cpu"] / max(1, t["requests"]) * 1e6, 1),
        })
    cost: dict[str, Any] = {}
    for keepalive, label in ((True, "keepalive"), (False, "new_connection")):
        plain, front = (
            next(r for r in runs if r["keepalive"] is keepalive and r["server"] == m)
            for m in ("plain", "front")
        )
        cost[label] = {
            "rps_change_pct": round((front["rps"] / plain["rps"] - 1) * 100, 1),
            "server_cpu_us_per_req_added": round(
                front["server_cpu_us_per_req"] - plain["server_cpu_us_per_req"], 1
            ),
        }
    return {"bench": "ws_front", "machine": machine(), "seconds": seconds, "rounds": rounds,
            "concurrency": concurrency, "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(), "runs": runs, "front_cost": cost}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=["front", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        trio.run(serve, args.serve)
        return
    result = trio.run(run, args.seconds, args.concurrency, args.rounds)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
