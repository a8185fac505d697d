"""Completion reports that must reach swarmd, kept on disk until they do.

One JSON file per build in ``state_dir/outbox``, written atomically (temp file, fsync, rename,
fsync of the directory), so a report survives swarmd being away and the agent being restarted
or re-executed. A report leaves the outbox only when swarmd answered it (accepted, or refused
for good: stale lease, unknown build, bad body). Blocking calls: they are small; the agent
makes them from Trio directly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from swarmlib.files import atomic_write, fsync_dir

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class Outbox:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "outbox"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, build_id: str) -> Path:
        return self.dir / (_SAFE.sub("_", build_id) + ".json")

    def put(self, build_id: str, body: dict[str, Any]) -> None:
        data = json.dumps({"build_id": build_id, "body": body}, sort_keys=True).encode()
        atomic_write(self._path(build_id), data)

    def remove(self, build_id: str) -> None:
        try:
            self._path(build_id).unlink()
        except FileNotFoundError:
            return
        fsync_dir(self.dir)

    def pending(self) -> list[tuple[str, dict[str, Any]]]:
        """Every waiting report, oldest first. Unreadable files are skipped (and kept)."""
        out = []
        files = sorted(self.dir.glob("*.json"), key=lambda p: (p.stat().st_mtime, p.name))
        for p in files:
            try:
                doc = json.loads(p.read_text())
                out.append((str(doc["build_id"]), dict(doc["body"])))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

