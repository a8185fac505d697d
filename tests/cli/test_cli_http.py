"""The CLI against a fake server: what it sends, what it prints, and its exit codes."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swarmlib import cli as climod

WORLD = Path(__file__).parent / "data" / "world.txt"

SUBMIT_REPLY = {"id": "r-42", "queued": 3, "skipped": 1, "merged": 1, "packages": 5,
                "cycles": [["dev-lang/python-3.12.8", "dev-python/setuptools-75.6.0"]],
                "entries": ["e-1", "e-2", "e-3", "e-4"], "duplicate": False}


# -- connecting and authenticating ------------------------------------------------------------


def test_unreachable_orchestrator(cli: Callable[..., Any], closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    r = cli("--orchestrator", url, "status")
    assert r.code == climod.EXIT_CONNECT == 3
    assert r.err == f"build-swarm: cannot reach orchestrator at {url}: is swarmd running?\n"
    assert r.out == ""


def test_unreachable_gateway(cli: Callable[..., Any], closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    r = cli("--gateway", url, "drones")
    assert r.code == 3
    assert f"cannot reach gateway at {url}: is gatewayd running?" in r.err


def test_wrong_admin_key(cli: Callable[..., Any], fake_server: Any, env: dict[str, str]) -> None:
    fake_server.routes[("GET", "/api/swarm-admin/status")] = (
        401, {"error": {"code": "unauthorized", "message": "bad admin key"}})
    r = cli("--gateway", fake_server.url, "status", environ={**env, "SWARM_ADMIN_KEY": "wrong"})
    assert r.code == climod.EXIT_AUTH == 4
    assert r.err == (f"build-swarm: gateway at {fake_server.url} refused the admin key: "
                     f"check SWARM_ADMIN_KEY\n")
    assert fake_server.received[0].headers["x-admin-key"] == "wrong"
    assert "wrong" not in r.err  # never echoed


def test_missing_admin_key_says_so(cli: Callable[..., Any], fake_server: Any) -> None:
    fake_server.routes[("GET", "/api/swarm-admin/drones")] = (401, {"error": {"message": "no"}})
    r = cli("--gateway", fake_server.url, "drones")
    assert r.code == 4
    assert "no admin key given; set SWARM_ADMIN_KEY" in r.err
    assert "x-admin-key" not in fake_server.received[0].headers


def test_rotation_list_sends_first_key(cli: Callable[..., Any], fake_server: Any,
                                       env: dict[str, str]) -> None:
    fake_server.routes[("GET", "/api/swarm-admin/status")] = (200, {"status": "ok"})
    r = cli("--gateway", fake_server.url, "status", environ={**env, "SWARM_ADMIN_KEY": " new, old"})
    assert r.code == 0
    assert fake_server.received[0].headers["x-admin-key"] == "new"


def test_rate_limited_after_failures(cli: Callable[..., Any], fake_server: Any) -> None:
    fake_server.routes[("GET", "/api/swarm-admin/queue")] = (429, {"error": {"message": "slow"}})
    r = cli("--gateway", fake_server.url, "queue")
    assert r.code == 4
    assert "refusing this client after repeated failed keys" in r.err


def test_wrong_control_token(cli: Callable[..., Any], fake_server: Any, env: dict[str, str]) -> None:
    fake_server.routes[("DELETE", "/api/queue/r-1")] = (401, {"error": {"message": "no"}})
    r = cli("--orchestrator", fake_server.url, "cancel", "r-1",
            environ={**env, "SWARM_CONTROL_TOKEN": "tok"})
    assert r.code == 4
    assert r.err == (f"build-swarm: orchestrator at {fake_server.url} refused the control token: "
                     f"check SWARM_CONTROL_TOKEN\n")
    assert fake_server.received[0].headers["authorization"] == "Bearer tok"


def test_server_error_and_rejection(cli: Callable[..., Any], fake_server: Any) -> None:
    fake_server.routes[("GET", "/api/status")] = (500, {"error": {"message": "journal on fire"}})
    fake_server.routes[("GET", "/api/builds/b-9")] = (
        404, {"error": {"code": "not_found", "message": "no build b-9"}})
    r = cli("--orchestrator", fake_server.url, "status")
    assert r.code == climod.EXIT_SERVER == 6
    assert "(500): journal on fire" in r.err
    r = cli("--orchestrator", fake_server.url, "build", "b-9")
    assert r.code == climod.EXIT_REJECTED == 5
    assert "no build b-9" in r.err


def test_route_missing_on_server(cli: Callable[..., Any], fake_server: Any) -> None:
    r = cli("--orchestrator", fake_server.url, "packages")
    assert r.code == 5
    assert "has no GET" in r.err


# -- submit -----------------------------------------------------------------------------------


def test_submit_from_file(cli: Callable[..., Any], fake_server: Any) -> None:
    fake_server.routes[("POST", "/api/queue")] = (202, SUBMIT_REPLY)
    r = cli("--orchestrator", fake_server.url, "submit", str(WORLD), "--request-id", "nightly-1",
            "--priority", "5")
    assert r.code == 0, r.err
    (req,) = fake_server.received
    assert req.path == "/api/queue?request_id=nightly-1&priority=5"
    assert req.headers["content-type"].startswith("text/plain")
    assert req.body == WORLD.read_bytes()
    assert r.out.splitlines() == [
        "request r-42",
        "  3 queued, 1 skipped (already built), 1 merged (already queued), of 5 packages",
        "  dependency cycle (broken in emerge order): dev-lang/python-3.12.8 -> "
        "dev-python/setuptools-75.6.0",
    ]


def test_submit_from_stdin_via_gateway(cli: Callable[..., Any], fake_server: Any,
                                       env: dict[str, str]) -> None:
    fake_server.routes[("POST", "/api/swarm-admin/queue")] = (202, SUBMIT_REPLY)
    text = WORLD.read_text()
    r = cli("--gateway", fake_server.url, "--json", "submit", "-", stdin=text,
            environ={**env, "SWARM_ADMIN_KEY": "k1"})
    assert r.code == 0, r.err
    assert r.json() == SUBMIT_REPLY
    (req,) = fake_server.received
    assert req.path == "/api/swarm-admin/queue"
    assert req.body.decode() == text
    assert req.headers["x-admin-key"] == "k1"


def test_submit_bad_lines(cli: Callable[..., Any], fake_server: Any) -> None:
    lines = [{"line": 3, "text": "[ebuild  N   ] dev-libs/foo-", "why": "'dev-libs/foo-' is not a CPV"},
             {"line": 7, "text": "[ebuild  N   ] foo", "why": "'foo' is not a CPV"}]
    fake_server.routes[("POST", "/api/queue")] = (
        400, {"error": {"code": "bad_request", "message": "line 3: ...; line 7: ...", "lines": lines}})
    r = cli("--orchestrator", fake_server.url, "submit", stdin="x\ny\n")
    assert r.code == 5
    assert "2 bad line(s); nothing was queued" in r.err
    assert "line 3: 'dev-libs/foo-' is not a CPV" in r.err
    assert "[ebuild  N   ] foo" in r.err


def test_submit_empty_input_is_a_usage_error(cli: Callable[..., Any], fake_server: Any) -> None:
    r = cli("--orchestrator", fake_server.url, "submit", stdin="  \n")
    assert r.code == 2
    assert fake_server.received == []


def test_submit_unreadable_file(cli: Callable[..., Any], fake_server: Any, tmp_path: Path) -> None:
    r = cli("--orchestrator", fake_server.url, "submit", str(tmp_path / "nope.txt"))
    assert r.code == climod.EXIT_LOCAL == 7
    assert "cannot read" in r.err


def _script(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "fake-emerge"
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return p


def test_submit_run(cli: Callable[..., Any], fake_server: Any, tmp_path: Path) -> None:
    fake_server.routes[("POST", "/api/queue")] = (202, SUBMIT_REPLY)
    script = _script(tmp_path, 'echo "[ebuild  N    ] dev-libs/foo-1.0"\necho "args: $*"\n')
    r = cli("--orchestrator", fake_server.url, "submit", "--run", "--emerge-argv",
            f"{script} -puDN @world")
    assert r.code == 0, r.err
    assert fake_server.received[0].body == b"[ebuild  N    ] dev-libs/foo-1.0\nargs: -puDN @world\n"


def test_submit_run_failure(cli: Callable[..., Any], fake_server: Any, tmp_path: Path) -> None:
    script = _script(tmp_path, 'echo "!!! Multiple package instances within a single package slot" >&2\nexit 1\n')
    r = cli("--orchestrator", fake_server.url, "submit", "--run", "--emerge-argv", str(script))
    assert r.code == 7
    assert "exited with status 1; nothing submitted" in r.err
    assert "Multiple package instances" in r.err
    assert fake_server.received == []


def test_submit_wait_orchestrator_failures(cli: Callable[..., Any], fake_server: Any) -> None:
    fake_server.routes[("POST", "/api/queue")] = (202, SUBMIT_REPLY)
    polls = iter([
        {"id": "r-42", "state": "open", "packages": 4, "counts": {"building": 1, "pending": 3}},
        {"id": "r-42", "state": "open", "packages": 4, "counts": {"built": 2, "building": 2}},
        {"id": "r-42", "state": "complete", "packages": 4,
         "counts": {"built": 2, "failed": 1, "blocked": 1}},
    ])
    fake_server.routes[("GET", "/api/requests/r-42")] = lambda req: (200, next(polls))
    slept: list[float] = []
    r = cli("--orchestrator", fake_server.url, "submit", "--wait", "--interval", "0.5",
            stdin="[ebuild N] a/b-1\n", sleep=slept.append)
    assert r.code == climod.EXIT_FAILED == 1
    assert slept == [0.5, 0.5]
    assert "r-42: 0/4 done" in r.err
    assert "r-42: 2/4 done" in r.err
    assert r.out.splitlines()[-1] == "request r-42 finished with failures: built 2  failed 1  blocked 1"


def test_submit_wait_gateway_polls_queue(cli: Callable[..., Any], fake_server: Any) -> None:
    fake_server.routes[("POST", "/api/swarm-admin/queue")] = (202, SUBMIT_REPLY)
    other = {"id": "e-99", "state": "failed", "requests": ["r-other"]}
    states = iter([["building", "pending", "ready", "built"], ["built"] * 4])
    fake_server.routes[("GET", "/api/swarm-admin/queue")] = lambda req: (200, {"entries": [
        {"id": f"e-{i + 1}", "state": s, "requests": ["r-42"]} for i, s in enumerate(next(states))
    ] + [other]})
    r = cli("--gateway", fake_server.url, "--json", "submit", "--wait", stdin="x\n")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["submit"] == SUBMIT_REPLY
    assert doc["final"]["counts"] == {"built": 4}
    assert fake_server.received[1].path == "/api/swarm-admin/queue?request=r-42"


def test_submit_wait_nothing_to_build(cli: Callable[..., Any], fake_server: Any) -> None:
    fake_server.routes[("POST", "/api/queue")] = (202, {**SUBMIT_REPLY, "queued": 0, "merged": 0})
    r = cli("--orchestrator", fake_server.url, "submit", "--wait", stdin="x\n")
    assert r.code == 0
    assert len(fake_server.received) == 1
    assert "complete: nothing to build" in r.out


# -- the other commands -----------------------------------------------------------------------


DRONES = {"drones": [
    {"id": "d-1", "name": "drone-izar", "status": "building", "cores": 16, "load": 7.5,
     "ip": "10.42.0.201", "last_heartbeat": "2026-02-23T10:30:00Z",
     "current_builds": [{"build_id": "b-1", "cpv": "dev-libs/openssl-3.3.2", "progress": 40.0}]},
    {"id": "d-2", "name": "drone-tau", "status": "ready", "cores": 8, "load": 0.1,
     "ip": "10.42.0.202", "last_heartbeat": "2026-02-23T10:30:05Z", "current_builds": []},
]}


def test_drones_table_and_json(cli: Callable[..., Any], fake_server: Any) -> None:
    fake_server.routes[("GET", "/api/drones")] = (200, DRONES)
    r = cli("--orchestrator", fake_server.url, "drones")
    assert r.code == 0
    lines = r.out.splitlines()
    assert lines[0].split() == ["NAME", "ID", "STATUS", "CORES", "LOAD", "TARGET", "IP", "LAST",
                                "HEARTBEAT", "BUILDING"]
    # an older server sends no target_id: shown as "-"
    assert lines[1].split()[:6] == ["drone-izar", "d-1", "building", "16", "7.5", "-"]
    assert lines[1].endswith("dev-libs/openssl-3.3.2 40%")
    r = cli("--orchestrator", fake_server.url, "--json", "drones")
    assert r.json() == DRONES


def test_queue_state_filter(cli: Callable[..., Any], fake_server: Any) -> None:
    fake_server.routes[("GET", "/api/swarm-admin/queue")] = (200, {
        "entries": [{"id": "e-1", "state": "failed", "cpv": "a/b-1", "attempts": 3,
                     "estimate_s": 125, "reason": None}],
        "counts": {"failed": 1}})
    r = cli("--gateway", fake_server.url, "queue", "--state", "failed,blocked")
    assert r.code == 0
    assert fake_server.received[0].path == "/api/swarm-admin/queue?state=failed%2Cblocked"
    assert r.out.splitlines()[1].split() == ["e-1", "failed", "a/b-1", "3", "-", "2m05s", "-"]
    assert r.out.splitlines()[-1] == "failed 1"


def test_builds_build_and_logs_params(cli: Callable[..., Any], fake_server: Any) -> None:
    fake_server.routes[("GET", "/api/builds")] = (200, {"builds": []})
    fake_server.routes[("GET", "/api/builds/b-7")] = (200, {
        "id": "b-7", "cpv": "a/b-1", "state": "finished", "result": "failed",
        "error": "emerge exited 1", "log": "line1\nline2\n"})
    fake_server.routes[("GET", "/api/logs")] = (200, {"lines": [
        {"time": 1700000000.5, "level": "info", "logger": "swarmd", "message": "hello"}]})
    base = ("--orchestrator", fake_server.url)
    assert cli(*base, "builds", "--limit", "7").out == "no builds yet\n"
    r = cli(*base, "build", "b-7", "--tail", "20")
    assert "error     emerge exited 1" in r.out
    assert r.out.endswith("--- log ---\nline1\nline2\n")
    r = cli(*base, "logs", "--limit", "3")
    assert r.out.splitlines()[1].split() == ["2023-11-14", "22:13:20", "info", "swarmd", "hello"]
    assert [q.path for q in fake_server.received] == [
        "/api/builds?limit=7", "/api/builds/b-7?tail=20", "/api/logs?limit=3"]


def test_cancel_and_restart_by_name(cli: Callable[..., Any], fake_server: Any) -> None:
    fake_server.routes[("DELETE", "/api/swarm-admin/queue/r-42")] = (
        200, {"id": "r-42", "cancelled": ["e-1", "e-2"], "blocked": ["e-3"]})
    fake_server.routes[("GET", "/api/swarm-admin/drones")] = (200, DRONES)
    fake_server.routes[("POST", "/api/swarm-admin/drones/d-2/restart")] = (
        202, {"drone_id": "d-2", "command": "restart"})
    r = cli("--gateway", fake_server.url, "cancel", "r-42")
    assert r.out == "r-42: cancelled 2 entries (e-1, e-2); blocked 1 dependent (e-3)\n"
    r = cli("--gateway", fake_server.url, "restart", "drone-tau")
    assert r.code == 0
    assert "restart queued for drone-tau (d-2)" in r.out
    r = cli("--gateway", fake_server.url, "restart", "drone-nope")
    assert r.code == 5
    assert "known: drone-izar, drone-tau" in r.err


def test_config_and_status(cli: Callable[..., Any], fake_server: Any) -> None:
    fake_server.routes[("GET", "/api/config")] = (200, {"config": {
        "listen": "127.0.0.1:8080", "max_retries": 2, "control_token": "<set>"}})
    fake_server.routes[("GET", "/api/status")] = (200, {
        "status": "ok", "version": "0.1.0", "uptime_s": 3725, "hostname": "izar-host",
        "journal": {"dir": "/var/lib/build-swarm", "bytes": 1234, "records": 10, "last_seq": 10},
        "counts": {"pending": 2, "built": 5}, "drones": {"ready": 1}})
    r = cli("--orchestrator", fake_server.url, "config")
    assert r.out.splitlines() == ["control_token = '<set>'", "listen = '127.0.0.1:8080'",
                                  "max_retries = 2"]
    r = cli("--orchestrator", fake_server.url, "status")
    assert r.out.splitlines()[0] == "swarmd 0.1.0 on izar-host: ok, up 1h02m"
    assert "queue    pending 2  built 5" in r.out


def test_history_import(cli: Callable[..., Any], fake_server: Any) -> None:
    log = Path(__file__).parent / "data" / "emerge.log"
    fake_server.routes[("POST", "/api/history")] = (200, {"recorded": 6})
    r = cli("--orchestrator", fake_server.url, "history", "import", str(log))
    assert r.code == 0, r.err
    (req,) = fake_server.received
    assert json.loads(req.body) == {"packages": {
        "sys-libs/zlib": 47.0, "dev-lang/perl": 317.0, "dev-libs/openssl": 307.0,
        "app-misc/hello": 41.0, "media-libs/libpng": 53.0, "sys-devel/gcc": 5400.0}}
    lines = r.out.splitlines()
    assert lines[0].startswith("sent compile times for 6 packages (from 8 source builds; "
                               "skipped 2 binary merges, 3 unfinished")
    assert lines[0].endswith("swarmd recorded 6")
    assert lines[3].split() == ["sys-devel/gcc", "1h30m"]


def test_history_import_dry_run_sends_nothing(cli: Callable[..., Any], closed_port: int) -> None:
    log = Path(__file__).parent / "data" / "emerge.log"
    r = cli("--orchestrator", f"http://127.0.0.1:{closed_port}", "--json", "history", "import",
            str(log), "--dry-run")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["packages"]["sys-devel/gcc"] == 5400.0
    assert (doc["builds"], doc["binary"], doc["unfinished"], doc["recorded"]) == (8, 2, 3, None)


def test_history_import_via_gateway_needs_orchestrator(cli: Callable[..., Any],
                                                       fake_server: Any) -> None:
    r = cli("--gateway", fake_server.url, "history", "import", "/var/log/emerge.log")
    assert r.code == 2
    assert "needs the orchestrator" in r.err
    assert "--orchestrator URL" in r.err
    assert fake_server.received == []


def test_watch_unreachable(cli: Callable[..., Any], closed_port: int) -> None:
    r = cli("--gateway", f"http://127.0.0.1:{closed_port}", "watch")
    assert r.code == 3
    assert "cannot reach gateway" in r.err
