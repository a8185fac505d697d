"""contrib/: the example configs load with the daemons' own classes and match their defaults;
the init scripts pass sh -n and shellcheck; the units pass systemd-analyze verify."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import attrs
import pytest

from swarmlib import config as cfgmod

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
INITD = sorted((CONTRIB / "openrc").glob("*.initd"))
CONFD = sorted((CONTRIB / "openrc").glob("*.confd"))
UNITS = sorted((CONTRIB / "systemd").glob("*.service"))

# (file, module, class, prog, env prefix, keys the production example sets on purpose)
CONFIGS = [
    ("swarmd.toml", "swarmd.config", "SwarmdConfig", "swarmd", "SWARMD", {"listen"}),
    ("gatewayd.toml", "gatewayd.config", "GatewayConfig", "gatewayd", "GATEWAYD",
     {"listen", "orchestrator", "identity"}),
    ("swarm-drone.toml", "droned.config", "DroneConfig", "swarm-drone", "SWARM_DRONE",
     {"orchestrator", "binhost_target"}),
    ("cli.toml", "swarmlib.cli", "CliConfig", "cli", "BUILD_SWARM", {"gateway"}),
]


def _cls(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


def _default(f: Any) -> Any:
    d = f.default
    return d.factory() if isinstance(d, attrs.Factory) else d  # type: ignore[arg-type]


def test_all_files_present() -> None:
    names = {p.name for p in CONTRIB.rglob("*") if p.is_file()}
    for n in ("swarmd", "gatewayd", "swarm-drone"):
        assert {f"{n}.initd", f"{n}.confd", f"{n}.service", f"{n}.toml"} <= names
    assert "cli.toml" in names


@pytest.mark.parametrize(("fname", "module", "clsname", "prog", "prefix", "overrides"), CONFIGS,
                         ids=[c[0] for c in CONFIGS])
def test_example_config(fname: str, module: str, clsname: str, prog: str, prefix: str,
                        overrides: set[str]) -> None:
    cls = _cls(module, clsname)
    path = CONTRIB / "config" / fname
    cfg = cfgmod.load(cls, prog, prefix, ["--config", str(path)], environ={})
    text = path.read_text()
    for f in attrs.fields(cls):
        secret = f.metadata.get("secret")
        name = f"{f.name}_file" if secret else f.name
        # every key is in the file (secrets only commented, as a *_file), with a comment above
        m = re.search(rf"^(#?){re.escape(name)} = ", text, re.M)
        if f.name == "identity":
            m = re.search(r"^\[identity\.hosts\]", text, re.M)
        assert m is not None, f"{fname}: key {name} is missing"
        if secret:
            assert m.group(1) == "#", f"{fname}: {name} must stay commented out"
            continue
        # a comment right above the key, or above the group of keys it belongs to
        above = [ln for ln in text[: m.start()].splitlines()]
        while above and re.match(r"^\w+ = ", above[-1]):
            above.pop()
        assert above, f"{fname}: key {name} has no comment"
        assert above[-1].startswith("#"), f"{fname}: key {name} has no comment"
        if f.name not in overrides and m.group(1) != "#":
            assert getattr(cfg, f.name) == _default(f), \
                f"{fname}: {f.name} = {getattr(cfg, f.name)!r}, the code's default is {_default(f)!r}"


@pytest.mark.parametrize("script", INITD + CONFD, ids=lambda p: p.name)
def test_sh_n(script: Path) -> None:
    proc = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("script", INITD + CONFD, ids=lambda p: p.name)
def test_shellcheck(script: Path) -> None:
    # The files carry "# shellcheck shell=sh disable=SC2034" (openrc-run reads the variables).
    proc = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", INITD, ids=lambda p: p.name)
def test_openrc_script_shape(script: Path) -> None:
    text = script.read_text()
    assert text.startswith("#!/sbin/openrc-run\n")
    assert 'supervisor="supervise-daemon"' in text
    assert re.search(r"depend\(\) \{\n\tuse net logger\n", text)
    assert "checkpath --directory" in text
    assert "respawn_delay=" in text
    assert "respawn_max=" in text
    user = re.search(r'^command_user="([^"]+)"', text, re.M)
    assert user is not None
    assert (user.group(1) == "root:root") == (script.name == "swarm-drone.initd")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at a stand-in, change nothing else.
    text = unit.read_text()
    exe = re.search(r"^ExecStart=(\S+)", text, re.M)
    assert exe is not None
    stand_in = tmp_path / Path(exe.group(1)).name
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    copy = tmp_path / unit.name
    copy.write_text(text.replace(f"ExecStart={exe.group(1)}", f"ExecStart={stand_in}"))
    proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_shape(unit: Path) -> None:
    text = unit.read_text()
    if unit.name == "swarm-drone.service":
        assert "User=root" in text
        assert not re.search(r"^ProtectSystem=", text, re.M)
    else:
        for line in ("Type=notify", "ProtectSystem=strict", "NoNewPrivileges=yes",
                     "PrivateTmp=yes", "ProtectHome=yes", "StateDirectory="):
            assert line in text, f"{unit.name}: {line} missing"
