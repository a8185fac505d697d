"""Fixtures of the gateway tests (helpers live in fakes.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.fakes import Rig


@pytest.fixture
def make_rig(tmp_path: Path) -> Callable[..., Rig]:
    def make(**overrides: Any) -> Rig:
        return Rig(tmp_path, **overrides)

    return make


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    r = make_rig()
    r.gw.probe.success()
    return r
