"""Fixtures of the CLI tests: an isolated environment (with a tiny portage configuration, so
that ``submit`` reads a real target), a closed port and a tiny fake server."""

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


def make_portage_root(root: Path, *, cflags: str = "-O2 -pipe") -> Path:
    """The smallest portage configuration real portage reads a target from (SPEC section 12):
    a profile with ARCH and CHOST, one repository, make.conf. Select it with PORTAGE_CONFIGROOT.
    """
    repo = root / "repo"
    (repo / "profiles" / "default").mkdir(parents=True)
    (repo / "metadata").mkdir()
    (repo / "profiles" / "repo_name").write_text("swarm-test\n")
    (repo / "profiles" / "default" / "eapi").write_text("8\n")
    (repo / "profiles" / "default" / "make.defaults").write_text(
        'ARCH="amd64"\nCHOST="x86_64-pc-linux-gnu"\nACCEPT_KEYWORDS="amd64"\n')
    (repo / "metadata" / "layout.conf").write_text("masters =\n")
    etc = root / "etc" / "portage"
    (etc / "repos.conf").mkdir(parents=True)
    (etc / "repos.conf" / "swarm-test.conf").write_text(
        f"[DEFAULT]\nmain-repo = swarm-test\n[swarm-test]\nlocation = {repo}\n")
    (etc / "make.profile").symlink_to(repo / "profiles" / "default")
    # PKGDIR and BINPKG_FORMAT: make.globals may be missing (PORTAGE_OVERRIDE_EPREFIX=/ on a
    # host that is not Gentoo), and portage needs a PKGDIR to open its trees.
    (etc / "make.conf").write_text(f'CFLAGS="{cflags}"\nCXXFLAGS="${{CFLAGS}}"\n'
                                   f'PKGDIR="{root / "binpkgs"}"\nBINPKG_FORMAT="gpkg"\n')
    return root


@pytest.fixture
def portage_root(tmp_path: Path) -> Path:
    return make_portage_root(tmp_path / "portage")


@pytest.fixture
def env(tmp_path: Path, portage_root: Path) -> dict[str, str]:
    """An environment with no secrets and no user config (HOME and XDG point into tmp); its
    portage configuration is ``portage_root``."""
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "PATH": os.environ.get("PATH", ""), "PORTAGE_OVERRIDE_EPREFIX": "/",
            "PORTAGE_CONFIGROOT": str(portage_root)}


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
