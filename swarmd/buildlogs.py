"""Build logs: one file per build under ``<state_dir>/logs``, not journaled.

A log is what the drone streamed, capped at LOG_LIMIT bytes per build (the rest is cut with a
marker line). Losing the tail of a log in a crash loses nothing of the queue's state.
"""

from __future__ import annotations

from pathlib import Path

import trio

LOG_LIMIT = 32 * 1024 * 1024  # bytes of build log kept per build


class BuildLogs:
    def __init__(self, root: Path, limit: int = LOG_LIMIT) -> None:
        self.root = root
        self.limit = limit

    def create(self) -> None:
        """Make the directory (blocking; at start-up)."""
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, build_id: str) -> Path:
        return self.root / f"{build_id}.log"

    def _append(self, build_id: str, chunk: bytes) -> int:
        path = self.path(build_id)
        size = path.stat().st_size if path.exists() else 0
        if size >= self.limit:
            return 0
        data = chunk
        if size + len(data) > self.limit:
            data = data[: self.limit - size] + b"\n[build-swarm: log truncated]\n"
        with path.open("ab") as fh:
            fh.write(data)
        return len(data)

    async def append(self, build_id: str, chunk: bytes) -> int:
        """Append ``chunk`` (in a worker thread); the bytes kept. Checkpoint."""
        return await trio.to_thread.run_sync(self._append, build_id, chunk)

    def read(self, build_id: str, tail: int | None = None) -> str:
        """The log (its last ``tail`` lines), "" when there is none. Blocking."""
        path = self.path(build_id)
        if not path.exists():
            return ""
        data = path.read_bytes()
        if tail is not None:
            lines = data.splitlines()[-tail:] if tail > 0 else []
            data = b"\n".join(lines)
        return data.decode("utf-8", "replace")
