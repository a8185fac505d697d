"""Fan-out of the gateway's WebSocket push: N clients, events at R/s, delivery latency and CPU.

    .venv/bin/python -m bench.ws_fanout [--clients 1000] [--rate 10] [--seconds 20]
                                        [--client raw|trio-websocket]

The gateway side (``wsfront.serve_public`` + ``push.Hub`` with the real sanitizer, fed by a fake
event source publishing ``build_progress`` at ``rate``/s) runs in its own process; the clients
(one Trio program: RawClient by default, or trio-websocket clients) run in this one. Each event
carries its send time, wall clock (``time.time()``, CLOCK_REALTIME), in ``data.elapsed_s``: the
only numeric field of ``build_progress`` that the gateway's sanitizer lets through unchanged.
Every client receives, parses (``json.loads``) and checks every event (type, and the sequence
number in ``build_id``: no gap, no duplicate); deliveries are counted over every (client, event)
pair of the measuring window and compared with clients x events published in it.

Two latencies are reported for every (client, event) pair:

* ``latency_ms`` (the figure compared with the target): when the event's bytes reached the
  client's socket, minus the send time. RawClient enables ``SO_TIMESTAMPNS`` on its TCP socket and
  reads with ``recvmsg``; Linux's ``tcp_recvmsg`` returns the receive timestamp (CLOCK_REALTIME,
  taken when the segment was queued on the socket) of the *latest* segment consumed by that call
  as an ``SCM_TIMESTAMPNS`` control message (and TCP's receive-queue coalescing keeps the later
  segment's stamp too). When one ``recvmsg`` returns several frames (the client fell behind by
  more than an event period) all of them get that latest stamp, which can only overstate their
  latency; ``shared_stamp_deliveries`` counts those, and ``latency_ms_exact_stamps`` is the
  figure over the other deliveries (the last message of each read). On loopback the segment is
  stamped as the gateway's ``write`` hands it to the client's socket, so this is the gateway-side
  delay (publish, then the hub's loop over the clients); a real network would add its transit.
  It is what a client on its own machine would see before its own application code runs: it
  leaves out the queueing of 1,000 clients sharing one process (and one core) here.
* ``app_latency_ms`` (contrast): ``time.time()`` after the client's task has read the frame, as a
  naive client would measure it. It includes that simulation queueing: each publish makes 1,000
  sockets readable at once and the last client task runs only after the 999 others.

With ``--client trio-websocket`` trio-websocket reads the socket itself, there is no kernel
stamp, and ``latency_ms`` is the application-level figure (``latency_clock`` says which).

CPU of both processes comes from /proc. Bounded: connect + 1 s settle + ``seconds`` + 1 s drain
(about 30 s with the defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
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

# Linux receive timestamps. Python 3.11's socket module does not name them; 35 is the
# asm-generic value (x86, arm, ...) of SO_TIMESTAMPNS (= SO_TIMESTAMPNS_OLD), whose control
# message (SCM_TIMESTAMPNS, same number) carries a struct timespec of two native longs.
SO_TIMESTAMPNS: int = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
TIMESPEC = struct.Struct("@ll")
ANCBUF = socket.CMSG_SPACE(TIMESPEC.size)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def kernel_stamp(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    """The ``SCM_TIMESTAMPNS`` of a ``recvmsg`` answer as wall-clock seconds, or None."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(data) >= TIMESPEC.size:
            sec, nsec = TIMESPEC.unpack_from(data)
            return float(sec) + float(nsec) * 1e-9
    return None


async def serve(clients: int, rate: float) -> None:
    """Child process: the gateway's public side with a fake event source."""
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
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(
            serve_public, QuartTrio("bench-fanout"), "127.0.0.1", 0, hub
        ))
        print(port, flush=True)
        start = trio.current_time()
        seq = 5
        while True:
            await trio.sleep_until(start + (seq - 5) / rate)
            t0 = time.perf_counter()
            sent = time.time()  # wall clock: compared with the clients' kernel receive stamps
            encoded = hub.publish({
                "seq": seq, "type": "build_progress", "timestamp": "2026-02-23T10:30:00Z",
                "data": {"build_id": f"b-{seq}", "package": "dev-libs/openssl-3.3.2",
                         "drone": "drone-1", "drone_id": "d-1", "phase": "progress",
                         "percent": 42.0, "elapsed_s": sent, "estimate_s": 420.0,
                         "result": None}})
            # How long the hub took to hand this event to every client's socket or buffer, how
            # many clients it had, and the send time (so the parent counts what was published).
            print(f"publish {time.perf_counter() - t0:.6f} {len(hub.clients)} {sent!r} "
                  f"{int(encoded is not None)}", flush=True)
            seq += 1


