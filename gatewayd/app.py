"""gatewayd's HTTP routes (SPEC section 5) on Quart-Trio, and the ``Gateway`` they share.

Two apps are built from one ``Gateway``: the public one (port 8090: public routes, discovery,
binhost, admin routes, ``/health``) and the admin one (port 8100: admin routes, ``/health``,
``/metrics``). The apps hold no state of their own, so both listeners see the same probe,
cache, spool and failure counters.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import httpx
import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

import swarmlib
from gatewayd import page
from gatewayd.auth import KEY_PARAMS, AdminAuth, Outcome
from gatewayd.cache import Entry, FetchFailed, TTLCache
from gatewayd.config import MAX_BODY_BYTES, GatewayConfig
from gatewayd.forwarded import TrustedProxies
from gatewayd.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gatewayd.metrics import Metrics
from gatewayd.probe import Probe, ProbeState
from gatewayd.push import QueueHistory
from gatewayd.sanitize import LeakRefused, Sanitizer
from gatewayd.spool import Offload, Replayer, Spool, SpoolFull, SpoolItem
from gatewayd.upstream import Upstream
from swarmlib import target as swarmtarget
from swarmlib.files import atomic_write
from swarmlib.timefmt import utc_now_iso

log = logging.getLogger("gatewayd.app")

IDENTITIES_KEY = "identities"
PUBLIC_ROUTES = ("build-swarm", "build-history", "infrastructure", "queue", "requests")
# What the requests route asks of swarmd's queue: the unfinished entries only.
UNFINISHED_QUERY = "?state=pending,ready,assigned,building"
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SPOOL_RETRY_AFTER_S = 30
# The build target of a text/plain submission (SPEC section 12), forwarded and spooled with it.
TARGET_HEADER = "X-Swarm-Target"
MAX_TARGET_HEADER = 32 * 1024
UNAUTHORIZED_BODY = {"error": {"code": "unauthorized", "message": "missing or invalid X-Admin-Key"}}


def alias_key_for(cfg: GatewayConfig) -> bytes:
    """The sanitizer's alias key: configured, or kept in ``<spool_dir>/alias.key`` (created
    0600 on first start), so aliases stay the same across restarts."""
    if cfg.alias_key:
        return cfg.alias_key.encode()
    path = Path(cfg.spool_dir) / "alias.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    atomic_write(path, (key.hex() + "\n").encode(), mode=0o600)
    return key


@attrs.define(kw_only=True)
class Gateway:
    """Everything the routes and background tasks share. Built by ``Gateway.create``."""

    cfg: GatewayConfig
    http: httpx.AsyncClient
    sanitizer: Sanitizer
    probe: Probe
    cache: TTLCache[dict[str, Any]]
    spool: Spool
    replayer: Replayer
    auth: AdminAuth
    metrics: Metrics
    upstream: Upstream
    # Who may name the client in Forwarded / X-Forwarded-For (the admin lockout is per client).
    proxies: TrustedProxies = attrs.field(factory=TrustedProxies)
    # Queue depth samples for the status page, fed by the push hub (gatewayd.main).
    queue_history: QueueHistory = attrs.field(factory=QueueHistory)

    @classmethod
    def create(
        cls,
        cfg: GatewayConfig,
        http: httpx.AsyncClient,
        *,
        alias_key: bytes | None = None,
        offload: Offload | None = None,
    ) -> Gateway:
        """``offload`` runs the spool's blocking calls (default: a worker thread)."""
        metrics = Metrics()

        def probe_changed(st: ProbeState) -> None:
            metrics.orchestrator_up.set(1 if st.up else 0)
            metrics.probe_failures.set(st.consecutive_failures)

        probe = Probe(cfg.probe_failures, on_change=probe_changed)
        sanitizer = Sanitizer(
            cfg.identity_hosts,
            cfg.identity_networks,
            alias_key if alias_key is not None else alias_key_for(cfg),
            secrets=[*cfg.admin_keys, cfg.control_token, cfg.drone_token, cfg.alias_key],
        )
        cache: TTLCache[dict[str, Any]] = TTLCache(
            cfg.cache_ttl_s,
            on_hit=lambda k: metrics.cache_hits.labels(route=k).inc(),
            on_miss=lambda k: metrics.cache_misses.labels(route=k).inc(),
        )
        spool = Spool(cfg.spool_dir, max_requests=cfg.spool_max_requests,
                      max_bytes=cfg.spool_max_bytes)
        upstream = Upstream(http, cfg.orchestrator, control_token=cfg.control_token,
                            probe=probe, metrics=metrics, timeout_s=cfg.request_timeout_s)

        def spool_changed(s: Spool) -> None:
            metrics.spool_depth.set(s.depth)
            metrics.spool_bytes.set(s.size)

        async def forward(item: SpoolItem) -> tuple[int, bytes] | None:
            resp = await upstream.request(
                "POST", "/api/queue", body=item.body,
                headers=submit_headers(item.content_type, item.request_id, item.target),
            )
            if resp is None:
                return None
            if 400 <= resp.status_code < 500:
                metrics.spool_dead.inc()
            return resp.status_code, resp.content

        replayer = Replayer(spool, forward, probe.wait_up, on_change=spool_changed,
                            offload=offload)
        spool_changed(spool)
        probe_changed(probe.st)
        auth = AdminAuth(cfg.admin_keys, max_failures=cfg.auth_max_failures,
                         window_s=cfg.auth_window_s, lockout_s=cfg.auth_lockout_s)
        return cls(cfg=cfg, http=http, sanitizer=sanitizer, probe=probe, cache=cache,
                   spool=spool, replayer=replayer, auth=auth, metrics=metrics, upstream=upstream,
                   proxies=cfg.proxies())

    # -- public data ----------------------------------------------------------------------------

    async def fetch_public(self, route: str) -> dict[str, Any]:
        """Checkpoint. Fetch a public route's data from swarmd and sanitize it.

        Raises UpstreamError or LeakRefused; returns only sanitized data (what the cache keeps).
        """
        up = self.upstream
        s = self.sanitizer
        # Every route's payload is built only after the sanitizer has learned swarmd's current
        # host names and addresses (cached and single-flight like a route of its own).
        await self.cache.get(IDENTITIES_KEY, self._learn_identities, utc_now_iso)
        if route == "build-swarm":
            status = await up.get_json("/api/status")
            drones = await up.get_json("/api/drones")
            return s.build_swarm(status, drones, orchestrator_up=True)
        if route == "build-history":
            drones = await up.get_json("/api/drones")
            builds = await up.get_json("/api/builds")
            return s.build_history(builds, drones)
        if route == "infrastructure":
            status = await up.get_json("/api/status")
            return s.infrastructure(status, orchestrator_up=True,
                                    gateway_version=swarmlib.__version__,
                                    binhost_url=self.cfg.public_binhost_url)
        if route == "queue":
            queue = await up.get_json("/api/queue")
            return s.queue(queue)
        if route == "requests":
            requests = await up.get_json("/api/requests")
            queue = await up.get_json("/api/queue" + UNFINISHED_QUERY)
            drones = await up.get_json("/api/drones")
            return s.requests(requests, queue, drones)
        raise KeyError(route)

    async def _learn_identities(self) -> dict[str, Any]:
        """Checkpoint. Teach the sanitizer swarmd's host names and addresses; caches nothing
        secret (the entry is an empty marker)."""
        self.sanitizer.learn_status(await self.upstream.get_json("/api/status"))
        self.sanitizer.learn_drones(await self.upstream.get_json("/api/drones"))
        return {}

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "version": swarmlib.__version__,
            "orchestrator": self.probe.st.health(),
            "spool_depth": self.spool.depth,
        }


