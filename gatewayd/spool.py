"""The durable spool: submissions accepted while swarmd is down, forwarded when it is back.

Layout of ``spool_dir``::

    tmp/       a record is written here first (never read back; leftovers are deleted)
    pending/   000000000042.json   one record per submission, replayed in name order
    dead/      000000000042.json + 000000000042.reason.json   rejected by swarmd (4xx)

A record is ``{"request_id", "content_type", "body_b64", "received", "attempts"}``, plus
``"target"`` (the ``X-Swarm-Target`` header, SPEC section 12) when the submission had one. ``put`` writes
the record to ``tmp/``, fsyncs it, renames it into ``pending/`` and fsyncs the directory before
it returns, so the gateway's 202 is never sent for something that is not on disk. A write or
fsync failure raises (the caller answers 503; nothing half-written is ever replayed).

Replay is in order and exactly once in effect: a record leaves ``pending/`` only after swarmd
answered 2xx (swarmd dedupes by request id, so a replay after a crash between swarmd's answer and
the unlink returns the original request, not a copy) or a 4xx (then it goes to ``dead/``).

The methods are blocking file I/O: call them from ``trio.to_thread.run_sync``. A lock makes them
safe to call from several threads.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from swarmlib.backoff import Backoff
from swarmlib.errors import SwarmError
from swarmlib.files import atomic_write, fsync_dir
from swarmlib.timefmt import utc_now_iso

log = logging.getLogger("gatewayd.spool")

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0


class SpoolFull(SwarmError):
    code = "spool_full"
    status = 503

    def __init__(self, depth: int, size: int) -> None:
        self.depth = depth
        self.size = size
        super().__init__(
            f"the gateway's spool is full ({depth} requests, {size} bytes) while the "
            "orchestrator is down; retry later"
        )


@attrs.frozen(kw_only=True)
class SpoolItem:
    name: str
    request_id: str
    content_type: str
    body: bytes
    received: str
    size: int
    target: str | None = None  # the X-Swarm-Target header to send with the body


class Spool:
    def __init__(self, directory: str | os.PathLike[str], *, max_requests: int,
                 max_bytes: int) -> None:
        self.dir = Path(directory)
        self.pending_dir = self.dir / "pending"
        self.dead_dir = self.dir / "dead"
        self.tmp_dir = self.dir / "tmp"
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        for d in (self.pending_dir, self.dead_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in self.tmp_dir.iterdir():
            leftover.unlink(missing_ok=True)
        self._sizes: dict[str, int] = {}
        self._ids: dict[str, str] = {}  # request id -> record name
        last = 0
        for p in sorted(self.pending_dir.glob("*.json")):
            try:
                doc = json.loads(p.read_bytes())
                rid = str(doc["request_id"])
            except (OSError, ValueError, KeyError, TypeError):
                log.error("spool record %s is unreadable; moved to dead/", p.name)
                os.replace(p, self.dead_dir / p.name)
                continue
            self._sizes[p.name] = p.stat().st_size
            self._ids[rid] = p.name
            last = max(last, int(p.stem) if p.stem.isdigit() else 0)
        for p in self.dead_dir.glob("*.json"):
            stem = p.name.split(".", 1)[0]
            if stem.isdigit():
                last = max(last, int(stem))
        self._seq = last

    @property
    def depth(self) -> int:
        return len(self._sizes)

    @property
    def size(self) -> int:
        return sum(self._sizes.values())

    def put(self, request_id: str, content_type: str, body: bytes, *,
            target: str | None = None) -> tuple[str, bool]:
        """Store a submission durably; returns (request_id, newly_stored).

        ``target`` is the ``X-Swarm-Target`` header, kept to be sent with the replay. A request
        id already in the spool is not stored twice. Raises SpoolFull, OSError.
        """
        doc: dict[str, Any] = {
            "request_id": request_id,
            "content_type": content_type,
            "body_b64": base64.b64encode(body).decode("ascii"),
            "received": utc_now_iso(),
            "attempts": 0,
        }
        if target is not None:
            doc["target"] = target
        record = json.dumps(doc).encode()
        with self._lock:
            if request_id in self._ids:
                return request_id, False
            if self.depth + 1 > self.max_requests or self.size + len(record) > self.max_bytes:
                raise SpoolFull(self.depth, self.size)
            self._seq += 1
            name = f"{self._seq:012d}.json"
            atomic_write(self.pending_dir / name, record, tmp_dir=self.tmp_dir)
            self._sizes[name] = len(record)
            self._ids[request_id] = name
            return request_id, True

    def pending(self) -> list[SpoolItem]:
        """Every pending record, oldest first."""
        with self._lock:
            names = sorted(self._sizes)
        items = []
        for name in names:
            item = self._read(name)
            if item is not None:
                items.append(item)
        return items

    def first(self) -> SpoolItem | None:
        with self._lock:
            names = sorted(self._sizes)
        for name in names:
            item = self._read(name)
            if item is not None:
                return item
        return None

    def _read(self, name: str) -> SpoolItem | None:
        p = self.pending_dir / name
        try:
            doc = json.loads(p.read_bytes())
            return SpoolItem(
                name=name,
                request_id=str(doc["request_id"]),
                content_type=str(doc["content_type"]),
                body=base64.b64decode(doc["body_b64"]),
                received=str(doc.get("received", "")),
                size=self._sizes.get(name, 0),
                target=str(doc["target"]) if doc.get("target") is not None else None,
            )
        except FileNotFoundError:
            with self._lock:
                self._forget(name)
            return None

    def _forget(self, name: str) -> None:
        self._sizes.pop(name, None)
        for rid, n in list(self._ids.items()):
            if n == name:
                del self._ids[rid]

    def done(self, item: SpoolItem) -> None:
        """swarmd has the request: drop the record."""
        with self._lock:
            (self.pending_dir / item.name).unlink(missing_ok=True)
            fsync_dir(self.pending_dir)
            self._forget(item.name)

    def dead(self, item: SpoolItem, status: int, body: bytes) -> None:
        """swarmd refused the request: keep it in dead/ with swarmd's answer next to it."""
        with self._lock:
            reason = json.dumps({
                "request_id": item.request_id,
                "status": status,
                "answer": body.decode("utf-8", "replace")[:65536],
                "when": utc_now_iso(),
            }).encode()
            stem = item.name.split(".", 1)[0]
            atomic_write(self.dead_dir / f"{stem}.reason.json", reason, tmp_dir=self.tmp_dir)
            os.replace(self.pending_dir / item.name, self.dead_dir / item.name)
            fsync_dir(self.dead_dir)
            fsync_dir(self.pending_dir)
            self._forget(item.name)

    def dead_names(self) -> list[str]:
        return sorted(p.name for p in self.dead_dir.glob("*.json") if ".reason." not in p.name)


