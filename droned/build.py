"""One leased build on this drone: its identity, its log, its process, how it ends.

Theory of operation. A build goes through phases
``building`` (the plan check, then the build argv runs) -> ``syncing`` (the package is found
and its USE checked, then synced, hashed) -> ``reporting`` (its completion report waits in the
outbox) -> gone (swarmd answered).
At any point before ``reporting`` it can be stopped: ``stop("revoked")`` (swarmd took the lease
back: the process group is killed and nothing is reported) or ``stop("returned")`` (the agent is
shutting down or re-executing: the process group is killed and the build is reported
``returned`` so swarmd re-queues it at once). A stopped build never reports success.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

import attrs
import trio

from droned.logbuffer import LogBuffer


@attrs.define(kw_only=True, eq=False)
class Build:
    build_id: str
    lease: str
    cpv: str
    atom: str
    estimate_s: float | None
    use: list[str] | None  # enabled USE flags the lease asks for; None: not checked
    target_id: str | None = None  # the lease's target; the drone checks it is still its own
    started_wall: float
    started_at: float  # trio.current_time()
    log: LogBuffer
    phase: str = "building"
    stop_reason: str | None = None
    stopped: trio.Event = attrs.field(factory=trio.Event)
    pids: list[int] = attrs.field(factory=list)

    def stop(self, reason: str) -> None:
        """Ask the running process group to die. Not a checkpoint; the killer task acts."""
        if self.stop_reason is None and self.phase in ("building", "syncing"):
            self.stop_reason = reason
            self.stopped.set()

    def progress(self, now: float) -> float | None:
        if self.phase != "building":
            return 100.0
        if self.log.percent is not None:
            return self.log.percent
        if self.estimate_s:
            return round(min(99.0, 100.0 * (now - self.started_at) / self.estimate_s), 1)
        return None

    def ids(self) -> dict[str, str]:
        return {"build_id": self.build_id, "cpv": self.cpv}


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def run_process(
    build: Build,
    argv: Sequence[str],
    *,
    kill_grace_s: float,
    env: Mapping[str, str] | None = None,
    capture: bytearray | None = None,
) -> int:
    """Run ``argv`` (no shell) in its own session, output into ``build.log``; its exit status.

    ``env`` is laid over this process's environment (``PATH`` in it also finds ``argv[0]``).
    ``capture``, when given, receives a copy of the output (the caller bounds what it runs).

    A checkpoint for as long as the process runs. If ``build.stop()`` is called the whole
    process group gets SIGTERM, then SIGKILL after ``kill_grace_s``. If this call is cancelled
    the process group is killed (SIGKILL) and reaped before the cancellation goes on.
    Raises OSError when the program cannot be started.
    """
    proc = await trio.lowlevel.open_process(
        list(argv),
        env={**os.environ, **env} if env else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    build.pids.append(proc.pid)
    assert proc.stdout is not None
    stdout = proc.stdout
    drained = trio.Event()

    async def pump() -> None:
        try:
            while data := await stdout.receive_some(65536):
                build.log.append(bytes(data))
                if capture is not None:
                    capture.extend(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            drained.set()

    async def killer() -> None:
        await build.stopped.wait()
        _killpg(proc.pid, signal.SIGTERM)
        with trio.move_on_after(kill_grace_s):
            await proc.wait()
        _killpg(proc.pid, signal.SIGKILL)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            nursery.start_soon(killer)
            rc = await proc.wait()
            # A grandchild may hold the pipe open; do not wait for it forever.
            with trio.move_on_after(2.0):
                await drained.wait()
            if build.stop_reason is not None:
                _killpg(proc.pid, signal.SIGKILL)  # leftovers of a stopped build
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                _killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            await stdout.aclose()
    return rc
