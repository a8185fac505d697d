"""`DEMO=fake make demo`: the scheduler demo, a bigger world with fake builds.

Starts swarmd, gatewayd and three drones of different core counts (each running the bundled
fake emerge, which sleeps a scaled compile time and writes a real binary package), teaches
swarmd the sample's compile times (as `build-swarm history import` would from emerge.log),
submits demo/sample-world.txt (an `emerge -puDN --tree @world` of 135 packages) for any
target, shows progress live, prints a summary (built, failed, time, binhost contents,
checksums verified), and stops everything. `make demo` without DEMO=fake runs the real-portage
demo (demo/__main__.py).

Environment: DEMO_SPEED (default 250: how many times faster than real the fake compiles run),
logs and the local binhost stay in .demo/ until the next run. Also `python -m demo.fake`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".demo"
BIN = Path(sys.executable).parent
DRONES = [("drone-vega", 4), ("drone-deneb", 8), ("drone-rigel", 16)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: {what} exited with {proc.returncode}; see {WORK}/*.log")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"demo: {what} did not answer at {url} within {timeout} s")


def bar(frac: float, width: int = 24) -> str:
    n = int(round(frac * width))
    return "#" * n + "." * (width - n)


def main() -> int:
    speed = float(os.environ.get("DEMO_SPEED", "250"))
    if WORK.exists():
        shutil.rmtree(WORK)
    (WORK / "binhost").mkdir(parents=True)
    env = {**os.environ, "PORTAGE_OVERRIDE_EPREFIX": "/", "PYTHONUNBUFFERED": "1"}
    for k in ("SWARM_ADMIN_KEY", "SWARM_CONTROL_TOKEN", "SWARM_DRONE_TOKEN"):
        env.pop(k, None)
    env["SWARM_CONTROL_TOKEN"] = "demo-control-token"
    env["SWARM_DRONE_TOKEN"] = "demo-drone-token"
    env["SWARM_ADMIN_KEY"] = "demo-admin-key"
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    sd_port, gw_port, gw_admin = free_port(), free_port(), free_port()
    sd_url = f"http://127.0.0.1:{sd_port}"
    gw_url = f"http://127.0.0.1:{gw_port}"
    empty = REPO / "tests" / "data" / "empty.toml"

    def start(name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        logf = (WORK / f"{name}.log").open("wb")
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, cwd=REPO,
                             env={**env, **(extra_env or {})})
        procs.append((name, p))
        return p

    t_start = time.monotonic()
    rc = 1
    try:
        print(f"demo: starting swarmd on {sd_url} (state in .demo/state)")
        p = start("swarmd", [str(BIN / "swarmd"), "--listen", f"127.0.0.1:{sd_port}",
                             "--state-dir", str(WORK / "state"), "--config", str(empty),
                             "--heartbeat-interval-s", "5", "--offline-after-s", "15"])
        wait(sd_url + "/api/status", p, "swarmd")
        gateway = False
        if (BIN / "gatewayd").exists():
            print(f"demo: starting gatewayd on {gw_url} (admin 127.0.0.1:{gw_admin})")
            p = start("gatewayd", [str(BIN / "gatewayd"), "--listen", f"127.0.0.1:{gw_port}",
                                   "--admin-listen", f"127.0.0.1:{gw_admin}",
                                   "--orchestrator", sd_url, "--config", str(empty),
                                   "--spool-dir", str(WORK / "spool"),
                                   "--public-binhost-url", "https://binhost.example.org/amd64"])
            try:
                wait(gw_url + "/health", p, "gatewayd")
                gateway = True
            except SystemExit as exc:
                print(f"demo: gateway unavailable ({exc}); going on with swarmd alone")
        times = json.loads((REPO / "demo" / "sample-times.json").read_text())
        history: dict[str, float] = {}
        from swarmd.atoms import cp_of

        for cpv, secs in times.items():
            history[cp_of(cpv)] = secs
        hdr = {"Authorization": f"Bearer {env['SWARM_CONTROL_TOKEN']}"}
        httpx.post(sd_url + "/api/history", json={"packages": history}, headers=hdr,
                   timeout=10).raise_for_status()
        print(f"demo: taught swarmd the compile times of {len(history)} packages "
              "(what 'build-swarm history import /var/log/emerge.log' does)")
        for name, cores in DRONES:
            pkgdir = WORK / name / "pkgdir"
            pkgdir.mkdir(parents=True)
            argv = [
                str(BIN / "swarm-drone"), "--orchestrator", sd_url, "--name", name,
                "--cores", str(cores), "--pkgdir", str(pkgdir),
                "--state-dir", str(WORK / name / "state"), "--config", str(empty),
                "--binhost-target", str(WORK / "binhost"),
                "--build-command", f"{sys.executable} -m droned.fake_emerge --pkgdir {pkgdir} ={{cpv}}",
                "--sync-command", "install -D -m 0644 {artifact} {binhost_target}/{relpath}",
            ]
            start(name, argv, {"FAKE_EMERGE_TIMES": str(REPO / "demo" / "sample-times.json"),
                               "FAKE_EMERGE_CORES": str(cores),
                               "FAKE_EMERGE_SPEED": str(speed)})
            print(f"demo: started {name} ({cores} cores)")
        sample = (REPO / "demo" / "sample-world.txt").read_text()
        if (BIN / "build-swarm").exists():
            cli = subprocess.run(
                [str(BIN / "build-swarm"), "--orchestrator", sd_url, "submit", "--any-target",
                 str(REPO / "demo" / "sample-world.txt"), "--request-id", "demo-world"],
                env=env, capture_output=True, text=True, timeout=60)
            print("demo: $ build-swarm submit demo/sample-world.txt")
            print("      " + cli.stdout.strip().replace("\n", "\n      "))
            if cli.returncode != 0:
                print(cli.stderr)
        r = httpx.post(sd_url + "/api/queue", content=sample,
                       headers={**hdr, "Content-Type": "text/plain", "X-Request-Id": "demo-world"},
                       timeout=30)
        rec = r.json()
        rid = rec["id"]
        print(f"demo: request {rid}: {rec['packages']} packages, {rec['queued']} queued, "
              f"{rec['skipped']} skipped, {rec['merged']} merged")
        tty = sys.stdout.isatty()
        last_lines = 0
        t_sub = time.monotonic()
        req: dict[str, Any] = {}
        while True:
            req = httpx.get(f"{sd_url}/api/requests/{rid}", timeout=10).json()
            drones = httpx.get(sd_url + "/api/drones", timeout=10).json()["drones"]
            c = req["counts"]
            done = c["built"] + c["failed"] + c["blocked"] + c["cancelled"]
            total = len(req["entries"])
            lines = [f"[{time.monotonic() - t_sub:6.1f}s] [{bar(done / max(total, 1))}] "
                     f"{done}/{total} done: built {c['built']}, building "
                     f"{c['assigned'] + c['building']}, ready {c['ready']}, waiting {c['pending']}, "
                     f"failed {c['failed']}, blocked {c['blocked']}"]
            for d in sorted(drones, key=lambda d: d["cores"]):
                cur = d["current_builds"]
                what = ", ".join(
                    f"{b['cpv']} {b['progress'] or 0:3.0f}%" for b in cur) or "-"
                lines.append(f"    {d['name']:<12} {d['cores']:>2} cores  {d['status']:<9} {what}")
            if tty:
                if last_lines:
                    sys.stdout.write(f"\x1b[{last_lines}F\x1b[J")
                sys.stdout.write("\n".join(lines) + "\n")
                last_lines = len(lines)
            else:
                print(lines[0])
            sys.stdout.flush()
            if req["state"] == "complete":
                break
            if time.monotonic() - t_start > 170:
                print("demo: giving up after 170 s")
                break
            time.sleep(1.0)
        elapsed = time.monotonic() - t_sub
        builds = httpx.get(sd_url + "/api/builds?limit=1000", timeout=10).json()["builds"]
        ok = [b for b in builds if b["result"] == "success"]
        bad = 0
        for b in ok:
            f = WORK / "binhost" / b["artifact"]["path"]
            if not f.is_file() or hashlib.sha256(f.read_bytes()).hexdigest() != b["artifact"]["sha256"]:
                bad += 1
        files = sorted(p for p in (WORK / "binhost").rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in files)
        s = req["summary"]
        print()
        print("demo summary")
        print(f"  request     {rid}: {s['packages']} packages in {elapsed:.1f} s")
        print(f"  built       {s['built']}   failed {s['failed']}   blocked {s['blocked']}   "
              f"cancelled {s['cancelled']}")
        per: dict[str, int] = {}
        for b in ok:
            per[b["drone_name"]] = per.get(b["drone_name"], 0) + 1
        print("  per drone   " + ", ".join(f"{k}: {v}" for k, v in sorted(per.items())))
        print(f"  binhost     {len(files)} binary packages, {size / 1024:.0f} KiB in .demo/binhost; "
              f"sha256 verified for {len(ok) - bad}/{len(ok)}")
        for f in files[:3]:
            print(f"              {f.relative_to(WORK / 'binhost')}")
        if gateway:
            pub = httpx.get(gw_url + "/api/v1/services/public/build-swarm", timeout=10)
            print(f"  gateway     GET /api/v1/services/public/build-swarm -> {pub.status_code} "
                  f"(sanitized public view)")
        rc = 0 if req["state"] == "complete" and s["failed"] == 0 and bad == 0 else 1
    finally:
        for _name, p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in reversed(procs):
            try:
                code = p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                code = p.wait()
            if code != 0:
                print(f"demo: {name} exited with {code} (log: .demo/{name}.log)")
        print(f"demo: stopped {len(procs)} processes; total {time.monotonic() - t_start:.1f} s")
        print("demo: logs and the binhost are in .demo/ (removed at the next run)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
