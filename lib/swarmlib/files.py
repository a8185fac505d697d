"""File helpers shared by the daemons."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> tuple[int, str]:
    """(size, sha256 hex) of a file, read in 1 MiB chunks. Blocking: run it in a thread."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()
