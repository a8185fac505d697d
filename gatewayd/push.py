"""The gateway's WebSocket push: one upstream subscription, many public clients.

Theory of operation
-------------------
``Hub.run_subscriber`` keeps one trio-websocket client connection to swarmd's ``/api/events``.
Every event carries a ``seq``; the hub remembers the last one it saw and reconnects (backoff with
jitter) with ``?since=<last seq>`` after any break, so nothing within swarmd's window is lost.
On the first connect, and whenever swarmd answers ``{"type": "resync"}`` (we were away longer than
its window), the hub rebuilds its snapshot from swarmd's HTTP API (``/api/drones``,
``/api/status``) and pushes the rebuilt snapshot to the clients already connected.

Every event passes through the sanitizer (``public_event``) exactly once; the public message is
encoded to JSON once and the same string is queued for every client.

The snapshot is the latest public ``drone_status`` per drone plus the latest ``queue_update``.
A new client is registered and handed a copy of the snapshot in one synchronous step, so it sees
the snapshot first and then every live event after it, none twice and none missing.

Each client (``handle_client``) is a ``wsserver.ServerWebSocket`` (wsproto on a stream we own)
with three tasks: a writer that drains its bounded buffer into the socket, a reader (it sees the
pongs and answers pings and close frames; client messages are thrown away) and a pinger
(``ping()`` every ``ping_interval_s``, which waits for the pong under
``move_on_after(pong_timeout_s)``). The hub never waits on a client: ``broadcast`` writes straight
to an idle client's socket or uses ``send_nowait``, and a full buffer drops the client. A dropped
client's TCP connection is aborted at once (RST), without a close handshake that a dead peer
would never finish. The upstream connection is trio-websocket's; a missing pong there cancels
it (trio-websocket then closes its stream at once) and the hub reconnects.
"""

from __future__ import annotations

import collections
import json
import logging
import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import trio
import trio_websocket

from gatewayd.wsserver import ConnectionClosed, ServerWebSocket, text_frame
from swarmlib.backoff import Backoff
from swarmlib.counts import public_counts
from swarmlib.timefmt import utc_now_iso

log = logging.getLogger("gatewayd.push")

PUBLIC_TYPES = frozenset({"drone_status", "build_progress", "queue_update", "build_complete"})

# Reconnect backoff of the upstream subscription (seconds): doubles from MIN to MAX, with
# swarmlib.backoff's equal jitter.
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
# Bounded cleanup on shutdown: a 1001 "going away" close to each client, at most this long.
CLOSE_GRACE_S = 1.0


def events_url(orchestrator_url: str, since: int | None) -> str:
    """``http://host:8080`` -> ``ws://host:8080/api/events?since=N`` (``https`` -> ``wss``)."""
    parts = urlsplit(orchestrator_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme, "ws")
    path = parts.path.rstrip("/") + "/api/events"
    query = "" if since is None else f"since={since}"
    return urlunsplit((scheme, parts.netloc, path, query, ""))


def snapshot_events(drones_doc: Any, status_doc: Any, *, seq: int, now: str) -> list[dict[str, Any]]:
    """swarmd's ``GET /api/drones`` and ``GET /api/status`` answers as raw events.

    The events have the shapes of swarmd's ``/api/events`` (docs/API.md, last section), so the
    sanitizer treats them exactly like live ones.
    """
    events: list[dict[str, Any]] = []
    drones = drones_doc.get("drones", []) if isinstance(drones_doc, dict) else []
    for drone in drones:
        if not isinstance(drone, dict):
            continue
        builds = drone.get("current_builds") or []
        current = builds[0].get("cpv") if builds and isinstance(builds[0], dict) else None
        events.append(
            {
                "seq": seq,
                "type": "drone_status",
                "timestamp": now,
                "data": {
                    "drone_id": drone.get("id"),
                    "name": drone.get("name"),
                    "hostname": drone.get("hostname"),
                    "ip": drone.get("ip"),
                    "cores": drone.get("cores"),
                    "status": drone.get("status"),
                    "current_package": current,
                },
            }
        )
    counts = status_doc.get("counts") if isinstance(status_doc, dict) else None
    if isinstance(counts, dict):
        events.append({"seq": seq, "type": "queue_update", "timestamp": now,
                       "data": public_counts(counts)})
    return events


