"""The systemd notify protocol in a few lines (no libsystemd): READY=1 and STOPPING=1.

``$NOTIFY_SOCKET`` names a unix datagram socket; a leading ``@`` means the abstract namespace.
When it is unset (OpenRC, a terminal, tests) every call is a no-op. Sending is one non-blocking
datagram, so the daemons call it straight from Trio code: it is not a checkpoint.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("swarmlib.sdnotify")


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to systemd; True if a datagram was sent.

    A failure to send is logged and reported as False, never raised: a daemon must not die
    because its supervisor's socket went away.
    """
    env = os.environ if environ is None else environ
    addr = env.get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    elif not addr.startswith("/"):
        log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract name; not notifying", addr)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.connect(addr)
            sock.send(state.encode())
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", state, exc)
        return False
    return True


def ready(environ: Mapping[str, str] | None = None) -> bool:
    """Tell systemd the daemon is listening (Type=notify units wait for this)."""
    return notify("READY=1", environ)


def stopping(environ: Mapping[str, str] | None = None) -> bool:
    """Tell systemd a graceful shutdown has begun."""
    return notify("STOPPING=1", environ)