# What forwarding one record returns: (status, body) or None when swarmd was not reached.
Forward = Callable[[SpoolItem], Awaitable[tuple[int, bytes] | None]]
# How the blocking spool calls are run: a worker thread by default. Tests in virtual time pass
# ``inline`` (a thread would let the autojump clock run ahead while it works).
Offload = Callable[..., Awaitable[Any]]


async def inline(fn: Callable[..., Any], *args: Any) -> Any:
    """An ``Offload`` that runs ``fn`` in the Trio thread (a checkpoint after it)."""
    result = fn(*args)
    await trio.lowlevel.checkpoint()
    return result


class Replayer:
    """Forwards the spool to swarmd, in order, whenever swarmd is up.

    ``kick()`` (after a ``put``) wakes it at once. Transport errors, 5xx, 408 and 429 are retried
    with exponential backoff (1 s doubling to 60 s, equal jitter: swarmlib.backoff); any other
    4xx sends the record to dead/.
    """

    def __init__(
        self,
        spool: Spool,
        forward: Forward,
        wait_up: Callable[[], Awaitable[None]],
        *,
        on_change: Callable[[Spool], None] | None = None,
        rng: random.Random | None = None,
        offload: Offload | None = None,
    ) -> None:
        self.offload: Offload = offload or trio.to_thread.run_sync
        self.spool = spool
        self.forward = forward
        self.wait_up = wait_up
        self.on_change = on_change
        self.rng = rng or random.Random()
        self._wake = trio.Event()
        self.forwarded = 0

    def kick(self) -> None:
        self._wake.set()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.spool)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        backoff = Backoff(BACKOFF_FIRST_S, BACKOFF_MAX_S, rng=self.rng)
        while True:
            item = await self.offload(self.spool.first)
            if item is None:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            await self.wait_up()
            result = await self.forward(item)
            if result is not None and 200 <= result[0] < 300:
                await self.offload(self.spool.done, item)
                self.forwarded += 1
                log.info("spooled request forwarded", extra={"ids": {"request_id": item.request_id}})
                backoff.reset()
                self._changed()
                continue
            if result is not None and 400 <= result[0] < 500 and result[0] not in (408, 429):
                await self.offload(self.spool.dead, item, result[0], result[1])
                log.error(
                    "orchestrator refused spooled request with HTTP %d; moved to dead/",
                    result[0], extra={"ids": {"request_id": item.request_id}},
                )
                backoff.reset()
                self._changed()
                continue
            why = "unreachable" if result is None else f"HTTP {result[0]}"
            delay = backoff.next()
            log.warning("replay of spooled request failed (%s); retrying in %.1f s", why, delay,
                        extra={"ids": {"request_id": item.request_id}})
            await trio.sleep(delay)


