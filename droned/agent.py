"""The agent: register, heartbeat, lease, build, sync, report (SPEC sections 4 and 8).

Task tree (built by ``Agent.run``)::

    root nursery
    ├── report loop      delivers the outbox (durable completion reports), backoff + jitter
    ├── heartbeat loop   every interval, never paused by builds; obeys revoked and commands
    └── builds nursery
        ├── lease loop   long-polls for work while a slot is free
        └── one task per build: plan check, process + log shipper, then find/sync/hash,
            then the outbox, then the target read again

Target (SPEC section 12): when ``build_command`` is emerge and ``read_target`` is true, the
agent reads its portage target under ``build_env`` before registering (retrying with backoff
until it can: a drone that cannot say what it builds for gets no work) and again after each
build (a repository sync changes it). It is sent in register, and in the next heartbeat
whenever it differs from the one swarmd last acknowledged.

Building exactly one package (emerge build commands only): before compiling, the same argv
with ``--pretend`` must plan the leased CPV as the only ``[ebuild]`` row; otherwise the lease is
returned ``unbuildable`` with the reason. After the build, ``droned.portage_probe`` (a child
process under ``build_env``) names the file this build wrote (by the BUILD_ID the package
database records) and its USE, which must match the lease's ``use``; only that file is synced,
under an ``.upload`` name that swarmd verifies and publishes.

Sessions: any drone call answered 404 (unknown drone) or 409 ``session_superseded`` makes the
agent register again (once, under a lock, whoever noticed first). Reports are sent with the
lease only, so reports left over from a previous run are delivered before registering again
(a new session would make swarmd take the old session's builds back).

Stopping (SIGTERM, SIGINT, or the ``restart`` command): no new leases; running builds get
``stop_grace_s`` to finish; the rest are killed and reported ``returned``; the outbox gets a
short deadline to drain (what is left stays on disk and is sent by the next run).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from droned import artifact as art
from droned import plan
from droned.build import Build, run_process
from droned.config import DroneConfig, substitute
from droned.identity import Identity, detect, load_average
from droned.logbuffer import LogBuffer
from droned.outbox import Outbox
from droned.portage_probe import use_mismatch
from swarmlib.backoff import Backoff
from swarmlib.errors import ConfigError
from swarmlib.target import describe, read_target, target_id

log = logging.getLogger("droned.agent")

FLUSH_ON_STOP_S = 10.0  # how long a stopping agent tries to deliver its reports
SYNC_ATTEMPTS = 3
PROBE_TIMEOUT_S = 120.0


class _Pulse:
    """Wakes every waiter each time something finished (a build, a report)."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class Unreachable(Exception):
    """swarmd did not answer usefully (connection error, timeout, 5xx, 401): retry later."""


class SessionLost(Exception):
    """404 unknown drone or 409 session_superseded: register again."""


@attrs.frozen(kw_only=True)
class Session:
    drone_id: str
    session: str
    heartbeat_interval_s: float


