"""swarmd's listener: the drone lane, in front of the HTTP/1.1 server (swarmlib.http1).

Nearly all of swarmd's requests are the drone protocol: every agent beats every 30 s and asks
for work on keep-alive connections. Through an HTTP server and Quart each of those cost about
2.5 ms of CPU (h11 events, the ASGI scope, request contexts, routing): with 5,000 drones swarmd
spent a whole core on HTTP alone (docs/BENCHMARKS.md, "Drone load"). The lane serves those
requests itself, straight from the socket to ``droneproto.dispatch``, and gives the connection
to the HTTP/1.1 server (``swarmlib.front``, ``swarmlib.http1``) at the first request that is
anything but simple:

- the lane takes exactly: ``POST`` of a drone protocol path, ``HTTP/1.1``, no query string or
  percent-escape, a ``Host``, one ``Content-Length`` (at most LANE_MAX_BODY), no
  ``Transfer-Encoding``, ``Expect`` or ``Upgrade``, header names that are tokens, no control
  character anywhere (a bare CR or LF, NUL), none repeated, a head of at most 16 KiB;
- anything else (the operator API, ``/metrics``, ``/api/events``, chunked log uploads, HTTP/1.0,
  a malformed head, an oversized body) goes to the HTTP/1.1 server with the bytes read so far,
  at a request boundary, and it serves the rest of that connection: h11 decides what is
  malformed (400, 431), the Quart app what is too big (413).

So the lane never has to be lenient: being strict costs only a hand-off. The answers are the
same bytes of JSON the Quart routes give (both call ``droneproto.dispatch``). Timeouts: an idle
keep-alive connection is closed after the listener's ``keep_alive_timeout``; a head must arrive
within HEAD_TIMEOUT_S and a body within BODY_TIMEOUT_S once begun. On shutdown idle connections
are closed at once and a request in progress gets the graceful timeout. A lease long-poll
watches its connection and is cancelled if the drone hangs up before work came.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import TYPE_CHECKING

import attrs
import trio

from swarmd import droneproto
from swarmlib.front import HEAD_TIMEOUT_S, MAX_HEAD_BYTES, Handoff, head_end
from swarmlib.http1 import DATE, RECV

if TYPE_CHECKING:
    from swarmd.metrics import Metrics
    from swarmd.service import Orchestrator

log = logging.getLogger("swarmd.front")

LANE_MAX_BODY = 1024 * 1024  # larger bodies (big log chunks) go to the app's 8 MiB limit
BODY_TIMEOUT_S = 60.0
SEND_TIMEOUT_S = 60.0


@attrs.frozen
class LaneRequest:
    endpoint: str
    ident: str
    headers: dict[str, str]
    length: int
    close: bool


# What h11 would refuse, so the lane hands it over instead of reading it differently: control
# characters (a bare CR or LF, NUL, ...) anywhere in a line, and header names that are not tokens.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse_request(head: bytes) -> LaneRequest | None:
    """A request head (without the blank line) the lane serves, or None (the HTTP server's)."""
    if len(head) > MAX_HEAD_BYTES:
        return None
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if (len(parts) != 3 or parts[2] != "HTTP/1.1" or "?" in parts[1] or "%" in parts[1]
            or _CONTROL.search(parts[1])):
        return None
    r = droneproto.route(parts[0], parts[1])
    if r is None:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        # Also refuses obs-fold continuation lines, which start with white space.
        if not sep or not _TOKEN.fullmatch(name) or _CONTROL.search(value):
            return None
        key = name.lower()
        if key in headers:
            return None
        headers[key] = value.strip(" \t")
    if ("transfer-encoding" in headers or "expect" in headers or "upgrade" in headers
            or "host" not in headers):
        return None
    cl = headers.get("content-length")
    if cl is None or not cl.isdigit() or len(cl) > 9:
        return None
    length = int(cl)
    if length > LANE_MAX_BODY:
        return None
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    return LaneRequest(endpoint=r[0], ident=r[1], headers=headers, length=length,
                       close="close" in tokens)


def response(status: int, body: bytes, date: bytes, close: bool) -> bytes:
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ndate: {date.decode()}\r\n"
            "server: swarmd\r\n")
    if status != 204:
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    else:
        body = b""
    if close:
        head += "connection: close\r\n"
    return head.encode() + b"\r\n" + body


