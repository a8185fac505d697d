"""File helpers shared by the daemons: a file's digest, and the one atomic-replace rule.

``atomic_write`` is how every small durable file of the swarm is written (the drone's outbox,
the gateway's spool and alias key): a temp file, fsync, rename over the target, fsync of the
directory. A reader, or the machine after a crash, sees the old content or the new one, never a
part of it; once it returns, the new content survives a power cut. All of these block: run them
in a worker thread when they may be slow (Trio code that writes a few bytes calls them directly).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
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


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (a rename, a new or removed file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | Iterable[bytes], *, mode: int = 0o600,
                 tmp_dir: Path | None = None) -> None:
    """Replace ``path`` with ``data`` (bytes, or pieces of it written in turn, so a large
    document need not be joined in memory first): write ``<tmp_dir or path's dir>/.<name>.tmp`` (created
    with ``mode``), fsync it, rename it over ``path``, fsync ``path``'s directory.

    ``tmp_dir`` must be on the same file system (a spool keeps its temp files apart so that a
    scan of the target directory never sees one). Raises OSError; then ``path`` is unchanged
    and the temp file is removed.
    """
    tmp = (tmp_dir if tmp_dir is not None else path.parent) / f".{path.name}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, bytes | bytearray | memoryview):
                fh.write(data)
            else:
                for piece in data:
                    fh.write(piece)
            fh.flush()
            os.fchmod(fh.fileno(), mode)  # the umask does not narrow what the caller asked for
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
