"""build-swarm: the operator CLI.

It talks either to the gateway's admin API (``--gateway URL``: ``/api/swarm-admin/...``, header
``X-Admin-Key`` from ``SWARM_ADMIN_KEY``) or straight to swarmd (``--orchestrator URL``:
``/api/...``, ``Authorization: Bearer $SWARM_CONTROL_TOKEN``). Defaults come from ``--config``,
``$BUILD_SWARM_CONFIG``, ``~/.config/build-swarm/cli.toml`` or ``/etc/build-swarm/cli.toml`` (the
first that exists). Every request is synchronous (httpx) except ``watch``, which runs a small Trio
loop over trio-websocket. Every failure becomes a ``CliError`` carrying its exit code and one
message that says what to do; see ``EXIT_*`` below and docs/CLI.md.

``submit`` sends the target of the machine it runs on (SPEC section 12: read with portage in a
child process by ``swarmlib.target.read_target``) as the ``X-Swarm-Target`` header, so that only
drones with the same build environment build the request; ``--any-target`` sends none.
``binhost`` prints the ``binrepos.conf`` stanza that installs what the swarm built.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TextIO

import attrs
import httpx

from swarmlib import __version__, clirender, emergelog
from swarmlib import target as swarmtarget
from swarmlib.backoff import Backoff
from swarmlib.config import key, load, secret_field
from swarmlib.counts import count_states
from swarmlib.errors import ConfigError, SwarmError

EXIT_OK = 0  # done; or a waited-for request in which every package was built
EXIT_FAILED = 1  # submit --wait: the request finished with failed, blocked or cancelled packages
EXIT_USAGE = 2  # bad command line or configuration
EXIT_CONNECT = 3  # cannot connect to the gateway / orchestrator (or it did not answer in time)
EXIT_AUTH = 4  # the admin key or control token was refused (401/403, or 429 after refusals)
EXIT_REJECTED = 5  # the server rejected the request (other 4xx: bad submission, unknown id, ...)
EXIT_SERVER = 6  # the server failed (5xx) or answered something that is not the API
EXIT_LOCAL = 7  # a local step failed: unreadable input file, emerge --pretend failed
EXIT_INTERRUPTED = 130  # Ctrl-C (except in watch, where Ctrl-C is the normal way out: 0)

DEFAULT_ORCHESTRATOR = "http://127.0.0.1:8080"
# -v: the USE of each package travels with the job; --getbinpkg: what is on a binhost already
# shows as [binary] and is not built again (SPEC section 12).
DEFAULT_EMERGE_ARGV = ["emerge", "-puDNv", "--tree", "--getbinpkg", "--color=n", "@world"]
TARGET_HEADER = "X-Swarm-Target"
# watch: reconnect delays after the event stream broke (swarmlib.backoff: doubling, equal jitter)
WATCH_RETRY_FIRST_S = 1.0
WATCH_RETRY_MAX_S = 15.0
BINREPOS_PATH = "/etc/portage/binrepos.conf/build-swarm.conf"
USER_CONFIG = Path("build-swarm") / "cli.toml"
SYSTEM_CONFIG = Path("/etc/build-swarm/cli.toml")

# Commands the gateway's admin API does not offer (SPEC section 5): they need swarmd itself.
ORCHESTRATOR_ONLY = frozenset({"builds", "build", "packages", "history"})


class CliError(SwarmError):
    """A failure to report: one message for stderr and the exit code."""

    def __init__(self, exit_code: int, message: str) -> None:
        self.exit_code = exit_code
        super().__init__(message)


@attrs.frozen(kw_only=True)
class CliConfig:
    gateway: str = key("", "gateway base URL, e.g. http://10.42.0.199:8090 (admin API)")
    orchestrator: str = key("", "swarmd base URL, e.g. http://10.42.0.201:8080")
    emerge_argv: list[str] = key(DEFAULT_EMERGE_ARGV, "what 'submit --run' runs")
    timeout_s: float = key(30.0, "HTTP timeout in seconds")
    wait_interval_s: float = key(5.0, "how often 'submit --wait' polls")
    admin_key: str = secret_field(env="SWARM_ADMIN_KEY", help="the gateway's admin key")
    control_token: str = secret_field(env="SWARM_CONTROL_TOKEN", help="swarmd's control token")


def find_config(environ: Mapping[str, str]) -> Path | None:
    """The first CLI config that exists: the user's, then the system's."""
    xdg = environ.get("XDG_CONFIG_HOME") or (
        str(Path(environ["HOME"]) / ".config") if environ.get("HOME") else ""
    )
    candidates = [Path(xdg) / USER_CONFIG] if xdg else []
    candidates.append(SYSTEM_CONFIG)
    for p in candidates:
        if p.is_file():
            return p
    return None


def load_config(path: str | None, environ: Mapping[str, str]) -> CliConfig:
    if path is None and not environ.get("BUILD_SWARM_CONFIG"):
        found = find_config(environ)
        path = str(found) if found else None
    argv = ["--config", path] if path else []
    # swarmlib.config refuses a secret written inline in the file (use *_file or the env).
    return load(CliConfig, "cli", "BUILD_SWARM", argv, environ)


@attrs.frozen(kw_only=True)
class Target:
    kind: Literal["gateway", "orchestrator"]
    url: str
    secret: str

    def api(self, path: str) -> str:
        prefix = "/api/swarm-admin/" if self.kind == "gateway" else "/api/"
        return self.url + prefix + path.lstrip("/")

    def headers(self) -> dict[str, str]:
        h = {"User-Agent": f"build-swarm/{__version__}", "Accept": "application/json"}
        if self.secret:
            if self.kind == "gateway":
                h["X-Admin-Key"] = self.secret
            else:
                h["Authorization"] = f"Bearer {self.secret}"
        return h

    @property
    def describe(self) -> str:
        return f"{self.kind} at {self.url}"

    def auth_hint(self) -> str:
        if self.kind == "gateway":
            if not self.secret:
                return (f"gateway at {self.url} refused the request: no admin key given; "
                        f"set SWARM_ADMIN_KEY (or admin_key_file in cli.toml)")
            return f"gateway at {self.url} refused the admin key: check SWARM_ADMIN_KEY"
        if not self.secret:
            return (f"orchestrator at {self.url} refused the request: no control token given; "
                    f"set SWARM_CONTROL_TOKEN (or control_token_file in cli.toml)")
        return f"orchestrator at {self.url} refused the control token: check SWARM_CONTROL_TOKEN"

    def unreachable(self) -> str:
        daemon = "gatewayd" if self.kind == "gateway" else "swarmd"
        return f"cannot reach {self.describe}: is {daemon} running?"


def _check_url(url: str, what: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise CliError(EXIT_USAGE, f"{what}: expected an http:// or https:// URL, got {url!r}")
    return url.rstrip("/")


def resolve_target(
    *, gateway: str | None, orchestrator: str | None, cfg: CliConfig, command: str
) -> Target:
    """Flags win over the config file; commands only swarmd offers prefer its URL."""
    needs_orch = command in ORCHESTRATOR_ONLY
    if orchestrator:
        kind, url = "orchestrator", _check_url(orchestrator, "--orchestrator")
    elif gateway:
        kind, url = "gateway", _check_url(gateway, "--gateway")
    elif needs_orch and cfg.orchestrator:
        kind, url = "orchestrator", _check_url(cfg.orchestrator, "orchestrator (cli.toml)")
    elif cfg.gateway:
        kind, url = "gateway", _check_url(cfg.gateway, "gateway (cli.toml)")
    elif cfg.orchestrator:
        kind, url = "orchestrator", _check_url(cfg.orchestrator, "orchestrator (cli.toml)")
    else:
        kind, url = "orchestrator", DEFAULT_ORCHESTRATOR
    if kind == "gateway" and needs_orch:
        what = "history import" if command == "history" else f"'{command}'"
        raise CliError(
            EXIT_USAGE,
            f"{what} needs the orchestrator: the gateway's admin API has no such route; "
            f"use --orchestrator URL (or set orchestrator in cli.toml)",
        )
    if kind == "gateway":
        # SWARM_ADMIN_KEY may be the gateway's rotation list; the client sends the first key.
        secret = next((k.strip() for k in cfg.admin_key.split(",") if k.strip()), "")
        return Target(kind="gateway", url=url, secret=secret)
    return Target(kind="orchestrator", url=url, secret=cfg.control_token.strip())


def error_message(doc: Any, fallback: str) -> str:
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if doc.get("message"):
            return str(doc["message"])
    return fallback


def unwrap(doc: Any) -> Any:
    """The payload of a gateway envelope (``{"status", "timestamp", "data"}``), else the doc."""
    if isinstance(doc, dict) and {"status", "timestamp", "data"} <= set(doc):
        return doc["data"]
    return doc


class Api:
    """A synchronous client of one target; every failure is a CliError."""

    def __init__(self, target: Target, *, timeout: float, transport: httpx.BaseTransport | None = None):
        self.target = target
        self.timeout = timeout
        self.client = httpx.Client(timeout=timeout, transport=transport, headers=target.headers())

    def close(self) -> None:
        self.client.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json_body: Any = None,
        text: str | None = None,
        headers: Mapping[str, str] | None = None,
        public: bool = False,
    ) -> Any:
        """One request. ``public``: ``path`` is a public route of the server itself (not under
        the admin/API prefix), sent without the admin key or control token."""
        url = self.target.url + "/" + path.lstrip("/") if public else self.target.api(path)
        kw: dict[str, Any] = {"params": dict(params) if params else None}
        extra = dict(headers or {})
        if json_body is not None:
            kw["json"] = json_body
        if text is not None:
            kw["content"] = text.encode()
            extra["Content-Type"] = "text/plain; charset=utf-8"
        if extra:
            kw["headers"] = extra
        try:
            req = self.client.build_request(method, url, **kw)
            if public:
                req.headers.pop("X-Admin-Key", None)
                req.headers.pop("Authorization", None)
            r = self.client.send(req)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise CliError(EXIT_CONNECT, self.target.unreachable()) from None
        except httpx.TimeoutException:
            raise CliError(
                EXIT_CONNECT,
                f"{self.target.describe} did not answer within {self.timeout:g}s "
                f"(raise timeout_s in cli.toml or --timeout)",
            ) from None
        except httpx.TransportError as exc:
            raise CliError(EXIT_CONNECT, f"connection to {self.target.describe} failed: {exc}") from None
        return self._reply(method, path, r, url)

    def _reply(self, method: str, path: str, r: httpx.Response, url: str) -> Any:
        try:
            doc = r.json() if r.content else None
        except ValueError:
            doc = None
        code = r.status_code
        if code < 300:
            if doc is None and r.content:
                raise CliError(
                    EXIT_SERVER,
                    f"{self.target.describe} answered {method} {path} with something that is "
                    f"not JSON: is that URL really the {self.target.kind}?",
                )
            return doc if doc is not None else {}
        msg = error_message(doc, r.text.strip()[:200] or r.reason_phrase)
        if code in (401, 403):
            raise CliError(EXIT_AUTH, self.target.auth_hint())
        if code == 429:
            raise CliError(
                EXIT_AUTH,
                f"{self.target.describe} is refusing this client after repeated failed keys: "
                f"wait a minute, then check SWARM_ADMIN_KEY",
            )
        if code == 400 and isinstance(doc, dict) and isinstance(doc.get("error"), dict) \
                and doc["error"].get("lines"):
            raise CliError(EXIT_REJECTED, clirender.bad_lines(doc["error"]))
        if code == 404 and doc is None:
            raise CliError(
                EXIT_REJECTED,
                f"{self.target.describe} has no {method} {url} "
                f"(is that URL the {self.target.kind}, and a build-swarm of this version?)",
            )
        if code < 500:
            raise CliError(EXIT_REJECTED, f"{self.target.describe} rejected {method} {path} "
                                          f"({code}): {msg}")
        raise CliError(EXIT_SERVER, f"{self.target.describe} failed on {method} {path} "
                                    f"({code}): {msg}")


@attrs.define
class Ctx:
    args: argparse.Namespace
    cfg: CliConfig
    api: Api
    out: TextIO
    err: TextIO
    stdin: TextIO
    json: bool
    sleep: Callable[[float], None] = time.sleep
    environ: Mapping[str, str] = attrs.field(factory=lambda: os.environ)

    @property
    def target(self) -> Target:
        return self.api.target

    def emit(self, doc: Any, render: Callable[[Any], str]) -> None:
        if self.json:
            self.out.write(json.dumps(doc, indent=2) + "\n")
        else:
            self.out.write(render(unwrap(doc)) + "\n")


# -- commands ---------------------------------------------------------------------------------


def cmd_status(ctx: Ctx) -> int:
    ctx.emit(ctx.api.call("GET", "status"), lambda d: clirender.status(d) +
             f"\n(via {ctx.target.describe})")
    return EXIT_OK


def cmd_drones(ctx: Ctx) -> int:
    ctx.emit(ctx.api.call("GET", "drones"), clirender.drones)
    return EXIT_OK


def cmd_queue(ctx: Ctx) -> int:
    params = {"state": ctx.args.state} if ctx.args.state else None
    ctx.emit(ctx.api.call("GET", "queue", params=params), clirender.queue)
    return EXIT_OK


def cmd_builds(ctx: Ctx) -> int:
    ctx.emit(ctx.api.call("GET", "builds", params={"limit": ctx.args.limit}), clirender.builds)
    return EXIT_OK


def cmd_build(ctx: Ctx) -> int:
    ctx.emit(ctx.api.call("GET", f"builds/{ctx.args.id}", params={"tail": ctx.args.tail}),
             clirender.build)
    return EXIT_OK


def cmd_packages(ctx: Ctx) -> int:
    ctx.emit(ctx.api.call("GET", "packages"), clirender.packages)
    return EXIT_OK


def cmd_logs(ctx: Ctx) -> int:
    ctx.emit(ctx.api.call("GET", "logs", params={"limit": ctx.args.limit}), clirender.logs)
    return EXIT_OK


def cmd_config(ctx: Ctx) -> int:
    ctx.emit(ctx.api.call("GET", "config"), clirender.config)
    return EXIT_OK


def cmd_cancel(ctx: Ctx) -> int:
    doc = ctx.api.call("DELETE", f"queue/{ctx.args.id}")

    def render(d: Any) -> str:
        c, b = d.get("cancelled") or [], d.get("blocked") or []
        return (f"{d.get('id', ctx.args.id)}: cancelled {len(c)} entr{'y' if len(c) == 1 else 'ies'}"
                + (f" ({', '.join(c)})" if c else "")
                + (f"; blocked {len(b)} dependent ({', '.join(b)})" if b else ""))

    ctx.emit(doc, render)
    return EXIT_OK


def cmd_restart(ctx: Ctx) -> int:
    wanted = ctx.args.drone
    listing = unwrap(ctx.api.call("GET", "drones"))
    known = listing.get("drones", []) if isinstance(listing, dict) else []
    match = [d for d in known if wanted in (d.get("id"), d.get("name"))]
    if not match:
        names = ", ".join(sorted(str(d.get("name")) for d in known)) or "none registered"
        raise CliError(EXIT_REJECTED, f"no drone with id or name {wanted!r} (known: {names})")
    drone = match[0]
    doc = ctx.api.call("POST", f"drones/{drone['id']}/restart")
    ctx.emit(doc, lambda d: f"restart queued for {drone.get('name')} ({drone['id']}); "
                            f"the agent picks it up with its next heartbeat")
    return EXIT_OK


def _read_submission(ctx: Ctx) -> str:
    a = ctx.args
    if a.run:
        argv = shlex.split(a.emerge_argv) if a.emerge_argv else list(ctx.cfg.emerge_argv)
        if not argv:
            raise CliError(EXIT_USAGE, "--emerge-argv is empty")
        ctx.err.write(f"running {shlex.join(argv)} ...\n")
        # NO_COLOR: --color=n still lets some escapes through (SPEC section 12).
        env = {**os.environ, **ctx.environ, "NO_COLOR": "1"}
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, check=False, env=env)
        except OSError as exc:
            raise CliError(EXIT_LOCAL, f"cannot run {argv[0]}: {exc.strerror}") from None
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise CliError(EXIT_LOCAL, f"{shlex.join(argv)} exited with status "
                                       f"{proc.returncode}; nothing submitted:\n{tail}")
        return proc.stdout
    if a.file in (None, "-"):
        if ctx.stdin.isatty():
            ctx.err.write("reading emerge --pretend output from stdin (end with Ctrl-D)\n")
        return ctx.stdin.read()
    try:
        return Path(a.file).read_text(errors="replace")
    except OSError as exc:
        raise CliError(EXIT_LOCAL, f"cannot read {a.file}: {exc.strerror}") from None


def read_local_target(ctx: Ctx) -> dict[str, Any]:
    """The target of this machine (portage in a child process); CliError when unreadable."""
    try:
        found = swarmtarget.read_target(dict(ctx.environ))
    except ConfigError as exc:
        raise CliError(EXIT_LOCAL, f"{exc}; use --any-target to build for any drone") from None
    ctx.err.write(f"target {swarmtarget.target_id(found)}: {swarmtarget.describe(found)}\n")
    return found


def target_header(found: Mapping[str, Any]) -> str:
    """The ``X-Swarm-Target`` value: compact JSON, ASCII only (non-ASCII is escaped)."""
    return json.dumps(found, separators=(",", ":"), sort_keys=True)


def cmd_submit(ctx: Ctx) -> int:
    a = ctx.args
    if a.run and a.file not in (None, "-"):
        raise CliError(EXIT_USAGE, "give either FILE or --run, not both")
    headers: dict[str, str] = {}
    if not a.any_target:
        # Before emerge runs: a machine whose target cannot be read learns it at once.
        headers[TARGET_HEADER] = target_header(read_local_target(ctx))
    text = _read_submission(ctx)
    if not text.strip():
        raise CliError(EXIT_USAGE, "nothing to submit: the emerge output is empty")
    params: dict[str, str | int] = {}
    if ctx.args.request_id:
        params["request_id"] = ctx.args.request_id
    if ctx.args.priority is not None:
        params["priority"] = ctx.args.priority
    doc = ctx.api.call("POST", "queue", params=params, text=text, headers=headers)
    reply = unwrap(doc)
    if not ctx.args.wait:
        ctx.emit(doc, clirender.submitted)
        return EXIT_OK
    if not ctx.json:
        ctx.out.write(clirender.submitted(reply) + "\n")
        ctx.out.flush()
    rid = str(reply.get("id"))
    nothing_to_do = int(reply.get("queued") or 0) + int(reply.get("merged") or 0) == 0
    final, code = wait_request(ctx, rid, set(reply.get("entries") or []), nothing_to_do)
    if ctx.json:
        ctx.out.write(json.dumps({"submit": doc, "final": final}, indent=2) + "\n")
    return code


def _poll(ctx: Ctx, rid: str, entries: set[str]) -> tuple[dict[str, int], Any, bool, Any]:
    """One look at the request: (counts by state, total, finished, raw doc)."""
    if ctx.target.kind == "orchestrator":
        doc = unwrap(ctx.api.call("GET", f"requests/{rid}"))
        counts = {k: int(v) for k, v in (doc.get("counts") or {}).items() if v}
        return counts, doc.get("packages"), doc.get("state") == "complete", doc
    # The gateway has no request route: follow the request's entries in the admin queue.
    doc = unwrap(ctx.api.call("GET", "queue", params={"request": rid}))
    mine = [e for e in doc.get("entries", [])
            if rid in (e.get("requests") or []) or e.get("id") in entries]
    counts = count_states(mine)
    finished = bool(mine) and all(e.get("state") in clirender.FINAL_STATES for e in mine)
    return counts, len(mine), finished, {"id": rid, "entries": mine, "counts": counts}


def wait_request(ctx: Ctx, rid: str, entries: set[str], nothing_to_do: bool) -> tuple[Any, int]:
    """Poll until the request is complete; returns (final doc, exit code)."""
    tty = ctx.err.isatty()
    last = ""
    counts: dict[str, int] = {}
    doc: Any = {"id": rid, "counts": {}}
    while not nothing_to_do:
        try:
            counts, total, finished, doc = _poll(ctx, rid, entries)
        except CliError as exc:
            if exc.exit_code not in (EXIT_CONNECT, EXIT_SERVER):
                raise
            line = f"{rid}: {exc} (still waiting)"
        else:
            line = clirender.request_progress(rid, counts, total)
            if finished:
                break
        if tty:
            ctx.err.write("\r\x1b[K" + line)
            ctx.err.flush()
        elif line != last:
            ctx.err.write(line + "\n")
            ctx.err.flush()
        last = line
        ctx.sleep(ctx.args.interval or ctx.cfg.wait_interval_s)
    if tty and last:
        ctx.err.write("\r\x1b[K")
    bad = sum(counts.get(k, 0) for k in ("failed", "blocked", "cancelled"))
    if not ctx.json:
        summary = clirender.counts_line(counts) or "nothing to build"
        verdict = "finished with failures" if bad else "complete"
        ctx.out.write(f"request {rid} {verdict}: {summary}\n")
    return doc, (EXIT_FAILED if bad else EXIT_OK)


def _check_binhost_url(url: str, where: str) -> str:
    u = url.strip()
    if "://" not in u or any(c.isspace() or ord(c) < 32 for c in u):
        raise CliError(EXIT_REJECTED if where != "--url" else EXIT_USAGE,
                       f"{where}: expected a binhost URL such as https://host/packages/, "
                       f"got {url!r}")
    return u


def cmd_binhost(ctx: Ctx) -> int:
    if ctx.args.url:
        url = _check_binhost_url(ctx.args.url, "--url")
    elif ctx.target.kind == "gateway":
        data = unwrap(ctx.api.call("GET", "/api/v1/binhost", public=True))
        raw = data.get("url") if isinstance(data, dict) else None
        if not raw:
            raise CliError(EXIT_REJECTED, f"{ctx.target.describe} has no binhost URL "
                                          f"(public_binhost_url is not set); give --url URL")
        url = _check_binhost_url(str(raw), f"{ctx.target.describe} binhost URL")
    else:
        raise CliError(EXIT_USAGE, "the orchestrator does not know the binhost's public URL: "
                                   "use --gateway URL, or give it with --url URL")
    stanza = clirender.binhost_stanza(url, path=BINREPOS_PATH)
    if ctx.json:
        ctx.out.write(json.dumps({"url": url, "stanza": stanza}, indent=2) + "\n")
    else:
        ctx.out.write(stanza)
    return EXIT_OK


def cmd_history(ctx: Ctx | None, args: argparse.Namespace, out: TextIO) -> int:
    path = Path(args.emerge_log)
    try:
        with path.open(errors="replace") as fh:
            hist = emergelog.parse(fh)
    except OSError as exc:
        raise CliError(EXIT_LOCAL, f"cannot read {path}: {exc.strerror}") from None
    per_cp = hist.per_cp()
    body = {"packages": per_cp}
    stats = {"builds": len(hist.builds), "binary": hist.binary, "unfinished": hist.unfinished}
    recorded = None
    if per_cp and not args.dry_run:
        assert ctx is not None
        reply = unwrap(ctx.api.call("POST", "history", json_body=body))
        recorded = reply.get("recorded") if isinstance(reply, dict) else None
    if args.json:
        out.write(json.dumps({**body, **stats, "recorded": recorded,
                              "dry_run": args.dry_run}, indent=2) + "\n")
    elif not per_cp:
        out.write(f"no completed source builds in {path}; nothing sent\n")
    else:
        out.write(clirender.history_import(len(per_cp), hist.longest(10), dry_run=args.dry_run,
                                           recorded=recorded, **stats) + "\n")
    return EXIT_OK


# -- watch ------------------------------------------------------------------------------------


def _ws_url(target: Target) -> str:
    base = "ws" + target.url.removeprefix("http")
    return base + ("/ws/build-status" if target.kind == "gateway" else "/api/events")


def _seed_view(ctx: Ctx, view: clirender.WatchView, now: float) -> None:
    """swarmd's stream starts with changes only: fill the view from its REST state first."""
    drones = unwrap(ctx.api.call("GET", "drones")).get("drones", [])
    for d in drones:
        builds = d.get("current_builds") or []
        view.apply({"type": "drone_status", "data": {
            "name": d.get("name"), "cores": d.get("cores"), "status": d.get("status"),
            "current_package": builds[0].get("cpv") if builds else None}}, now=now)
        for b in builds:
            view.apply({"type": "build_progress", "data": {
                "build_id": b.get("build_id"), "package": b.get("cpv"), "drone": d.get("name"),
                "phase": "progress", "percent": b.get("progress")}}, now=now)
    counts = unwrap(ctx.api.call("GET", "status")).get("counts") or {}
    view.queue = {
        "pending": counts.get("pending", 0) + counts.get("ready", 0),
        "building": counts.get("assigned", 0) + counts.get("building", 0),
        "completed": counts.get("built", 0),
        "failed": counts.get("failed", 0) + counts.get("blocked", 0),
    }


