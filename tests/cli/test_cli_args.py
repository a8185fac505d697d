"""Argument parsing, configuration files and the choice of target."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from swarmlib import cli as climod


def cfg(**kw: Any) -> climod.CliConfig:
    return climod.CliConfig(**kw)


def test_global_options_go_before_the_command() -> None:
    p = climod.build_parser()
    a = p.parse_args(["--gateway", "http://gw:8090", "--json", "submit", "-", "--wait",
                      "--request-id", "x1", "--priority", "3"])
    assert (a.gateway, a.json, a.command, a.file, a.wait, a.request_id, a.priority) == (
        "http://gw:8090", True, "submit", "-", True, "x1", 3)
    a = p.parse_args(["history", "import", "--dry-run"])
    assert (a.command, a.history_command, a.emerge_log, a.dry_run) == (
        "history", "import", "/var/log/emerge.log", True)
    a = p.parse_args(["build", "b-1"])
    assert (a.id, a.tail) == ("b-1", 50)


def test_global_options_are_accepted_after_the_command_too() -> None:
    """`build-swarm status --json` works like `build-swarm --json status`."""
    p = climod.build_parser()
    a = p.parse_args(["status", "--json", "--orchestrator", "http://o:8080", "--timeout", "3"])
    assert (a.command, a.json, a.orchestrator, a.timeout, a.gateway) == (
        "status", True, "http://o:8080", 3.0, None)
    a = p.parse_args(["--json", "queue", "--state", "ready"])
    assert (a.json, a.state) == (True, "ready")
    a = p.parse_args(["queue"])
    assert a.json is False
    a = p.parse_args(["history", "import", "--dry-run", "--json"])
    assert (a.history_command, a.json) == ("import", True)


@pytest.mark.parametrize("argv", [
    ["--gateway", "http://a", "--orchestrator", "http://b", "status"],  # both targets
    ["--gateway", "http://a", "status", "--orchestrator", "http://b"],  # both, either side
    [],  # no command
    ["queue", "--state"],  # missing value
    ["frobnicate"],
])
def test_usage_errors_exit_2(cli: Callable[..., Any], argv: list[str]) -> None:
    r = cli(*argv)
    assert r.code == climod.EXIT_USAGE == 2
    assert "usage: build-swarm" in r.err


def test_help_exits_0(cli: Callable[..., Any]) -> None:
    with pytest.raises(SystemExit) as exc:  # argparse prints help and exits by itself
        climod.build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    assert cli("--help").code == 0


def test_default_target_is_local_orchestrator() -> None:
    t = climod.resolve_target(gateway=None, orchestrator=None, cfg=cfg(), command="status")
    assert (t.kind, t.url) == ("orchestrator", "http://127.0.0.1:8080")
    assert t.api("queue") == "http://127.0.0.1:8080/api/queue"


def test_flags_beat_config_and_gateway_beats_orchestrator_in_config() -> None:
    c = cfg(gateway="http://gw:8090/", orchestrator="http://orch:8080", admin_key="k",
            control_token="t")
    t = climod.resolve_target(gateway=None, orchestrator=None, cfg=c, command="queue")
    assert (t.kind, t.url, t.headers()["X-Admin-Key"]) == ("gateway", "http://gw:8090", "k")
    assert t.api("queue") == "http://gw:8090/api/swarm-admin/queue"
    t = climod.resolve_target(gateway=None, orchestrator="http://o2:1", cfg=c, command="queue")
    assert (t.kind, t.url, t.headers()["Authorization"]) == ("orchestrator", "http://o2:1",
                                                             "Bearer t")
    # a command the gateway does not offer uses the configured orchestrator
    t = climod.resolve_target(gateway=None, orchestrator=None, cfg=c, command="history")
    assert (t.kind, t.url) == ("orchestrator", "http://orch:8080")


def test_orchestrator_only_command_via_gateway_is_refused() -> None:
    with pytest.raises(climod.CliError) as exc:
        climod.resolve_target(gateway="http://gw", orchestrator=None, cfg=cfg(), command="builds")
    assert exc.value.exit_code == 2
    assert "'builds' needs the orchestrator" in str(exc.value)


def test_bad_url(cli: Callable[..., Any]) -> None:
    r = cli("--gateway", "gw:8090", "status")
    assert r.code == 2
    assert "expected an http:// or https:// URL, got 'gw:8090'" in r.err


def test_user_config_and_secret_file(cli: Callable[..., Any], env: dict[str, str],
                                     fake_server: Any, tmp_path: Path) -> None:
    keyfile = tmp_path / "admin-key"
    keyfile.write_text("from-file\n")
    d = Path(env["XDG_CONFIG_HOME"]) / "build-swarm"
    d.mkdir(parents=True)
    (d / "cli.toml").write_text(f'gateway = "{fake_server.url}"\nadmin_key_file = "{keyfile}"\n')
    fake_server.routes[("GET", "/api/swarm-admin/status")] = (200, {"status": "ok"})
    assert cli("status").code == 0
    assert fake_server.received[-1].headers["x-admin-key"] == "from-file"
    # the environment beats the file
    assert cli("status", environ={**env, "SWARM_ADMIN_KEY": "from-env"}).code == 0
    assert fake_server.received[-1].headers["x-admin-key"] == "from-env"


def test_config_errors_exit_2(cli: Callable[..., Any], tmp_path: Path) -> None:
    p = tmp_path / "cli.toml"
    p.write_text('gateway = "http://gw"\nadmin_key = "inline secrets are not allowed"\n')
    r = cli("--config", str(p), "status")
    assert r.code == 2
    assert "secret 'admin_key' must not be written in the config file; use 'admin_key_file'" in r.err
    r = cli("--config", str(tmp_path / "missing.toml"), "status")
    assert r.code == 2
    assert "does not exist" in r.err
    p.write_text("gateway = \n")
    assert cli("--config", str(p), "status").code == 2
