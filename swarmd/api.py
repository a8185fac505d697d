"""swarmd's HTTP API (SPEC sections 3 and 4) on quart-trio.

Handlers validate at the edge, then call the orchestrator's parts (``orch.committer``,
``orch.ops``, ``orch.soft``, ``orch.logs``); every error is the JSON error body. ``create_app``
only assembles: each area's routes are registered by a small function of their own
(``_status_routes``, ``_queue_routes``, ``_drone_routes``, ``_build_routes``,
``_drone_protocol_routes``, ``_event_routes``).
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import trio
from quart import Response, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from swarmd import droneproto, submission
from swarmd import journal_events as je
from swarmd.metrics import Metrics
from swarmd.service import Orchestrator
from swarmd.state import ENTRY_STATES, FINAL, Build, Drone, Entry, Request, State
from swarmlib import __version__, logsetup
from swarmlib.config import redacted
from swarmlib.errors import BadRequest, BadSubmission, SwarmError
from swarmlib.target import normalize as normalize_target
from swarmlib.target import target_id
from swarmlib.timefmt import iso

log = logging.getLogger("swarmd.api")


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


def error(status: int, code: str, message: str, **extra: Any) -> Response:
    return _json({"error": {"code": code, "message": message, **extra}}, status)


async def _raw_body() -> bytes:
    data = await request.get_data(as_text=False)
    return data if isinstance(data, bytes) else data.encode()


async def _body_json() -> dict[str, Any]:
    return droneproto.json_object(await _raw_body())


def _record(rec: dict[str, Any]) -> dict[str, Any]:
    """A request record as the API shows it (timestamps in ISO form)."""
    return {**rec, "created": iso(rec["created"])}


def _target(raw: Any, where: str) -> dict[str, Any]:
    try:
        return normalize_target(raw)
    except ValueError as exc:
        raise BadRequest(f"{where}: {exc}") from None


def online_targets(state: Any) -> set[str]:
    return {d.target_id for d in state.drones.values() if d.online}


def waiting_reason(e: Entry, targets: set[str]) -> str | None:
    """Why an unfinished entry that is not being built cannot go anywhere, or None."""
    if e.state not in ("pending", "ready") or not e.target_id:
        return None
    if e.target_id not in targets:
        return f"no drone for target {e.target_id}"
    return None


def entry_json(e: Entry, state: Any, targets: set[str] | None = None) -> dict[str, Any]:
    if targets is None:
        targets = online_targets(state)
    return {
        "use": e.use, "target_id": e.target_id or None,
        "waiting": waiting_reason(e, targets), "excluded": list(e.excluded),
        "id": e.id, "cpv": e.cpv, "atom": "=" + e.cpv, "state": e.state,
        "requests": list(e.requests), "deps": list(e.dep_cpvs), "attempts": e.attempts,
        "drone": e.drone, "build_id": e.build_id, "estimate_s": round(e.estimate_s, 1),
        "priority": round(e.crit_s, 1), "request_priority": e.req_priority,
        "reason": e.reason, "order": e.order, "created": iso(e.created),
        "updated": iso(e.updated), "history": list(e.history),
    }


def build_json(b: Build, orch: Orchestrator) -> dict[str, Any]:
    return {
        "id": b.id, "entry_id": b.entry_id, "cpv": b.cpv, "drone": b.drone_id,
        "drone_name": b.drone_name, "attempt": b.attempt, "state": b.state, "result": b.result,
        "started": iso(b.started), "finished": iso(b.finished), "duration_s": b.duration_s,
        "started_ts": b.started, "finished_ts": b.finished,
        "artifact": b.artifact, "error": b.error,
        "progress": (orch.soft.progress(b.drone_id, b.id) if b.state != "finished"
                     else None),
    }


def drone_json(d: Drone, orch: Orchestrator) -> dict[str, Any]:
    soft = orch.soft.get(d.id)
    st = orch.state
    return {
        "id": d.id, "name": d.name, "hostname": d.hostname, "ip": d.ip, "mac": d.mac,
        "cores": d.cores, "arch": d.arch, "chost": d.chost, "version": d.version,
        "target_id": d.target_id or None, "target": d.target,
        "status": orch.soft.status(d.id),
        "last_heartbeat": iso(soft.last_beat_wall) if soft else None,
        "load": soft.load if soft else None, "slots": d.slots, "registered": iso(d.registered),
        "current_builds": [
            {"build_id": bid, "cpv": st.builds[bid].cpv,
             "progress": soft.progress.get(bid) if soft else None,
             "started": iso(st.builds[bid].started)}
            for bid in d.builds
        ],
        "failures_in_row": d.failures_in_row, "cooldown_until": iso(d.cooldown_until),
    }


def request_json(r: Request, st: State) -> dict[str, Any]:
    return {
        "id": r.id, "state": "complete" if r.finished is not None else "open",
        "created": iso(r.created), "finished": iso(r.finished), "packages": r.packages,
        "counts": {**st.request_counts(r), "skipped": len(r.skipped_cpvs)},
        "entries": list(r.entries), "cycles": r.cycles, "priority": r.priority,
        "summary": st.request_summary(r),
    }


def _limit(default: int, maximum: int, name: str = "limit") -> int:
    """The request's ``?limit=`` (or ``name``) argument, checked."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        n = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: expected an integer, got {raw!r}") from None
    if n < 0 or n > maximum:
        raise BadRequest(f"{name}: must be between 0 and {maximum}")
    return n


