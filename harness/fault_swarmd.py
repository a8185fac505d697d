"""Run the real swarmd with a fault injected into the journal: after N successful fsyncs
(or writes) of journal segments, every further one fails with the errno given.

    python -m harness.fault_swarmd fsync|write ERRNO N -- <swarmd args>
"""

from __future__ import annotations

import os
import sys
from typing import Any


def main() -> int:
    what, errno_name, after = sys.argv[1], sys.argv[2], int(sys.argv[3])
    args = sys.argv[sys.argv.index("--") + 1:]
    import errno

    code = getattr(errno, errno_name)
    real_fsync, real_write = os.fsync, os.write
    journal_fds: set[int] = set()
    real_open = os.open
    count = {"n": 0}

    def spy_open(path: object, flags: int, mode: int = 0o777, **kw: object) -> int:
        fd = real_open(path, flags, mode, **kw)  # type: ignore[arg-type]
        if "journal-" in str(path):
            journal_fds.add(fd)
        return fd

    def bad_fsync(fd: int) -> None:
        if fd in journal_fds and what == "fsync":
            count["n"] += 1
            if count["n"] > after:
                raise OSError(code, os.strerror(code))
        real_fsync(fd)

    def bad_write(fd: int, data: Any) -> int:
        if fd in journal_fds and what == "write":
            count["n"] += 1
            if count["n"] > after:
                raise OSError(code, os.strerror(code))
        return real_write(fd, data)

    os.open = spy_open
    os.fsync = bad_fsync  # type: ignore[assignment]
    os.write = bad_write
    from swarmd.main import main as swarmd_main

    return swarmd_main(args)


if __name__ == "__main__":
    sys.exit(main())