def cmd_watch(ctx: Ctx) -> int:
    import trio

    view = clirender.WatchView()
    if ctx.target.kind == "orchestrator":
        _seed_view(ctx, view, time.monotonic())
    tty = ctx.out.isatty() and not ctx.json
    try:
        trio.run(_watch, ctx, view, tty)
    except KeyboardInterrupt:
        pass
    except BaseExceptionGroup as group:
        # The nursery wraps what its body raised; Ctrl-C is the normal way out of watch.
        leaves = list(_leaves(group))
        for exc in leaves:
            if isinstance(exc, CliError):
                raise exc from None
        if not all(isinstance(exc, KeyboardInterrupt) for exc in leaves):
            raise
    finally:
        if tty:
            ctx.out.write("\x1b[?25h\n")
            ctx.out.flush()
    return EXIT_OK


def _leaves(group: BaseExceptionGroup[BaseException]) -> Any:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


async def _watch(ctx: Ctx, view: clirender.WatchView, tty: bool) -> None:
    import trio
    import trio_websocket

    target = ctx.target
    url = _ws_url(target)
    headers = []
    if target.kind == "orchestrator" and target.secret:
        headers.append((b"Authorization", f"Bearer {target.secret}".encode()))
    seq: int | None = None
    connected_once = False
    backoff = Backoff(WATCH_RETRY_FIRST_S, WATCH_RETRY_MAX_S)
    title = f"build-swarm watch: {target.describe} (Ctrl-C to quit)"

    def draw() -> None:
        ctx.out.write("\x1b[H\x1b[2J\x1b[?25l" + view.render(now=time.monotonic(), title=title)
                      + "\n")
        ctx.out.flush()

    async def redraw_every_second() -> None:
        while True:
            draw()
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        if tty:
            nursery.start_soon(redraw_every_second)
        while True:
            u = url + (f"?since={seq}" if seq is not None and target.kind == "orchestrator" else "")
            try:
                async with trio_websocket.open_websocket_url(u, extra_headers=headers) as ws:
                    connected_once = True
                    backoff.reset()
                    if not tty:
                        ctx.out.write(f"connected to {url}\n")
                        ctx.out.flush()
                    while True:
                        raw = await ws.get_message()
                        try:
                            event = json.loads(raw)
                        except ValueError:
                            continue
                        if not isinstance(event, dict):
                            continue
                        if isinstance(event.get("seq"), int):
                            seq = event["seq"]
                        if ctx.json:
                            ctx.out.write(json.dumps(event) + "\n")
                            ctx.out.flush()
                            continue
                        line = view.apply(event, now=time.monotonic())
                        if tty:
                            draw()
                        elif line:
                            ctx.out.write(line + "\n")
                            ctx.out.flush()
            except trio_websocket.ConnectionRejected as exc:
                if exc.status_code in (401, 403):
                    raise CliError(EXIT_AUTH, target.auth_hint()) from None
                if not connected_once:
                    raise CliError(EXIT_REJECTED, f"{target.describe} refused the event stream "
                                                  f"at {url} ({exc.status_code})") from None
            except (OSError, trio_websocket.HandshakeError) as exc:
                if not connected_once:
                    raise CliError(EXIT_CONNECT, target.unreachable()) from exc
            except trio_websocket.ConnectionClosed:
                pass
            delay = backoff.next()
            if not tty:
                ctx.out.write(f"connection to {url} lost; reconnecting in {delay:.1f}s\n")
                ctx.out.flush()
            await trio.sleep(delay)


