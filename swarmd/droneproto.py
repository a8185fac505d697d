"""The drone protocol (SPEC section 4), independent of the HTTP server that carries it.

Both carriers call ``dispatch``: swarmd's drone lane (``swarmd.front``, the common case: the
keep-alive connections of swarm-drone agents) and the Quart app (everything the lane hands to
the HTTP/1.1 server: chunked bodies, ``Expect``, HTTP/1.0, odd heads, tests' ASGI client). So the
validation, the token rule and every error body exist once.

Bodies are validated at the edge; a bad one gets 400/404/409 with a message naming the field,
and changes nothing.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from swarmd import journal_events as je
from swarmlib.auth import bearer_ok
from swarmlib.errors import BadRequest, SwarmError
from swarmlib.macaddr import normalize_mac
from swarmlib.target import normalize as normalize_target
from swarmlib.target import target_id

if TYPE_CHECKING:
    from collections.abc import Mapping

    from swarmd.droneops import DroneOps
    from swarmd.metrics import Metrics
    from swarmd.service import Orchestrator

ENDPOINTS = ("register", "heartbeat", "lease", "log", "complete")


def route(method: str, path: str) -> tuple[str, str] | None:
    """``(endpoint, id)`` when ``method path`` is a drone protocol call, else None.

    ``/api/drones/register`` -> ("register", ""); ``/api/drones/ID/heartbeat|lease`` and
    ``/api/builds/ID/log|complete`` -> (endpoint, ID).
    """
    if method != "POST":
        return None
    parts = path.split("/")
    # "", "api", "drones"|"builds", x [, endpoint]
    if len(parts) == 4 and parts[1] == "api" and parts[2] == "drones" and parts[3] == "register":
        return "register", ""
    if len(parts) != 5 or parts[1] != "api" or not parts[3]:
        return None
    if parts[2] == "drones" and parts[4] in ("heartbeat", "lease"):
        return parts[4], parts[3]
    if parts[2] == "builds" and parts[4] in ("log", "complete"):
        return parts[4], parts[3]
    return None


def token_ok(expected: str, header: str | None) -> bool:
    """The Bearer token rule of both daemons (swarmlib.auth): open when no token is
    configured, else a constant-time comparison; the scheme is case-insensitive."""
    return bearer_ok(expected, header)


def error_doc(status: int, code: str, message: str, **extra: Any) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"code": code, "message": message, **extra}}).encode()


def num(doc: dict[str, Any], key: str, *, minimum: float | None = None,
        maximum: float | None = None, default: Any = ..., integer: bool = False) -> Any:
    if key not in doc or doc[key] is None:
        if default is ...:
            raise BadRequest(f"body.{key}: required field is missing")
        return default
    v = doc[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or (integer and not isinstance(v, int)):
        raise BadRequest(f"body.{key}: expected {'an integer' if integer else 'a number'}, got {v!r}")
    if minimum is not None and v < minimum:
        raise BadRequest(f"body.{key}: must be >= {minimum}, got {v!r}")
    if maximum is not None and v > maximum:
        raise BadRequest(f"body.{key}: must be <= {maximum}, got {v!r}")
    return v


def string(doc: dict[str, Any], key: str, *, default: Any = ..., maxlen: int = 256) -> Any:
    if key not in doc or doc[key] is None:
        if default is ...:
            raise BadRequest(f"body.{key}: required field is missing")
        return default
    v = doc[key]
    if not isinstance(v, str):
        raise BadRequest(f"body.{key}: expected a string, got {type(v).__name__}")
    if len(v) > maxlen:
        raise BadRequest(f"body.{key}: longer than {maxlen} characters")
    return v


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw or b"null")
    except ValueError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("body: expected a JSON object")
    return doc


async def register(ops: DroneOps, doc: dict[str, Any]) -> dict[str, Any]:
    name = string(doc, "name", maxlen=128)
    if not name.strip():
        raise BadRequest("body.name: must not be empty")
    target = _target(doc)
    body = je.Register(
        ts=0.0, session="",  # both minted by DroneOps.register
        name=name.strip(),
        hostname=string(doc, "hostname", default=""),
        ip=string(doc, "ip", default=""),
        mac=normalize_mac(string(doc, "mac", default="")),
        cores=num(doc, "cores", minimum=1, maximum=4096, integer=True),
        arch=string(doc, "arch", default=""),
        chost=string(doc, "chost", default=""),
        version=string(doc, "version", default=""),
        slots=num(doc, "slots", minimum=1, maximum=256, integer=True, default=1),
        target=target, target_id=target_id(target) if target is not None else "",
    )
    return await ops.register(body)


def _target(doc: dict[str, Any]) -> dict[str, Any] | None:
    raw = doc.get("target")
    if raw is None:
        return None
    try:
        return normalize_target(raw)
    except ValueError as exc:
        raise BadRequest(f"body.{exc}") from None


async def heartbeat(ops: DroneOps, did: str, doc: dict[str, Any]) -> dict[str, Any]:
    session = string(doc, "session")
    status_ = string(doc, "status", default="ready")
    if status_ not in ("ready", "building"):
        raise BadRequest(f"body.status: expected 'ready' or 'building', got {status_!r}")
    load = num(doc, "load", minimum=0, default=0.0)
    builds_ = doc.get("builds", [])
    if not isinstance(builds_, list) or not all(isinstance(b, dict) for b in builds_):
        raise BadRequest("body.builds: expected a list of {build_id, lease, progress}")
    for b in builds_:
        if not isinstance(b.get("build_id"), str) or not isinstance(b.get("lease"), str):
            raise BadRequest("body.builds[]: build_id and lease must be strings")
        p = b.get("progress")
        if p is not None and (isinstance(p, bool) or not isinstance(p, int | float)
                              or not 0 <= p <= 100):
            raise BadRequest("body.builds[].progress: expected a percentage 0-100")
    return await ops.heartbeat(did, session, status_, float(load), builds_,
                               target=_target(doc))


async def lease(ops: DroneOps, did: str, doc: dict[str, Any]) -> dict[str, Any] | None:
    """The leased build, or None when there was no work within ``wait_s`` (HTTP 204)."""
    session = string(doc, "session")
    num(doc, "slots", minimum=1, maximum=256, integer=True, default=1)
    wait_s = float(num(doc, "wait_s", minimum=0, maximum=30, default=30))
    ops.check_session(did, session)
    return await ops.lease(did, session, wait_s)


async def build_log(ops: DroneOps, bid: str, lease_header: str,
                    chunk: bytes) -> dict[str, Any]:
    if not lease_header:
        raise BadRequest("header X-Swarm-Lease is required")
    return {"bytes": await ops.append_log(bid, lease_header, chunk)}


async def complete(ops: DroneOps, bid: str, doc: dict[str, Any],
                   metrics: Metrics | None = None) -> dict[str, Any]:
    lease_ = string(doc, "lease")
    result = string(doc, "result")
    if result not in ("success", "failed", "returned"):
        raise BadRequest(f"body.result: expected success, failed or returned, got {result!r}")
    duration = num(doc, "duration_s", minimum=0, maximum=30 * 86400, default=0.0)
    artifact = doc.get("artifact")
    if result == "success":
        if not isinstance(artifact, dict):
            raise BadRequest("body.artifact: a successful build must report {path, size, sha256}")
        path = artifact.get("path")
        size = artifact.get("size")
        sha = artifact.get("sha256")
        if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
            raise BadRequest("body.artifact.path: expected a relative path under the binhost")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BadRequest("body.artifact.size: expected a byte count")
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise BadRequest("body.artifact.sha256: expected 64 lowercase hex digits")
        artifact = {"path": path, "size": size, "sha256": sha}
    else:
        artifact = None
    err = doc.get("error")
    if err is not None and not isinstance(err, str):
        raise BadRequest("body.error: expected a string or null")
    unbuildable = doc.get("unbuildable", False)
    if not isinstance(unbuildable, bool):
        raise BadRequest("body.unbuildable: expected true or false")
    if unbuildable and result != "returned":
        raise BadRequest("body.unbuildable: only a 'returned' build can be unbuildable")
    needs = doc.get("needs") or []
    if (not isinstance(needs, list) or len(needs) > 256
            or not all(isinstance(n, str) and 0 < len(n) <= 256 for n in needs)):
        raise BadRequest("body.needs: expected a list of at most 256 CPVs")
    atom = doc.get("atom")
    cpv = ops.package_of(bid)
    if atom is not None and cpv is not None and atom not in (cpv, "=" + cpv):
        raise BadRequest(f"body.atom: {atom!r} is not the leased package {cpv}")
    report = je.Complete(
        ts=0.0, build_id=bid, lease=lease_, result=je.Report(result),  # ts: DroneOps stamps it
        duration_s=float(duration), artifact=artifact, error=(err or "")[:4000] or None,
        unbuildable=unbuildable, needs=[n.lstrip("=") for n in needs] if unbuildable else [])
    out = await ops.complete(report)
    if result != "returned" and metrics is not None:
        metrics.build_seconds.labels(result).observe(float(duration))
    return out


async def dispatch(orch: Orchestrator, metrics: Metrics | None, endpoint: str, ident: str,
                   headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
    """One drone protocol call on ``orch.ops``: ``(status, JSON body)``; 204 has an empty
    body.

    ``headers`` has lower-case names. Errors the caller made are answered here; anything
    else propagates (the carrier logs it and answers 500).
    """
    if not token_ok(orch.cfg.drone_token, headers.get("authorization")):
        if metrics is not None:
            metrics.auth_failures.labels("drone").inc()
        return error_doc(401, "unauthorized", "missing or wrong drone token "
                         "(Authorization: Bearer $SWARM_DRONE_TOKEN)")
    ops = orch.ops
    try:
        out: dict[str, Any] | None
        if endpoint == "log":
            out = await build_log(ops, ident, headers.get("x-swarm-lease", ""), body)
        else:
            doc = json_object(body)
            if endpoint == "register":
                out = await register(ops, doc)
            elif endpoint == "heartbeat":
                out = await heartbeat(ops, ident, doc)
            elif endpoint == "lease":
                out = await lease(ops, ident, doc)
                if out is None:
                    return 204, b""
            elif endpoint == "complete":
                out = await complete(ops, ident, doc, metrics)
            else:
                raise ValueError(f"not a drone protocol endpoint: {endpoint!r}")
    except SwarmError as exc:
        return error_doc(exc.status, exc.code, str(exc))
    return 200, json.dumps(out).encode()
