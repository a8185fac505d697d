"""SPEC section 12 in the CLI: submit sends this machine's portage target (read by real portage
from a tiny configuration), --run runs the verbose binhost-aware emerge with NO_COLOR, and
binhost prints a binrepos.conf stanza."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from swarmlib import cli as climod
from swarmlib import target as swarmtarget
from tests.cli.conftest import make_portage_root

REPLY = {"id": "r-1", "queued": 1, "skipped": 0, "merged": 0, "packages": 1}
ROW = "[ebuild  N     ] dev-libs/foo-1.0::gentoo  USE=\"bar -baz\" 0 KiB\n"


def fake_emerge(bindir: Path, marker: Path | None = None) -> Path:
    """An ``emerge`` on PATH that prints one row, its arguments and NO_COLOR."""
    bindir.mkdir(exist_ok=True)
    p = bindir / "emerge"
    touch = f'touch "{marker}"\n' if marker else ""
    p.write_text("#!/bin/sh\n" + touch + f"printf '%s' '{ROW}'\n"
                 'echo "args: $*"\necho "NO_COLOR=${NO_COLOR-unset}"\n')
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return p


# -- the target header ------------------------------------------------------------------------


def test_submit_sends_this_machines_target(cli: Callable[..., Any], fake_server: Any,
                                           env: dict[str, str]) -> None:
    fake_server.routes[("POST", "/api/queue")] = (202, REPLY)
    r = cli("--orchestrator", fake_server.url, "submit", "-", stdin=ROW)
    assert r.code == 0, r.err
    (req,) = fake_server.received
    sent = json.loads(req.headers["x-swarm-target"])
    assert sent == swarmtarget.read_target(env)  # what portage reads under PORTAGE_CONFIGROOT
    assert sent["arch"] == "amd64"
    assert sent["chost"] == "x86_64-pc-linux-gnu"
    assert sent["cflags"] == "-O2 -pipe"
    assert sent["profile"] == "default"
    assert list(sent["repos"]) == ["swarm-test"]
    assert req.headers["x-swarm-target"] == json.dumps(sent, separators=(",", ":"),
                                                       sort_keys=True)
    assert req.body == ROW.encode()
    assert f"target {swarmtarget.target_id(sent)}: amd64 x86_64-pc-linux-gnu default" in r.err


def test_another_configuration_is_another_target(cli: Callable[..., Any], fake_server: Any,
                                                 env: dict[str, str], tmp_path: Path) -> None:
    fake_server.routes[("POST", "/api/swarm-admin/queue")] = (202, REPLY)
    other = make_portage_root(tmp_path / "other", cflags="-O3 -march=native")
    for root in (env["PORTAGE_CONFIGROOT"], str(other)):
        r = cli("--gateway", fake_server.url, "submit", "-", stdin=ROW,
                environ={**env, "PORTAGE_CONFIGROOT": root})
        assert r.code == 0, r.err
    first, second = (json.loads(q.headers["x-swarm-target"]) for q in fake_server.received)
    assert (first["cflags"], second["cflags"]) == ("-O2 -pipe", "-O3 -march=native")
    assert swarmtarget.target_id(first) != swarmtarget.target_id(second)


def test_any_target_sends_none_and_needs_no_portage(cli: Callable[..., Any], fake_server: Any,
                                                    env: dict[str, str], tmp_path: Path) -> None:
    fake_server.routes[("POST", "/api/queue")] = (202, REPLY)
    empty = tmp_path / "no-portage-here"
    empty.mkdir()
    r = cli("--orchestrator", fake_server.url, "submit", "--any-target", "-", stdin=ROW,
            environ={**env, "PORTAGE_CONFIGROOT": str(empty)})
    assert r.code == 0, r.err
    (req,) = fake_server.received
    assert "x-swarm-target" not in req.headers
    assert "target" not in r.err


def test_unreadable_target_fails_before_emerge_runs(cli: Callable[..., Any], fake_server: Any,
                                                    env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "no-portage-here"
    empty.mkdir()
    marker = tmp_path / "emerge-ran"
    bindir = tmp_path / "bin"
    fake_emerge(bindir, marker)
    r = cli("--orchestrator", fake_server.url, "submit", "--run",
            environ={**env, "PORTAGE_CONFIGROOT": str(empty),
                     "PATH": f"{bindir}:{env['PATH']}"})
    assert r.code == climod.EXIT_LOCAL == 7
    assert len(r.err.strip().splitlines()) == 1, r.err
    assert r.err.startswith("build-swarm: cannot read the portage target: ")
    assert r.err.rstrip().endswith("use --any-target to build for any drone")
    assert fake_server.received == []
    assert not marker.exists()


# -- submit --run -----------------------------------------------------------------------------


def test_run_uses_the_verbose_binhost_argv_and_no_color(cli: Callable[..., Any],
                                                        fake_server: Any, env: dict[str, str],
                                                        tmp_path: Path) -> None:
    fake_server.routes[("POST", "/api/queue")] = (202, REPLY)
    bindir = tmp_path / "bin"
    fake_emerge(bindir)
    r = cli("--orchestrator", fake_server.url, "submit", "--run",
            environ={**env, "PATH": f"{bindir}:{env['PATH']}"})
    assert r.code == 0, r.err
    assert climod.DEFAULT_EMERGE_ARGV == ["emerge", "-puDNv", "--tree", "--getbinpkg",
                                          "--color=n", "@world"]
    assert "running emerge -puDNv --tree --getbinpkg --color=n @world ..." in r.err
    (req,) = fake_server.received
    assert req.body.decode() == (ROW + "args: -puDNv --tree --getbinpkg --color=n @world\n"
                                 "NO_COLOR=1\n")
    assert "x-swarm-target" in req.headers


def test_emerge_argv_still_overrides_and_gets_no_color(cli: Callable[..., Any],
                                                       fake_server: Any, tmp_path: Path) -> None:
    fake_server.routes[("POST", "/api/queue")] = (202, REPLY)
    script = fake_emerge(tmp_path / "bin")
    r = cli("--orchestrator", fake_server.url, "submit", "--any-target", "--run",
            "--emerge-argv", f"{script} -pv @system")
    assert r.code == 0, r.err
    assert fake_server.received[0].body.decode().endswith("args: -pv @system\nNO_COLOR=1\n")


def test_file_and_run_is_a_usage_error(cli: Callable[..., Any], fake_server: Any) -> None:
    r = cli("--orchestrator", fake_server.url, "submit", "--run", "world.txt")
    assert r.code == climod.EXIT_USAGE
    assert "either FILE or --run" in r.err


# -- binhost ----------------------------------------------------------------------------------

STANZA = """\
# /etc/portage/binrepos.conf/build-swarm.conf
[build-swarm]
priority = 10
sync-uri = https://binhost.example.org/amd64/
# then install what the swarm built: emerge -uDN --getbinpkgonly --binpkg-respect-use=y @world
"""


def test_binhost_from_the_gateway(cli: Callable[..., Any], fake_server: Any,
                                  env: dict[str, str]) -> None:
    fake_server.routes[("GET", "/api/v1/binhost")] = (200, {
        "status": "ok", "timestamp": "2026-02-23T10:30:00Z",
        "data": {"url": "https://binhost.example.org/amd64/"}})
    r = cli("--gateway", fake_server.url, "binhost",
            environ={**env, "SWARM_ADMIN_KEY": "key-one-0123456789"})
    assert r.code == 0, r.err
    assert r.out == STANZA
    (req,) = fake_server.received
    assert req.path == "/api/v1/binhost"
    assert "x-admin-key" not in req.headers  # a public route: the key stays home
    r = cli("--gateway", fake_server.url, "--json", "binhost")
    assert r.json() == {"url": "https://binhost.example.org/amd64/", "stanza": STANZA}


def test_binhost_url_option_needs_no_server(cli: Callable[..., Any], closed_port: int) -> None:
    r = cli("--orchestrator", f"http://127.0.0.1:{closed_port}", "binhost",
            "--url", "https://binhost.example.org/amd64/")
    assert r.code == 0, r.err
    assert r.out == STANZA


def test_binhost_orchestrator_without_url(cli: Callable[..., Any], fake_server: Any) -> None:
    r = cli("--orchestrator", fake_server.url, "binhost")
    assert r.code == climod.EXIT_USAGE
    assert "--url URL" in r.err
    assert fake_server.received == []


@pytest.mark.parametrize("data", [{"url": None}, {}, {"url": ""}])
def test_binhost_gateway_without_url(cli: Callable[..., Any], fake_server: Any,
                                     data: dict[str, Any]) -> None:
    fake_server.routes[("GET", "/api/v1/binhost")] = (200, {
        "status": "ok", "timestamp": "2026-02-23T10:30:00Z", "data": data})
    r = cli("--gateway", fake_server.url, "binhost")
    assert r.code == climod.EXIT_REJECTED
    assert "public_binhost_url" in r.err


@pytest.mark.parametrize("url", ["binhost.example.org", "https://x/ y", "https://x/\nsync-uri"])
def test_binhost_bad_url(cli: Callable[..., Any], closed_port: int, url: str) -> None:
    r = cli("--orchestrator", f"http://127.0.0.1:{closed_port}", "binhost", "--url", url)
    assert r.code == climod.EXIT_USAGE
    assert r.out == ""


# -- targets in listings ----------------------------------------------------------------------


def test_drones_and_queue_show_targets_and_waiting(cli: Callable[..., Any],
                                                   fake_server: Any) -> None:
    fake_server.routes[("GET", "/api/drones")] = (200, {"drones": [
        {"id": "d-1", "name": "drone-izar", "status": "ready", "cores": 16,
         "target_id": "1a2b3c4d5e6f"}]})
    fake_server.routes[("GET", "/api/queue")] = (200, {"entries": [
        {"id": "e-1", "state": "ready", "cpv": "dev-libs/foo-1.0", "target_id": "9f8e7d6c5b4a",
         "waiting": "no drone for target 9f8e7d6c5b4a"},
        {"id": "e-2", "state": "ready", "cpv": "dev-libs/bar-2", "target_id": "1a2b3c4d5e6f",
         "waiting": None}]})
    r = cli("--orchestrator", fake_server.url, "drones")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[1].split()[:6] == ["drone-izar", "d-1", "ready", "16", "-", "1a2b3c4d5e6f"]
    r = cli("--orchestrator", fake_server.url, "queue")
    lines = r.out.splitlines()
    assert lines[0].split() == ["ID", "STATE", "PACKAGE", "TRIES", "DRONE", "TARGET",
                                "ESTIMATE", "REASON"]
    assert lines[1].split()[5] == "9f8e7d6c5b4a"
    assert lines[1].endswith("no drone for target 9f8e7d6c5b4a")
    assert lines[2].split()[5:] == ["1a2b3c4d5e6f", "-", "-"]