# -- argument parsing and main ----------------------------------------------------------------


def _global_options(p: argparse.ArgumentParser, *, after: bool) -> None:
    """--gateway/--orchestrator/--json/--config/--timeout. Before the command they have their
    defaults; after it (``after``) they are SUPPRESSed when absent, so a value given before the
    command is not overwritten: `build-swarm status --json` == `build-swarm --json status`."""
    d: dict[str, Any] = {"default": argparse.SUPPRESS} if after else {}
    target = p.add_mutually_exclusive_group()
    target.add_argument("--gateway", metavar="URL",
                        help="gateway base URL; admin key from SWARM_ADMIN_KEY", **d)
    target.add_argument("--orchestrator", metavar="URL",
                        help="swarmd base URL; control token from SWARM_CONTROL_TOKEN "
                             f"(default {DEFAULT_ORCHESTRATOR})", **d)
    p.add_argument("--json", action="store_true", help="print the server's raw JSON", **d)
    p.add_argument("--config", metavar="PATH",
                   help="CLI config (default ~/.config/build-swarm/cli.toml, "
                        "then /etc/build-swarm/cli.toml)", **d)
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="HTTP timeout", **d)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, after=True)
    p = argparse.ArgumentParser(
        prog="build-swarm",
        description="Drive a build-swarm: submit world updates, inspect the queue and drones, "
                    "watch builds. Global options go before or after the command.",
        epilog="exit codes: 0 ok, 1 request finished with failures, 2 usage/config, "
               "3 cannot connect, 4 key/token refused, 5 rejected by the server, "
               "6 server error, 7 local failure (input file, emerge), 130 interrupted",
    )
    _global_options(p, after=False)
    p.add_argument("--version", action="version", version=f"build-swarm {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("submit", parents=[common], help="submit emerge --pretend output (file, stdin or --run)")
    s.add_argument("file", nargs="?", metavar="FILE|-", help="emerge output; - or none: stdin")
    s.add_argument("--run", action="store_true",
                   help="run emerge -puDNv --tree --getbinpkg --color=n @world (NO_COLOR=1) "
                        "and submit its output")
    s.add_argument("--emerge-argv", metavar="'ARGV'",
                   help="the command --run runs, as one shell-quoted string")
    s.add_argument("--request-id", metavar="ID", help="idempotency key (a retry never doubles)")
    s.add_argument("--priority", type=int, metavar="N", help="request priority (-1000..1000)")
    s.add_argument("--wait", action="store_true",
                   help="follow the request to the end; exit 1 if anything failed")
    s.add_argument("--interval", type=float, metavar="SECONDS", help="--wait poll interval")
    s.add_argument("--any-target", action="store_true",
                   help="do not send this machine's portage target: any drone may build it")

    sub.add_parser("status", parents=[common], help="orchestrator health, journal and counts")
    sub.add_parser("drones", parents=[common], help="every drone and what it builds")
    q = sub.add_parser("queue", parents=[common], help="the build queue")
    q.add_argument("--state", metavar="S", help="only these states (comma-separated)")
    b = sub.add_parser("builds", parents=[common], help="build history, newest first (orchestrator only)")
    b.add_argument("--limit", type=int, default=100, metavar="N")
    b1 = sub.add_parser("build", parents=[common], help="one build attempt with its log (orchestrator only)")
    b1.add_argument("id", metavar="ID")
    b1.add_argument("--tail", type=int, default=50, metavar="N", help="log lines (default 50)")
    sub.add_parser("packages", parents=[common], help="known packages and their binary status (orchestrator only)")
    c = sub.add_parser("cancel", parents=[common], help="cancel a request or a single queue entry")
    c.add_argument("id", metavar="ID")
    r = sub.add_parser("restart", parents=[common], help="tell a drone's agent to restart")
    r.add_argument("drone", metavar="DRONE", help="drone id or name")
    lg = sub.add_parser("logs", parents=[common], help="recent orchestrator log lines and drone events")
    lg.add_argument("--limit", type=int, default=100, metavar="N")
    sub.add_parser("config", parents=[common], help="the effective configuration (secrets redacted)")
    sub.add_parser("watch", parents=[common], help="live view of drones, builds and the queue")
    bh = sub.add_parser("binhost", parents=[common], help="print the binrepos.conf stanza of the swarm's binhost")
    bh.add_argument("--url", metavar="URL",
                    help="the binhost URL (default: asked from the gateway's /api/v1/binhost)")
    h = sub.add_parser("history", parents=[common], help="compile-time history")
    hsub = h.add_subparsers(dest="history_command", metavar="ACTION", required=True)
    hi = hsub.add_parser("import", parents=[common], help="learn compile times from emerge.log (orchestrator only)")
    hi.add_argument("emerge_log", metavar="EMERGE_LOG", nargs="?", default="/var/log/emerge.log")
    hi.add_argument("--dry-run", action="store_true", help="parse and show, send nothing")
    return p


COMMANDS: dict[str, Callable[[Ctx], int]] = {
    "submit": cmd_submit, "status": cmd_status, "drones": cmd_drones, "queue": cmd_queue,
    "builds": cmd_builds, "build": cmd_build, "packages": cmd_packages, "cancel": cmd_cancel,
    "restart": cmd_restart, "logs": cmd_logs, "config": cmd_config, "watch": cmd_watch,
    "binhost": cmd_binhost,
}


def run(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """The whole CLI as a function: returns the exit code instead of exiting."""
    env = os.environ if environ is None else environ
    out, err = stdout or sys.stdout, stderr or sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(list(argv) if argv is not None else None)
            if args.gateway and args.orchestrator:  # one before the command, one after it
                parser.error("argument --orchestrator: not allowed with argument --gateway")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    api: Api | None = None
    try:
        cfg = load_config(args.config, env)
        if args.command == "history" and args.dry_run:
            return cmd_history(None, args, out)
        target = resolve_target(gateway=args.gateway, orchestrator=args.orchestrator, cfg=cfg,
                                command=args.command)
        api = Api(target, timeout=args.timeout or cfg.timeout_s, transport=transport)
        ctx = Ctx(args=args, cfg=cfg, api=api, out=out, err=err, stdin=stdin or sys.stdin,
                  json=args.json, sleep=sleep, environ=env)
        if args.command == "history":
            return cmd_history(ctx, args, out)
        return COMMANDS[args.command](ctx)
    except CliError as exc:
        err.write(f"build-swarm: {exc}\n")
        return exc.exit_code
    except ConfigError as exc:
        err.write(f"build-swarm: configuration: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.write("\nbuild-swarm: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    finally:
        if api is not None:
            api.close()


def main() -> None:
    sys.exit(run())
