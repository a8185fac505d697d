"""The live event stream: every notice gets a sequence number, a bounded window keeps the
recent ones for consumers that reconnect with ``since``, and each subscriber has a bounded
buffer: a subscriber that falls behind is disconnected, never waited on.

Sequence numbers start at the boot time in milliseconds, so they keep rising across restarts;
a consumer whose ``since`` is older than the window (or from before a restart) gets a
``resync`` message first and should refetch the state.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import trio

from swarmlib.timefmt import iso


class Subscriber:
    def __init__(self, buffer: int) -> None:
        self.send, self.recv = trio.open_memory_channel[dict[str, Any]](buffer)
        self.dropped = False


class EventHub:
    def __init__(self, window: int = 10000, buffer: int = 1024) -> None:
        self.seq = int(time.time() * 1000)
        self.first_seq = self.seq + 1
        self.window: collections.deque[dict[str, Any]] = collections.deque(maxlen=window)
        self.buffer = buffer
        self.subscribers: set[Subscriber] = set()
        self.published = 0

    def publish(self, notice: dict[str, Any], ts: float | None = None) -> dict[str, Any]:
        self.seq += 1
        self.published += 1
        msg = {"seq": self.seq, "type": notice["type"], "timestamp": iso(ts or time.time()),
               "data": notice["data"]}
        self.window.append(msg)
        for sub in list(self.subscribers):
            try:
                sub.send.send_nowait(msg)
            except trio.WouldBlock:
                self._drop(sub)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self.subscribers.discard(sub)
        return msg

    def _drop(self, sub: Subscriber) -> None:
        sub.dropped = True
        self.subscribers.discard(sub)
        sub.send.close()

    def subscribe(self, since: int | None) -> tuple[Subscriber, list[dict[str, Any]]]:
        """A new subscriber and the backlog it missed (or a resync message)."""
        sub = Subscriber(self.buffer)
        backlog: list[dict[str, Any]] = []
        if since is not None:
            oldest = self.window[0]["seq"] if self.window else self.seq + 1
            if since < oldest - 1 or since > self.seq:
                backlog.append({"seq": self.seq, "type": "resync", "timestamp": iso(time.time()),
                                "data": {"reason": "requested events are outside the window"}})
            else:
                backlog.extend(m for m in self.window if m["seq"] > since)
        self.subscribers.add(sub)
        return sub, backlog

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        sub.send.close()