class QueueHistory:
    """Queue depth over time for the status page: a bounded ring of the public
    ``queue_update`` messages the hub has seen (the public counts and their timestamps).

    Plain Python (no I/O). Samples closer than ``min_interval_s`` to the previous one replace it
    (so a burst of updates costs one slot, and the ring spans at least
    ``capacity * min_interval_s`` seconds of a busy swarm); a sample equal to the previous one
    is not stored again (the chart is a step line). Lost on restart, by choice: swarmd keeps no
    such history, and the page only needs the last hours.
    """

    KEYS = ("pending", "building", "completed", "failed")

    def __init__(self, capacity: int = 2880, min_interval_s: float = 5.0) -> None:
        self.samples: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self.min_interval_s = min_interval_s
        self._last_at: float | None = None

    def add(self, public: dict[str, Any]) -> None:
        """Record one public ``queue_update`` message (other types are ignored)."""
        if public.get("type") != "queue_update" or not isinstance(public.get("data"), dict):
            return
        ts = public.get("timestamp")
        try:
            at = datetime.fromisoformat(str(ts)).timestamp()
        except ValueError:
            return
        data = public["data"]
        sample = {"t": ts, **{k: data.get(k) for k in self.KEYS}}
        if self.samples:
            last = self.samples[-1]
            if all(last.get(k) == sample[k] for k in self.KEYS):
                return
            if self._last_at is not None and 0 <= at - self._last_at < self.min_interval_s:
                self.samples[-1] = {**sample, "t": last["t"]}
                return
        self.samples.append(sample)
        self._last_at = at

    def recent(self) -> list[dict[str, Any]]:
        return list(self.samples)


class Snapshot:
    """The current public state: latest drone_status per drone, latest queue_update.

    Plain Python (no I/O). Values are the encoded public messages, ready to send.
    """

    def __init__(self) -> None:
        self.drones: dict[str, str] = {}
        self.queue: str | None = None

    @staticmethod
    def _drone_key(raw: dict[str, Any], public: dict[str, Any]) -> str | None:
        rdata = raw.get("data")
        pdata = public.get("data")
        rdata = rdata if isinstance(rdata, dict) else {}
        pdata = pdata if isinstance(pdata, dict) else {}
        key = rdata.get("drone_id") or rdata.get("name") or pdata.get("name")
        return None if key is None else str(key)

    def apply(self, raw: dict[str, Any], public: dict[str, Any], encoded: str) -> None:
        kind = public.get("type")
        if kind == "drone_status":
            key = self._drone_key(raw, public)
            if key is not None:
                self.drones[key] = encoded
        elif kind == "queue_update":
            self.queue = encoded

    def messages(self) -> list[str]:
        out = list(self.drones.values())
        if self.queue is not None:
            out.append(self.queue)
        return out


# What ends one upstream connection (and is retried); anything else is a bug and propagates.
_UPSTREAM_BREAKS = (
    trio_websocket.HandshakeError,
    trio_websocket.ConnectionClosed,
    trio.BrokenResourceError,
    OSError,
    httpx.HTTPError,
    ValueError,
)


class _Client:
    """One public client as the hub sees it.

    ``idle``: its writer has nothing queued nor in flight, so the hub may write a frame straight
    to the socket (the fast path: one non-blocking ``send``, no task wake-up). Set only by the
    writer when its buffer is empty; cleared by the hub whenever it queues.
    """

    __slots__ = ("send", "scope", "dropped", "idle", "ws")

    def __init__(self, send: trio.MemorySendChannel[bytes], ws: ServerWebSocket) -> None:
        self.send = send
        self.scope = trio.CancelScope()
        self.dropped: str | None = None
        self.idle = False
        self.ws = ws

    def try_write(self, data: bytes) -> bool:
        """Write without blocking if nothing else is queued or being sent on this socket.

        Returns whether the connection took ``data`` (see ``ServerWebSocket.try_send``: part of
        it may be owed); raises OSError if the socket is broken. Synchronous.
        """
        return self.idle and self.ws.try_send(data)

    def drop(self, why: str) -> None:
        if self.dropped is None:
            self.dropped = why
        self.scope.cancel()


