"""Shared fixtures: an in-process swarmd (fake journal for virtual time, real files otherwise)
and helpers to run the real programs as a user would."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

os.environ.setdefault("PORTAGE_OVERRIDE_EPREFIX", "/")

from harness.memory_journal import MemoryJournal  # noqa: E402
from harness.procs import BIN, REPO, SwarmdProc, free_port, wait_http  # noqa: E402
from swarmd.config import SwarmdConfig  # noqa: E402
from swarmd.service import Orchestrator  # noqa: E402

# Re-exported for the tests that import them from here.
__all__ = ["BIN", "REPO", "MemoryJournal", "SwarmdProc", "free_port", "make_orch", "wait_http"]

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
