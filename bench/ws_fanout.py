"""Fan-out of the gateway's WebSocket push: N clients, events at R/s, delivery latency and CPU.

    .venv/bin/python -m bench.ws_fanout [--clients 1000] [--rate 10] [--seconds 20]
                                        [--client raw|trio-websocket]

The gateway side (``wsfront.serve_public`` + ``push.Hub`` with the real sanitizer, fed by a fake
event source publishing ``build_progress`` at ``rate``/s) runs in its own process; the clients
(one Trio program: RawClient by default, or trio-websocket clients) run in this one. Each event carries its send time
(``time.monotonic()``, system-wide on Linux) in ``elapsed_s``; latency = receive time - send
time, for every (client, event) pair of the measuring window. CPU of both processes comes from
/proc. Bounded: connect + 1 s settle + ``seconds`` + 1 s drain (about 30 s with the defaults).
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

import trio
import trio_websocket
import wsproto
from wsproto.events import Request

from bench.common import REPO, machine, pct

TICK = os.sysconf("SC_CLK_TCK")
WS_PATH = "/ws/build-status"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def serve(clients: int, rate: float) -> None:
    """Child process: the gateway's public side with a fake event source."""
    from hypercorn.config import Config
    from quart_trio import QuartTrio

    from gatewayd.push import Hub
    from gatewayd.sanitize import Sanitizer
    from gatewayd.wsfront import serve_public

    sanitizer = Sanitizer({"izar-host": "Izar"}, {"10.42.0.0/24": "192.0.2.0/24"}, b"bench-key")
    hub = Hub(sanitizer, max_clients=clients + 16)
    for i in range(4):
        hub.publish({"seq": i, "type": "drone_status", "timestamp": "2026-02-23T10:30:00Z",
                     "data": {"drone_id": f"d-{i}", "name": f"drone-{i}", "hostname": "izar-host",
                              "ip": f"10.42.0.{i + 10}", "cores": 8, "status": "ready",
                              "current_package": None}})
    hub.publish({"seq": 4, "type": "queue_update", "timestamp": "2026-02-23T10:30:00Z",
                 "data": {"pending": 10, "building": 2, "completed": 5, "failed": 0}})
    config = Config()
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(
            serve_public, QuartTrio("bench-fanout"), "127.0.0.1", 0, hub, hypercorn_config=config
        ))
        print(port, flush=True)
        start = trio.current_time()
        seq = 5
        while True:
            await trio.sleep_until(start + (seq - 5) / rate)
            t0 = time.perf_counter()
            hub.publish({"seq": seq, "type": "build_progress", "timestamp": "2026-02-23T10:30:00Z",
                         "data": {"build_id": f"b-{seq}", "package": "dev-libs/openssl-3.3.2",
                                  "drone": "drone-1", "drone_id": "d-1", "phase": "progress",
                                  "percent": 42.0, "elapsed_s": time.monotonic(),
                                  "estimate_s": 420.0, "result": None}})
            # How long the hub took to hand this event to every client's socket or buffer.
            print(f"publish {time.perf_counter() - t0:.6f} {len(hub.clients)}", flush=True)
            seq += 1


class RawClient:
    """A minimal WebSocket client: wsproto for the opening handshake, then a tiny parser of the
    server's unmasked frames. About a tenth of trio-websocket's cost per message, so that 1,000
    clients on a 2-core machine measure the gateway rather than themselves. (Pings are not
    answered: the gateway pings every 60 s, longer than a run.)"""

    def __init__(self, stream: trio.SocketStream, rest: bytes) -> None:
        self.stream = stream
        self.buf = rest

    @classmethod
    async def connect(cls, host: str, port: int) -> RawClient:
        stream = await trio.open_tcp_stream(host, port)
        conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        await stream.send_all(conn.send(Request(host=f"{host}:{port}", target=WS_PATH)))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = await stream.receive_some(4096)
            if not chunk:
                raise OSError("closed during the handshake")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise OSError(head.split(b"\r\n", 1)[0].decode("latin-1"))
        return cls(stream, rest)

    async def get_message(self) -> str:
        while True:
            buf = self.buf
            if len(buf) >= 2:
                n = buf[1] & 0x7F
                at = 2
                if n == 126:
                    n, at = int.from_bytes(buf[2:4], "big"), 4
                elif n == 127:
                    n, at = int.from_bytes(buf[2:10], "big"), 10
                if len(buf) >= at + n:
                    opcode = buf[0] & 0x0F
                    payload, self.buf = buf[at:at + n], buf[at + n:]
                    if opcode == 0x1:
                        return payload.decode()
                    if opcode == 0x8:
                        raise trio_websocket.ConnectionClosed(None)
                    continue
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise trio_websocket.ConnectionClosed(None)
            self.buf += chunk