def _error_code(resp: httpx.Response) -> str:
    try:
        doc = resp.json()
        return str(doc["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def _error_text(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:200]


class Agent:
    def __init__(self, cfg: DroneConfig, *, identity: Identity | None = None) -> None:
        self.cfg = cfg
        self.identity = identity
        self.outbox = Outbox(Path(cfg.state_dir))
        self.session: Session | None = None
        self.builds: dict[str, Build] = {}  # not yet answered by swarmd
        self.restart_requested = False
        self._stop = trio.Event()
        self._startup_scope: trio.CancelScope | None = None
        self._lease_scope = trio.CancelScope()
        self._register_lock = trio.Lock()
        self._deliver_lock = trio.Lock()  # one sender of the outbox at a time: no duplicates
        self._report_wakeup = trio.Event()
        self._slots = trio.Semaphore(cfg.slots)
        self._client: httpx.AsyncClient | None = None
        self._changed = _Pulse()
        self.target: dict[str, Any] | None = None  # None: not read (read_target = false)
        self._target_sent: dict[str, Any] | None = None  # what swarmd last acknowledged
        self._target_lock = trio.Lock()
        self._target_read_at = -1e9  # trio clock of the last successful read
        self._beat_now = trio.Event()  # set: send the next heartbeat at once (target changed)
        # Only emerge has a portage configuration worth describing; the fake emerge of the
        # tests and the demo builds for any target, so such a drone sends none.
        self.reads_target = cfg.read_target and plan.is_emerge(cfg.build_command)

    # ---- control -------------------------------------------------------------------------

    def stop(self) -> None:
        """Begin the graceful stop. Not a checkpoint."""
        if not self._stop.is_set():
            log.info("stopping: no new work; running builds get %ss", self.cfg.stop_grace_s)
            self._stop.set()
            self._lease_scope.cancel()
            if self._startup_scope is not None:
                self._startup_scope.cancel()

    def _running(self) -> list[Build]:
        return [b for b in self.builds.values() if b.phase in ("building", "syncing")]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until ``stop()`` (or a restart command). ``started()`` after the first register."""
        if self.identity is None:
            cfg = self.cfg
            self.identity = await trio.to_thread.run_sync(
                lambda: detect(name=cfg.name, cores=cfg.cores, orchestrator=cfg.orchestrator)
            )
        if not self.cfg.token:
            log.warning("SWARM_DRONE_TOKEN is not set: drone calls carry no token")
        headers = {"User-Agent": f"swarm-drone/{self.identity.version}"}
        if self.cfg.token:
            headers["Authorization"] = f"Bearer {self.cfg.token}"
        async with httpx.AsyncClient(
            base_url=self.cfg.orchestrator.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(15.0, connect=5.0),
        ) as client:
            self._client = client
            async with trio.open_nursery() as root:
                with trio.CancelScope() as self._startup_scope:
                    if self.reads_target:
                        await self._read_target_until_ok()
                    await self._register(None)
                self._startup_scope = None
                if self._stop.is_set():
                    root.cancel_scope.cancel()
                    return
                root.start_soon(self._report_loop)
                root.start_soon(self._heartbeat_loop)
                async with trio.open_nursery() as builds:
                    builds.start_soon(self._lease_loop, builds)
                    task_status.started()
                    await self._stop.wait()
                    self._lease_scope.cancel()
                    with trio.move_on_after(self.cfg.stop_grace_s):
                        while self._running():
                            await self._changed.wait()
                    for b in self._running():
                        log.info("returning unfinished build", extra={"ids": b.ids()})
                        b.stop("returned")
                with trio.move_on_after(FLUSH_ON_STOP_S):
                    retry = Backoff(0.1, 1.0)
                    for _attempt in range(1000):
                        if await self._deliver_pending():
                            break
                        await trio.sleep(retry.next())
                left = len(self.outbox.pending())
                if left:
                    log.warning("%d completion report(s) kept in %s for the next run",
                                left, self.outbox.dir)
                root.cancel_scope.cancel()
        log.info("stopped")

    # ---- HTTP ----------------------------------------------------------------------------

    async def _request(
        self,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        long_poll: bool = False,
    ) -> httpx.Response:
        """POST to swarmd. ``long_poll`` lifts the read timeout (the caller holds a deadline)."""
        assert self._client is not None
        kw: dict[str, Any] = {}
        if long_poll:
            kw["timeout"] = httpx.Timeout(None, connect=5.0)
        try:
            resp = await self._client.post(
                path, json=json_body, content=content, headers=headers, **kw
            )
        except httpx.HTTPError as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from None
        if resp.status_code >= 500 or resp.status_code in (401, 403, 429):
            raise Unreachable(f"HTTP {resp.status_code}: {_error_text(resp)}")
        return resp

    async def _drone_call(
        self, what: str, body: dict[str, Any], *, long_poll: bool = False
    ) -> tuple[Session, httpx.Response]:
        session = await self._current_session()
        body = {"session": session.session, **body}
        resp = await self._request(
            f"/api/drones/{session.drone_id}/{what}", json_body=body, long_poll=long_poll
        )
        if resp.status_code == 404 or (
            resp.status_code == 409 and _error_code(resp) in ("session_superseded", "")
        ):
            log.warning("%s: %s (%s); registering again", what, resp.status_code, _error_text(resp))
            await self._register(session)
            raise SessionLost(what)
        return session, resp

    # ---- registration --------------------------------------------------------------------

    async def _current_session(self) -> Session:
        while self.session is None:
            await self._register(None)
        return self.session

    async def _register(self, old: Session | None) -> None:
        """Register (again) unless someone already replaced ``old``. Retries until it works."""
        async with self._register_lock:
            if self.session is not old and self.session is not None:
                return
            self.session = None
            assert self.identity is not None
            backoff = Backoff(self.cfg.backoff_base_s, self.cfg.backoff_max_s)
            while True:
                # Leftover reports first: a new session makes swarmd take back the old builds.
                await self._deliver_pending()
                target = self.target
                try:
                    resp = await self._request(
                        "/api/drones/register",
                        json_body=self.identity.register_body(self.cfg.slots, target),
                    )
                    if resp.status_code != 200:
                        raise Unreachable(f"HTTP {resp.status_code}: {_error_text(resp)}")
                    doc = resp.json()
                    interval = float(doc.get("heartbeat_interval_s") or
                                     self.cfg.heartbeat_interval_s)
                    self.session = Session(
                        drone_id=str(doc["drone_id"]),
                        session=str(doc["session"]),
                        heartbeat_interval_s=max(0.05, interval),
                    )
                    self._target_sent = target
                except (Unreachable, ValueError, KeyError, TypeError) as exc:
                    delay = backoff.next()
                    log.warning("register failed (%s); retrying in %.1fs", exc, delay)
                    await trio.sleep(delay)
                    continue
                log.info(
                    "registered",
                    extra={"ids": {"drone_id": self.session.drone_id, "name": self.cfg.name,
                                   "heartbeat_interval_s": interval}},
                )
                return

    # ---- heartbeat -----------------------------------------------------------------------

    def _heartbeat_body(self) -> dict[str, Any]:
        now = trio.current_time()
        builds = []
        for b in self.builds.values():
            item: dict[str, Any] = {"build_id": b.build_id, "lease": b.lease}
            p = b.progress(now)
            if p is not None:
                item["progress"] = p
            builds.append(item)
        body: dict[str, Any] = {
            "status": "building" if self._running() else "ready",
            "load": load_average(),
            "builds": builds,
        }
        if self.target is not None and self.target != self._target_sent:
            body["target"] = self.target
        return body

    async def _heartbeat_loop(self) -> None:
        failing = False
        while True:
            body = self._heartbeat_body()
            try:
                session, resp = await self._drone_call("heartbeat", body)
            except SessionLost:
                continue
            except Unreachable as exc:
                if not failing:
                    log.warning("heartbeat failed: %s; still building, will keep trying", exc)
                failing = True
                await trio.sleep(self.session.heartbeat_interval_s if self.session else 1.0)
                continue
            if failing:
                log.info("swarmd answers heartbeats again")
                failing = False
            if resp.status_code == 200:
                if "target" in body and session is self.session:
                    self._target_sent = body["target"]
                    log.info("target change sent with a heartbeat")
                try:
                    self._obey(resp.json())
                except (ValueError, TypeError, AttributeError) as exc:
                    log.warning("heartbeat reply not understood: %s", exc)
            else:
                log.warning("heartbeat: HTTP %s: %s", resp.status_code, _error_text(resp))
            with trio.move_on_after(session.heartbeat_interval_s):
                await self._beat_now.wait()
            self._beat_now = trio.Event()

    def _obey(self, doc: dict[str, Any]) -> None:
        revoked = set(doc.get("revoked") or [])
        if revoked:
            for b in list(self.builds.values()):
                if b.lease in revoked:
                    log.warning("lease revoked by swarmd: stopping build", extra={"ids": b.ids()})
                    if b.phase in ("building", "syncing"):
                        b.stop("revoked")
                    else:
                        self.builds.pop(b.build_id, None)
                        self.outbox.remove(b.build_id)
            for build_id, body in self.outbox.pending():
                if body.get("lease") in revoked and build_id not in self.builds:
                    self.outbox.remove(build_id)
        for cmd in doc.get("commands") or []:
            name = cmd.get("command") if isinstance(cmd, dict) else cmd
            if name == "restart":
                # Repeated in every reply until we register again: act on the first.
                if not self.restart_requested:
                    log.info("restart requested by swarmd: finishing reports, then re-executing")
                    self.restart_requested = True
                self.stop()
            else:
                log.warning("unknown command from swarmd ignored: %r", cmd)

    # ---- leasing -------------------------------------------------------------------------

    async def _lease_loop(self, nursery: trio.Nursery) -> None:
        backoff = Backoff(self.cfg.backoff_base_s, self.cfg.backoff_max_s)
        with self._lease_scope:
            while True:
                await self._slots.acquire()
                handed_over = False
                try:
                    if self.reads_target and (trio.current_time() - self._target_read_at
                                              >= self.cfg.target_refresh_s):
                        await self._refresh_target()  # idle for a while: a sync may have run
                    t0 = trio.current_time()
                    try:
                        with trio.fail_after(self.cfg.lease_wait_s + 15.0):
                            _s, resp = await self._drone_call(
                                "lease",
                                {"slots": self.cfg.slots, "wait_s": self.cfg.lease_wait_s},
                                long_poll=True,
                            )
                    except SessionLost:
                        continue
                    except (Unreachable, trio.TooSlowError) as exc:
                        delay = backoff.next()
                        log.log(logging.WARNING if backoff.attempt == 1 else logging.DEBUG,
                                "lease failed (%s); retrying in %.1fs", exc, delay)
                        await trio.sleep(delay)
                        continue
                    if resp.status_code == 204:
                        backoff.reset()
                        if trio.current_time() - t0 < 0.5:
                            await trio.sleep(0.5)  # a short poll: do not spin
                        continue
                    if resp.status_code != 200:
                        delay = backoff.next()
                        log.warning("lease: HTTP %s: %s; retrying in %.1fs",
                                    resp.status_code, _error_text(resp), delay)
                        await trio.sleep(delay)
                        continue
                    backoff.reset()
                    build = self._new_build(resp)
                    if build is None:
                        continue
                    self.builds[build.build_id] = build
                    nursery.start_soon(self._build_task, build)
                    handed_over = True
                finally:
                    if not handed_over:
                        self._slots.release()

    def _new_build(self, resp: httpx.Response) -> Build | None:
        try:
            doc = resp.json()
            cpv = str(doc["package"])
            if cpv.startswith("="):
                cpv = cpv[1:]
            est = doc.get("estimate_s")
            use = doc.get("use")
            if use is not None and (
                not isinstance(use, list) or not all(isinstance(f, str) for f in use)
            ):
                raise TypeError(f"use: expected a list of flags or null, got {use!r}")
            build = Build(
                build_id=str(doc["build_id"]),
                lease=str(doc["lease"]),
                cpv=cpv,
                atom=str(doc.get("atom") or f"={cpv}"),
                estimate_s=float(est) if est else None,
                use=use,
                target_id=str(doc["target_id"]) if doc.get("target_id") else None,
                started_wall=time.time(),
                started_at=trio.current_time(),
                log=LogBuffer(self.cfg.log_buffer_bytes),
            )
            art.split_cpv(cpv)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("lease reply not understood (%s): %s", exc, resp.text[:300])
            return None
        log.info("leased", extra={"ids": build.ids()})
        return build

    # ---- one build -----------------------------------------------------------------------

    async def _build_task(self, build: Build) -> None:
        try:
            try:
                body = await self._execute(build)
            except Exception as exc:  # task boundary: report it, never leave the lease hanging
                log.exception("build crashed in the agent", extra={"ids": build.ids()})
                body = self._report(build, "failed", error=f"swarm-drone internal error: {exc!r}")
            if body is None:
                self.builds.pop(build.build_id, None)
                self._changed.fire()
            else:
                build.phase = "reporting"
                self.outbox.put(build.build_id, body)
                self._report_wakeup.set()
                self._changed.fire()
            if self.reads_target and not self._stop.is_set():
                await self._refresh_target()  # before this slot asks for work again
        finally:
            self._slots.release()

    def _report(
        self, build: Build, result: str, *, error: str | None = None,
        artifact: dict[str, Any] | None = None, unbuildable: bool = False,
        needs: list[str] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "lease": build.lease,
            "result": result,
            "duration_s": round(max(0.0, trio.current_time() - build.started_at), 3),
            "artifact": artifact,
            "error": error,
        }
        if unbuildable:
            body["unbuildable"] = True
        if needs:
            body["needs"] = needs[:256]
        return body

    def _stopped_report(self, build: Build) -> dict[str, Any] | None:
        if build.stop_reason == "revoked":
            log.info("build stopped: lease revoked", extra={"ids": build.ids()})
            return None
        return self._report(build, "returned", error=f"drone {self.cfg.name} is stopping")

    async def _execute(self, build: Build) -> dict[str, Any] | None:
        cfg = self.cfg
        cat, pn, _pf = art.split_cpv(build.cpv)
        argv = substitute(cfg.build_command, {
            "cpv": build.cpv, "cp": f"{cat}/{pn}", "atom": build.atom,
            "build_id": build.build_id, "cores": str(cfg.cores), "pkgdir": cfg.pkgdir,
        })
        build.log.append(
            f">>> swarm-drone {cfg.name}: build {build.build_id} of {build.cpv}: "
            f"{json.dumps(argv)}\n".encode()
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ship_log, build)
            try:
                body = await self._build_and_sync(build, argv)
            finally:
                nursery.cancel_scope.cancel()
        with trio.move_on_after(5.0):
            await self._flush_log(build)  # the end of the log before the report
        return body

    async def _build_and_sync(self, build: Build, argv: list[str]) -> dict[str, Any] | None:
        cfg = self.cfg
        emerge = plan.is_emerge(argv)
        if emerge and self.reads_target and build.target_id:
            # A repository sync since the last read changes the target: building this lease
            # against the new tree would publish it as the old target's binary.
            await self._refresh_target()
            mine = target_id(self.target) if self.target is not None else None
            if mine != build.target_id:
                build.log.append(f">>> swarm-drone: not building: this drone's target is now "
                                 f"{mine}, the lease is for {build.target_id}\n".encode())
                return self._report(build, "returned",
                                    error=f"target changed: drone {mine}, lease "
                                          f"{build.target_id}")
        if emerge:
            try:
                refused, needs = await self._check_plan(build, argv)
            except OSError as exc:
                return self._report(build, "failed", error=f"cannot run {argv[0]}: {exc}")
            if build.stop_reason:
                return self._stopped_report(build)
            if refused is not None:
                log.warning("plan refused: %s", refused.splitlines()[0], extra={"ids": build.ids()})
                build.log.append(f">>> swarm-drone: not building: plan: {refused}\n".encode())
                return self._report(build, "returned", error=f"plan: {refused}",
                                    unbuildable=True, needs=needs)
            build.log.append(f">>> swarm-drone: build {json.dumps(argv)}\n".encode())
        try:
            rc = await run_process(build, argv, kill_grace_s=cfg.kill_grace_s, env=cfg.build_env)
        except OSError as exc:
            return self._report(build, "failed", error=f"cannot run {argv[0]}: {exc}")
        if build.stop_reason:
            return self._stopped_report(build)
        if rc != 0:
            how = f"exit code {rc}" if rc > 0 else f"killed by signal {-rc}"
            return self._report(
                build, "failed",
                error=f"{argv[0]} failed with {how}; last lines:\n{build.log.tail()}",
            )
        build.phase = "syncing"
        if emerge:
            found = await self._probe(build)
            if isinstance(found, str):
                return self._report(build, "failed", error=found)
            pkg = found
        else:
            # Not emerge (the fake emerge of the tests and the demo): the newest file will do.
            maybe = art.find_package(Path(cfg.pkgdir), build.cpv, since=build.started_wall)
            if maybe is None:
                return self._report(
                    build, "failed",
                    error=(f"no binary package: the build exited 0 but no package of "
                           f"{build.cpv} newer than the build's start was found in {cfg.pkgdir} "
                           f"(is --buildpkg / FEATURES=buildpkg in effect?)"),
                )
            pkg = maybe
        relpath = art.binhost_relpath(build.cpv, pkg, build_id=build.build_id)
        error = await self._sync(build, pkg, relpath)
        if build.stop_reason:
            return self._stopped_report(build)
        if error:
            return self._report(build, "failed", error=error)
        size, sha256 = await trio.to_thread.run_sync(art.digest, pkg)
        log.info("built and synced", extra={"ids": {**build.ids(), "path": relpath,
                                                    "size": size, "sha256": sha256}})
        return self._report(
            build, "success", artifact={"path": relpath, "size": size, "sha256": sha256}
        )

    async def _check_plan(self, build: Build, argv: list[str]) -> tuple[str | None, list[str]]:
        """Run the build argv with ``--pretend``: (None, []) when it builds only the package,
        else (why not, the other packages it would compile).

        A checkpoint while emerge runs; its output also goes into the build log. Raises OSError
        when emerge cannot be started.
        """
        pretend = plan.plan_argv(argv)
        build.log.append(f">>> swarm-drone: plan {json.dumps(pretend)}\n".encode())
        out = bytearray()
        rc = await run_process(build, pretend, kill_grace_s=self.cfg.kill_grace_s,
                               env={**self.cfg.build_env, "NO_COLOR": "1"}, capture=out)
        text = out.decode("utf-8", "replace")
        refused = plan.check_plan(text, build.cpv, returncode=rc)
        return refused, (plan.needed(text, build.cpv) if refused and rc == 0 else [])

    async def _probe(self, build: Build) -> Path | str:
        """The file this build produced (asked of portage under build_env), or the error.

        Checks the built USE against the lease's. A checkpoint while the probe runs.
        """
        argv = [sys.executable, "-m", "droned.portage_probe", "built", f"={build.cpv}"]
        proc: subprocess.CompletedProcess[bytes] | None = None
        with trio.move_on_after(PROBE_TIMEOUT_S):
            proc = await trio.run_process(
                argv, env={**os.environ, **self.cfg.build_env}, capture_stdout=True,
                capture_stderr=True, check=False, stdin=subprocess.DEVNULL,
            )
        if proc is None:
            return f"probe: no answer from portage within {PROBE_TIMEOUT_S:.0f} s"
        err_lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        if proc.returncode != 0:
            why = err_lines[-1] if err_lines else f"exit code {proc.returncode}"
            return f"probe: cannot find the package this build produced: {why}"
        try:
            doc = json.loads(proc.stdout.decode().strip().splitlines()[-1])
            path = Path(str(doc["path"]))
            use = [str(f) for f in doc["use"]]
            iuse = [str(f) for f in doc["iuse"]]
            hidden = [str(f) for f in doc.get("hidden") or []]
            portage_build_id = str(doc["build_id"])
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return f"probe: unexpected output ({exc!r})"
        build.log.append(
            f">>> swarm-drone: built {path} (BUILD_ID {portage_build_id}), "
            f"USE=\"{' '.join(use)}\"\n".encode()
        )
        mismatch = use_mismatch(use, iuse, build.use, hidden)
        if mismatch:
            build.log.append(f">>> swarm-drone: {mismatch}; not syncing\n".encode())
            return mismatch
        return path

    async def _sync(self, build: Build, pkg: Path, relpath: str) -> str | None:
        """Run sync_command (retried); None when it worked, else the error."""
        cfg = self.cfg
        target = cfg.binhost_target
        if target and (target.startswith("/") or ":" not in target.split("/", 1)[0]):
            # A local binhost: create cat/pn/ (rsync does not create parents of the target).
            try:
                (Path(target) / relpath).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                return f"sync failed: cannot create {Path(target) / relpath}: {exc.strerror}"
        argv = substitute(cfg.sync_command, {
            "artifact": str(pkg), "binhost_target": target, "relpath": relpath,
            "cpv": build.cpv, "build_id": build.build_id, "pkgdir": cfg.pkgdir,
        })
        backoff = Backoff(1.0, 10.0)
        error = None
        for attempt in range(1, SYNC_ATTEMPTS + 1):
            build.log.append(f">>> swarm-drone: sync {json.dumps(argv)}\n".encode())
            try:
                rc = await run_process(build, argv, kill_grace_s=cfg.kill_grace_s,
                                       env=cfg.build_env)
            except OSError as exc:
                return f"sync failed: cannot run {argv[0]}: {exc}"
            if build.stop_reason or rc == 0:
                return None
            error = f"sync failed: {argv[0]} exited with code {rc}; last lines:\n{build.log.tail()}"
            if attempt < SYNC_ATTEMPTS:
                await trio.sleep(backoff.next())
        return error

    # ---- target --------------------------------------------------------------------------

    async def _read_target_once(self) -> dict[str, Any]:
        """read_target under build_env in a worker thread (a child process, ~0.5 s).

        A checkpoint; cancelling it abandons the thread (the child ends within its timeout).
        Raises ConfigError.
        """
        env = dict(self.cfg.build_env)
        target = await trio.to_thread.run_sync(lambda: read_target(env), abandon_on_cancel=True)
        self._target_read_at = trio.current_time()
        return target

    async def _read_target_until_ok(self) -> None:
        """At start: no work before the target is known. Retries with backoff, never raises."""
        backoff = Backoff(self.cfg.backoff_base_s, self.cfg.backoff_max_s)
        while True:
            try:
                self.target = await self._read_target_once()
            except ConfigError as exc:
                delay = backoff.next()
                log.error("cannot read the portage target under build_env (%s); "
                          "retrying in %.1fs", exc, delay)
                await trio.sleep(delay)
                continue
            log.info("target", extra={"ids": {"target": _describe(self.target)}})
            return

    async def _refresh_target(self) -> None:
        """After a build: read the target again; a change goes out with the next heartbeat."""
        async with self._target_lock:
            try:
                target = await self._read_target_once()
            except ConfigError as exc:
                log.warning("cannot read the portage target again (%s); keeping the last one", exc)
                return
            if target != self.target:
                log.info("target changed", extra={"ids": {"target": _describe(target)}})
                self.target = target
                self._beat_now.set()  # tell swarmd now, not at the next interval

    # ---- build log -----------------------------------------------------------------------

    async def _ship_log(self, build: Build) -> None:
        while True:
            await trio.sleep(self.cfg.log_interval_s)
            await self._flush_log(build)

    async def _flush_log(self, build: Build) -> None:
        """Send what the buffer holds; on trouble put the chunk back and try next time."""
        while len(build.log) or build.log.dropped:
            chunk = build.log.take(self.cfg.log_chunk_bytes)
            try:
                resp = await self._request(
                    f"/api/builds/{build.build_id}/log",
                    content=chunk,
                    headers={"X-Swarm-Lease": build.lease, "Content-Type": "text/plain"},
                )
            except Unreachable:
                build.log.unshift(chunk)
                return
            if resp.status_code == 409:
                log.warning("log refused (%s): lease no longer valid", _error_code(resp),
                            extra={"ids": build.ids()})
                build.stop("revoked")
                build.log.take(len(build.log))
                return
            if resp.status_code >= 400:
                log.warning("log chunk refused: HTTP %s: %s", resp.status_code,
                            _error_text(resp), extra={"ids": build.ids()})

    # ---- reports -------------------------------------------------------------------------

    async def _deliver_pending(self) -> bool:
        """One pass over the outbox. True when it is empty afterwards."""
        async with self._deliver_lock:
            return await self._deliver_pass()

    async def _deliver_pass(self) -> bool:
        for build_id, body in self.outbox.pending():
            try:
                resp = await self._request(f"/api/builds/{build_id}/complete", json_body=body)
            except Unreachable as exc:
                log.info("completion report for %s not delivered yet: %s", build_id, exc)
                return False
            ids = {"build_id": build_id, "result": body.get("result")}
            if resp.status_code < 300:
                log.info("completion reported", extra={"ids": ids})
            elif resp.status_code in (400, 404, 409, 410, 422):
                # Refused for good: 409 stale_lease means the package went to another drone.
                log.warning("completion report dropped: HTTP %s %s: %s", resp.status_code,
                            _error_code(resp), _error_text(resp), extra={"ids": ids})
            else:
                log.warning("completion report: HTTP %s; will retry", resp.status_code,
                            extra={"ids": ids})
                return False
            self.outbox.remove(build_id)
            self.builds.pop(build_id, None)
            self._changed.fire()
        return True

    async def _report_loop(self) -> None:
        backoff = Backoff(self.cfg.backoff_base_s, self.cfg.backoff_max_s)
        while True:
            self._report_wakeup = trio.Event()
            if await self._deliver_pending():
                backoff.reset()
                await self._report_wakeup.wait()
            else:
                with trio.move_on_after(backoff.next()):
                    # A new report does not cut the wait short: swarmd is away.
                    await trio.sleep_forever()



def _describe(target: dict[str, Any]) -> str:
    return f"{target_id(target)} ({describe(target)})"
