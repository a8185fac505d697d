"""gatewayd.wsfront: one public port for the Quart app (via Hypercorn) and /ws/build-status.

Real sockets on 127.0.0.1, real time (never autojump while sockets are in flight).
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
import wsproto
from quart import jsonify, request, websocket
from quart_trio import QuartTrio
from wsproto.events import Request

from gatewayd import wsfront
from gatewayd.push import Hub
from gatewayd.wsfront import is_push_request, parse_head, serve_public

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
    def public_event(self, event: dict[str, Any]) -> dict[str, Any] | None:
        fields = PUBLIC_FIELDS.get(event.get("type", ""))
        if fields is None:
            return None
        data = event.get("data") or {}
        return {"type": event["type"], "timestamp": event.get("timestamp"),
                "data": {k: data.get(k) for k in fields}}


def progress_event(seq: int, stamp: float) -> dict[str, Any]:
    return {
        "seq": seq, "type": "build_progress", "timestamp": "2026-02-23T10:30:00Z",
        "data": {"build_id": f"b-{seq}", "package": "dev-libs/foo-1", "drone": "drone-izar",
                 "drone_id": "d-1", "phase": "progress", "percent": 50.0, "elapsed_s": stamp,
                 "estimate_s": 10.0, "result": None},
    }


def make_app(log: list[str]) -> QuartTrio:
    app = QuartTrio("test-gateway")

    @app.before_serving
    async def started() -> None:
        log.append("before_serving")

    @app.after_serving
    async def stopped() -> None:
        log.append("after_serving")

    @app.route("/hello")
    async def hello() -> Any:
        client = request.scope.get("client") or ("", 0)
        return jsonify({"hello": "world", "client_port": client[1]})

    @app.route("/echo", methods=["POST"])
    async def echo() -> Any:
        return jsonify({"got": await request.get_data(as_text=True)})

    @app.websocket("/ws/echo")
    async def ws_echo() -> None:
        while True:
            await websocket.send(await websocket.receive())

    return app


async def wait_for(predicate: Any, limit_s: float = 5) -> None:
    """Poll a condition that has no event to wait on (test-only)."""
    with trio.fail_after(limit_s):
        while True:
            if predicate():
                return
            await trio.sleep(0.01)


def test_head_parsing() -> None:
    head = (b"GET /ws/build-status?x=1 HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
            b"Upgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert parse_head(head) == ("GET", "/ws/build-status", {
        "host": "a", "connection": "Upgrade", "upgrade": "WebSocket",
        "sec-websocket-version": "13"})
    assert is_push_request(head)
    assert not is_push_request(head.replace(b"/ws/build-status", b"/ws/other"))
    assert not is_push_request(head.replace(b"Upgrade: WebSocket\r\n", b""))
    assert not is_push_request(b"GET /ws/build-status HTTP/1.1\r\nHost: a\r\n\r\n")
    assert not is_push_request(b"garbage\r\n\r\n")


async def test_http_reaches_quart_through_the_front_with_keepalive() -> None:
    log: list[str] = []
    hub = Hub(FakeSanitizer())
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_public, make_app(log), "127.0.0.1", 0, hub)
        assert log == ["before_serving"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            first = await http.get("/hello")
            second = await http.get("/hello")
            posted = await http.post("/echo", content=b"x" * 100_000)
            missing = await http.get("/nope")
        assert first.status_code == 200
        assert first.json()["hello"] == "world"
        # One TCP connection for both requests: keep-alive is Hypercorn's, through the front.
        assert first.json()["client_port"] == second.json()["client_port"] != 0
        assert posted.json() == {"got": "x" * 100_000}
        assert missing.status_code == 404
        # An upgrade to any other path is the app's too (Hypercorn's own WebSocket support).
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/ws/echo") as ws:
            await ws.send_message("ping?")
            assert await ws.get_message() == "ping?"
        nursery.cancel_scope.cancel()
    assert log == ["before_serving", "after_serving"]


async def test_push_client_gets_snapshot_then_live_events_from_the_subscriber(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fake swarmd -> Hub.run_subscriber -> serve_public -> a trio-websocket client."""
    upstream: trio.MemorySendChannel[dict[str, Any]]
    upstream, upstream_out = trio.open_memory_channel[dict[str, Any]](10)

    async def events(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        async for event in upstream_out:
            await ws.send_message(json.dumps(event))

    def api(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/api/drones":
            return httpx.Response(200, json={"drones": [
                {"id": "d-1", "name": "drone-izar", "hostname": "izar-host", "ip": "10.42.0.1",
                 "cores": 16, "status": "building", "current_builds": [{"cpv": "a/b-1"}]},
                {"id": "d-2", "name": "drone-vega", "hostname": "vega-host", "ip": "10.42.0.2",
                 "cores": 8, "status": "ready", "current_builds": []}]})
        return httpx.Response(200, json={"counts": {"pending": 4, "building": 1}})

    hub = Hub(FakeSanitizer())
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as http:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, events, "127.0.0.1", 0, None
            )
            await nursery.start(hub.run_subscriber, f"http://127.0.0.1:{server.port}", "t", http)
            await wait_for(lambda: len(hub.snapshot.messages()) == 3)
            port = await nursery.start(serve_public, make_app([]), "127.0.0.1", 0, hub)
            url = f"ws://127.0.0.1:{port}/ws/build-status"
            async with trio_websocket.open_websocket_url(url) as ws:
                with trio.fail_after(2):
                    got = [json.loads(await ws.get_message()) for _ in range(3)]
                await upstream.send(progress_event(1, 1.0))
                with trio.fail_after(2):
                    live = json.loads(await ws.get_message())
            nursery.cancel_scope.cancel()
    assert [(m["type"], m["data"].get("name")) for m in got] == [
        ("drone_status", "drone-izar"), ("drone_status", "drone-vega"), ("queue_update", None)]
    assert got[0]["data"] == {"name": "drone-izar", "cores": 16, "status": "building",
                              "current_package": "a/b-1"}
    assert got[2]["data"] == {"pending": 4, "building": 1, "completed": 0, "failed": 0}
    assert live["type"] == "build_progress"
    assert live["data"]["build_id"] == "b-1"
    assert "drone_id" not in live["data"]
    assert all("-host" not in json.dumps(m) for m in [*got, live])


async def raw_push_client(port: int) -> trio.SocketStream:
    """Complete the handshake by hand; the caller then never reads (so never answers pings)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await stream.send_all(conn.send(Request(host="127.0.0.1", target="/ws/build-status")))
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += await stream.receive_some(1)
    assert head.startswith(b"HTTP/1.1 101")
    return stream


async def drain(stream: trio.SocketStream) -> None:
    while await stream.receive_some(65536):
        pass


async def test_silent_client_dropped_while_others_keep_receiving() -> None:
    interval, timeout = 0.2, 0.3
    hub = Hub(FakeSanitizer(), ping_interval_s=interval, pong_timeout_s=timeout)
    latencies: list[float] = []
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_public, make_app([]), "127.0.0.1", 0, hub)
        async with trio_websocket.open_websocket_url(
            f"ws://127.0.0.1:{port}/ws/build-status"
        ) as good:
            silent = await raw_push_client(port)
            start = time.monotonic()
            await wait_for(lambda: len(hub.clients) == 2)

            async def publisher() -> None:
                for seq in range(1, 1000):
                    hub.publish(progress_event(seq, time.monotonic()))
                    await trio.sleep(0.02)

            nursery.start_soon(publisher)

            async def receiver() -> None:
                while True:
                    message = json.loads(await good.get_message())
                    latencies.append(time.monotonic() - message["data"]["elapsed_s"])

            nursery.start_soon(receiver)
            await wait_for(lambda: hub.drops["no pong"] == 1, limit_s=3)
            dropped_after = time.monotonic() - start
            await trio.sleep(2 * (interval + timeout))  # the good one answers its pings
            assert len(hub.clients) == 1
            # The silent client's TCP connection is gone (reset), not waiting on a handshake.
            with trio.fail_after(2):
                with pytest.raises(trio.BrokenResourceError):
                    await drain(silent)
            nursery.cancel_scope.cancel()
    assert interval + timeout - 0.05 <= dropped_after < interval + timeout + 0.5
    assert len(latencies) > 40
    assert max(latencies) < 0.2  # a stalled hub would show >= 0.3 (the pong timeout)


async def test_max_clients_refused_with_503() -> None:
    hub = Hub(FakeSanitizer(), max_clients=2)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_public, make_app([]), "127.0.0.1", 0, hub)
        url = f"ws://127.0.0.1:{port}/ws/build-status"
        async with trio_websocket.open_websocket_url(url), trio_websocket.open_websocket_url(url):
            await wait_for(lambda: len(hub.clients) == 2)
            with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
                async with trio_websocket.open_websocket_url(url):
                    pass  # pragma: no cover
            assert rejected.value.status_code == 503
        await wait_for(lambda: len(hub.clients) == 0)
        async with trio_websocket.open_websocket_url(url):  # room again
            await wait_for(lambda: len(hub.clients) == 1)
        nursery.cancel_scope.cancel()


async def test_slow_or_silent_head_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wsfront, "HEAD_TIMEOUT_S", 0.2)
    hub = Hub(FakeSanitizer())
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_public, make_app([]), "127.0.0.1", 0, hub)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")  # never finished
        with trio.fail_after(2):
            assert await stream.receive_some(100) == b""
        nursery.cancel_scope.cancel()


async def test_slow_head_is_closed_without_a_traceback(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A head still unfinished at the timeout is an ordinary event, not an error: it used to
    log `UnboundLocalError: ... 'head'` with a traceback."""
    monkeypatch.setattr(wsfront, "HEAD_TIMEOUT_S", 0.2)
    hub = Hub(FakeSanitizer())
    with caplog.at_level("DEBUG"):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_public, make_app([]), "127.0.0.1", 0, hub)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")  # never finished
            with trio.fail_after(2):
                assert await stream.receive_some(100) == b""
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    bad = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") or r.exc_info]
    assert bad == [], [r.getMessage() for r in bad]


