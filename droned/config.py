"""The agent's configuration keys (SPEC section 10): TOML file, ``SWARM_DRONE_*`` env, flags."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import attrs

from swarmlib.config import key, load, secret_field
from swarmlib.errors import ConfigError

# Builds only the leased package: dependencies come from the binhost as binaries, the package
# itself never does (SPEC section 12). emerge accepts ``--usepkg-exclude=cat/pn`` in this form.
DEFAULT_BUILD_COMMAND = ["emerge", "--oneshot", "--buildpkg", "--usepkg", "--getbinpkg",
                         "--usepkg-exclude={cp}", "={cpv}"]
DEFAULT_SYNC_COMMAND = ["rsync", "-a", "{artifact}", "{binhost_target}/{relpath}"]


def _short_hostname() -> str:
    return socket.gethostname().split(".", 1)[0] or "drone"


def _cpu_count() -> int:
    return os.cpu_count() or 1


def _positive(name: str) -> Any:
    def check(_inst: Any, _attr: Any, value: float) -> None:
        if value <= 0:
            raise ValueError(f"key '{name}': must be greater than 0, got {value!r}")

    return check


@attrs.frozen(kw_only=True)
class DroneConfig:
    orchestrator: str = key("http://127.0.0.1:8080", "swarmd base URL")
    name: str = attrs.field(
        factory=_short_hostname, metadata={"help": "drone name (unique in the swarm)"}
    )
    cores: int = attrs.field(
        factory=_cpu_count, metadata={"help": "CPU cores reported to swarmd"}
    )
    slots: int = key(1, "concurrent builds", validator=_positive("slots"))
    pkgdir: str = key("/var/cache/binpkgs", "PKGDIR where emerge writes binary packages")
    binhost_target: str = key("", "where sync_command puts packages ({binhost_target})")
    build_command: list[str] = key(DEFAULT_BUILD_COMMAND, "build argv, placeholders {cpv} ...")
    sync_command: list[str] = key(DEFAULT_SYNC_COMMAND, "sync argv, placeholders {artifact} ...")
    build_env: dict[str, str] = key(
        {}, "environment overlay (TOML table only) for the build, plan, probe, sync and target"
    )
    read_target: bool = key(
        True, "read the portage target (needs real portage under build_env) and send it"
    )
    target_refresh_s: float = key(
        60.0, "an idle drone reads its target again this often (a repository sync changes it)",
        validator=_positive("target_refresh_s"),
    )
    heartbeat_interval_s: float = key(
        30.0, "heartbeat interval until swarmd's register reply says otherwise",
        validator=_positive("heartbeat_interval_s"),
    )
    lease_wait_s: float = key(30.0, "long-poll length asked for on lease calls (0-30)")
    state_dir: str = key("/var/lib/swarm-drone", "the agent's own state (pending reports)")
    stop_grace_s: float = key(
        30.0, "on SIGTERM/restart: wait this long for running builds, then return them"
    )
    kill_grace_s: float = key(10.0, "SIGTERM -> SIGKILL delay when stopping a build")
    backoff_base_s: float = key(0.5, "first retry delay when swarmd is unreachable",
                                validator=_positive("backoff_base_s"))
    backoff_max_s: float = key(60.0, "longest retry delay when swarmd is unreachable",
                               validator=_positive("backoff_max_s"))
    log_chunk_bytes: int = key(64 * 1024, "largest build-log chunk sent in one POST",
                               validator=_positive("log_chunk_bytes"))
    log_buffer_bytes: int = key(
        4 * 1024 * 1024, "build log held while swarmd is slow; beyond it old output is dropped",
        validator=_positive("log_buffer_bytes"),
    )
    log_interval_s: float = key(1.0, "how often buffered build log is shipped",
                                validator=_positive("log_interval_s"))
    log_format: str = key("text", "text or json")
    token: str = secret_field(env="SWARM_DRONE_TOKEN", help="drone-protocol bearer token")

    def validate(self) -> None:
        """Checks that need more than one key; raises ConfigError with one line."""
        if not self.orchestrator.startswith(("http://", "https://")):
            raise ConfigError(f"orchestrator: expected an http:// URL, got {self.orchestrator!r}")
        if not self.name or any(c.isspace() or c == "/" for c in self.name):
            raise ConfigError(f"name: not a usable drone name: {self.name!r}")
        if not self.build_command:
            raise ConfigError("build_command: must not be empty")
        if not self.sync_command:
            raise ConfigError("sync_command: must not be empty")
        if not any("{cpv}" in a or "{atom}" in a for a in self.build_command):
            raise ConfigError("build_command: must contain {cpv} or {atom}")
        if not any("{artifact}" in a for a in self.sync_command):
            raise ConfigError("sync_command: must contain {artifact}")
        for k, v in self.build_env.items():
            if not isinstance(k, str) or not k or "=" in k or not isinstance(v, str):
                raise ConfigError(
                    f"build_env: expected a table of NAME = \"string\", got {k!r} = {v!r}"
                )
        if not self.binhost_target and any("{binhost_target}" in a for a in self.sync_command):
            raise ConfigError("binhost_target: not set (sync_command uses {binhost_target})")
        if not 0 <= self.lease_wait_s <= 30:
            raise ConfigError(f"lease_wait_s: expected 0-30, got {self.lease_wait_s}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format: expected 'text' or 'json', got {self.log_format!r}")
        try:
            Path(self.state_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"state_dir {self.state_dir}: {exc.strerror}") from None


def load_config(argv: list[str] | None = None) -> DroneConfig:
    cfg = load(
        DroneConfig,
        "swarm-drone",
        "SWARM_DRONE",
        argv,
        description="build-swarm drone agent: leases builds from swarmd and runs them",
    )
    cfg.validate()
    return cfg


def substitute(argv: list[str], values: dict[str, str]) -> list[str]:
    """Fill ``{name}`` placeholders, also inside longer strings (``={cpv}``); never a shell."""
    out = []
    for arg in argv:
        for name, value in values.items():
            arg = arg.replace("{" + name + "}", value)
        out.append(arg)
    return out