# -- responses ------------------------------------------------------------------------------------


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(doc, separators=(",", ":")), status=status,
                    mimetype="application/json", headers=headers)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def envelope(status: str, timestamp: str, data: Any, http_status: int = 200,
             error: dict[str, str] | None = None) -> Response:
    doc: dict[str, Any] = {"status": status, "timestamp": timestamp, "data": data}
    if error is not None:
        doc["error"] = error
    return json_response(doc, http_status)


def with_orchestrator_state(route: str, data: dict[str, Any], up: bool) -> dict[str, Any]:
    """The cached data with the orchestrator's current state written in (both are public)."""
    word = "up" if up else "down"
    if route == "build-swarm":
        return {**data, "orchestrator_status": word}
    if route == "infrastructure" and isinstance(data.get("orchestrator"), dict):
        return {**data, "orchestrator": {**data["orchestrator"], "status": word}}
    return data


def _client_addr(gw: Gateway) -> str:
    """The client of this request: the TCP peer, or behind a trusted reverse proxy the address
    the proxy reports (gatewayd.forwarded)."""
    return gw.proxies.client(request.remote_addr or "unknown",
                             forwarded=request.headers.getlist("Forwarded"),
                             x_forwarded_for=request.headers.getlist("X-Forwarded-For"))


# -- the apps -------------------------------------------------------------------------------------


