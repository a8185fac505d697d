"""Helpers shared by the benchmarks: synthetic emerge output, real processes, statistics."""

from __future__ import annotations

import os
import platform
import random
import signal
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import trio

# Re-exported: the benchmarks take these from here.
from harness.procs import BIN as BIN
from harness.procs import EMPTY as EMPTY
from harness.procs import REPO as REPO
from harness.procs import free_port as free_port


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


class HttpError(OSError):
    """The server closed the connection or answered something this client does not read."""


class KeepAliveConn:
    """One keep-alive HTTP/1.1 connection on raw Trio sockets, for load generators: httpx costs
    more CPU per request than the servers measured here. Reads Content-Length bodies only.

    ``request`` reconnects once when a kept-alive connection turns out to be closed.
    """

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.stream: trio.SocketStream | None = None
        self.buf = bytearray()

    async def close(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
            self.stream = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        """Send one whole request (head and body) and read its response: (status, body)."""
        for attempt in (0, 1):
            if self.stream is None:
                self.stream = await trio.open_tcp_stream(self.host, self.port)
                self.buf.clear()
            try:
                await self.stream.send_all(data)
                return await self._response()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _fill(self) -> None:
        assert self.stream is not None
        data = await self.stream.receive_some(65536)
        if not data:
            raise HttpError("connection closed by the server")
        self.buf += data

    async def _response(self) -> tuple[int, bytes]:
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            await self._fill()
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        del self.buf[:end + 4]
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            k, _, v = line.partition(":")
            k = k.strip().lower()
            if k == "content-length":
                length = int(v)
            elif k == "transfer-encoding":
                raise HttpError("chunked responses are not supported by this client")
            elif k == "connection" and v.strip().lower() == "close":
                close = True
        while len(self.buf) < length:
            await self._fill()
        body = bytes(self.buf[:length])
        del self.buf[:length]
        if close:
            await self.close()
        return status, body
