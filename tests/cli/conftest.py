"""Fixtures of the CLI tests: an isolated environment, a closed port and a tiny fake server."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs
import pytest

os.environ.setdefault("PORTAGE_OVERRIDE_EPREFIX", "/")

DATA = Path(__file__).parent / "data"


@attrs.define
class Received:
    method: str
    path: str  # with the query string
    headers: dict[str, str]
    body: bytes


@attrs.define
class FakeServer:
    """An HTTP server on 127.0.0.1 that answers from a route table and records every request.

    ``routes[(method, path_without_query)] = (status, json_body)``; a callable value is called
    with the Received request and returns (status, json_body). Unknown routes: 404 without body.
    """

    url: str = ""
    routes: dict[tuple[str, str], Any] = attrs.Factory(dict)
    received: list[Received] = attrs.Factory(list)

    def reply(self, req: Received) -> tuple[int, Any]:
        route = self.routes.get((req.method, req.path.split("?", 1)[0]))
        if route is None:
            return 404, None
        if callable(route):
            return route(req)  # type: ignore[no-any-return]
        return route  # type: ignore[no-any-return]


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    fake = FakeServer()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            req = Received(method=self.command, path=self.path,
                           headers={k.lower(): v for k, v in self.headers.items()},
                           body=self.rfile.read(n) if n else b"")
            fake.received.append(req)
            status, body = fake.reply(req)
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment with no secrets and no user config (HOME and XDG point into tmp)."""
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "PATH": os.environ.get("PATH", ""), "PORTAGE_OVERRIDE_EPREFIX": "/"}


@attrs.define
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(env: dict[str, str]) -> Callable[..., Result]:
    """Run the CLI in-process: ``cli("--json", "status", stdin="...", environ={...})``."""
    from swarmlib import cli as climod

    def run(*argv: str, stdin: str = "", environ: dict[str, str] | None = None,
            sleep: Callable[[float], None] | None = None) -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = climod.run(list(argv), environ=environ if environ is not None else env,
                          stdin=io.StringIO(stdin), stdout=out, stderr=err,
                          sleep=sleep or (lambda s: None))
        return Result(code, out.getvalue(), err.getvalue())

    return run
