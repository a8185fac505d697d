"""Helpers shared by the benchmarks: synthetic emerge output, real processes, statistics."""

from __future__ import annotations

import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EMPTY = REPO / "tests" / "data" / "empty.toml"


def world_tree(n: int, prefix: str = "p", seed: int = 1) -> str:
    """A synthetic ``emerge -puDN --tree @world`` of ``n`` packages with realistic nesting."""
    rng = random.Random(seed)
    lines = ["", "These are the packages that would be merged, in reverse order:", "",
             "Calculating dependencies... done!", ""]
    i = 0
    while i < n:
        depth = 0
        # a world package with a random subtree below it
        for _ in range(rng.randint(1, 12)):
            if i >= n:
                break
            lines.append(f"[ebuild     U  ] {' ' * depth}cat-{i % 97}/{prefix}{i}-1.{i % 13}.{rng.randint(0, 9)}"
                         f"::gentoo [1.0] USE=\"a b -c\" 1,024 KiB")
            i += 1
            depth = max(0, min(depth + rng.choice([-1, 0, 1, 1]), 6))
    lines += ["", f"Total: {n} packages ({n} upgrades), Size of downloads: 1 KiB", ""]
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Swarmd:
    def __init__(self, state_dir: Path, *extra: str, env: dict[str, str] | None = None,
                 log: Path | None = None) -> None:
        self.log = log  # swarmd's stderr (its log) goes here when given
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_dir = state_dir
        self.extra = list(extra)
        self.env = {**os.environ, "PORTAGE_OVERRIDE_EPREFIX": "/", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s = 0.0

    def start(self, timeout: float = 120) -> Swarmd:
        t0 = time.perf_counter()
        err: Any = subprocess.DEVNULL
        if self.log is not None:
            err = self.log.open("ab")
        self.proc = subprocess.Popen(
            [str(BIN / "swarmd"), "--state-dir", str(self.state_dir), "--listen",
             f"127.0.0.1:{self.port}", "--config", str(EMPTY), *self.extra],
            stdout=subprocess.DEVNULL, stderr=err, env=self.env)
        if self.log is not None:
            err.close()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"swarmd exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/api/status", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError("swarmd did not start")
            time.sleep(0.02)
        self.ready_s = time.perf_counter() - t0
        return self

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values) if values else 0.0,
        "p50": pct(values, 50),
        "p99": pct(values, 99),
        "min": min(values) if values else 0.0,
        "max": max(values) if values else 0.0,
    }


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "machine": platform.machine(), "kernel": platform.release()}