def create_app(gw: Gateway, *, public: bool = True) -> QuartTrio:
    """The Quart-Trio app of one listener: ``public=True`` for 8090, False for 8100."""
    # static_folder=None: Quart's own /static route is off; the page's files are served by
    # ``static_response`` (ETag from the content, read once at start).
    app = QuartTrio("gatewayd.public" if public else "gatewayd.admin", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["JSON_SORT_KEYS"] = False

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.code or 500, "bad_request" if (exc.code or 500) < 500 else "error")
        message = {
            404: "no such endpoint",
            405: "method not allowed on this endpoint",
            413: f"request body over the limit of {MAX_BODY_BYTES} bytes",
        }.get(exc.code or 500, exc.name)
        return error_response(exc.code or 500, code, message)

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception) -> Response:
        # Never echo the exception: its text may hold real names or addresses.
        log.error("unhandled error in %s (%s)", request.path, type(exc).__name__)
        return error_response(500, "internal", "internal error; see the gateway's log")

    @app.after_request
    async def no_store(resp: Response) -> Response:
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    @app.get("/health")
    async def health() -> Response:
        return json_response(gw.health())

    if public:
        _public_routes(app, gw)
    else:
        @app.get("/metrics")
        async def metrics() -> Response:
            return Response(gw.metrics.render(), status=200, content_type=METRICS_CONTENT_TYPE)

    _admin_routes(app, gw)
    return app


def _public_routes(app: QuartTrio, gw: Gateway) -> None:
    @app.get("/api/v1/services/public/<route>")
    async def public_route(route: str) -> Response:
        if route not in PUBLIC_ROUTES:
            return error_response(404, "not_found", "no such public endpoint")
        limit: int | None = None
        if route == "queue" and "limit" in request.args:
            raw = request.args.get("limit", "")
            if not raw.isdigit():
                return error_response(400, "bad_request", "limit: expected a whole number")
            limit = int(raw)
        return await public_view(gw, route, limit)

    @app.get("/api/v1/services/public/queue-history")
    async def queue_history() -> Response:
        got = queue_history_data(gw)
        if got.refused is not None:
            return _refused(got.refused, "queue-history")
        return envelope(got.status, got.timestamp, got.data)

    static_files = page.load_static()

    @app.get("/")
    async def index() -> Response:
        return await status_page(gw)

    @app.get("/static/<name>")
    async def static_file(name: str) -> Response:
        return static_response(static_files, name)

    @app.get("/api/v1/binhost")
    async def binhost() -> Response:
        try:
            data = gw.sanitizer.finish({"url": gw.cfg.public_binhost_url or None})
        except LeakRefused as exc:
            return _refused(exc, "binhost")
        return envelope("ok", utc_now_iso(), data)

    @app.get("/api/v1/services")
    async def discovery() -> Response:
        full = False
        if request.headers.get("X-Admin-Key") is not None:
            denied = _admin_check(gw)
            if denied is not None:
                return denied
            full = True
        elif gw.cfg.drone_token and _bearer_matches(gw.cfg.drone_token):
            full = True
        try:
            data = gw.sanitizer.discovery(
                orchestrator_url=gw.cfg.orchestrator,
                orchestrator_up=gw.probe.up,
                binhost_url=gw.cfg.public_binhost_url,
                gateway_version=swarmlib.__version__,
                full=full,
            )
        except LeakRefused as exc:
            return _refused(exc, "services")
        return envelope("ok" if gw.probe.up else "degraded", utc_now_iso(), data)


def _bearer_matches(token: str) -> bool:
    import hmac

    got = request.headers.get("Authorization", "")
    if not got.lower().startswith("bearer "):
        return False
    return hmac.compare_digest(got[7:].strip().encode(), token.encode())


