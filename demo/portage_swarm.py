"""A whole swarm with real portage on this machine: for `make demo`, the end-to-end test and
the real-build benchmark.

Real processes on 127.0.0.1: swarmd (publishing into a binhost folder with portage's own code),
a static web server for that folder (Python's http.server: any static server will do), and
swarm-drone agents running the default `emerge` build command, each in its own portage sandbox
(demo/sandbox.py) whose binrepos.conf points at the binhost. A client sandbox plays the machine
that wants the packages: `build-swarm submit --run --wait` there, then
`emerge -uDN --getbinpkgonly --binpkg-respect-use=y @world`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from demo.sandbox import REPO, Sandbox, make_publisher_env, make_sandbox

BIN = Path(sys.executable).parent
PROJECT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_str(v: str) -> str:
    return json.dumps(v)


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            got = pred()
            if got:
                return got
        except (httpx.HTTPError, OSError, ValueError) as exc:
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached in {timeout:.0f} s" + (f" ({last})" if last else ""))


class PortageSwarm:
    """Start with ``start()``, add drones with ``add_drone``, stop with ``stop()``."""

    def __init__(self, work: Path, *, repo: Path = REPO, heartbeat_s: float = 2.0,
                 lease_wait_s: float = 2.0, env: dict[str, str] | None = None) -> None:
        self.work = work.resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.repo = repo.resolve()
        self.binhost = self.work / "binhost"
        self.binhost.mkdir(exist_ok=True)
        self.heartbeat_s = heartbeat_s
        self.lease_wait_s = lease_wait_s
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        for k in ("SWARM_ADMIN_KEY", "SWARM_CONTROL_TOKEN", "SWARM_DRONE_TOKEN"):
            self.env.pop(k, None)
        self.sd_port = free_port()
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.sd_port}"
        self.binhost_url = f"http://127.0.0.1:{self.http_port}"
        self.swarmd: subprocess.Popen[bytes] | None = None
        self.http: subprocess.Popen[bytes] | None = None
        self.drones: dict[str, subprocess.Popen[bytes]] = {}
        self.sandboxes: dict[str, Sandbox] = {}
        self.publisher_env = make_publisher_env(self.work / "publisher")

    # ---- processes -------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        logf = (self.work / f"{name}.log").open("ab")
        return subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                cwd=PROJECT, stdin=subprocess.DEVNULL)

    def start(self) -> PortageSwarm:
        self.start_swarmd()
        self.http = self._spawn("binhost-http", [
            sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
            str(self.binhost), str(self.http_port)], self.env)
        wait_until(lambda: httpx.get(self.binhost_url + "/Packages", timeout=2).status_code
                   == 200, 30, "binhost web server with an index")
        return self

    def start_swarmd(self) -> None:
        argv = [str(BIN / "swarmd"), "--listen", f"127.0.0.1:{self.sd_port}",
                "--state-dir", str(self.work / "state"), "--config",
                str(PROJECT / "tests" / "data" / "empty.toml"),
                "--binhost-dir", str(self.binhost),
                "--heartbeat-interval-s", str(self.heartbeat_s),
                "--offline-after-s", str(max(10.0, 5 * self.heartbeat_s))]
        self.swarmd = self._spawn("swarmd", argv, {**self.env, **self.publisher_env})
        proc = self.swarmd
        wait_until(lambda: proc.poll() is None and httpx.get(
            self.url + "/api/status", timeout=2).status_code == 200, 60, "swarmd answering")

    def kill_swarmd(self) -> None:
        assert self.swarmd is not None
        self.swarmd.send_signal(signal.SIGKILL)
        self.swarmd.wait()

    def sandbox(self, name: str, *, world: Iterable[str] = (), package_use: Iterable[str] = (),
                make_conf: str = "", repo: Path | None = None) -> Sandbox:
        sb = make_sandbox(self.work / "sandboxes" / name, repo=repo or self.repo, world=world,
                          binhost_url=self.binhost_url, package_use=package_use,
                          make_conf=make_conf)
        self.sandboxes[name] = sb
        return sb

    def add_drone(self, name: str, *, cores: int = 2, package_use: Iterable[str] = (),
                  make_conf: str = "") -> Sandbox:
        sb = self.sandbox(name, package_use=package_use, make_conf=make_conf)
        state = self.work / "drones" / name
        state.mkdir(parents=True, exist_ok=True)
        build_env = sb.env()
        cfg = state / "swarm-drone.toml"
        lines = [
            f"orchestrator = {_toml_str(self.url)}",
            f"name = {_toml_str(name)}",
            f"cores = {cores}",
            f"pkgdir = {_toml_str(str(sb.pkgdir))}",
            f"binhost_target = {_toml_str(str(self.binhost))}",
            f"state_dir = {_toml_str(str(state))}",
            f"lease_wait_s = {self.lease_wait_s}",
            f"heartbeat_interval_s = {self.heartbeat_s}",
            "backoff_max_s = 2.0",
            "target_refresh_s = 1.0",
            "stop_grace_s = 2.0",
            "log_interval_s = 0.5",
            "",
            "[build_env]",
            *(f"{k} = {_toml_str(v)}" for k, v in sorted(build_env.items())),
        ]
        cfg.write_text("\n".join(lines) + "\n")
        # The agent's own environment: what a service gets (PATH with rsync and emerge).
        env = {**self.env, "PATH": build_env["PATH"]}
        self.drones[name] = self._spawn(f"drone-{name}", [
            str(BIN / "swarm-drone"), "--config", str(cfg)], env)
        return sb

    def stop_drone(self, name: str) -> None:
        p = self.drones.pop(name)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop(self) -> None:
        for name in list(self.drones):
            self.stop_drone(name)
        for p in (self.swarmd, self.http):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    # ---- API ----------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        return httpx.get(self.url + path, timeout=10).json()

    def builds(self) -> list[dict[str, Any]]:
        return list(self.get("/api/builds?limit=1000")["builds"])

    def wait_drones(self, names: Iterable[str], timeout: float = 60) -> None:
        want = set(names)

        def ok() -> bool:
            got = {d["name"] for d in self.get("/api/drones")["drones"]
                   if d["status"] in ("ready", "building") and d.get("target_id")}
            return want <= got
        wait_until(ok, timeout, f"drones {sorted(want)} registered with a target")

    # ---- client --------------------------------------------------------------------------

    def cli(self, sb: Sandbox, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``build-swarm --orchestrator URL ARGS`` in the client sandbox's environment."""
        return subprocess.run(
            [str(BIN / "build-swarm"), "--orchestrator", self.url, *args],
            env={**self.env, **sb.env()}, capture_output=True, text=True, timeout=timeout,
            check=False, stdin=subprocess.DEVNULL)

    def install(self, sb: Sandbox, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """The client's real install from the swarm's binhost, binaries only."""
        return sb.emerge("-uDN", "--getbinpkgonly", "--binpkg-respect-use=y", "--color=n",
                         "@world", timeout=timeout)

    def index(self) -> list[dict[str, str]]:
        """The binhost's Packages index as a list of package stanzas."""
        text = (self.binhost / "Packages").read_text()
        out = []
        for block in text.split("\n\n")[1:]:
            d = {}
            for line in block.splitlines():
                if ":" in line:
                    k, v = line.split(":", 1)
                    d[k.strip()] = v.strip()
            if d.get("CPV"):
                out.append(d)
        return out

    def emaint_check(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["emaint", "binhost", "--check"],
                              env={**self.env, **self.publisher_env,
                                   "PKGDIR": str(self.binhost)},
                              capture_output=True, text=True, timeout=120, check=False)


def copy_repo(dest: Path, src: Path = REPO) -> Path:
    """A private copy of the bundled repository (for a version bump)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest)
    return dest
