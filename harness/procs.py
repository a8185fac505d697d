"""The real programs as a user runs them: free ports on 127.0.0.1, waiting for an HTTP answer,
and swarmd as a process over a state directory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EMPTY = REPO / "tests" / "data" / "empty.toml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


class SwarmdProc:
    """The real swarmd program on a free port over a state directory."""

    def __init__(self, state_dir: Path, log_path: Path, env: dict[str, str] | None = None,
                 extra: list[str] | None = None) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {**os.environ, "PORTAGE_OVERRIDE_EPREFIX": "/", **(env or {})}
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SwarmdProc:
        logf = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(BIN / "swarmd"), "--state-dir", str(self.state_dir), "--listen",
             f"127.0.0.1:{self.port}", "--config", str(EMPTY),
             *self.extra],
            stdout=logf, stderr=subprocess.STDOUT, env=self.env,
        )
        wait_http(self.url + "/api/status", proc=self.proc)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)