def _refused(exc: LeakRefused, route: str) -> Response:
    # exc names the field and the kind of leak, never the value: safe to log.
    log.error("sanitizer refused the %s payload: %s", route, exc)
    return error_response(500, "sanitizer_refused",
                          "the public payload failed the leak check and was not sent")


@attrs.frozen(kw_only=True)
class PublicData:
    """One public route's answer before it is written: envelope status, time and data (None
    before any data exists), or the leak check's refusal."""

    status: str
    timestamp: str
    data: dict[str, Any] | None
    refused: LeakRefused | None = None


async def public_data(gw: Gateway, route: str) -> PublicData:
    """Checkpoint. One public route: fresh or cached data, or the last data while swarmd is
    down (``degraded``), or no data (``error``) before any data exists."""
    entry: Entry[dict[str, Any]] | None = None
    fresh = False
    if gw.probe.up:
        try:
            entry = await gw.cache.get(route, lambda: gw.fetch_public(route), utc_now_iso)
            fresh = True
        except FetchFailed as exc:
            if isinstance(exc.cause, LeakRefused):
                gw.metrics.sanitizer_refusals.inc()
                return PublicData(status="error", timestamp=utc_now_iso(), data=None,
                                  refused=exc.cause)
            entry = gw.cache.peek(route)
    else:
        entry = gw.cache.peek(route)
    if entry is None:
        return PublicData(status="error", timestamp=utc_now_iso(), data=None)
    up = fresh and gw.probe.up
    return PublicData(status="ok" if up else "degraded", timestamp=entry.wall,
                      data=with_orchestrator_state(route, entry.value, up))


async def public_view(gw: Gateway, route: str, limit: int | None = None) -> Response:
    """Checkpoint. One public route as a response (see ``public_data``); ``limit`` cuts the
    queue's package list (counts, ``queued`` and ``waiting`` still cover all of it)."""
    got = await public_data(gw, route)
    if got.refused is not None:
        return _refused(got.refused, route)
    if got.data is None:
        return envelope(
            "error", got.timestamp, None, 503,
            error={"code": "orchestrator_unavailable",
                   "message": "no data yet: the orchestrator is down or unreachable"},
        )
    data = got.data
    if limit is not None and isinstance(data.get("packages"), list):
        data = {**data, "packages": data["packages"][:limit]}
    return envelope(got.status, got.timestamp, data)


def queue_history_data(gw: Gateway) -> PublicData:
    """The gateway's own ring of queue depth samples (no call to swarmd)."""
    try:
        data = gw.sanitizer.queue_history(gw.queue_history.recent())
    except LeakRefused as exc:
        return PublicData(status="error", timestamp=utc_now_iso(), data=None, refused=exc)
    return PublicData(status="ok" if gw.probe.up else "degraded", timestamp=utc_now_iso(),
                      data=data)


async def status_page(gw: Gateway) -> Response:
    """Checkpoint. ``GET /``: the status page, built from the public payloads only."""
    got: dict[str, PublicData] = {}

    async def one(route: str) -> None:
        got[route] = await public_data(gw, route)

    # Concurrently: after a cache expiry the routes' fetches from swarmd overlap.
    async with trio.open_nursery() as nursery:
        for route in ("build-swarm", "infrastructure", "queue", "build-history", "requests"):
            nursery.start_soon(one, route)
    got["queue-history"] = queue_history_data(gw)
    for route, pd in got.items():
        if pd.refused is not None:
            log.error("sanitizer refused the %s payload for the page: %s", route, pd.refused)

    def section(route: str) -> page.Section:
        pd = got[route]
        return page.Section(status=pd.status, timestamp=pd.timestamp, data=pd.data)

    doc = page.render(page.PageView(
        swarm=section("build-swarm"),
        infrastructure=section("infrastructure"),
        queue=section("queue"),
        history=section("build-history"),
        queue_history=section("queue-history"),
        requests=section("requests"),
        orchestrator_up=gw.probe.up,
        now=datetime.now(UTC),
    ))
    return Response(doc, status=200, content_type="text/html; charset=utf-8",
                    headers=page.PAGE_HEADERS)


