"""Timestamps as the API shows them: ISO-8601 UTC to the second, with a Z
(``2026-02-23T10:30:00Z``)."""

from __future__ import annotations

import datetime as _dt
import time
from typing import overload

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@overload
def iso(ts: float) -> str: ...


@overload
def iso(ts: None) -> None: ...


def iso(ts: float | None) -> str | None:
    """``ts`` (seconds since the epoch) as ISO-8601 UTC; None stays None."""
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime(FORMAT)


def utc_now_iso() -> str:
    """The current wall-clock time as ISO-8601 UTC."""
    return iso(time.time())
