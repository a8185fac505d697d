"""The publisher: the Trio task that moves successful builds into the binhost index.

A success report with a binhost configured is journaled as ``complete`` with ``publish: true``:
the build is then ``publishing`` (the drone is free, the entry is not yet ``built``). This task
takes those builds one at a time, runs ``Binhost.publish`` in a worker thread, and journals the
outcome: ``published`` (the entry is ``built``, its dependents become ready) or
``publish_failed`` (a failed attempt, retried like any other). After a crash every build still
``publishing`` in the recovered state is published again; ``Binhost.publish`` is idempotent,
so the index ends up agreeing with the journal.

An OSError (full disk, permissions) is not the package's fault: the build stays
``publishing`` and is tried again with backoff, loudly logged.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from swarmd import journal_events as je
from swarmd.binhost import Binhost, Collision, PublishError

if TYPE_CHECKING:
    from swarmd.committer import Durable

log = logging.getLogger("swarmd.publish")

REINDEX_OVER = 20  # more missing index entries than this: one reindex instead of injects
SWEEP_EVERY_S = 3600.0  # how often uploads nobody will publish are looked for
SWEEP_AGE_S = 86400.0  # an upload this old that no publishing build names is removed
OSERROR_TRIES = 10  # a binhost that cannot be written: retried this often, then failed


class Publisher:
    def __init__(self, durable: Durable, root: Path) -> None:
        self.durable = durable
        self.binhost = Binhost(root)
        self._send, self._recv = trio.open_memory_channel[str](math.inf)
        self.published = 0
        self.failed = 0
        self.last_publish_s: float | None = None
        self.last_error: str | None = None
        self.durations: list[float] = []  # seconds per publish, the last 1000
        self.reconciled: dict[str, int] = {}
        self._last_sweep = -1e9

    def enqueue(self, build_id: str) -> None:
        """Hand a ``publishing`` build to the task. Not a checkpoint."""
        self._send.send_nowait(build_id)

    def status(self) -> dict[str, Any]:
        pending = sum(1 for b in self.durable.state.builds.values() if b.state == "publishing")
        return {"dir": str(self.binhost.root), "published": self.published,
                "publish_failed": self.failed, "publishing": pending,
                "last_publish_s": self.last_publish_s, "last_error": self.last_error}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the binhost (ConfigError is fatal), re-queue what a crash interrupted, then
        publish builds as they come."""
        await trio.to_thread.run_sync(self.binhost.open)
        await self.reconcile()
        redo = sorted(b.id for b in self.durable.state.builds.values() if b.state == "publishing")
        if redo:
            log.info("publishing %d build(s) that were not in the index at the last stop",
                     len(redo))
        for bid in redo:
            self.enqueue(bid)
        await self.sweep()
        log.info("publishing into %s", self.binhost.root)
        task_status.started()
        async for bid in self._recv:
            await self._one(bid)
            if time.monotonic() - self._last_sweep > SWEEP_EVERY_S:
                await self.sweep()

    async def sweep(self) -> None:
        """Remove day-old uploads no publishing build names (their reports were refused)."""
        self._last_sweep = time.monotonic()
        builds = self.durable.state.builds
        keep = {str((b.artifact or {}).get("path", "")) for b in builds.values()
                if b.state == "publishing"}
        live = {bid for bid, b in builds.items() if b.state != "finished"}
        gone = await trio.to_thread.run_sync(self.binhost.sweep_uploads, keep, SWEEP_AGE_S,
                                             live)
        if gone:
            log.info("removed %d upload(s) nobody will publish (older than %.0f h): %s",
                     len(gone), SWEEP_AGE_S / 3600, ", ".join(gone[:5]))

    async def reconcile(self) -> dict[str, int]:
        """Make the index agree with the journal: every package the journal says is published
        (and still current) is in ``Packages``; one that is not is put back when its file is
        there and unchanged, else reported (it needs a rebuild: submit it again). Packages in
        the index that swarmd did not publish (added by hand) are left alone."""
        t0 = time.perf_counter()
        indexed = await trio.to_thread.run_sync(self.binhost.indexed)
        counts = {"published": 0, "restored": 0, "missing": 0, "changed": 0, "foreign": 0}
        ours: set[str] = set()
        todo = []
        keys = {id(p): k for k, p in self.durable.state.packages.items()}
        for p in list(self.durable.state.packages.values()):
            art = p.artifact or {}
            if "portage_build_id" not in art:
                continue  # built without a binhost (or by a swarmd before publishing existed)
            counts["published"] += 1
            path = str(art.get("path", ""))
            ours.add(path)
            if indexed.get(path) != p.cpv:
                todo.append(p)
        if len(todo) > REINDEX_OVER:
            # Many at once (a lost or replaced index): one reindex, then check what is left.
            log.warning("%d published packages are not in the index: reindexing %s",
                        len(todo), self.binhost.root)
            await trio.to_thread.run_sync(self.binhost.reindex)
            indexed = await trio.to_thread.run_sync(self.binhost.indexed)
            counts["restored"] = sum(1 for p in todo if indexed.get(
                str((p.artifact or {}).get("path", ""))) == p.cpv)
            todo = [p for p in todo if indexed.get(str((p.artifact or {}).get("path", "")))
                    != p.cpv]
        for p in todo:
            art = p.artifact or {}
            path = str(art.get("path", ""))
            how = await trio.to_thread.run_sync(
                self.binhost.restore, p.cpv, path, int(art.get("size", -1)),
                str(art.get("sha256", "")))
            counts[how] += 1
            if how == "restored":
                log.warning("%s was published but not in the index: put back", path)
            else:
                log.error("%s (%s) was published but its file is %s: it no longer counts as "
                          "built; the next submission that asks for it builds it again",
                          path, p.cpv, how)
                await self.durable.commit(je.Unpublished(ts=self.durable.wall(), key=keys[id(p)],
                                                      why=f"file {how}"))
        counts["foreign"] = sum(1 for path in indexed if path not in ours)
        log.info("binhost index checked against the journal in %.2f s: %d published, %d put "
                 "back, %d missing, %d changed, %d not published by swarmd",
                 time.perf_counter() - t0, counts["published"], counts["restored"],
                 counts["missing"], counts["changed"], counts["foreign"])
        self.reconciled = counts
        return counts

    async def _one(self, bid: str) -> None:
        failures = 0
        while True:
            b = self.durable.state.builds.get(bid)
            if b is None or b.state != "publishing" or not b.artifact:
                return
            art = b.artifact
            t0 = time.perf_counter()
            try:
                pub = await trio.to_thread.run_sync(
                    self.binhost.publish, b.cpv, str(art.get("path", "")),
                    int(art.get("size", -1)), str(art.get("sha256", "")))
            except PublishError as exc:
                await self._failed(bid, b.cpv, b.drone_name, str(exc),
                                   collision=isinstance(exc, Collision))
                return
            except OSError as exc:
                # Not the package's fault (disk full, permissions): try again, then give up on
                # this build so that one bad upload does not hold up every later publish.
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if failures >= OSERROR_TRIES:
                    await self._failed(bid, b.cpv, b.drone_name,
                                       f"cannot write the binhost: {exc}")
                    return
                delay = min(60.0, 2.0 ** failures)
                log.error("publish of %s (build %s) could not write the binhost: %s; trying "
                          "again in %.0f s", b.cpv, bid, exc, delay,
                          extra={"ids": {"build": bid}})
                await trio.sleep(delay)
                continue
            except Exception as exc:  # task boundary: portage raises its own kinds too
                log.exception("publish of %s (build %s) failed in portage", b.cpv, bid,
                              extra={"ids": {"build": bid}})
                await self._failed(bid, b.cpv, b.drone_name,
                                   f"portage: {type(exc).__name__}: {exc}")
                return
            took = time.perf_counter() - t0
            self.durations = [*self.durations[-999:], took]
            self.published += 1
            self.last_publish_s = round(took, 3)
            await self.durable.commit(je.Published(
                ts=self.durable.wall(), build_id=bid, path=pub.path, size=pub.size,
                sha256=pub.sha256, portage_build_id=pub.build_id,
                upload=str(art.get("path", ""))))
            log.info("published %s as %s (%.2f s)", b.cpv, pub.path, took,
                     extra={"ids": {"build": bid}})
            return

    async def _failed(self, bid: str, cpv: str, drone: str, error: str, *,
                      collision: bool = False) -> None:
        self.failed += 1
        self.last_error = error
        log.warning("publish of %s (build %s from %s) failed: %s", cpv, bid, drone, error,
                    extra={"ids": {"build": bid}})
        b = self.durable.state.builds.get(bid)
        upload = str((b.artifact or {}).get("path", "")) if b is not None else ""
        await self.durable.commit(je.PublishFailed(ts=self.durable.wall(), build_id=bid, error=error,
                                                collision=collision))
        # The upload will never be published: the next attempt uploads its own file.
        if upload:
            await trio.to_thread.run_sync(self.binhost.discard_upload, upload)