def _targets_summary(st: Any) -> list[dict[str, Any]]:
    """Per target: online drones and unfinished entries; ``waiting`` when no drone has it."""
    rows: dict[str, dict[str, Any]] = {}
    for d in st.drones.values():
        if d.online:
            r = rows.setdefault(d.target_id, {"target_id": d.target_id or None, "drones": 0,
                                              "unfinished": 0})
            r["drones"] += 1
    for r_ in st.requests.values():
        if r_.finished is None:
            r = rows.setdefault(r_.target_id, {"target_id": r_.target_id or None, "drones": 0,
                                               "unfinished": 0})
            r["unfinished"] += r_.unfinished
    out = []
    for tid, r in sorted(rows.items()):
        if tid and r["drones"] == 0 and r["unfinished"]:
            r["waiting"] = f"no drone for target {tid}"
        out.append(r)
    return out


def create_app(orch: Orchestrator, metrics: Metrics | None = None) -> QuartTrio:
    here = str(Path(__file__).parent)
    app = QuartTrio("swarmd", root_path=here, instance_path=here)
    app.config["MAX_CONTENT_LENGTH"] = submission.MAX_BODY
    app.config["BODY_TIMEOUT"] = 60
    metrics = metrics or Metrics(orch)
    _error_handlers(app)
    _auth(app, orch.cfg.control_token, metrics)
    _status_routes(app, orch, metrics)
    _queue_routes(app, orch, metrics)
    _drone_routes(app, orch)
    _build_routes(app, orch)
    _drone_protocol_routes(app, orch, metrics)
    _event_routes(app, orch, metrics)
    return app


def _error_handlers(app: QuartTrio) -> None:
    @app.errorhandler(SwarmError)
    async def _swarm_error(exc: SwarmError) -> Response:
        extra: dict[str, Any] = {}
        if isinstance(exc, BadSubmission):
            extra["lines"] = submission.bad_lines_json(exc)
        return error(exc.status, exc.code, str(exc), **extra)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.code or 500, "http_error")
        msg = exc.description or exc.name
        if exc.code == 413:
            msg = f"request body is larger than the limit of {submission.MAX_BODY} bytes"
        elif exc.code == 404:
            msg = f"no such endpoint: {request.path}"
        elif exc.code == 405:
            msg = f"method {request.method} is not allowed on {request.path}"
        return error(exc.code or 500, code, msg)


def _auth(app: QuartTrio, control_token: str, metrics: Metrics) -> None:
    @app.before_request
    async def _check() -> Response | None:
        if droneproto.route(request.method, request.path) is not None:
            return None  # droneproto.dispatch applies the drone token rule
        if request.method in ("POST", "DELETE", "PUT", "PATCH"):
            if not droneproto.token_ok(control_token, request.headers.get("Authorization")):
                metrics.auth_failures.labels("control").inc()
                return error(401, "unauthorized", "missing or wrong control token "
                             "(Authorization: Bearer $SWARM_CONTROL_TOKEN)")
        return None


