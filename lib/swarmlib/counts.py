"""Queue entries folded into per-state counts, and swarmd's eight states as the public four.

swarmd keeps a count per entry state (``pending``, ``ready``, ``assigned``, ``building``,
``built``, ``failed``, ``blocked``, ``cancelled``); the public API, the ``queue_update`` event
and the status page show four (docs/API.md): ``pending`` (waiting or ready), ``building``
(assigned or building), ``completed`` (built) and ``failed`` (failed or blocked); cancelled
entries are in none of them. Pure, and lenient with its input: these functions read JSON that
came over the network, so a missing or malformed value counts as 0, never raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PUBLIC_STATES: dict[str, tuple[str, ...]] = {
    "pending": ("pending", "ready"),
    "building": ("assigned", "building"),
    "completed": ("built",),
    "failed": ("failed", "blocked"),
}


def count_states(entries: Iterable[Any]) -> dict[str, int]:
    """How many entries are in each state (entries are JSON objects with a string ``state``;
    anything else is skipped)."""
    out: dict[str, int] = {}
    for e in entries:
        state = e.get("state") if isinstance(e, Mapping) else None
        if isinstance(state, str):
            out[state] = out.get(state, 0) + 1
    return out


def _n(value: Any) -> int:
    """A JSON count: an integer, or a finite float; anything else (strings, booleans, NaN,
    null) is 0, as a negative is."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, float) and value == value and abs(value) < 2**53:
        return max(0, int(value))
    return 0


def public_counts(counts: Any) -> dict[str, int]:
    """swarmd's per-state counts (a JSON object, or anything) as the public four."""
    c = counts if isinstance(counts, Mapping) else {}
    return {name: sum(_n(c.get(s)) for s in states) for name, states in PUBLIC_STATES.items()}
