"""Exponential backoff with jitter, for every retry towards swarmd."""

from __future__ import annotations

import random


class Backoff:
    """``next()`` gives the delay before the next attempt: base * 2**n capped, then jittered
    into [d/2, d] so that a swarm of drones coming back does not retry in lockstep."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        d = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return float(d / 2 + self._rng.uniform(0, d / 2))

    def reset(self) -> None:
        self.attempt = 0