def _status_routes(app: QuartTrio, orch: Orchestrator, metrics: Metrics) -> None:
    """Health, configuration, recent log lines, Prometheus metrics."""
    hostname = socket.gethostname()
    committer = orch.committer

    @app.get("/api/status")
    async def status() -> Response:
        st = committer.state
        j = committer.journal
        drones = {"ready": 0, "building": 0, "degraded": 0, "offline": 0}
        for d in st.drones.values():
            drones[orch.soft.status(d.id)] += 1
        open_req = sum(1 for r in st.requests.values() if r.finished is None)
        return _json({
            "status": "ok", "version": __version__,
            "uptime_s": round(orch.wall() - orch.started_wall, 1), "hostname": hostname,
            "journal": {
                "dir": str(orch.state_dir), "bytes": j.bytes if j else 0,
                "records": j.appends if j else 0, "last_seq": st.seq,
                "segments": len(list(orch.state_dir.glob("journal-*.log"))),
                "recovered_events": committer.recovered_events,
            },
            "counts": dict(st.counts), "queue": st.queue_counts(), "drones": drones,
            "targets": _targets_summary(st),
            "binhost": orch.publisher.status() if orch.publisher is not None else None,
            "requests": {"open": open_req, "complete": len(st.requests) - open_req},
        })

    @app.get("/api/config")
    async def config() -> Response:
        return _json({"config": redacted(orch.cfg)})

    @app.get("/api/logs")
    async def logs() -> Response:
        limit = _limit(200, 2000)
        lines = list(logsetup.RECENT)[-limit:] if limit else []
        return _json({"lines": [{**ln, "time": iso(ln["time"])} for ln in lines]})

    @app.get("/metrics")
    async def prom() -> Response:
        body, ctype = metrics.render()
        return Response(body, content_type=ctype)


def _queue_routes(app: QuartTrio, orch: Orchestrator, metrics: Metrics) -> None:
    """The queue, submissions, cancels, requests, packages and compile-time history."""
    committer = orch.committer

    @app.get("/api/queue")
    async def get_queue() -> Response:
        st = committer.state
        want = request.args.get("state")
        states = set(want.split(",")) if want else None
        if states and not states <= set(ENTRY_STATES):
            raise BadRequest(f"state: unknown state(s) {', '.join(sorted(states - set(ENTRY_STATES)))}; "
                             f"known: {', '.join(ENTRY_STATES)}")
        entries = sorted(st.entries.values(), key=st.sort_key)
        targets = online_targets(st)
        return _json({
            "entries": [entry_json(e, st, targets) for e in entries
                        if states is None or e.state in states],
            "counts": dict(st.counts),
        })

    @app.post("/api/queue")
    async def post_queue() -> Response:
        t0 = time.perf_counter()
        event = await _submission(committer.state, orch.wall())
        if isinstance(event, Response):
            return event
        out = await committer.commit(event)
        rec = _record(out.result)
        status_code = 200 if rec.get("duplicate") else 202
        log.info("request %s: %d packages, %d queued, %d skipped, %d merged, %d cycles "
                 "(%.0f ms)", rec["id"], rec["packages"], rec["queued"], rec["skipped"],
                 rec["merged"], len(rec["cycles"]), 1000 * (time.perf_counter() - t0),
                 extra={"ids": {"request": rec["id"]}})
        metrics.submissions.inc()
        return _json(rec, status_code)

    @app.delete("/api/queue/<ident>")
    async def cancel(ident: str) -> Response:
        st = committer.state
        if ident not in st.requests and ident not in st.entries:
            return error(404, "not_found", f"no request or queue entry with id {ident!r}")
        # Refuse what is already finished before journaling anything (apply re-checks).
        r = st.requests.get(ident)
        if r is not None and r.finished is not None:
            return error(409, "conflict", f"request {ident} has already finished")
        e = st.entries.get(ident)
        if e is not None and e.state in FINAL:
            return error(409, "conflict", f"entry {ident} is already {e.state}")
        out = await committer.commit(je.Cancel(ts=orch.wall(), target=ident))
        if not out.ok:
            return error(409 if out.code == "conflict" else 404, out.code, out.message)
        return _json(out.result)

    @app.get("/api/requests")
    async def requests_list() -> Response:
        st = committer.state
        return _json({"requests": [request_json(r, st) for r in st.requests.values()]})

    @app.get("/api/requests/<rid>")
    async def request_one(rid: str) -> Response:
        r = committer.state.requests.get(rid)
        if r is None:
            return error(404, "not_found", f"no request with id {rid!r}")
        return _json(request_json(r, committer.state))

    @app.get("/api/packages")
    async def packages() -> Response:
        st = committer.state
        out = []
        for p in st.packages.values():
            out.append({"cpv": p.cpv, "state": "built", "built": True,
                        "synced": bool(p.artifact), "build_id": p.build_id,
                        "artifact": p.artifact, "drone": p.drone, "built_at": iso(p.built),
                        "target_id": p.target_id or None, "use": p.use})
        for eid in st.active_by_cpv.values():
            e = st.entries[eid]
            out.append({"cpv": e.cpv, "state": e.state, "built": False, "synced": False,
                        "build_id": e.build_id, "artifact": None, "drone": e.drone,
                        "target_id": e.target_id or None, "use": e.use})
        return _json({"packages": out})

    @app.post("/api/history")
    async def history() -> Response:
        doc = await _body_json()
        pk = doc.get("packages")
        if not isinstance(pk, dict) or not pk:
            raise BadRequest("body.packages: expected an object of 'category/name': seconds")
        from swarmd.atoms import split_cpv

        for k, v in pk.items():
            if not isinstance(k, str) or k.count("/") != 1 or split_cpv(k + "-1") is None:
                raise BadRequest(f"body.packages: {k!r} is not a 'category/name'")
            if isinstance(v, bool) or not isinstance(v, int | float) or not (0 < v < 10 * 86400):
                raise BadRequest(f"body.packages[{k!r}]: expected seconds between 0 and 864000")
        out = await committer.commit(je.History(ts=orch.wall(),
                                                packages={k: float(v) for k, v in pk.items()}))
        return _json(out.result)