class Hub:
    """Fan-out of sanitized swarmd events to the public WebSocket clients."""

    def __init__(
        self,
        sanitizer: Any,
        *,
        buffer: int = 256,
        max_clients: int = 1000,
        ping_interval_s: float = 60,
        pong_timeout_s: float = 30,
        metrics_clients_gauge: Any = None,
        queue_history: QueueHistory | None = None,
    ) -> None:
        self.sanitizer = sanitizer
        self.queue_history = queue_history if queue_history is not None else QueueHistory()
        self.buffer = buffer
        self.max_clients = max_clients
        self.ping_interval_s = ping_interval_s
        self.pong_timeout_s = pong_timeout_s
        self.metrics_clients_gauge = metrics_clients_gauge
        self.snapshot = Snapshot()
        self.last_seq: int | None = None
        self.clients: set[_Client] = set()
        # Clients dropped by the hub, by reason ("buffer full", "no pong").
        self.drops: collections.Counter[str] = collections.Counter()
        self.upstream_connected = False
        self.connects = 0
        self.resyncs = 0

    # -- fan-out (synchronous: never waits on anybody) ---------------------------------------

    def accepting(self) -> bool:
        """Whether one more client fits under ``max_clients``."""
        return len(self.clients) < self.max_clients

    def _gauge(self) -> None:
        if self.metrics_clients_gauge is not None:
            self.metrics_clients_gauge.set(len(self.clients))

    def broadcast(self, encoded: Iterable[str]) -> None:
        """Send messages to every client without waiting on any.

        A client with nothing pending gets the frames written straight to its socket; otherwise
        they go to its bounded buffer, and a client whose buffer is full is dropped. What the
        socket did not take at once stays owed on the connection (never queued here: a ping or
        a close sent in between would land inside the frame), and the writer is woken with an
        empty batch so that its send writes it.
        """
        data = b"".join(text_frame(m) for m in encoded)
        if not data:
            return
        for client in list(self.clients):
            try:
                if not client.try_write(data):
                    client.idle = False
                    client.send.send_nowait(data)
                elif client.ws.owes:
                    client.idle = False
                    client.send.send_nowait(b"")
            except trio.WouldBlock:
                self._drop(client, "buffer full")
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self._drop(client, "gone")

    def _drop(self, client: _Client, why: str) -> None:
        if client in self.clients:
            self.clients.discard(client)
            self._gauge()
        client.drop(why)

    def publish(self, raw: dict[str, Any]) -> str | None:
        """Sanitize one raw swarmd event, fold it into the snapshot and queue it for everyone.

        Returns the encoded public message, or None if nothing was sent.
        """
        public = self.sanitizer.public_event(raw)
        if public is None or public.get("type") not in PUBLIC_TYPES:
            return None
        encoded = json.dumps(public, separators=(",", ":"))
        self.snapshot.apply(raw, public, encoded)
        self.queue_history.add(public)
        self.broadcast([encoded])
        return encoded

    def replace_snapshot(self, raw_events: Iterable[dict[str, Any]]) -> None:
        """Swap in a snapshot rebuilt from swarmd and push it to the clients already here."""
        fresh = Snapshot()
        for raw in raw_events:
            public = self.sanitizer.public_event(raw)
            if public is None or public.get("type") not in ("drone_status", "queue_update"):
                continue
            fresh.apply(raw, public, json.dumps(public, separators=(",", ":")))
            self.queue_history.add(public)
        self.snapshot = fresh
        self.broadcast(fresh.messages())

    # -- upstream ----------------------------------------------------------------------------

    async def _rebuild_snapshot(self, orchestrator_url: str, http: httpx.AsyncClient) -> None:
        """Checkpoint. Two GETs; raises httpx errors (the caller reconnects)."""
        base = orchestrator_url.rstrip("/")
        drones = await http.get(f"{base}/api/drones")
        drones.raise_for_status()
        status = await http.get(f"{base}/api/status")
        status.raise_for_status()
        self.replace_snapshot(
            snapshot_events(
                drones.json(), status.json(), seq=self.last_seq or 0, now=utc_now_iso()
            )
        )
        self.resyncs += 1

    async def _handle_upstream(
        self, raw_text: str | bytes, orchestrator_url: str, http: httpx.AsyncClient
    ) -> None:
        try:
            raw = json.loads(raw_text)
        except ValueError:
            log.warning("upstream sent a message that is not JSON; ignored")
            return
        if not isinstance(raw, dict):
            return
        seq = raw.get("seq")
        seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        if raw.get("type") == "resync":
            log.info("orchestrator asks for a resync (seq %s)", seq)
            if seq is not None:
                self.last_seq = seq
            await self._rebuild_snapshot(orchestrator_url, http)
            return
        if seq is not None:
            if self.last_seq is not None and seq <= self.last_seq:
                return  # already seen (an inclusive ``since`` or a replay overlap)
            self.last_seq = seq
        self.publish(raw)

    async def _upstream_pinger(
        self, ws: trio_websocket.WebSocketConnection, connection: trio.CancelScope
    ) -> None:
        """A dead upstream that never closes is noticed by its missing pong: ``connection``
        (the scope around the whole connection) is cancelled, which closes its socket at once."""
        while True:
            await trio.sleep(self.ping_interval_s)
            with trio.move_on_after(self.pong_timeout_s):
                try:
                    await ws.ping()
                except trio_websocket.ConnectionClosed:
                    return  # the reading side sees it too, and reconnects
                continue
            log.warning("orchestrator event stream: no pong; reconnecting")
            connection.cancel()
            return

    async def run_subscriber(
        self,
        orchestrator_url: str,
        control_token: str,
        http: httpx.AsyncClient,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Follow swarmd's event stream forever; returns only by cancellation.

        Starts at once (``task_status.started()`` before the first connect, so the gateway
        serves while swarmd is down). Cancellation leaves the snapshot and ``last_seq`` as they
        were, so a later ``run_subscriber`` resumes where this one stopped.
        """
        headers = [(b"Authorization", f"Bearer {control_token}".encode())] if control_token else []
        backoff = Backoff(BACKOFF_MIN_S, BACKOFF_MAX_S)
        task_status.started()
        while True:
            url = events_url(orchestrator_url, self.last_seq)
            try:
                # Cancelled by the pinger when a pong does not come back.
                with trio.CancelScope() as connection:
                    async with trio_websocket.open_websocket_url(
                        url,
                        extra_headers=headers,
                        connect_timeout=10,
                        disconnect_timeout=2,
                        message_queue_size=64,
                    ) as ws:
                        self.upstream_connected = True
                        self.connects += 1
                        log.info("subscribed to %s", url)
                        backoff.reset()
                        broken: BaseException | None = None
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._upstream_pinger, ws, connection)
                            try:
                                if self.last_seq is None:
                                    await self._rebuild_snapshot(orchestrator_url, http)
                                while True:
                                    message = await ws.get_message()
                                    await self._handle_upstream(message, orchestrator_url, http)
                            except _UPSTREAM_BREAKS as exc:
                                broken = exc  # re-raised outside the nursery: no exception group
                            finally:
                                nursery.cancel_scope.cancel()
                        if broken is not None:
                            raise broken
            except _UPSTREAM_BREAKS as exc:
                log.warning("orchestrator event stream broke (%s); retrying", exc.__class__.__name__)
            finally:
                self.upstream_connected = False
            await trio.sleep(backoff.next())

    # -- clients -----------------------------------------------------------------------------

    async def handle_client(self, ws: ServerWebSocket) -> None:
        """Serve one accepted public client until it leaves or is dropped.

        Returns when the client closed, broke, was too slow (buffer full) or missed a pong; in
        the last two cases its TCP connection has been aborted. Cancelled (shutdown): the client
        gets a 1001 close within ``CLOSE_GRACE_S``, then the connection is aborted.
        """
        if not self.accepting():
            with trio.move_on_after(CLOSE_GRACE_S):
                await ws.aclose(1013, "too many clients")
            await ws.abort()
            return
        send, receive = trio.open_memory_channel[bytes](self.buffer)
        client = _Client(send, ws)
        # Registration and the snapshot copy happen with no checkpoint in between: the client
        # sees the snapshot, then every event published after it.
        first = self.snapshot.messages()
        self.clients.add(client)
        self._gauge()
        try:
            with client.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, ws, first, receive, client)
                    nursery.start_soon(self._reader, ws, client)
                    nursery.start_soon(self._pinger, ws, client)
        finally:
            if client in self.clients:
                self.clients.discard(client)
                self._gauge()
            send.close()
            receive.close()
            with trio.CancelScope(shield=True):
                if client.dropped in ("buffer full", "no pong"):
                    self.drops[client.dropped] += 1
                    log.info("dropped client %s: %s", ws.remote, client.dropped)
                elif client.dropped is None:
                    # Cancelled from outside (shutdown) or a bug: say goodbye, briefly.
                    with trio.move_on_after(CLOSE_GRACE_S):
                        await ws.aclose(1001, "going away")
                if client.dropped != "closed":
                    await ws.abort()

    async def _writer(
        self,
        ws: ServerWebSocket,
        first: list[str],
        receive: trio.MemoryReceiveChannel[bytes],
        client: _Client,
    ) -> None:
        """The slow path: drains the client's buffer into the socket, batching what is there."""
        try:
            if first:
                await ws.send(b"".join(text_frame(m) for m in first))
            while True:
                if receive.statistics().current_buffer_used == 0:
                    client.idle = True
                data = await receive.receive()
                batch = [data]
                while True:
                    try:
                        batch.append(receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                await ws.send(b"".join(batch))
        except (ConnectionClosed, trio.EndOfChannel):
            pass
        client.drop("closed")

    async def _reader(self, ws: ServerWebSocket, client: _Client) -> None:
        # Input from clients means nothing, but it must be read: pongs and close frames come
        # that way.
        await ws.receive_until_closed()
        client.drop("closed")

    async def _pinger(self, ws: ServerWebSocket, client: _Client) -> None:
        if math.isinf(self.ping_interval_s):
            return
        while True:
            await trio.sleep(self.ping_interval_s)
            with trio.move_on_after(self.pong_timeout_s):
                try:
                    await ws.ping()
                except ConnectionClosed:
                    client.drop("closed")
                    return
                continue
            client.drop("no pong")
            return