class DroneLane:
    """The connection handler of ``swarmlib.front.serve_front`` for swarmd."""

    def __init__(self, orch: Orchestrator, metrics: Metrics | None) -> None:
        self.orch = orch
        self.metrics = metrics
        self.served = 0  # requests answered by the lane (a test and the curious read it)
        self.handed_off = 0  # connections given to the HTTP/1.1 server

    async def handle(self, stream: trio.SocketStream, handoff: Handoff) -> None:
        buf = bytearray()
        keep_alive = float(handoff.config.keep_alive_timeout)
        while True:
            if not buf:
                if handoff.drain.closing.is_set():
                    return
                data = b""
                with handoff.drain.idle(keep_alive):
                    data = await stream.receive_some(RECV)
                if not data:
                    return  # EOF, idle too long, or shutting down
                buf += data
            end, sep = head_end(buf)
            if end < 0:
                with trio.move_on_after(HEAD_TIMEOUT_S):
                    while (end := head_end(buf)[0]) < 0 and len(buf) < MAX_HEAD_BYTES:
                        data = await stream.receive_some(RECV)
                        if not data:
                            return
                        buf += data
                if end < 0:
                    if len(buf) >= MAX_HEAD_BYTES:
                        await self._handoff(stream, handoff, buf)  # http1 answers 431/400
                    return
            end, sep = head_end(buf)
            # Lines ended by bare LFs: valid for h11, not for the lane's strict parser.
            req = parse_request(bytes(buf[:end])) if sep == 4 else None
            if req is None:
                await self._handoff(stream, handoff, buf)
                return
            need = end + 4 + req.length
            if len(buf) < need:
                with trio.move_on_after(BODY_TIMEOUT_S):
                    while len(buf) < need:
                        data = await stream.receive_some(RECV)
                        if not data:
                            return
                        buf += data
                if len(buf) < need:
                    return
            body = bytes(buf[end + 4:need])
            del buf[:need]
            close = req.close
            try:
                if req.endpoint == "lease":
                    answer = await self._long_poll(stream, req, body, buf)
                    if answer is None:
                        return  # the drone hung up while waiting: nothing was leased to it
                    status, out = answer
                else:
                    status, out = await droneproto.dispatch(
                        self.orch, self.metrics, req.endpoint, req.ident, req.headers, body)
            except Exception:
                log.exception("drone protocol call %s %s failed", req.endpoint, req.ident)
                status, out = droneproto.error_doc(500, "internal", "internal error: see "
                                                   "swarmd's log")
                close = True
            self.served += 1
            close = close or handoff.drain.closing.is_set()  # shutting down: say so, then close
            with trio.move_on_after(SEND_TIMEOUT_S) as sending:
                await stream.send_all(response(status, out, DATE.now(), close))
            if close or sending.cancelled_caught:  # a client that does not read is dropped
                return

    async def _long_poll(self, stream: trio.SocketStream, req: LaneRequest, body: bytes,
                         buf: bytearray) -> tuple[int, bytes] | None:
        """A lease call (it may wait up to 30 s for work) while watching the connection: if
        the drone hangs up meanwhile the call is cancelled, so no package is leased to a drone
        that cannot hear the answer (Quart cancels its handler on disconnect the same way).
        Bytes that arrive meanwhile (a pipelined request) are kept in ``buf``."""
        answer: tuple[int, bytes] | None = None
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                try:
                    while len(buf) < MAX_HEAD_BYTES + LANE_MAX_BODY:
                        data = await stream.receive_some(RECV)
                        if not data:
                            break
                        buf.extend(data)
                    else:
                        return  # enough read ahead; stop watching
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
                nursery.cancel_scope.cancel()  # gone

            nursery.start_soon(watch)
            answer = await droneproto.dispatch(self.orch, self.metrics, req.endpoint,
                                               req.ident, req.headers, body)
            nursery.cancel_scope.cancel()
        return answer

    async def _handoff(self, stream: trio.SocketStream, handoff: Handoff,
                       buf: bytearray) -> None:
        self.handed_off += 1
        await handoff(stream, bytes(buf))
