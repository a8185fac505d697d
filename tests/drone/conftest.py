"""Fixtures of the drone tests (the fakes themselves are in fakes.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from .fakes import FakeSwarmd

os.environ.setdefault("PORTAGE_OVERRIDE_EPREFIX", "/")


@pytest.fixture
async def fake_swarmd() -> AsyncIterator[FakeSwarmd]:
    fake = FakeSwarmd()
    async with trio.open_nursery() as nursery:
        fake.nursery = nursery
        await nursery.start(fake.serve)
        yield fake
        nursery.cancel_scope.cancel()


@pytest.fixture
def fake_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Environment of the fake emerge children: quick builds, a pid file."""
    pidfile = tmp_path / "emerge.pid"
    monkeypatch.setenv("FAKE_EMERGE_SECONDS", "0.3")
    monkeypatch.setenv("FAKE_EMERGE_PIDFILE", str(pidfile))
    monkeypatch.setenv("PORTAGE_OVERRIDE_EPREFIX", "/")
    for name in ("FAKE_EMERGE_FAIL", "FAKE_EMERGE_NOPKG", "FAKE_EMERGE_TIMES", "FAKE_EMERGE_SPEED"):
        monkeypatch.delenv(name, raising=False)
    return pidfile


