"""The build log between the build's pipe and swarmd: bounded, never blocks the writer.

The reader of the build's output calls ``append`` (never a checkpoint, never waits). The shipper
``take``s chunks and posts them. When swarmd is slow or away and more than ``max_bytes`` is
waiting, the oldest waiting output is dropped and the next chunk starts with a marker line that
says how much is missing. The last lines are kept apart for the error of a failed build.
"""

from __future__ import annotations

import collections
import re

_PERCENT = re.compile(rb"(?:^|[\[\s(])\s*([0-9]{1,3})(?:\.[0-9]+)?%")


class LogBuffer:
    def __init__(self, max_bytes: int, tail_lines: int = 30) -> None:
        self.max_bytes = max_bytes
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self.dropped = 0  # bytes dropped since the last take
        self.total = 0
        self._tail: collections.deque[bytes] = collections.deque(maxlen=tail_lines)
        self._partial = b""
        self.percent: float | None = None

    def __len__(self) -> int:
        return self._size

    def append(self, data: bytes) -> None:
        if not data:
            return
        self.total += len(data)
        self._chunks.append(data)
        self._size += len(data)
        self._scan(data)
        self._trim()

    def _trim(self) -> None:
        while self._size > self.max_bytes and self._chunks:
            over = self._size - self.max_bytes
            head = self._chunks[0]
            if len(head) <= over:
                self._chunks.popleft()
                cut = len(head)
            else:
                self._chunks[0] = head[over:]
                cut = over
            self._size -= cut
            self.dropped += cut

    def unshift(self, data: bytes) -> None:
        """Put back a chunk whose delivery failed (it may be dropped again if space is short)."""
        if data:
            self._chunks.appendleft(data)
            self._size += len(data)
            self._trim()

    def take(self, limit: int) -> bytes:
        out = bytearray()
        if self.dropped:
            out += f"\n[swarm-drone: {self.dropped} bytes of build log dropped]\n".encode()
            self.dropped = 0
        while self._chunks and len(out) < limit:
            head = self._chunks.popleft()
            room = limit - len(out)
            if len(head) > room:
                self._chunks.appendleft(head[room:])
                head = head[:room]
            out += head
            self._size -= len(head)
        return bytes(out)

    def _scan(self, data: bytes) -> None:
        text = self._partial + data
        lines = text.split(b"\n")
        self._partial = lines.pop()[-4096:]
        for line in lines:
            line = line.rstrip(b"\r")
            self._tail.append(line[-500:])
            found = _PERCENT.findall(line)
            if found:
                v = int(found[-1])
                if 0 <= v <= 100:
                    self.percent = float(v)

    def tail(self) -> str:
        lines = list(self._tail)
        if self._partial:
            lines.append(self._partial[-500:])
        return "\n".join(b.decode("utf-8", "replace") for b in lines)