class RawClient:
    """A minimal WebSocket client: wsproto for the opening handshake, then a tiny parser of the
    server's unmasked frames. About a tenth of trio-websocket's cost per message, so that 1,000
    clients on a 2-core machine measure the gateway rather than themselves. (Pings are not
    answered: the gateway pings every 60 s, longer than a run.)

    Reads with ``recvmsg`` on a socket with ``SO_TIMESTAMPNS``: ``get_message`` returns each
    message with the kernel receive stamp of the read that completed it (see the module doc).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock  # non-blocking; read directly, waiting with trio's wait_readable
        self.buf = b""
        self.stamp: float | None = None  # kernel stamp of the latest read

    @classmethod
    async def connect(cls, host: str, port: int) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            tsock = trio.socket.from_stdlib_socket(sock)  # the same socket, for connect/send
            await tsock.connect((host, port))
            conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            request = conn.send(Request(host=f"{host}:{port}", target=WS_PATH))
            while request:
                request = request[await tsock.send(request):]
            self = cls(sock)
            while b"\r\n\r\n" not in self.buf:
                if not await self._read():
                    raise OSError("closed during the handshake")
        except BaseException:
            sock.close()
            raise
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            self.close()
            raise OSError(head.split(b"\r\n", 1)[0].decode("latin-1"))
        return self

    def close(self) -> None:
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()

    async def _read(self) -> bool:
        """One ``recvmsg`` into the buffer (after waiting for input); False at end of stream.

        Waits first, then reads: a client has usually consumed everything before, so trying
        first (as trio's socket methods do) would mostly cost a failed call and an exception;
        with 1,000 clients that was 10-20 % more CPU in this process, and more reads that lag
        behind the next event (whose stamps are then shared, see the module doc).
        """
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            try:
                chunk, ancdata, _flags, _addr = self.sock.recvmsg(65536, ANCBUF)
                break
            except BlockingIOError:
                continue
        if not chunk:
            return False
        self.buf += chunk
        self.stamp = kernel_stamp(ancdata)
        return True

    async def get_message(self) -> tuple[str, float | None]:
        """The next text message and the kernel stamp of the read that completed it.

        A frame is parsed as soon as it is complete and every complete frame is returned before
        the next read, so a message's stamp is that of the read that brought its last byte.
        """
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
                        return payload.decode(), self.stamp
                    if opcode == 0x8:
                        raise trio_websocket.ConnectionClosed(None)
                    continue
            if not await self._read():
                raise trio_websocket.ConnectionClosed(None)


def _ms(values: list[float], digits: int = 2) -> dict[str, float]:
    return {
        "p50": round(pct(values, 50) * 1000, digits),
        "p90": round(pct(values, 90) * 1000, digits),
        "p99": round(pct(values, 99) * 1000, digits),
        "max": round(max(values, default=0.0) * 1000, digits),
        "min": round(min(values, default=0.0) * 1000, digits),
    }


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
    kernel_lat: list[float] = []  # socket arrival (kernel stamp) - send time
    exact_lat: list[float] = []  # the same, for the deliveries that were last of their read
    app_lat: list[float] = []  # after the client task read it - send time
    delivered: set[float] = set()  # send times of the window's events that reached anybody
    window = [float("inf"), float("inf")]  # send-time bounds of the measured events
    connected = 0
    failures: list[str] = []
    snapshot_msgs = 0
    unstamped = 0  # window deliveries without a kernel stamp (RawClient: should be none)
    # Window deliveries stamped like the client's previous message (same read): k - 1 for every
    # read that returned k messages, as many as the messages whose latency that read may
    # overstate (all but its last; see the module doc).
    shared_stamp = 0
    order_errors = 0  # a build_progress whose seq is not the previous one + 1
    published: list[tuple[float, float, int]] = []  # (send time, publish seconds, hub clients)
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
        port_line, _, first_rest = line.partition(b"\n")
        port = int(port_line)
        url = f"ws://127.0.0.1:{port}{WS_PATH}"
        limiter = trio.CapacityLimiter(64)
        all_connected = trio.Event()

        async def client() -> None:
            nonlocal connected, snapshot_msgs, unstamped, shared_stamp, order_errors
            raw: RawClient | None = None
            ws: trio_websocket.WebSocketConnection | None = None
            try:
                async with limiter:
                    if client_kind == "raw":
                        raw = await RawClient.connect("127.0.0.1", port)
                    else:
                        ws = await trio_websocket.connect_websocket_url(nursery, url)
            except (OSError, trio_websocket.HandshakeError) as exc:
                failures.append(repr(exc))
                return
            connected += 1
            if connected == clients:
                all_connected.set()
            last_seq: int | None = None
            arrived: float | None = None
            previous: float | None = None
            pending: float | None = None  # kernel latency of the latest delivery, not yet known
            # to be exact (it is unless the next message of the same client shares its read)
            try:
                while True:
                    if raw is not None:
                        message, arrived = await raw.get_message()
                    else:
                        assert ws is not None
                        message = str(await ws.get_message())
                    now = time.time()
                    event = json.loads(message)
                    if event["type"] != "build_progress":
                        snapshot_msgs += 1
                        continue
                    data = event["data"]
                    seq = int(data["build_id"][2:])
                    if last_seq is not None and seq != last_seq + 1:
                        order_errors += 1
                    last_seq = seq
                    sent = data["elapsed_s"]
                    if window[0] <= sent <= window[1]:
                        app_lat.append(now - sent)
                        delivered.add(sent)
                        if arrived is None:
                            unstamped += 1
                        else:
                            kernel_lat.append(arrived - sent)
                            if arrived == previous:
                                shared_stamp += 1
                            elif pending is not None:
                                exact_lat.append(pending)
                            pending = arrived - sent
                        previous = arrived
            except trio_websocket.ConnectionClosed as exc:
                failures.append(repr(exc))
            finally:
                if pending is not None:
                    exact_lat.append(pending)
                if raw is not None:
                    raw.close()

        async def child_lines() -> None:
            assert proc.stdout is not None
            pending = first_rest
            async for chunk in proc.stdout:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for text in lines:
                    if text.startswith(b"publish "):
                        _, took, n, sent, sent_ok = text.split()
                        if sent_ok == b"1":
                            published.append((float(sent), float(took), int(n)))

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
            window[0], window[1] = time.time(), time.time() + seconds
            await trio.sleep(seconds)
            gw1, me1 = cpu_seconds(proc.pid), time.process_time()
            await trio.sleep(1)  # late deliveries of the window's events still count
            nursery.cancel_scope.cancel()
    finally:
        proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()
    in_window = [p for p in published if window[0] <= p[0] <= window[1]]
    publish_s = [took for _, took, _ in in_window]
    events = len(in_window)
    kernel = client_kind == "raw"
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
        "events": events,
        "events_delivered_to_anybody": len(delivered),
        "hub_clients_at_publish_min": min((n for _, _, n in in_window), default=0),
        "deliveries": len(app_lat),
        "deliveries_expected": connected * events,
        "order_errors": order_errors,
        "latency_clock": "kernel receive stamp (SO_TIMESTAMPNS)" if kernel else "application",
        "latency_ms": _ms(kernel_lat if kernel else app_lat),
        "kernel_stamps": len(kernel_lat),
        "kernel_stamps_missing": unstamped,
        "shared_stamp_deliveries": shared_stamp,
        # Kernel latency of the deliveries whose stamp is exact (last message of their read):
        # the gateway-side delay without the overstatement of a lagging client's reads.
        "latency_ms_exact_stamps": _ms(exact_lat),
        "app_latency_ms": _ms(app_lat),
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
