"""build-swarm watch against real WebSocket servers on 127.0.0.1."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import trio
import trio_websocket

from swarmlib import cli as climod
from swarmlib import clirender

EVENTS = [
    {"type": "drone_status", "timestamp": "2026-02-23T10:30:00Z",
     "data": {"name": "drone-izar", "cores": 16, "status": "building",
              "current_package": "dev-libs/openssl-3.3.2"}},
    {"type": "build_progress", "timestamp": "2026-02-23T10:30:01Z",
     "data": {"build_id": "b-1", "package": "dev-libs/openssl-3.3.2", "drone": "drone-izar",
              "phase": "started", "percent": None, "elapsed_s": 0, "estimate_s": 300,
              "result": None}},
    {"type": "queue_update", "timestamp": "2026-02-23T10:30:01Z",
     "data": {"pending": 4, "building": 1, "completed": 0, "failed": 0}},
    {"type": "build_complete", "timestamp": "2026-02-23T10:40:00Z",
     "data": {"request_id": "r-1", "packages": 5, "built": 5, "failed": 0, "blocked": 0,
              "cancelled": 0, "duration_s": 600}},
]


class Out(io.StringIO):
    """Captured output that sets ``seen`` once ``needle`` has been written."""

    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle
        self.seen = trio.Event()

    def write(self, s: str) -> int:
        n = super().write(s)
        if self.needle in self.getvalue():
            self.seen.set()
        return n


def _ctx(url: str, out: io.StringIO, kind: str = "gateway", secret: str = "") -> climod.Ctx:
    target = climod.Target(kind=kind, url=url, secret=secret)  # type: ignore[arg-type]
    return climod.Ctx(args=climod.build_parser().parse_args(["watch"]), cfg=climod.CliConfig(),
                      api=climod.Api(target, timeout=5), out=out, err=io.StringIO(),
                      stdin=io.StringIO(), json=False)


async def test_watch_prints_plain_lines_when_piped() -> None:
    seen: list[tuple[str, Any]] = []

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        seen.append((request.path, dict(request.headers)))
        ws = await request.accept()
        for ev in EVENTS:
            await ws.send_message(json.dumps(ev))
        await trio.sleep_forever()

    out = Out("request r-1 complete")
    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0,
                                     None)
        port = server.port
        ctx = _ctx(f"http://127.0.0.1:{port}", out)
        nursery.start_soon(climod._watch, ctx, clirender.WatchView(), False)
        with trio.fail_after(10):
            await out.seen.wait()
        nursery.cancel_scope.cancel()
    assert seen[0][0] == "/ws/build-status"
    assert out.getvalue().splitlines() == [
        f"connected to ws://127.0.0.1:{port}/ws/build-status",
        "10:30:00 drone drone-izar building dev-libs/openssl-3.3.2",
        "10:30:01 started dev-libs/openssl-3.3.2 on drone-izar",
        "10:30:01 queue pending 4  building 1  completed 0  failed 0",
        "10:40:00 request r-1 complete: 5 built, 0 failed, 0 blocked, 0 cancelled in 10m00s",
    ]


async def test_watch_orchestrator_sends_token_and_resumes_with_since() -> None:
    paths: list[str] = []
    auth: list[str] = []

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        paths.append(request.path)
        auth.append(dict((k.lower(), v) for k, v in request.headers).get(b"authorization", b"")
                    .decode())
        ws = await request.accept()
        if len(paths) == 1:
            await ws.send_message(json.dumps({**EVENTS[2], "seq": 41}))
            await ws.aclose()  # the stream drops: the CLI reconnects with ?since=41
            return
        await ws.send_message(json.dumps({**EVENTS[3], "seq": 42}))
        await trio.sleep_forever()

    out = Out("request r-1 complete")
    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0,
                                     None)
        ctx = _ctx(f"http://127.0.0.1:{server.port}", out, kind="orchestrator", secret="tok")
        nursery.start_soon(climod._watch, ctx, clirender.WatchView(), False)
        with trio.fail_after(10):
            await out.seen.wait()
        nursery.cancel_scope.cancel()
    assert paths == ["/api/events", "/api/events?since=41"]
    assert auth == ["Bearer tok", "Bearer tok"]
    assert "lost; reconnecting" in out.getvalue()


def test_watch_refused_token(cli: Callable[..., Any], fake_server: Any, env: dict[str, str]) -> None:
    fake_server.routes[("GET", "/api/drones")] = (200, {"drones": []})
    fake_server.routes[("GET", "/api/status")] = (200, {"counts": {}})
    fake_server.routes[("GET", "/api/events")] = (401, {"error": {"message": "token"}})
    r = cli("--orchestrator", fake_server.url, "watch",
            environ={**env, "SWARM_CONTROL_TOKEN": "bad"})
    assert r.code == 4
    assert "refused the control token: check SWARM_CONTROL_TOKEN" in r.err
    assert fake_server.received[-1].headers["authorization"] == "Bearer bad"