async def _submission(st: State, now: float) -> je.Submit | Response:
    """The ``submit`` event of a ``POST /api/queue``, or the answer when there is nothing to
    journal (a repeated ``request_id``, a body that is too large or of an unknown type)."""
    ctype = (request.content_type or "").split(";")[0].strip().lower()
    raw = await _raw_body()
    if len(raw) > submission.MAX_BODY:
        return error(413, "too_large", "request body is larger than 8 MiB")
    priority = 0
    rid: str | None = None
    target: dict[str, Any] | None = None
    if ctype == "application/json":
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None
        if isinstance(doc, dict) and isinstance(doc.get("request_id"), str):
            existing = st.requests.get(doc["request_id"])
            if existing is not None:
                return _json(_record(st.request_record(existing, duplicate=True)))
        sub, priority, rid = await trio.to_thread.run_sync(submission.parse_json, doc)
        if isinstance(doc, dict) and doc.get("target") is not None:
            target = _target(doc["target"], "body.target")
    elif ctype in ("text/plain", "", "application/octet-stream"):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        sub = await trio.to_thread.run_sync(submission.parse_text, text)
        header = request.headers.get("X-Swarm-Target")
        if header:
            try:
                parsed = json.loads(header)
            except ValueError as exc:
                raise BadRequest(f"header X-Swarm-Target: not valid JSON: {exc}") from None
            target = _target(parsed, "header X-Swarm-Target")
        rid = request.args.get("request_id") or request.headers.get("X-Request-Id")
        if rid is not None and rid in st.requests:
            return _json(_record(st.request_record(st.requests[rid], duplicate=True)))
        prio_arg = request.args.get("priority")
        if prio_arg is not None:
            try:
                priority = int(prio_arg)
            except ValueError:
                raise BadRequest("priority: expected an integer") from None
    else:
        return error(415, "unsupported_media_type",
                     f"content type {ctype!r}: send text/plain emerge output or application/json")
    return je.Submit(
        ts=now, request_id=rid or "r-" + secrets.token_hex(8), packages=sub.packages,
        deps=sub.deps, cycles=sub.cycles, priority=priority,
        use={cpv: list(flags) for cpv, flags in sub.use.items()} if sub.use else None,
        target=target, target_id=target_id(target) if target is not None else "")


