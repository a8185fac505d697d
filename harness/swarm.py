"""A whole swarm of real processes on 127.0.0.1 for integration tests: swarmd and
swarm-drone agents running the fake emerge, with a local binhost folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from harness.procs import BIN, EMPTY, REPO, SwarmdProc


def wait_for(pred: Any, timeout: float = 60, what: str = "condition") -> Any:
    """Poll ``pred()`` every 0.1 s until it returns something true (HTTP errors count as not
    yet); TimeoutError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = pred()
            if got:
                return got
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not reached in {timeout} s")

class Swarm:
    def __init__(self, tmp: Path, *, swarmd_args: list[str] | None = None,
                 fake_env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.binhost = tmp / "binhost"
        self.binhost.mkdir(parents=True, exist_ok=True)
        self.swarmd = SwarmdProc(tmp / "state", tmp / "swarmd.log",
                                 extra=swarmd_args or ["--heartbeat-interval-s", "1",
                                                       "--offline-after-s", "4"])
        self.fake_env = fake_env or {}
        self.drones: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return self.swarmd.url

    def start(self) -> Swarm:
        self.swarmd.start()
        return self

    def add_drone(self, name: str, cores: int) -> subprocess.Popen[bytes]:
        d = self.tmp / name
        (d / "pkgdir").mkdir(parents=True, exist_ok=True)
        argv = [
            str(BIN / "swarm-drone"), "--orchestrator", self.url, "--name", name,
            "--cores", str(cores), "--pkgdir", str(d / "pkgdir"), "--state-dir", str(d / "state"),
            "--config", str(EMPTY), "--binhost-target", str(self.binhost),
            "--build-command",
            f"{sys.executable} -m droned.fake_emerge --pkgdir {d / 'pkgdir'} ={{cpv}}",
            "--sync-command", "install -D -m 0644 {artifact} {binhost_target}/{relpath}",
            "--backoff-max-s", "1", "--stop-grace-s", "2",
        ]
        env = {**os.environ, "PORTAGE_OVERRIDE_EPREFIX": "/", "FAKE_EMERGE_SECONDS": "0.2",
               **self.fake_env}
        logf = (self.tmp / f"{name}.log").open("ab")
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        self.drones[name] = p
        return p

    def get(self, path: str) -> Any:
        return httpx.get(self.url + path, timeout=10).json()

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        r = httpx.post(self.url + "/api/queue", json=body, timeout=30)
        assert r.status_code in (200, 202), r.text
        return dict(r.json())

    def wait_complete(self, rid: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                req = self.get(f"/api/requests/{rid}")
                if req.get("state") == "complete":
                    return dict(req)
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"request {rid} did not complete in {timeout} s: "
                           f"{self.get(f'/api/requests/{rid}')}")

    def wait_for(self, pred: Any, timeout: float = 60, what: str = "condition") -> Any:
        return wait_for(pred, timeout, what)

    def stop(self) -> dict[str, int]:
        codes = {}
        for p in self.drones.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in self.drones.items():
            try:
                codes[name] = p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = p.wait()
        if self.swarmd.proc is not None and self.swarmd.proc.poll() is None:
            codes["swarmd"] = self.swarmd.stop()
        return codes


def dag(n: int, seed: int = 7) -> dict[str, Any]:
    """A random DAG of ``n`` packages in emerge (merge) order with JSON deps."""
    import random

    rng = random.Random(seed)
    pk = [f"=cat-{i % 5}/pkg{i}-1.{i}" for i in range(n)]
    deps: dict[str, list[str]] = {}
    for i in range(1, n):
        k = rng.randint(0, min(3, i))
        deps[pk[i]] = sorted(set(rng.sample(pk[:i], k)))
    return {"packages": pk, "deps": deps}
