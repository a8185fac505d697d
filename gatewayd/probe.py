"""The orchestrator health probe.

Theory of operation. ``ProbeState`` is either ``up`` or ``down``; it starts ``down`` (nothing is
known until the first answer). Two events: ``success(now)`` makes it ``up`` and clears the failure
streak; ``failure(why)`` lengthens the streak, and once the streak reaches ``threshold`` the state
is ``down``. Probes and forwarded requests both feed these events, so a failed admin call counts
like a failed probe. Invariant: ``up`` implies ``consecutive_failures < threshold``.

The probe task sleeps ``interval`` (with +-10 % jitter) between probes, and a third of it while a
failure streak is open, so a dead orchestrator is marked down about ``2/3 * interval`` after its
first failed probe (at most three intervals after it died).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import httpx
import trio

from swarmlib.timefmt import utc_now_iso

log = logging.getLogger("gatewayd.probe")

JITTER = 0.1
STREAK_SPEEDUP = 3.0


class ProbeState:
    """Pure: what the gateway believes about swarmd. Never imports trio."""

    def __init__(self, threshold: int = 3) -> None:
        self.threshold = threshold
        self.state = "down"
        self.consecutive_failures = 0
        self.last_success: str | None = None
        self.last_error: str | None = None

    @property
    def up(self) -> bool:
        return self.state == "up"

    def success(self, now: str) -> bool:
        """Record an answer; returns True if the state changed."""
        changed = self.state != "up"
        self.state = "up"
        self.consecutive_failures = 0
        self.last_success = now
        self.last_error = None
        return changed

    def failure(self, why: str) -> bool:
        """Record a failure; returns True if the state changed."""
        self.consecutive_failures += 1
        self.last_error = why
        if self.state == "up" and self.consecutive_failures >= self.threshold:
            self.state = "down"
            return True
        return False

    def next_delay(self, interval_s: float, rng: random.Random) -> float:
        base = interval_s / STREAK_SPEEDUP if self.consecutive_failures else interval_s
        return float(base * (1 + rng.uniform(-JITTER, JITTER)))

    def health(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "last_success": self.last_success,
            "consecutive_failures": self.consecutive_failures,
        }


class Probe:
    """The probe's shell: the state, its metrics, and an event for "became up"."""

    def __init__(
        self,
        threshold: int = 3,
        *,
        clock: Callable[[], str] = utc_now_iso,
        on_change: Callable[[ProbeState], None] | None = None,
    ) -> None:
        self.st = ProbeState(threshold)
        self._clock = clock
        self._on_change = on_change
        self._became_up = trio.Event()

    @property
    def up(self) -> bool:
        return self.st.up

    def success(self) -> None:
        if self.st.success(self._clock()):
            log.info("orchestrator is up")
            self._became_up.set()
        self._changed()

    def failure(self, why: str) -> None:
        if self.st.failure(why):
            log.warning(
                "orchestrator is down after %d consecutive failures (last: %s)",
                self.st.consecutive_failures, why,
            )
            self._became_up = trio.Event()
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.st)

    async def wait_up(self) -> None:
        """Checkpoint. Returns once the orchestrator is (or becomes) up."""
        while not self.st.up:
            await self._became_up.wait()
        await trio.lowlevel.checkpoint()


async def probe_once(probe: Probe, http: httpx.AsyncClient, base_url: str, timeout_s: float) -> None:
    """Checkpoint. One ``GET /api/status``; the result goes into ``probe``."""
    why: str | None = None
    with trio.move_on_after(timeout_s) as scope:
        try:
            resp = await http.get(base_url.rstrip("/") + "/api/status")
        except httpx.HTTPError as exc:
            why = f"{type(exc).__name__}"
        else:
            if resp.status_code != 200:
                why = f"HTTP {resp.status_code}"
    if scope.cancelled_caught:
        why = f"no answer within {timeout_s:g} s"
    if why is None:
        probe.success()
    else:
        probe.failure(why)


async def run_probe(
    probe: Probe,
    http: httpx.AsyncClient,
    base_url: str,
    *,
    interval_s: float,
    timeout_s: float,
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Probe until cancelled; the first probe runs at once."""
    rng = rng or random.Random()
    task_status.started()
    while True:
        await probe_once(probe, http, base_url, timeout_s)
        await trio.sleep(probe.st.next_delay(interval_s, rng))
