"""gatewayd.push: the Hub (fan-out, per-client buffers, pings) and its swarmd subscription.

Client tests run over in-memory streams in virtual time (no sockets); the subscriber tests use a
fake swarmd (a real trio-websocket server on 127.0.0.1 plus an httpx MockTransport) in real time.
"""

from __future__ import annotations

import json
import socket
import struct
from functools import partial
from typing import Any, cast

import httpx
import pytest
import trio
import trio.testing
import trio_websocket
import wsproto
from wsproto.events import AcceptConnection, Request, TextMessage

from gatewayd import push
from gatewayd.push import Hub, Snapshot, events_url, snapshot_events
from gatewayd.wsserver import ServerWebSocket

PUBLIC_FIELDS = {
    "drone_status": ("name", "cores", "status", "current_package"),
    "build_progress": (
        "build_id", "package", "drone", "phase", "percent", "elapsed_s", "estimate_s", "result",
    ),
    "queue_update": ("pending", "building", "completed", "failed"),
    "build_complete": (
        "request_id", "packages", "built", "failed", "blocked", "cancelled", "duration_s",
    ),
}


class FakeSanitizer:
    """Allowlist per type, like the real one; internal fields (drone_id, hostname, ip) go."""

    def public_event(self, event: dict[str, Any]) -> dict[str, Any] | None:
        fields = PUBLIC_FIELDS.get(event.get("type", ""))
        if fields is None:
            return None
        data = event.get("data") or {}
        return {
            "type": event["type"],
            "timestamp": event.get("timestamp"),
            "data": {k: data.get(k) for k in fields},
        }


def drone_event(seq: int, drone_id: str, name: str, status: str) -> dict[str, Any]:
    return {
        "seq": seq, "type": "drone_status", "timestamp": "2026-02-23T10:30:00Z",
        "data": {"drone_id": drone_id, "name": name, "hostname": f"{name}-host", "ip": "10.42.0.9",
                 "cores": 4, "status": status, "current_package": None},
    }


def queue_event(seq: int, pending: int) -> dict[str, Any]:
    return {
        "seq": seq, "type": "queue_update", "timestamp": "2026-02-23T10:30:00Z",
        "data": {"pending": pending, "building": 0, "completed": 0, "failed": 0},
    }


def progress_event(seq: int, stamp: float) -> dict[str, Any]:
    return {
        "seq": seq, "type": "build_progress", "timestamp": "2026-02-23T10:30:00Z",
        "data": {"build_id": f"b-{seq}", "package": "dev-libs/foo-1", "drone": "drone-izar",
                 "drone_id": "d-1", "phase": "progress", "percent": 50.0, "elapsed_s": stamp,
                 "estimate_s": 10.0, "result": None},
    }


# -- the pure parts --------------------------------------------------------------------------


def test_events_url() -> None:
    assert events_url("http://127.0.0.1:8080", None) == "ws://127.0.0.1:8080/api/events"
    assert events_url("https://swarm.lan/", 42) == "wss://swarm.lan/api/events?since=42"


def test_snapshot_events_from_api_shapes() -> None:
    drones = {"drones": [
        {"id": "d-1", "name": "drone-izar", "hostname": "izar-host", "ip": "10.42.0.201",
         "mac": "aa:bb:cc:dd:ee:ff", "cores": 16, "status": "building",
         "current_builds": [{"build_id": "b-1", "cpv": "dev-libs/openssl-3.3.2"}]},
        {"id": "d-2", "name": "drone-vega", "cores": 8, "status": "ready", "current_builds": []},
    ]}
    status = {"counts": {"pending": 1, "ready": 2, "assigned": 1, "building": 2, "built": 5,
                         "failed": 1, "blocked": 2, "cancelled": 9}}
    events = snapshot_events(drones, status, seq=7, now="T")
    assert [e["type"] for e in events] == ["drone_status", "drone_status", "queue_update"]
    assert events[0]["data"]["current_package"] == "dev-libs/openssl-3.3.2"
    assert events[0]["data"]["drone_id"] == "d-1"
    assert "mac" not in events[0]["data"]
    assert events[1]["data"]["current_package"] is None
    assert events[2]["data"] == {"pending": 3, "building": 3, "completed": 5, "failed": 3}


