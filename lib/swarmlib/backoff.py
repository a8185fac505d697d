"""Exponential backoff with equal jitter: the one retry rule of every program of the swarm.

Attempt ``n`` waits a delay drawn uniformly from ``[d/2, d]`` where ``d = min(cap, base * 2**n)``
("equal jitter"). Half the delay is kept, so a retry never comes sooner than half the planned
wait; the other half is random, so a swarm of drones (or gateways, or CLIs) coming back after
the orchestrator restarted does not retry in lockstep. Pure: no trio, no clock; the caller
sleeps (``await trio.sleep(backoff.next())``).
"""

from __future__ import annotations

import random

MAX_DOUBLINGS = 62  # beyond this base * 2**n is far over any sensible cap; keeps the float finite


def equal_jitter(delay: float, rng: random.Random | None = None) -> float:
    """A delay drawn uniformly from ``[delay/2, delay]``."""
    r = rng if rng is not None else random
    return delay / 2 + r.uniform(0, delay / 2)


class Backoff:
    """``next()`` is the delay before the next attempt; ``reset()`` after a success."""

    def __init__(self, base: float, cap: float, *, rng: random.Random | None = None) -> None:
        if base <= 0:
            raise ValueError(f"backoff base must be greater than 0, got {base}")
        if cap < base:
            raise ValueError(f"backoff cap ({cap}) must be at least the base ({base})")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self, attempt: int) -> float:
        """The longest delay of attempt ``attempt`` (0-based): ``min(cap, base * 2**attempt)``."""
        return float(min(self.cap, self.base * 2 ** min(attempt, MAX_DOUBLINGS)))

    def next(self) -> float:
        d = equal_jitter(self.ceiling(self.attempt), self._rng)
        self.attempt += 1
        return d

    def reset(self) -> None:
        self.attempt = 0