async def test_cancellation_closes_everything_cleanly() -> None:
    log: list[str] = []
    hub = Hub(FakeSanitizer())
    closed: list[Any] = []
    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_public, make_app(log), "127.0.0.1", 0, hub)

            async def client() -> None:
                async with trio_websocket.open_websocket_url(
                    f"ws://127.0.0.1:{port}/ws/build-status"
                ) as ws:
                    try:
                        await ws.get_message()
                    except trio_websocket.ConnectionClosed as exc:
                        closed.append(exc.reason)

            outer.start_soon(client)
            http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}")
            assert (await http.get("/hello")).status_code == 200  # an idle keep-alive conn
            await wait_for(lambda: len(hub.clients) == 1)
            started = time.monotonic()
            nursery.cancel_scope.cancel()
        assert time.monotonic() - started < 1.5
        await wait_for(lambda: bool(closed))
        await http.aclose()
    assert closed[0] is not None
    assert closed[0].code == 1001
    assert log == ["before_serving", "after_serving"]
    assert not hub.clients
    # The port is free again.
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    for listener in listeners:
        await listener.aclose()



async def test_big_messages_fill_a_silent_socket_then_its_buffer() -> None:
    """Frames written straight to sockets and frames queued behind a partial write never mix:
    the reading client gets every message whole and in order; the silent one is dropped."""
    hub = Hub(FakeSanitizer(), buffer=8)
    got: list[int] = []
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_public, make_app([]), "127.0.0.1", 0, hub)
        async with trio_websocket.open_websocket_url(
            f"ws://127.0.0.1:{port}/ws/build-status", max_message_size=2**20
        ) as good:
            silent = await raw_push_client(port)
            await wait_for(lambda: len(hub.clients) == 2)

            async def receiver() -> None:
                while True:
                    message = json.loads(await good.get_message())
                    assert message["data"]["package"] == "x" * 200_000
                    got.append(message["data"]["elapsed_s"])

            nursery.start_soon(receiver)
            for seq in range(1, 61):
                event = progress_event(seq, seq)
                event["data"]["package"] = "x" * 200_000
                hub.publish(event)
                await trio.sleep(0.01)
            await wait_for(lambda: len(got) == 60)
            assert hub.drops["buffer full"] == 1
            assert len(hub.clients) == 1
            await silent.aclose()
            nursery.cancel_scope.cancel()
    assert got == list(range(1, 61))
