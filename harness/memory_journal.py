"""A fake journal file for in-process swarmd tests in virtual time."""

from __future__ import annotations

from typing import Any


class MemoryJournal:
    """A fake journal file: frames kept in memory, 'fsync' counted, no threads (virtual time)."""

    in_memory = True

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.bytes = 0
        self.appends = 0
        self.fsyncs = 0
        self.fail: OSError | None = None

    def append_batch(self, frames: list[bytes]) -> None:
        from swarmlib.errors import JournalWriteFailed

        if self.fail is not None:
            raise JournalWriteFailed(f"fake journal: {self.fail}")
        self.frames.extend(frames)
        self.bytes += sum(len(f) for f in frames)
        self.appends += len(frames)
        self.fsyncs += 1

    def compact(self, snapshot: dict[str, Any]) -> None:
        self.frames = []
        self.bytes = 0

    def close(self) -> None:
        pass