def test_snapshot_keeps_latest_per_drone() -> None:
    snap = Snapshot()
    san = FakeSanitizer()
    for raw in (drone_event(1, "d-1", "a", "ready"), drone_event(2, "d-2", "b", "ready"),
                drone_event(3, "d-1", "a", "building"), queue_event(4, 1), queue_event(5, 2)):
        public = san.public_event(raw)
        assert public is not None
        snap.apply(raw, public, json.dumps(public))
    msgs = [json.loads(m) for m in snap.messages()]
    assert [(m["type"], m["data"].get("status"), m["data"].get("pending")) for m in msgs] == [
        ("drone_status", "building", None), ("drone_status", "ready", None),
        ("queue_update", None, 2),
    ]


# -- clients over in-memory streams (virtual time) --------------------------------------------


async def serve_memory_client(
    hub: Hub, stream: trio.abc.HalfCloseableStream, done: list[float] | None = None
) -> None:
    ws = ServerWebSocket(stream)
    assert await ws.receive_request() is not None
    await ws.accept()
    await hub.handle_client(ws)
    if done is not None:
        done.append(trio.current_time())


async def good_client(
    nursery: trio.Nursery, hub: Hub, got: list[tuple[float, dict[str, Any]]]
) -> None:
    """A well-behaved client: reads everything (and so answers pings)."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(serve_memory_client, hub, server_stream)
    ws = await trio_websocket.wrap_client_stream(
        nursery, cast(Any, client_stream), "test", "/ws/build-status"
    )

    async def read() -> None:
        while True:
            message = json.loads(await ws.get_message())
            got.append((trio.current_time(), message))

    nursery.start_soon(read)


async def raw_handshake(stream: trio.abc.Stream) -> None:
    """Complete the opening handshake by hand, reading no byte past the 101 head."""
    conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await stream.send_all(conn.send(Request(host="test", target="/ws/build-status")))
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += await stream.receive_some(1)
    assert head.startswith(b"HTTP/1.1 101")


async def wait_for(predicate: Any, limit_s: float = 5) -> None:
    """Poll a condition that has no event to wait on (test-only)."""
    with trio.fail_after(limit_s):
        while True:
            if predicate():
                return
            await trio.sleep(0.01)


async def test_silent_client_dropped_after_ping_interval_plus_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = Hub(FakeSanitizer())  # the defaults: ping every 60 s, pong within 30 s
    assert (hub.ping_interval_s, hub.pong_timeout_s) == (60, 30)
    got: list[tuple[float, dict[str, Any]]] = []
    sent: list[float] = []
    dropped_at: list[float] = []
    async with trio.open_nursery() as nursery:
        await good_client(nursery, hub, got)
        bad, bad_server = trio.testing.memory_stream_pair()
        start = trio.current_time()
        nursery.start_soon(serve_memory_client, hub, bad_server, dropped_at)
        await raw_handshake(bad)  # ... and then never reads again: no pong ever comes back
        await wait_for(lambda: len(hub.clients) == 2)

        async def publisher() -> None:
            for seq in range(1, 30):
                sent.append(trio.current_time())
                hub.publish(progress_event(seq, trio.current_time()))
                await trio.sleep(5)

        nursery.start_soon(publisher)
        await wait_for(lambda: bool(dropped_at), limit_s=200)
        assert 90 <= dropped_at[0] - start < 91
        assert hub.drops["no pong"] == 1
        await trio.sleep(60)  # the good client survives its own pings
        assert len(hub.clients) == 1
        nursery.cancel_scope.cancel()
    # The good client got every event, at once (virtual time: the same instant it was sent).
    stamps = [m["data"]["elapsed_s"] for _, m in got]
    assert stamps == sent[: len(stamps)]
    assert len(stamps) >= 25
    assert [at - m["data"]["elapsed_s"] for at, m in got] == [0] * len(got)


async def test_full_buffer_drops_slow_client_and_never_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = Hub(FakeSanitizer(), buffer=4)
    got: list[tuple[float, dict[str, Any]]] = []
    dropped_at: list[float] = []
    async with trio.open_nursery() as nursery:
        await good_client(nursery, hub, got)
        # No buffering between the two ends: once the slow client stops reading, the server's
        # writer blocks on the first message and the hub-side buffer fills.
        slow, slow_server = trio.testing.lockstep_stream_pair()
        nursery.start_soon(serve_memory_client, hub, slow_server, dropped_at)
        await raw_handshake(slow)
        await wait_for(lambda: len(hub.clients) == 2)
        for seq in range(1, 6):  # 1 in the blocked writer + 4 in the buffer
            hub.publish(progress_event(seq, seq))
            await trio.sleep(0.1)
        assert len(hub.clients) == 2
        hub.publish(progress_event(6, 6))  # the buffer is full: dropped right here, synchronously
        assert len(hub.clients) == 1
        for seq in range(7, 20):
            await trio.sleep(0.1)
            hub.publish(progress_event(seq, seq))
        await wait_for(lambda: len(got) == 19 and bool(dropped_at))
        assert hub.drops["buffer full"] == 1
        nursery.cancel_scope.cancel()
    assert [m["data"]["elapsed_s"] for _, m in got] == list(range(1, 20))


async def test_new_client_gets_snapshot_then_live_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = Hub(FakeSanitizer())
    hub.publish(drone_event(1, "d-1", "drone-izar", "ready"))
    hub.publish(drone_event(2, "d-2", "drone-vega", "ready"))
    hub.publish(drone_event(3, "d-1", "drone-izar", "building"))
    hub.publish(queue_event(4, 3))
    hub.publish(progress_event(5, 1.0))  # not part of the snapshot
    got: list[tuple[float, dict[str, Any]]] = []
    async with trio.open_nursery() as nursery:
        await good_client(nursery, hub, got)
        await wait_for(lambda: len(got) == 3)
        hub.publish(progress_event(6, 2.0))
        await wait_for(lambda: len(got) == 4)
        nursery.cancel_scope.cancel()
    msgs = [m for _, m in got]
    assert [(m["type"], m["data"].get("name"), m["data"].get("status")) for m in msgs[:3]] == [
        ("drone_status", "drone-izar", "building"),
        ("drone_status", "drone-vega", "ready"),
        ("queue_update", None, None),
    ]
    assert msgs[3]["type"] == "build_progress"
    assert msgs[3]["data"]["elapsed_s"] == 2.0
    assert all(set(m) == {"type", "timestamp", "data"} for m in msgs)
    assert all("hostname" not in m["data"] and "drone_id" not in m["data"] for m in msgs)


async def test_chatty_client_keeps_answering_pings(autojump_clock: trio.testing.MockClock) -> None:
    """Input from a client is read and thrown away, so its pongs are still seen."""
    hub = Hub(FakeSanitizer(), ping_interval_s=10, pong_timeout_s=5)
    async with trio.open_nursery() as nursery:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        nursery.start_soon(serve_memory_client, hub, server_stream)
        ws = await trio_websocket.wrap_client_stream(
            nursery, cast(Any, client_stream), "test", "/ws/build-status"
        )
        for i in range(100):  # 100 s: ten ping rounds, 100 unread messages without the reader
            await ws.send_message(f"hello {i}")
            await trio.sleep(1)
        assert len(hub.clients) == 1
        assert not hub.drops
        nursery.cancel_scope.cancel()


async def test_client_over_limit_is_closed(autojump_clock: trio.testing.MockClock) -> None:
    hub = Hub(FakeSanitizer(), max_clients=1)
    got: list[tuple[float, dict[str, Any]]] = []
    async with trio.open_nursery() as nursery:
        await good_client(nursery, hub, got)
        await wait_for(lambda: len(hub.clients) == 1)
        assert not hub.accepting()
        client_stream, server_stream = trio.testing.memory_stream_pair()
        nursery.start_soon(serve_memory_client, hub, server_stream)
        extra = await trio_websocket.wrap_client_stream(
            nursery, cast(Any, client_stream), "test", "/ws/build-status"
        )
        with pytest.raises(trio_websocket.ConnectionClosed) as caught:
            await extra.get_message()
        assert caught.value.reason is not None
        assert caught.value.reason.code == 1013
        assert len(hub.clients) == 1
        nursery.cancel_scope.cancel()


# -- the subscriber against a fake swarmd (real sockets, real time) ----------------------------


class FakeSwarmd:
    """An /api/events WebSocket server playing one script per connection, and the HTTP API."""

    def __init__(self, scripts: list[Any]) -> None:
        self.scripts = scripts
        self.paths: list[str] = []
        self.auth: list[bytes | None] = []
        self.http_gets: list[str] = []
        self.drones_answers = [
            {"drones": [{"id": "d-1", "name": "drone-izar", "hostname": "izar-host",
                         "ip": "10.42.0.201", "cores": 16, "status": "ready",
                         "current_builds": []}]},
            {"drones": [{"id": "d-2", "name": "drone-vega", "hostname": "vega-host",
                         "ip": "10.42.0.202", "cores": 8, "status": "building",
                         "current_builds": [{"cpv": "dev-libs/foo-1"}]}]},
        ]

    async def handler(self, request: trio_websocket.WebSocketRequest) -> None:
        self.paths.append(request.path)
        self.auth.append(dict(request.headers).get(b"authorization"))
        ws = await request.accept()
        await self.scripts.pop(0)(ws)

    async def serve_stream(self, stream: trio.SocketStream) -> None:
        """``handler`` on a TCP stream of our own (``trio.serve_tcp``), so that a script can
        break it: ``self.stream`` is the current connection's."""
        self.stream = stream
        async with trio.open_nursery() as nursery:
            await self.handler(await trio_websocket.wrap_server_stream(nursery, stream))
            nursery.cancel_scope.cancel()

    async def reset(self) -> None:
        """Break the current connection under both ends: an RST, no close frame."""
        self.stream.socket.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()

    def http(self, request: httpx.Request) -> httpx.Response:
        self.http_gets.append(request.url.path)
        if request.url.path == "/api/drones":
            answer = self.drones_answers[0]
            if len(self.drones_answers) > 1:
                self.drones_answers.pop(0)
            return httpx.Response(200, json=answer)
        if request.url.path == "/api/status":
            return httpx.Response(200, json={"counts": {"pending": 2, "built": 1}})
        return httpx.Response(404)


