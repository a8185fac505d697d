"""The CLI as a user runs it: a real process, stdin piped, a real socket."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

WORLD = Path(__file__).parent / "data" / "world.txt"


def run_cli(*argv: str, stdin: bytes = b"", env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from swarmlib.cli import main; main()", *argv],
        input=stdin.decode(), capture_output=True, text=True, env=env, timeout=60, check=False)


def test_submit_from_stdin_in_a_real_process(fake_server: Any, env: dict[str, str]) -> None:
    fake_server.routes[("POST", "/api/queue")] = (202, {"id": "r-7", "queued": 5, "skipped": 0,
                                                        "merged": 0, "packages": 5})
    proc = run_cli("--orchestrator", fake_server.url, "submit", stdin=WORLD.read_bytes(),
                   env={**env, "SWARM_CONTROL_TOKEN": "sekrit"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("request r-7\n  5 queued")
    (req,) = fake_server.received
    assert req.body == WORLD.read_bytes()
    assert req.headers["authorization"] == "Bearer sekrit"
    assert "sekrit" not in proc.stdout + proc.stderr


def test_unreachable_in_a_real_process(closed_port: int, env: dict[str, str]) -> None:
    proc = run_cli("--gateway", f"http://127.0.0.1:{closed_port}", "queue", env=env)
    assert proc.returncode == 3
    assert proc.stderr == (f"build-swarm: cannot reach gateway at http://127.0.0.1:{closed_port}: "
                           f"is gatewayd running?\n")


def test_console_script_is_installed(env: dict[str, str]) -> None:
    exe = Path(sys.executable).parent / "build-swarm"
    assert exe.exists(), "the build-swarm console script is not installed in this venv"
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True,
                          env={**env, "PATH": os.environ.get("PATH", "")}, check=False)
    assert proc.returncode == 0
    assert proc.stdout.startswith("build-swarm ")
