"""The admin key check: ``X-Admin-Key`` against one or several keys (rotation).

Pure (no trio): time is a parameter. Theory of operation: each client address has a list of
failure times inside the last ``window_s``. A failure adds one; ``max_failures`` of them lock the
address for ``lockout_s`` (every call, right key or not, gets 429 with Retry-After until the lock
ends). A success clears the address's failures. The table is bounded (oldest addresses first
out), so a flood of addresses cannot grow it without limit.

Every configured key is compared on every call, each with ``hmac.compare_digest``, so the time
taken does not depend on which key matched or how much of a wrong key was right.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Sequence

import attrs

from swarmlib.auth import secret_in

MAX_TRACKED = 10_000
# Query parameters that look like someone put a key in a URL.
KEY_PARAMS = frozenset({"key", "admin_key", "adminkey", "x-admin-key", "x_admin_key", "api_key",
                        "apikey", "token", "access_token", "auth"})


class Outcome(enum.Enum):
    OK = "ok"
    UNAUTHORIZED = "unauthorized"
    LOCKED = "locked"
    DISABLED = "disabled"  # no key configured: refused like a wrong key


@attrs.frozen
class Verdict:
    outcome: Outcome
    retry_after_s: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


class AdminAuth:
    def __init__(
        self,
        keys: Sequence[str],
        *,
        max_failures: int = 10,
        window_s: float = 60.0,
        lockout_s: float = 300.0,
    ) -> None:
        self._keys = [k.encode() for k in keys if k]
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self._failures: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self._locked: dict[str, float] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def key_matches(self, presented: str | None) -> bool:
        return secret_in(self._keys, presented)

    def check(self, client: str, presented: str | None, now: float) -> Verdict:
        until = self._locked.get(client)
        if until is not None:
            if now < until:
                return Verdict(Outcome.LOCKED, max(1, int(until - now + 0.999)))
            del self._locked[client]
        if not self._keys:
            self._fail(client, now)
            return Verdict(Outcome.DISABLED)
        if self.key_matches(presented):
            self._failures.pop(client, None)
            return Verdict(Outcome.OK)
        if self._fail(client, now):
            return Verdict(Outcome.LOCKED, max(1, int(self.lockout_s + 0.999)))
        return Verdict(Outcome.UNAUTHORIZED)

    def record_failure(self, client: str, now: float) -> bool:
        """A failure seen outside ``check`` (a key in a query string). True if now locked."""
        return self._fail(client, now)

    def _fail(self, client: str, now: float) -> bool:
        times = [t for t in self._failures.pop(client, []) if now - t < self.window_s]
        times.append(now)
        self._failures[client] = times
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)
        if len(times) >= self.max_failures:
            self._failures.pop(client, None)
            self._locked[client] = now + self.lockout_s
            if len(self._locked) > MAX_TRACKED:
                for c, t in list(self._locked.items()):
                    if t <= now:
                        del self._locked[c]
                while len(self._locked) > MAX_TRACKED:
                    del self._locked[next(iter(self._locked))]
            return True
        return False
