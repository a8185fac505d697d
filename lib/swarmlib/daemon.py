"""How every daemon of the swarm stops, and how it says why it could not start: one rule for
swarmd, gatewayd and swarm-drone.

- Signals: the first SIGTERM or SIGINT starts a graceful stop (drain, finish the build, answer
  the requests in flight); a second one stops at once. ``watch_signals`` is that task.
- Start-up failures are one line on stderr that names the program and what to change, never a
  traceback: exit 2 for what the operator must change (the configuration, a listen address that
  is busy, foreign or privileged), 1 for anything else. ``start_error`` writes that line.
  Errors raised inside Trio nurseries arrive wrapped in exception groups: ``find`` digs them out.
"""

from __future__ import annotations

import errno
import logging
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

import trio

log = logging.getLogger("swarmlib.daemon")
E = TypeVar("E", bound=BaseException)

# errno of a listen address the operator has to change -> what to say
LISTEN_HINTS = {
    errno.EADDRINUSE: "another process listens there; stop it or change the listen address",
    errno.EADDRNOTAVAIL: "no interface has that address; change the listen address",
    errno.EACCES: "ports below 1024 need privileges; change the listen address",
}


async def watch_signals(
    first: Callable[[], None],
    second: Callable[[], None] | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Until cancelled: call ``first()`` at the first SIGTERM/SIGINT (a graceful stop) and
    ``second()`` at any later one (stop now); without ``second`` this task ends after the first
    signal, and a later one gets Python's default (SIGINT: KeyboardInterrupt)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        seen = 0
        async for signum in signals:
            seen += 1
            name = signal.Signals(signum).name
            if seen == 1:
                log.info("%s received: stopping gracefully", name)
                first()
                if second is None:
                    return
            elif second is not None:
                log.warning("%s received again: stopping now", name)
                second()


def find(exc: BaseException, kinds: tuple[type[E], ...]) -> E | None:
    """The first exception of ``kinds`` in ``exc`` or, depth first, in its exception groups."""
    if isinstance(exc, kinds):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            hit = find(inner, kinds)
            if hit is not None:
                return hit
    return None


class ListenFailed(OSError):
    """An OSError from binding ``address`` (the errno and message of the original), raised
    where the socket is bound, so that the one line names the address and only a listen
    failure gets the listen advice."""

    def __init__(self, address: str, exc: OSError) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc))
        self.address = address


def start_error(prog: str, exc: OSError) -> int:
    """Write the one line for an OSError that stopped ``prog`` from starting; the exit code.

    A listen address (``ListenFailed``: raised where the socket is bound) that is busy,
    foreign or privileged is the operator's to change (2); anything else (a state directory
    that cannot be opened, a full disk) is 1, and says what failed."""
    if isinstance(exc, ListenFailed):
        why = (exc.strerror or str(exc)).lower()
        hint = LISTEN_HINTS.get(exc.errno or 0)
        if hint is not None:
            print(f"{prog}: cannot listen on {exc.address}: {why}: {hint}", file=sys.stderr)
            return 2
        print(f"{prog}: cannot listen on {exc.address}: {why}", file=sys.stderr)
        return 1
    print(f"{prog}: cannot start: {exc}", file=sys.stderr)
    return 1