def static_response(files: dict[str, page.StaticFile], name: str) -> Response:
    """A file of ``gatewayd/static`` with its ETag and Last-Modified (304 when unchanged)."""
    f = files.get(name)
    if f is None:
        return error_response(404, "not_found", "no such file")
    headers = {"ETag": f.etag, "Last-Modified": f.last_modified,
               "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if page.etag_matches(request.headers.get("If-None-Match"), f.etag):
        return Response(b"", status=304, headers=headers)
    return Response(f.body, status=200, content_type=f.content_type, headers=headers)


# -- admin ----------------------------------------------------------------------------------------


def _admin_check(gw: Gateway) -> Response | None:
    """None if the caller may use the admin API, else the refusal to send."""
    client = _client_addr(gw)
    now = trio.current_time()
    if any(k.lower() in KEY_PARAMS for k in request.args):
        gw.metrics.admin_auth_failures.labels(reason="query_string").inc()
        locked = gw.auth.record_failure(client, now)
        if locked:
            return error_response(429, "too_many_failures",
                                  "too many failed admin calls from this address",
                                  {"Retry-After": str(int(gw.auth.lockout_s))})
        return error_response(400, "key_in_query",
                              "admin keys are never accepted in a query string; send the "
                              "X-Admin-Key header (and rotate the key you just sent)")
    verdict = gw.auth.check(client, request.headers.get("X-Admin-Key"), now)
    if verdict.ok:
        return None
    if verdict.outcome is Outcome.LOCKED:
        gw.metrics.admin_auth_failures.labels(reason="locked").inc()
        return error_response(429, "too_many_failures",
                              "too many failed admin calls from this address",
                              {"Retry-After": str(verdict.retry_after_s)})
    gw.metrics.admin_auth_failures.labels(reason=verdict.outcome.value).inc()
    return json_response(UNAUTHORIZED_BODY, 401)


def _down_response(gw: Gateway) -> Response:
    return error_response(
        503, "orchestrator_down",
        f"the orchestrator is down ({gw.probe.st.consecutive_failures} consecutive failures, "
        f"last success {gw.probe.st.last_success or 'never'}); retry later",
        {"Retry-After": str(max(1, int(gw.cfg.probe_interval_s)))},
    )


def _unreachable_response(gw: Gateway) -> Response:
    return error_response(
        503, "orchestrator_unreachable",
        "the orchestrator did not answer this call; retry later",
        {"Retry-After": str(max(1, int(gw.cfg.probe_interval_s)))},
    )


def _passthrough(resp: httpx.Response) -> Response:
    headers = {}
    if "retry-after" in resp.headers:
        headers["Retry-After"] = resp.headers["retry-after"]
    return Response(resp.content, status=resp.status_code,
                    content_type=resp.headers.get("content-type", "application/json"),
                    headers=headers)


Handler = Callable[..., Awaitable[Response]]


def _admin_routes(app: QuartTrio, gw: Gateway) -> None:
    async def forward(method: str, path: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Response:
        denied = _admin_check(gw)
        if denied is not None:
            return denied
        if not gw.probe.up:
            return _down_response(gw)
        resp = await gw.upstream.request(method, path, query=request.query_string, body=body,
                                         headers=headers)
        if resp is None:
            return _unreachable_response(gw)
        return _passthrough(resp)

    @app.get("/api/swarm-admin/status")
    async def admin_status() -> Response:
        return await forward("GET", "/api/status")

    @app.get("/api/swarm-admin/drones")
    async def admin_drones() -> Response:
        return await forward("GET", "/api/drones")

    @app.get("/api/swarm-admin/queue")
    async def admin_queue() -> Response:
        return await forward("GET", "/api/queue")

    @app.delete("/api/swarm-admin/queue/<path:item_id>")
    async def admin_cancel(item_id: str) -> Response:
        return await forward("DELETE", f"/api/queue/{quote(item_id, safe='')}")

    @app.post("/api/swarm-admin/drones/<drone_id>/restart")
    async def admin_restart(drone_id: str) -> Response:
        return await forward("POST", f"/api/drones/{quote(drone_id, safe='')}/restart")

    @app.get("/api/swarm-admin/config")
    async def admin_config() -> Response:
        return await forward("GET", "/api/config")

    @app.get("/api/swarm-admin/logs")
    async def admin_logs() -> Response:
        return await forward("GET", "/api/logs")

    @app.post("/api/swarm-admin/queue")
    async def admin_submit() -> Response:
        denied = _admin_check(gw)
        if denied is not None:
            return denied
        return await submit(gw)


async def submit(gw: Gateway) -> Response:
    """Checkpoint. ``POST /api/swarm-admin/queue`` after auth: forward, or spool while swarmd
    is down (or while older spooled requests wait, so that order is kept)."""
    body = await request.get_data(as_text=False)
    assert isinstance(body, bytes)
    content_type = request.headers.get("Content-Type", "application/json")
    mimetype = request.mimetype or "application/json"
    rid = request.headers.get("X-Request-Id")
    target = request.headers.get(TARGET_HEADER)
    if target is not None:
        # Checked here so that a spooled request is not refused by swarmd only at replay,
        # after the client was told 202; forwarded as sent (swarmd normalizes it).
        why = _bad_target(target)
        if why is not None:
            return error_response(400, "bad_request", f"{TARGET_HEADER}: {why}")
    if mimetype == "application/json":
        try:
            doc = json.loads(body or b"null")
        except ValueError:
            return error_response(400, "bad_request", "body is not valid JSON")
        if not isinstance(doc, dict):
            return error_response(400, "bad_request", "body: expected a JSON object")
        if doc.get("request_id") is not None:
            rid = doc["request_id"]
        if rid is None:
            rid = _mint_request_id()
        if not isinstance(rid, str) or not REQUEST_ID_RE.match(rid):
            return error_response(400, "bad_request",
                                  "request_id: expected 1-128 characters of [A-Za-z0-9._:-]")
        if doc.get("request_id") != rid:
            doc["request_id"] = rid
            body = json.dumps(doc).encode()
    elif mimetype == "text/plain":
        rid = rid or _mint_request_id()
        if not REQUEST_ID_RE.match(rid):
            return error_response(400, "bad_request",
                                  "X-Request-Id: expected 1-128 characters of [A-Za-z0-9._:-]")
    else:
        return error_response(415, "unsupported_media_type",
                              "submit text/plain (emerge --pretend output) or application/json")

    if gw.probe.up and gw.spool.depth == 0:
        resp = await gw.upstream.request(
            "POST", "/api/queue", body=body,
            headers=submit_headers(content_type, rid, target),
        )
        if resp is not None and resp.status_code < 500:
            return _passthrough(resp)
        # Not reached, or swarmd broke: the request id makes a later replay safe either way.
    try:
        _, new = await gw.replayer.offload(
            functools.partial(gw.spool.put, rid, content_type, body, target=target))
    except SpoolFull as exc:
        return error_response(503, exc.code, str(exc), {"Retry-After": str(SPOOL_RETRY_AFTER_S)})
    except OSError as exc:
        log.error("spool write failed: %s", exc.strerror)
        return error_response(503, "spool_failed",
                              "the gateway could not store the request durably; retry later",
                              {"Retry-After": str(SPOOL_RETRY_AFTER_S)})
    gw.metrics.spool_depth.set(gw.spool.depth)
    gw.metrics.spool_bytes.set(gw.spool.size)
    gw.replayer.kick()
    log.info("request spooled", extra={"ids": {"request_id": rid, "new": new}})
    return json_response({
        "id": rid,
        "spooled": True,
        "spool_depth": gw.spool.depth,
        "message": "the orchestrator is not reachable now; the gateway holds the request "
                   "durably and forwards it exactly once when the orchestrator is back",
    }, 202)


def submit_headers(content_type: str, rid: str, target: str | None) -> dict[str, str]:
    """The headers of a submission forwarded to swarmd (at once or from the spool)."""
    headers = {"Content-Type": content_type, "X-Request-Id": rid}
    if target is not None:
        headers[TARGET_HEADER] = target
    return headers


def _bad_target(value: str) -> str | None:
    """Why an ``X-Swarm-Target`` header is not a target, or None when it is one."""
    if len(value) > MAX_TARGET_HEADER:
        return f"longer than {MAX_TARGET_HEADER} characters"
    if not value.isascii():
        return "expected ASCII JSON (escape other characters as \\uXXXX)"
    try:
        swarmtarget.normalize(json.loads(value))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        return str(exc)
    return None


def _mint_request_id() -> str:
    return f"gw-{uuid.uuid4().hex}"