async def send_events(ws: trio_websocket.WebSocketConnection, *events: dict[str, Any]) -> None:
    for event in events:
        await ws.send_message(json.dumps(event))


async def test_subscriber_resumes_with_since_and_resyncs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(push, "BACKOFF_MIN_S", 0.05)

    async def first(ws: trio_websocket.WebSocketConnection) -> None:
        await send_events(ws, queue_event(1, 1), drone_event(2, "d-1", "drone-izar", "building"),
                          queue_event(3, 3))
        await trio.sleep(0.2)
        await swarmd.reset()  # the socket breaks under the gateway

    async def second(ws: trio_websocket.WebSocketConnection) -> None:
        await send_events(ws, queue_event(3, 999))  # an overlap: already seen, ignored
        await send_events(ws, queue_event(4, 4))
        await trio.sleep(0.2)
        await send_events(ws, {"seq": 10, "type": "resync", "data": {}})
        await trio.sleep(0.2)
        await send_events(ws, queue_event(11, 11))
        await trio.sleep_forever()

    swarmd = FakeSwarmd([first, second])
    hub = Hub(FakeSanitizer())
    got: list[tuple[float, dict[str, Any]]] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(swarmd.http)) as http:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, swarmd.serve_stream, 0, host="127.0.0.1"))
            url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
            await nursery.start(hub.run_subscriber, url, "s3cret", http)
            await wait_for(lambda: hub.last_seq == 3)
            # Connected after the first snapshot and a few events: gets the current state.
            await good_client(nursery, hub, got)
            await wait_for(lambda: hub.last_seq == 11)
            await wait_for(lambda: any(m["data"].get("pending") == 11 for _, m in got))
            nursery.cancel_scope.cancel()
    assert swarmd.paths == ["/api/events", "/api/events?since=3"]
    assert swarmd.auth == [b"Bearer s3cret", b"Bearer s3cret"]
    # A snapshot on the first connect and on the resync; none on the plain reconnect.
    assert swarmd.http_gets == ["/api/drones", "/api/status"] * 2
    assert hub.connects == 2
    assert hub.resyncs == 2
    msgs = [m for _, m in got]
    pendings = [m["data"]["pending"] for m in msgs if m["type"] == "queue_update"]
    assert 999 not in pendings
    assert pendings[-3:] == [4, 2, 11]  # live, the resync snapshot (from /api/status), live
    # The resync snapshot replaced the drones: d-1 is gone, d-2 is there, sanitized.
    snap = [json.loads(m) for m in hub.snapshot.messages()]
    assert [m["data"] for m in snap if m["type"] == "drone_status"] == [
        {"name": "drone-vega", "cores": 8, "status": "building",
         "current_package": "dev-libs/foo-1"}
    ]
    assert all("vega-host" not in json.dumps(m) for _, m in got)


