"""A screenshot of the status page (SPEC section 13) for the docs: docs/status-page.png.

    .venv/bin/python -m bench.screenshot [--url http://127.0.0.1:8090/] [--out docs/status-page.png]

Without ``--url`` it starts its own swarmd and gatewayd on free ports, registers a few drones
over the real drone protocol (with made-up real-looking names that the gateway aliases), runs
some builds (a few fail, one target has no drone so its packages wait) and photographs the page
while builds are running. The browser is Debian's chromium (``/usr/bin/chromium``, or
``$SWARM_TEST_CHROMIUM``) driven by Playwright for Python; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM = os.environ.get("SWARM_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DRONES = [("drone-izar", "izar.lan", 16), ("drone-vega", "vega.lan", 8),
          ("drone-altair", "altair.lan", 12), ("drone-deneb", "deneb.lan", 4)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise SystemExit(f"{url}: its process exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def _drone(sd: str, name: str, host: str, cores: int, i: int, stop: threading.Event) -> None:
    c = httpx.Client(base_url=sd, timeout=10)
    reg = c.post("/api/drones/register", json={
        "name": name, "hostname": host, "ip": f"10.77.0.{10 + i}", "mac": f"02:00:00:00:00:{i:02x}",
        "cores": cores, "arch": "amd64", "chost": "x86_64-pc-linux-gnu", "version": "demo"})
    reg.raise_for_status()
    did, sess = reg.json()["drone_id"], reg.json()["session"]
    rng = random.Random(i)
    while not stop.is_set():
        r = c.post(f"/api/drones/{did}/lease", json={"session": sess, "wait_s": 0})
        if r.status_code != 200:
            c.post(f"/api/drones/{did}/heartbeat", json={"session": sess, "status": "ready",
                                                         "load": 0.1, "builds": []})
            stop.wait(0.5)
            continue
        job = r.json()
        took = rng.uniform(1.0, 4.0)
        t0 = time.monotonic()
        while time.monotonic() - t0 < took and not stop.is_set():
            c.post(f"/api/drones/{did}/heartbeat", json={
                "session": sess, "status": "building", "load": 2.0,
                "builds": [{"build_id": job["build_id"], "lease": job["lease"], "progress": 50}]})
            stop.wait(0.5)
        if stop.is_set():
            return
        ok = rng.random() > 0.15
        c.post(f"/api/builds/{job['build_id']}/complete", json={
            "lease": job["lease"], "result": "success" if ok else "failed", "duration_s": took,
            "artifact": {"path": f"{job['package']}.gpkg.tar", "size": 1, "sha256": "c" * 64}
            if ok else None, "error": None if ok else "compile error"})


def _own_swarm(tmp: Path) -> tuple[str, list[subprocess.Popen[bytes]], threading.Event]:
    env = {**os.environ, "PORTAGE_OVERRIDE_EPREFIX": "/", "SWARM_ADMIN_KEY": "screenshot-admin"}
    sd_port, gw_port, adm_port = _free_port(), _free_port(), _free_port()
    sd_url = f"http://127.0.0.1:{sd_port}"
    sd = subprocess.Popen([str(BIN / "swarmd"), "--state-dir", str(tmp / "state"), "--listen",
                           f"127.0.0.1:{sd_port}", "--config",
                           str(REPO / "tests" / "data" / "empty.toml"),
                           "--heartbeat-interval-s", "5", "--offline-after-s", "300"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _wait(sd_url + "/api/status", sd)
    cfg = tmp / "gatewayd.toml"
    cfg.write_text('[identity.hosts]\n"izar.lan" = "Izar"\n"vega.lan" = "Vega"\n'
                   '"altair.lan" = "Altair"\n"deneb.lan" = "Deneb"\n')
    gw = subprocess.Popen([str(BIN / "gatewayd"), "--config", str(cfg), "--listen",
                           f"127.0.0.1:{gw_port}", "--admin-listen", f"127.0.0.1:{adm_port}",
                           "--orchestrator", sd_url, "--spool-dir", str(tmp / "spool"),
                           "--probe-interval-s", "2", "--cache-ttl-s", "1",
                           "--public-binhost-url", "https://binhost.example.org/amd64"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    gw_url = f"http://127.0.0.1:{gw_port}/"
    _wait(gw_url + "health", gw)
    stop = threading.Event()
    for i, (name, host, cores) in enumerate(DRONES):
        threading.Thread(target=_drone, args=(sd_url, name, host, cores, i, stop),
                         daemon=True).start()
    time.sleep(1.5)  # the gateway's event subscription is up before the queue moves
    pkgs = [f"=dev-libs/lib{n}-1.{n}" for n in range(24)]
    httpx.post(sd_url + "/api/queue", json={"packages": pkgs, "request_id": "screenshot-1"},
               timeout=10).raise_for_status()
    other = {"arch": "arm64", "chost": "aarch64-unknown-linux-gnu", "cflags": "-O2",
             "profile": "default/linux/arm64/23.0"}
    httpx.post(sd_url + "/api/queue", json={"packages": ["=sys-kernel/arm-firmware-1",
                                                         "=media-libs/mesa-24.1"],
                                            "request_id": "screenshot-arm", "target": other},
               timeout=10)
    return gw_url, [gw, sd], stop


def shoot(url: str, out: Path, *, width: int, height: int, settle_s: float) -> None:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} not found: apt-get install chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            page.wait_for_timeout(settle_s * 1000)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running gateway's page (default: start a demo swarm)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "status-page.png")
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--run-s", type=float, default=12.0,
                    help="how long the demo swarm builds before the picture")
    args = ap.parse_args(argv)
    if args.url:
        shoot(args.url, args.out, width=args.width, height=args.height, settle_s=2)
        print(args.out)
        return 0
    with tempfile.TemporaryDirectory(prefix="swarm-shot-") as tmp:
        url, procs, stop = _own_swarm(Path(tmp))
        try:
            time.sleep(args.run_s)
            shoot(url, args.out, width=args.width, height=args.height, settle_s=2)
        finally:
            stop.set()
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
