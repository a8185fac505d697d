"""Shared fixtures: an in-process swarmd (fake journal for virtual time, real files otherwise)
and helpers to run the real programs as a user would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

os.environ.setdefault("PORTAGE_OVERRIDE_EPREFIX", "/")

from swarmd.config import SwarmdConfig  # noqa: E402
from swarmd.service import Orchestrator  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


class MemoryJournal:
    """A fake journal file: frames kept in memory, 'fsync' counted, no threads (virtual time)."""

    in_memory = True

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.bytes = 0
        self.appends = 0
        self.fsyncs = 0
        self.fail: OSError | None = None

    def append_batch(self, frames: list[bytes]) -> None:
        from swarmlib.errors import JournalWriteFailed

        if self.fail is not None:
            raise JournalWriteFailed(f"fake journal: {self.fail}")
        self.frames.extend(frames)
        self.bytes += sum(len(f) for f in frames)
        self.appends += len(frames)
        self.fsyncs += 1

    def compact(self, snapshot: dict[str, Any]) -> None:
        self.frames = []
        self.bytes = 0

    def close(self) -> None:
        pass


def make_orch(tmp_path: Path, memory: bool = True, **kw: Any) -> Orchestrator:
    cfg = SwarmdConfig(state_dir=str(tmp_path / "state"), **kw)
    wall = (lambda: 1_700_000_000.0 + trio.current_time()) if memory else time.time
    orch = Orchestrator(cfg, wall=wall)
    (tmp_path / "state" / "logs").mkdir(parents=True, exist_ok=True)
    if memory:
        orch.journal = MemoryJournal()  # type: ignore[assignment]
    else:
        orch.recover()
    return orch


@pytest.fixture
async def orch(tmp_path: Path) -> AsyncIterator[Orchestrator]:
    o = make_orch(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(o.run)
        yield o
        nursery.cancel_scope.cancel()


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
             f"127.0.0.1:{self.port}", "--config", str(REPO / "tests" / "data" / "empty.toml"),
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


@pytest.fixture
def swarmd_proc(tmp_path: Path) -> Iterator[SwarmdProc]:
    p = SwarmdProc(tmp_path / "state", tmp_path / "swarmd.log").start()
    yield p
    p.stop()
