"""swarmd's start-up errors a person meets: one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO

pytestmark = pytest.mark.slow
EMPTY = REPO / "tests" / "data" / "empty.toml"


def error_lines(stderr: str) -> list[str]:
    """stderr without the daemon's log records (timestamped): what is left must be one line."""
    return [ln for ln in stderr.splitlines()
            if ln.strip() and not re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", ln)]


def run_swarmd(tmp_path: Path, *args: str, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "swarmd"), "--config", str(EMPTY), "--state-dir", str(tmp_path / "state"),
         *args], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **(env or {})})


def test_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_swarmd(tmp_path, "--listen", f"127.0.0.1:{port}")
    assert r.returncode == 2
    lines = error_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    assert f"127.0.0.1:{port}" in lines[0]
    assert "already in use" in lines[0]
    assert "Traceback" not in r.stderr + r.stdout


def test_binhost_without_multi_instance_is_one_line(tmp_path: Path) -> None:
    """A portage configuration without make.globals (a pip install with EPREFIX /) cannot keep a
    binhost: swarmd says so instead of publishing into a layout clients would not read."""
    prefix = tmp_path / "prefix"
    (prefix / "etc/portage").mkdir(parents=True)
    (prefix / "etc/portage/make.conf").write_text('FEATURES="-binpkg-multi-instance"\n')
    r = run_swarmd(tmp_path, "--listen", "127.0.0.1:0", "--binhost-dir",
                   str(tmp_path / "binhost"), env={"PORTAGE_OVERRIDE_EPREFIX": str(prefix)})
    assert r.returncode == 2, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    assert "binhost_dir" in lines[0]
    assert "binpkg-multi-instance" in lines[0]


def test_gatewayd_bad_trusted_proxy_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run(
        [str(BIN / "gatewayd"), "--config", str(EMPTY), "--spool-dir", str(tmp_path / "spool"),
         "--trusted-proxies", "10.0.0.2,proxy.lan"],
        capture_output=True, text=True, timeout=60, check=False, env=dict(os.environ))
    assert r.returncode == 2, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    assert "trusted_proxies" in lines[0]
    assert "'proxy.lan'" in lines[0]



def test_gatewayd_bad_trusted_proxy_header_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run(
        [str(BIN / "gatewayd"), "--config", str(EMPTY), "--spool-dir", str(tmp_path / "spool"),
         "--trusted-proxy-header", "x-real-ip"],
        capture_output=True, text=True, timeout=60, check=False, env=dict(os.environ))
    assert r.returncode == 2, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    assert "trusted_proxy_header" in lines[0]
    assert "'x-real-ip'" in lines[0]

@pytest.mark.parametrize("which", ["--listen", "--admin-listen"])
def test_gatewayd_busy_port_is_one_line(tmp_path: Path, which: str) -> None:
    """The same rule as swarmd's (swarmlib.daemon): one line naming the address, exit 2."""
    with socket.socket() as busy, socket.socket() as free:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        free.bind(("127.0.0.1", 0))
        port, other = busy.getsockname()[1], free.getsockname()[1]
        free.close()
        addrs = {"--listen": f"127.0.0.1:{other}", "--admin-listen": f"127.0.0.1:{other}"}
        addrs[which] = f"127.0.0.1:{port}"
        if which == "--admin-listen":  # the two must differ: the public one gets a free port
            addrs["--listen"] = "127.0.0.1:0"
        r = subprocess.run(
            [str(BIN / "gatewayd"), "--config", str(EMPTY), "--spool-dir", str(tmp_path / "spool"),
             "--listen", addrs["--listen"], "--admin-listen", addrs["--admin-listen"]],
            capture_output=True, text=True, timeout=60, check=False, env=dict(os.environ))
    assert r.returncode == 2, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    assert f"127.0.0.1:{port}" in lines[0]
    assert "already in use" in lines[0]
    assert "Traceback" not in r.stderr + r.stdout
