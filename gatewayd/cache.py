"""The public routes' cache: a TTL per key and a single flight per key.

A fresh entry is served as it is. On a miss exactly one caller (the first) runs the fetch; every
concurrent caller for the same key waits for that one result. A failed fetch is shared with the
waiters too (as ``FetchFailed``) and leaves the previous entry in place, so the caller can still
serve it as stale data. Entries only ever hold what the fetch returned: the public routes store
sanitized payloads, never swarmd's raw JSON.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import attrs
import trio

T = TypeVar("T")


class FetchFailed(Exception):
    """The shared fetch of a key failed; ``cause`` is what it raised."""

    def __init__(self, key: str, cause: BaseException) -> None:
        self.key = key
        self.cause = cause
        super().__init__(f"fetch of {key} failed: {type(cause).__name__}")


@attrs.frozen
class Entry(Generic[T]):
    value: T
    fetched_at: float  # trio clock
    wall: str  # ISO timestamp of the fetch


class _Flight:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: BaseException | None = None
        self.completed = False


class TTLCache(Generic[T]):
    def __init__(
        self,
        ttl_s: float,
        *,
        on_hit: Callable[[str], None] | None = None,
        on_miss: Callable[[str], None] | None = None,
    ) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, Entry[T]] = {}
        self._flights: dict[str, _Flight] = {}
        self._on_hit = on_hit
        self._on_miss = on_miss

    def peek(self, key: str) -> Entry[T] | None:
        """The last entry, however old."""
        return self._entries.get(key)

    def entries(self) -> dict[str, Entry[T]]:
        return dict(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    async def get(
        self, key: str, fetch: Callable[[], Awaitable[T]], wall: Callable[[], str]
    ) -> Entry[T]:
        """Checkpoint. A fresh entry for ``key``, fetching it (once for all callers) if needed.

        Raises FetchFailed if the fetch failed. If the fetching caller is cancelled, waiters
        retry (one of them becomes the new fetcher); nothing is stored.
        """
        while True:
            entry = self._entries.get(key)
            if entry is not None and trio.current_time() - entry.fetched_at < self.ttl_s:
                if self._on_hit is not None:
                    self._on_hit(key)
                await trio.lowlevel.checkpoint()
                return entry
            flight = self._flights.get(key)
            if flight is not None:
                await flight.done.wait()
                if flight.error is not None:
                    raise FetchFailed(key, flight.error)
                if flight.completed:
                    got = self._entries.get(key)
                    if got is not None:
                        return got
                continue  # the fetcher was cancelled: try again
            if self._on_miss is not None:
                self._on_miss(key)
            flight = _Flight()
            self._flights[key] = flight
            try:
                value = await fetch()
            except trio.Cancelled:
                raise
            except Exception as exc:
                flight.error = exc
                raise FetchFailed(key, exc) from exc
            else:
                new = Entry(value, trio.current_time(), wall())
                self._entries[key] = new
                flight.completed = True
                return new
            finally:
                del self._flights[key]
                flight.done.set()