async def test_subscriber_without_token_sends_no_authorization() -> None:
    async def script(ws: trio_websocket.WebSocketConnection) -> None:
        await send_events(ws, queue_event(1, 5))
        await trio.sleep_forever()

    swarmd = FakeSwarmd([script])
    hub = Hub(FakeSanitizer())
    async with httpx.AsyncClient(transport=httpx.MockTransport(swarmd.http)) as http:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, swarmd.handler, "127.0.0.1", 0, None
            )
            await nursery.start(hub.run_subscriber, f"http://127.0.0.1:{server.port}", "", http)
            await wait_for(lambda: hub.last_seq == 1)
            nursery.cancel_scope.cancel()
    assert swarmd.auth == [None]


async def test_subscriber_retries_while_swarmd_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push, "BACKOFF_MIN_S", 0.05)
    swarmd = FakeSwarmd([])
    hub = Hub(FakeSanitizer())
    # A port with nobody listening: bind, note the port, close.
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    async with httpx.AsyncClient(transport=httpx.MockTransport(swarmd.http)) as http:
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run_subscriber, f"http://127.0.0.1:{port}", "", http)
            await trio.sleep(0.5)
            assert not hub.upstream_connected
            assert hub.connects == 0
            nursery.cancel_scope.cancel()


async def test_subscriber_reconnects_when_swarmd_stops_answering_pings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An upstream that accepts, sends, then never reads again (no pong) is given up on after
    ``ping_interval_s + pong_timeout_s``, and its socket closed at once: the hub reconnects."""
    monkeypatch.setattr(push, "BACKOFF_MIN_S", 0.05)
    swarmd = FakeSwarmd([])
    connections: list[float] = []
    gone: list[float] = []

    async def mute(stream: trio.SocketStream) -> None:
        conn = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        while not any(isinstance(e, Request) for e in conn.events()):
            conn.receive_data(await stream.receive_some(65536))
        connections.append(trio.current_time())
        await stream.send_all(conn.send(AcceptConnection()))
        event = queue_event(len(connections), len(connections))
        await stream.send_all(conn.send(TextMessage(data=json.dumps(event))))
        await trio.sleep(1.0)  # pings pile up unread; then see how the gateway left
        with trio.move_on_after(1):
            while await stream.receive_some(65536):
                pass
            gone.append(trio.current_time())

    hub = Hub(FakeSanitizer(), ping_interval_s=0.1, pong_timeout_s=0.2)
    async with httpx.AsyncClient(transport=httpx.MockTransport(swarmd.http)) as http:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, mute, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            await nursery.start(hub.run_subscriber, f"http://127.0.0.1:{port}", "", http)
            await wait_for(lambda: len(connections) >= 2, limit_s=3)
            await wait_for(lambda: bool(gone), limit_s=3)
            nursery.cancel_scope.cancel()
    assert 0.3 <= connections[1] - connections[0] < 1.0
    assert hub.last_seq is not None