def _drone_routes(app: QuartTrio, orch: Orchestrator) -> None:
    """Drones as operators see them, and the restart command."""
    committer = orch.committer

    @app.get("/api/drones")
    async def drones() -> Response:
        return _json({"drones": [drone_json(d, orch) for d in committer.state.drones.values()]})

    @app.get("/api/drones/<did>")
    async def drone_one(did: str) -> Response:
        st = committer.state
        d = st.drones.get(did)
        if d is None:
            did2 = st.drone_by_name.get(did)
            d = st.drones.get(did2) if did2 else None
        if d is None:
            return error(404, "not_found", f"no drone with id or name {did!r}")
        doc = drone_json(d, orch)
        recent = [b for b in reversed(list(st.builds.values())) if b.drone_id == d.id][:20]
        doc["recent_builds"] = [build_json(b, orch) for b in recent]
        return _json(doc)

    @app.post("/api/drones/<did>/restart")
    async def drone_restart(did: str) -> Response:
        if did not in committer.state.drones:
            did = committer.state.drone_by_name.get(did, did)
        await orch.ops.queue_restart(did)
        log.info("restart queued for drone %s", did, extra={"ids": {"drone": did}})
        return _json({"drone_id": did, "command": "restart"}, 202)


def _build_routes(app: QuartTrio, orch: Orchestrator) -> None:
    """Build history and one build with its log."""
    committer = orch.committer

    @app.get("/api/builds")
    async def builds() -> Response:
        limit = _limit(100, 1000)
        out = []
        for b in reversed(list(committer.state.builds.values())):
            out.append(build_json(b, orch))
            if len(out) >= limit:
                break
        return _json({"builds": out})

    @app.get("/api/builds/<bid>")
    async def build_one(bid: str) -> Response:
        b = committer.state.builds.get(bid)
        if b is None:
            return error(404, "not_found", f"no build with id {bid!r}")
        tail = _limit(0, 100000, "tail") if request.args.get("tail") else None
        doc = build_json(b, orch)
        doc["log"] = await trio.to_thread.run_sync(orch.logs.read, bid, tail)
        return _json(doc)


def _drone_protocol_routes(app: QuartTrio, orch: Orchestrator, metrics: Metrics) -> None:
    """swarm-drone's keep-alive connections are served by the drone lane (swarmd.front); these
    routes carry what the lane hands to Hypercorn. Both run droneproto.dispatch."""

    async def _drone_call(endpoint: str, ident: str) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        status_code, body = await droneproto.dispatch(orch, metrics, endpoint, ident, headers,
                                                      await _raw_body())
        if status_code == 204:
            return Response("", status=204)
        return Response(body, status=status_code, content_type="application/json")

    @app.post("/api/drones/register")
    async def register() -> Response:
        return await _drone_call("register", "")

    @app.post("/api/drones/<did>/heartbeat")
    async def heartbeat(did: str) -> Response:
        return await _drone_call("heartbeat", did)

    @app.post("/api/drones/<did>/lease")
    async def lease(did: str) -> Response:
        return await _drone_call("lease", did)

    @app.post("/api/builds/<bid>/log")
    async def build_log(bid: str) -> Response:
        return await _drone_call("log", bid)

    @app.post("/api/builds/<bid>/complete")
    async def complete(bid: str) -> Response:
        return await _drone_call("complete", bid)


def _event_routes(app: QuartTrio, orch: Orchestrator, metrics: Metrics) -> None:
    """The live event stream (SPEC section 6), control token required."""
    control_token = orch.cfg.control_token

    @app.websocket("/api/events")
    async def events() -> None:
        if not droneproto.token_ok(control_token, websocket.headers.get("Authorization")):
            metrics.auth_failures.labels("control").inc()
            await websocket.close(1008, "missing or wrong control token")
            return
        since_raw = websocket.args.get("since")
        since: int | None = None
        if since_raw is not None:
            try:
                since = int(since_raw)
            except ValueError:
                await websocket.close(1008, "since: expected an integer")
                return
        await websocket.accept()
        sub, backlog = orch.hub.subscribe(since)
        try:
            for msg in backlog:
                await websocket.send(json.dumps(msg))
            async for msg in sub.recv:
                await websocket.send(json.dumps(msg))
            if sub.dropped:
                await websocket.close(1013, "consumer too slow: reconnect with ?since=")
        finally:
            orch.hub.unsubscribe(sub)
