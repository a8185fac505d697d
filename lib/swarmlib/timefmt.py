"""Timestamps as the API shows them: ISO-8601 UTC with a Z."""

from __future__ import annotations

import datetime as _dt


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