async def run(
    clients: int = 1000, rate: float = 10.0, seconds: float = 20.0, client_kind: str = "raw"
) -> dict[str, Any]:
    """``client_kind``: "raw" (RawClient) or "trio-websocket"."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "bench.ws_fanout", "--serve",
         "--clients", str(clients), "--rate", str(rate)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PORTAGE_OVERRIDE_EPREFIX": "/"},
    )
    latencies: list[float] = []
    stamps: set[float] = set()
    window = [float("inf"), float("inf")]  # send-time bounds of the measured events
    connected = 0
    failures: list[str] = []
    snapshot_msgs = 0
    load_before = os.getloadavg()
    try:
        assert proc.stdout is not None
        with trio.fail_after(20):
            line = b""
            while b"\n" not in line:
                chunk = await proc.stdout.receive_some(64)
                if not chunk:
                    raise RuntimeError("gateway process exited before listening")
                line += chunk
        port = int(line.split(b"\n", 1)[0])
        url = f"ws://127.0.0.1:{port}{WS_PATH}"
        limiter = trio.CapacityLimiter(64)
        all_connected = trio.Event()

        async def client() -> None:
            nonlocal connected, snapshot_msgs
            try:
                async with limiter:
                    ws: RawClient | trio_websocket.WebSocketConnection
                    if client_kind == "raw":
                        ws = await RawClient.connect("127.0.0.1", port)
                    else:
                        ws = await trio_websocket.connect_websocket_url(nursery, url)
            except (OSError, trio_websocket.HandshakeError) as exc:
                failures.append(repr(exc))
                return
            connected += 1
            if connected == clients:
                all_connected.set()
            try:
                while True:
                    message = await ws.get_message()
                    now = time.monotonic()
                    event = json.loads(message)
                    if event["type"] != "build_progress":
                        snapshot_msgs += 1
                        continue
                    sent = event["data"]["elapsed_s"]
                    if window[0] <= sent <= window[1]:
                        latencies.append(now - sent)
                        stamps.add(sent)
            except trio_websocket.ConnectionClosed as exc:
                failures.append(repr(exc))

        publish_s: list[float] = []
        measuring = False

        async def child_lines() -> None:
            assert proc.stdout is not None
            pending = b""
            async for chunk in proc.stdout:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for text in lines:
                    if measuring and text.startswith(b"publish "):
                        publish_s.append(float(text.split()[1]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(child_lines)
            t0 = time.monotonic()
            for _ in range(clients):
                nursery.start_soon(client)
            with trio.move_on_after(60):
                await all_connected.wait()
            connect_s = time.monotonic() - t0
            await trio.sleep(1)  # let the snapshots go out
            gw0, me0 = cpu_seconds(proc.pid), time.process_time()
            window[0], window[1] = time.monotonic(), time.monotonic() + seconds
            measuring = True
            await trio.sleep(seconds)
            measuring = False
            gw1, me1 = cpu_seconds(proc.pid), time.process_time()
            await trio.sleep(1)  # late deliveries of the window's events still count
            nursery.cancel_scope.cancel()
    finally:
        proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()
    expected = connected * len(stamps)
    return {
        "bench": "ws_fanout",
        "machine": machine(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "clients": clients,
        "client_kind": client_kind,
        "connected": connected,
        "connect_s": round(connect_s, 2),
        "snapshot_messages": snapshot_msgs,
        "rate_per_s": rate,
        "seconds": seconds,
        "events": len(stamps),
        "deliveries": len(latencies),
        "deliveries_expected": expected,
        "latency_ms": {
            "p50": round(pct(latencies, 50) * 1000, 1),
            "p90": round(pct(latencies, 90) * 1000, 1),
            "p99": round(pct(latencies, 99) * 1000, 1),
            "max": round(max(latencies, default=0.0) * 1000, 1),
        },
        "hub_publish_ms": {
            "p50": round(pct(publish_s, 50) * 1000, 2),
            "p99": round(pct(publish_s, 99) * 1000, 2),
            "max": round(max(publish_s, default=0.0) * 1000, 2),
        },
        "gateway_cpu_pct": round((gw1 - gw0) / seconds * 100, 1),
        "clients_cpu_pct": round((me1 - me0) / seconds * 100, 1),
        "failures": failures[:5],
        "failures_total": len(failures),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--client", choices=["raw", "trio-websocket"], default="raw")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        trio.run(serve, args.clients, args.rate)
        return
    print(json.dumps(trio.run(run, args.clients, args.rate, args.seconds, args.client), indent=2))


if __name__ == "__main__":
    main()
