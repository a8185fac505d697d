"""The reliability suite (issue 7): every item against the real programs, results written to
docs/RELIABILITY.md. ``python -m bench.reliability [--quick] [--only ITEM,...]``.

Items: crash, lazy, damage, resource, network, input, security. Each one records what was
tried, how many times, what was lost (the target is nothing) and the command that reruns it.
The whole run is bounded to about 20 minutes; ``--quick`` cuts every count for a smoke run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("PORTAGE_OVERRIDE_EPREFIX", "/")

import httpx  # noqa: E402
import trio  # noqa: E402

from harness import reliability_faults as rf  # noqa: E402
from harness.procs import BIN, EMPTY, REPO, SwarmdProc, free_port, wait_http  # noqa: E402
from harness.swarm import Swarm  # noqa: E402
from swarmd import journal  # noqa: E402

OUT = REPO / "docs" / "RELIABILITY.md"


class Item:
    """One section of docs/RELIABILITY.md."""

    def __init__(self, key: str, title: str) -> None:
        self.key = key
        self.title = title
        self.tried: list[str] = []
        self.lost: list[str] = []
        self.notes: list[str] = []
        self.status = "pass"
        self.seconds = 0.0

    def fail(self, what: str) -> None:
        self.lost.append(what)
        self.status = "FAIL"

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.fail(what)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ================================================================ 1. crash consistency
def _workload(seed: int, n_requests: int) -> list[dict[str, Any]]:
    """Requests with shared packages, one always-failing package, and requests to cancel
    (a package that takes 10 minutes heads each of them, so the cancel always wins)."""
    rng = random.Random(seed)
    pool = [f"=crash-{k % 4}/pkg{k}-1.{k % 5}" for k in range(90)]
    out: list[dict[str, Any]] = []
    for i in range(n_requests):
        if i % 8 == 5:
            slow, after = f"=crash-c/slow{i}-1.0", f"=crash-c/after{i}-1.0"
            out.append({"request_id": f"cr-{i}", "packages": [slow, after],
                        "deps": {after: [slow]}, "cancel": True})
            continue
        pk = sorted(set(rng.sample(pool, 6)), key=pool.index)
        deps = {p: [q for q in pk[:j] if rng.random() < 0.4] for j, p in enumerate(pk)}
        if i == 3:
            pk += ["=crash-f/broken-1.0", "=crash-f/needs-broken-1.0"]
            deps["=crash-f/needs-broken-1.0"] = ["=crash-f/broken-1.0"]
        out.append({"request_id": f"cr-{i}", "packages": pk,
                    "deps": {k: v for k, v in deps.items() if v}, "cancel": False})
    return out


def _driver(url: str, work: list[dict[str, Any]], pace_s: float, acked: dict[str, list[str]],
            cancelled: set[str], stop: threading.Event) -> None:
    """Submit each request (retrying until acknowledged), cancel the ones marked so."""
    with httpx.Client(timeout=5.0) as c:
        for req in work:
            body = {k: req[k] for k in ("request_id", "packages", "deps")}
            while not stop.is_set():
                try:
                    r = c.post(url + "/api/queue", json=body)
                    if r.status_code in (200, 202):
                        acked[req["request_id"]] = [p[1:] for p in req["packages"]]
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            while req["cancel"] and not stop.is_set():
                try:
                    r = c.delete(f"{url}/api/queue/{req['request_id']}")
                    if r.status_code in (200, 409):
                        cancelled.add(req["request_id"])
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            stop.wait(pace_s)


def _run_swarm(tmp: Path, work: list[dict[str, Any]], kills: int, rng: random.Random,
               pace_s: float) -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    times = tmp / "times.json"
    table: dict[str, float] = {"default": 0.3}
    for req in work:
        if req["cancel"]:
            table[req["packages"][0][1:]] = 600.0
    times.write_text(json.dumps(table))
    sw = Swarm(tmp, fake_env={"FAKE_EMERGE_SECONDS": "", "FAKE_EMERGE_TIMES": str(times),
                              "FAKE_EMERGE_FAIL": "crash-f/broken-1.0"}).start()
    acked: dict[str, list[str]] = {}
    cancelled: set[str] = set()
    stop = threading.Event()
    restarts: list[float] = []
    try:
        for i in range(3):
            sw.add_drone(f"cd{i}", 8)
        t = threading.Thread(target=_driver, args=(sw.url, work, pace_s, acked, cancelled, stop))
        t.start()
        for _ in range(kills):
            time.sleep(rng.uniform(0.1, 1.4))
            sw.swarmd.kill9()
            t0 = time.monotonic()
            sw.swarmd.start()
            restarts.append(time.monotonic() - t0)
        t.join(600)
        rids = [r["request_id"] for r in work]
        stuck = []
        deadline = time.monotonic() + 240
        for rid in rids:
            try:
                sw.wait_complete(rid, max(1.0, deadline - time.monotonic()))
            except TimeoutError:
                stuck.append(rid)
        builds = sw.get("/api/builds?limit=1000")["builds"]
        queue = sw.get("/api/queue")["entries"]
        reqs = {rid: sw.get(f"/api/requests/{rid}") for rid in rids}
        files = Counter(p.name.rsplit("-", 1)[0] for p in sw.binhost.rglob("*.gpkg.tar"))
    finally:
        stop.set()
        codes = sw.stop()
    final: dict[str, str] = {}
    for e in sorted(queue, key=lambda e: e["order"]):
        final[e["cpv"]] = e["state"]
    log_text = (tmp / "swarmd.log").read_text(errors="replace")
    return {"acked": acked, "cancelled": cancelled, "builds": builds, "final": final,
            "stuck": stuck, "queue": queue,
            "requests": reqs, "files": files, "codes": codes, "restarts": restarts,
            "tracebacks": log_text.count("Traceback")}


def item_crash(it: Item, quick: bool) -> None:
    kills = 10 if quick else 100
    n_req = 10 if quick else 34
    work = _workload(11, n_req)
    rng = random.Random(2026)
    d = tempfile.mkdtemp(prefix="rel-crash-")
    log("crash: baseline run without kills")
    base = _run_swarm(Path(d) / "base", work, 0, rng, 0.05)
    log(f"crash: run with {kills} SIGKILLs of swarmd")
    run = _run_swarm(Path(d) / "kill", work, kills, rng, max(0.05, kills * 0.9 / n_req))
    for name, r in (("without kills", base), ("with kills", run)):
        for rid in r["stuck"]:
            req = r["requests"][rid]
            eids = set(req["entries"])
            waiting = [(e["id"], e["cpv"], e["state"], e["deps"]) for e in r["queue"]
                       if e["id"] in eids and e["state"] not in ("built", "failed", "blocked",
                                                                   "cancelled")]
            states = {e["cpv"]: e["state"] for e in r["queue"]}
            it.fail(f"run {name}: request {rid} never completed (240 s after the last kill): "
                    f"unfinished {waiting}; states of their deps: "
                    f"{ {c: states.get(c) for w in waiting for c in w[3]} }")
    it.tried.append(f"{len(work)} requests ({sum(len(w['packages']) for w in work)} package "
                    f"rows, shared packages, 1 always-failing package with a dependent, "
                    f"{sum(w['cancel'] for w in work)} requests cancelled while building), "
                    f"3 real swarm-drone agents with the fake emerge (0.3 s per package)")
    it.tried.append(f"swarmd SIGKILLed at {kills} random moments (0.1-1.4 s apart) and restarted "
                    f"on the same state directory and port; restart to first answer: median "
                    f"{_median(run['restarts']):.2f} s, max {max(run['restarts'] or [0]):.2f} s")
    it.tried.append("the same workload once without kills; per-CPV final states compared")
    lost_req = [rid for rid in run["acked"] if run["requests"][rid].get("id") != rid]
    it.check(not lost_req, f"acknowledged requests lost: {lost_req}")
    missing = []
    by_cpv_states = run["final"]
    for rid, cpvs in run["acked"].items():
        missing += [f"{c} ({rid})" for c in cpvs if c not in by_cpv_states
                    and c not in _skipped(run["requests"][rid])]
    it.check(not missing, f"packages of acknowledged requests lost: {missing[:10]}")
    twice = []
    for cpv in {b["cpv"] for b in run["builds"]}:
        ok = sorted((b for b in run["builds"] if b["cpv"] == cpv and b["result"] == "success"),
                    key=lambda b: b["finished_ts"])
        if len(ok) > 1:
            twice.append(f"{cpv}: {len(ok)} successful builds")
        elif ok:
            later = [b["id"] for b in run["builds"] if b["cpv"] == cpv
                     and b["started_ts"] > ok[0]["finished_ts"]]
            if later:
                twice.append(f"{cpv}: built again after its success ({later})")
    it.check(not twice, f"built twice after acknowledged success: {twice[:10]}")
    diff = {c: (base["final"].get(c), s) for c, s in run["final"].items()
            if base["final"].get(c) != s}
    diff.update({c: (s, None) for c, s in base["final"].items() if c not in run["final"]})
    it.check(not diff, f"final per-CPV state differs from the run without crashes: "
                       f"{dict(list(diff.items())[:10])}")
    extra_files = {k: v for k, v in run["files"].items() if v > 1}
    states = Counter(run["final"].values())
    it.notes.append(f"final states (both runs): {dict(sorted(states.items()))} over "
                    f"{len(run['final'])} CPVs; equal to the run without crashes: "
                    f"{'yes' if not diff else 'NO'}")
    it.notes.append(f"binary packages on the binhost built more than once (a build whose "
                    f"success report was not acknowledged before a kill may run again; "
                    f"allowed, but counted): {len(extra_files)}")
    it.check(run["tracebacks"] == 0, f"{run['tracebacks']} tracebacks in swarmd's log")
    if it.status == "pass":
        shutil.rmtree(d, ignore_errors=True)
    else:
        it.notes.append(f"state directories, logs and binhost kept for inspection in {d}")
    it.notes.append(f"tracebacks in swarmd's log: {run['tracebacks']}; drones' exit codes "
                    f"at the end: {run['codes']}")


def _skipped(req: dict[str, Any]) -> list[str]:
    return []  # a skipped CPV is also in the queue as built: nothing to add


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if s else 0.0


# ================================================================ 2. lazy file
def item_lazy(it: Item, quick: bool) -> None:
    n = 30 if quick else 300
    r = trio.run(rf.lazy_trials, n, 5)
    it.tried.append(f"{r['trials']} crashes of an in-process swarmd (real Orchestrator, real "
                    f"journal code, compaction every 4 KiB) whose journal is a LazyJournal "
                    f"(harness/reliability_faults.py): at a random write (1st-120th) the "
                    f"'power fails' after write() and before fsync(); every byte written since "
                    f"the last fsync is dropped ({r['trials'] - r['torn_trials']} trials) or "
                    f"all but a random prefix survives ({r['torn_trials']} trials, a torn "
                    f"write); then recovery by replay")
    it.tried.append(f"workload per trial: 40 submissions, 2 drones leasing and completing "
                    f"(15% failures), 8 cancels, all concurrent; {r['acked']} acknowledged "
                    f"calls in total, {r['dropped_bytes']} unsynced bytes dropped")
    it.notes.append(f"recovered state identical to the live state at the crash: "
                    f"{r['identical']} of {r['trials']} (every drop-all trial must be; a torn "
                    f"trial may recover a durable-but-unanswered batch)")
    for x in r["lost"]:
        it.fail(x)


# ================================================================ 3. journal damage
def item_damage(it: Item, quick: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="rel-damage-") as d:
        src = Path(d) / "src"
        trio.run(rf.build_journal, src)
        tail = 4096 if quick else 16384
        r = rf.damage_trials(src, tail_bytes=tail, flips=300 if quick else 3000,
                             zero_runs=50 if quick else 500)
        it.tried.append(f"a real journal segment of {r['segment_bytes']} bytes, "
                        f"{r['records']} records (submissions, drones, builds, cancels)")
        for kind, label in (("truncate", f"truncated at every byte offset of "
                             f"the last {tail} bytes"),
                            ("bitflip", "one bit flipped at a random offset before the last "
                             "record"),
                            ("zero512", "a 512-byte run zeroed before the last record")):
            c = r[kind]
            it.tried.append(f"{label}: {sum(c.values())} copies; outcomes {c}")
            it.check(c.get("silent_loss", 0) == 0, f"{kind}: {c.get('silent_loss')} silent "
                                                   f"losses")
            it.check(c.get("unclear_refusal", 0) == 0, f"{kind}: refusals without file and "
                                                       f"offset")
        # The real program on a sample: a refusal is exit 1 with file and offset on stderr,
        # a torn tail starts and serves.
        data = (journal.segments(src)[-1]).read_bytes()
        seg_name = journal.segments(src)[-1].name
        samples = {"torn tail": data[:-7], "bit flip": _flip(data, len(data) // 3),
                   "zeroed run": data[:len(data) // 2] + bytes(512) + data[len(data) // 2 + 512:]}
        for what, blob in samples.items():
            sd = Path(d) / what.replace(" ", "-")
            sd.mkdir()
            for p in src.iterdir():
                if p.is_file() and p.name != seg_name:
                    (sd / p.name).write_bytes(p.read_bytes())
            (sd / seg_name).write_bytes(blob)
            port = free_port()
            proc = subprocess.run(
                [str(BIN / "swarmd"), "--state-dir", str(sd), "--listen", f"127.0.0.1:{port}",
                 "--config", str(EMPTY)], capture_output=True, text=True, timeout=15,
                env={**os.environ, "PORTAGE_OVERRIDE_EPREFIX": "/"}) if what != "torn tail" \
                else None
            if proc is None:
                p2 = SwarmdProc(sd, Path(d) / "torn.log").start()
                n = httpx.get(p2.url + "/api/status", timeout=5).json()["journal"]["last_seq"]
                p2.stop()
                it.notes.append(f"real swarmd on a torn tail: started, recovered to seq {n}")
            else:
                ok = proc.returncode == 1 and seg_name in proc.stderr and "offset" in proc.stderr
                it.check(ok, f"real swarmd on a {what}: exit {proc.returncode}, "
                             f"stderr {proc.stderr[-300:]!r}")
                it.notes.append(f"real swarmd on a {what}: exit {proc.returncode}, "
                                f"\"{proc.stderr.strip().splitlines()[-1][:160]}\"")


def _flip(data: bytes, off: int) -> bytes:
    b = bytearray(data)
    b[off] ^= 0x10
    return bytes(b)


# ================================================================ 4. resource faults
def item_resource(it: Item, quick: bool) -> None:
    combos = [("write", "ENOSPC"), ("write", "EIO"), ("fsync", "ENOSPC"), ("fsync", "EIO")]
    reps = 1 if quick else 3
    totals: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="rel-res-") as d:
        for what, errno_name in combos:
            for rep in range(reps):
                after = [1, 3, 8][rep % 3]
                state = Path(d) / f"{what}-{errno_name}-{rep}"
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                proc = subprocess.Popen(
                    [sys.executable, "-m", "harness.fault_swarmd", what, errno_name, str(after),
                     "--", "--state-dir", str(state), "--listen", f"127.0.0.1:{port}",
                     "--config", str(EMPTY)], cwd=REPO, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, env={**os.environ, "PORTAGE_OVERRIDE_EPREFIX": "/"})
                wait_http(url + "/api/status", proc=proc)
                acked = []
                answers: list[int | None] = []
                for i in range(after + 4):
                    try:
                        r = httpx.post(url + "/api/queue", timeout=5, json={
                            "packages": [f"=r/p{i}-1"], "request_id": f"q{i}"})
                        answers.append(r.status_code)
                        if r.status_code == 202:
                            acked.append(f"q{i}")
                    except httpx.HTTPError:
                        answers.append(None)
                try:
                    out, _ = proc.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    out, _ = proc.communicate()
                totals["runs"] += 1
                totals["acked"] += len(acked)
                it.check(proc.returncode not in (0, None),
                         f"{what} {errno_name}: swarmd exit code {proc.returncode}")
                it.check(b"fatal" in out, f"{what} {errno_name}: no 'fatal' line in the log")
                it.check(202 not in answers[len(acked):],
                         f"{what} {errno_name}: 202 after the failure: {answers}")
                p = SwarmdProc(state, Path(d) / "restart.log").start()
                try:
                    for rid in acked:
                        r2 = httpx.get(f"{p.url}/api/requests/{rid}", timeout=5)
                        if r2.status_code != 200:
                            it.fail(f"{what} {errno_name}: acknowledged {rid} lost")
                    totals["restarts_ok"] += 1
                finally:
                    code = p.stop()
                it.check(code == 0, f"restart after {what} {errno_name} exited {code}")
        it.tried.append(f"swarmd under harness/fault_swarmd.py: {{write, fsync}} x {{ENOSPC, EIO}}"
                        f", failing after 1/3/8 journal calls, {reps} run(s) each: "
                        f"{totals['runs']} runs, {totals['acked']} submissions acknowledged "
                        f"before the fault; every run exited non-zero with a 'fatal' line and "
                        f"answered nothing after it; {totals['restarts_ok']} clean restarts")
        _spool_faults(it, Path(d), 3 if quick else 20)


def _spool_faults(it: Item, tmp: Path, n: int) -> None:
    """gatewayd's spool: a failing write or fsync answers 503 (never 202), and a new Spool over
    the same directory holds every request answered 202."""
    try:
        from gatewayd.spool import Spool
    except ImportError:
        it.notes.append("gateway spool: not run (gatewayd/spool.py not available)")
        return
    import builtins
    import errno as errno_mod

    real_fsync, real_write, real_open, real_fdopen = os.fsync, os.write, builtins.open, os.fdopen
    acked: list[str] = []
    refused = 0
    runs = 0
    d = tmp / "spool"
    for i in range(n):
        for what in ("fsync", "write"):
            for code in (errno_mod.ENOSPC, errno_mod.EIO):
                runs += 1
                sp = Spool(d, max_requests=10_000, max_bytes=1 << 30)
                rid = f"s{i}-{what}-{code}"
                sp.put(rid + "-ok", "application/json", b'{"packages": ["=a/b-1"]}')
                acked.append(rid + "-ok")

                def bad(*a: Any, _code: int = code, **k: Any) -> Any:
                    raise OSError(_code, os.strerror(_code))

                if what == "fsync":
                    os.fsync = bad
                else:  # the spool writes through swarmlib.files.atomic_write: os.fdopen
                    builtins.open = _failing_open(real_open, code)
                    os.fdopen = _failing_open(real_fdopen, code)
                try:
                    sp.put(rid, "application/json", b'{"packages": ["=a/c-1"]}')
                    it.fail(f"spool {what} {os.strerror(code)}: put() returned (would be 202)")
                except OSError:
                    refused += 1
                finally:
                    os.fsync, os.write, os.fdopen = real_fsync, real_write, real_fdopen
                    builtins.open = real_open
    sp2 = Spool(d, max_requests=10_000, max_bytes=1 << 30)
    held = {item.request_id for item in sp2.pending()}
    lost = [r for r in acked if r not in held]
    for r in lost:
        it.fail(f"spool lost acknowledged {r}")
    it.tried.append(f"gateway spool (gatewayd/spool.py, in process): {runs} put() calls with "
                    f"ENOSPC/EIO injected on write or fsync, each after a good put(): "
                    f"{refused} raised (gatewayd answers 503 spool_failed, never 202); a new "
                    f"Spool over the directory holds {len(acked) - len(lost)} of {len(acked)} "
                    f"stored requests")


def _failing_open(real_open: Any, code: int) -> Any:
    """``real_open`` (``open`` or ``os.fdopen``) whose files fail every write with ``code``."""

    class _Failing:
        def __init__(self, *a: Any, **k: Any) -> None:
            self.f = real_open(*a, **k)

        def __enter__(self) -> _Failing:
            return self

        def __exit__(self, *a: Any) -> None:
            self.f.close()

        def write(self, data: bytes) -> int:
            raise OSError(code, os.strerror(code))

        def flush(self) -> None:
            pass

        def fileno(self) -> int:
            return int(self.f.fileno())

    return _Failing


# ================================================================ 5. network faults
def item_network(it: Item, quick: bool) -> None:
    rounds = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="rel-net-") as d:
        for rnd in range(rounds):
            _network_round(it, Path(d) / f"r{rnd}", rnd)
    it.tried.insert(0, f"swarmd with --heartbeat-interval-s 1 --offline-after-s 3; real "
                       f"swarm-drone agents; the drone process stopped with SIGSTOP (its "
                       f"running fake emerge keeps going), then SIGCONT; {rounds} round(s)")


def _network_round(it: Item, tmp: Path, rnd: int) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    times = tmp / "times.json"
    times.write_text(json.dumps({f"net/below{rnd}-1": 4, f"net/above{rnd}-1": 12}))
    sw = Swarm(tmp, swarmd_args=["--heartbeat-interval-s", "1", "--offline-after-s", "3"],
               fake_env={"FAKE_EMERGE_SECONDS": "", "FAKE_EMERGE_TIMES": str(times)}).start()
    try:
        victim = sw.add_drone("victim", 8)
        sw.wait_for(lambda: sw.get("/api/drones")["drones"], 20, "victim registered")
        rid = sw.submit({"packages": [f"=net/below{rnd}-1"]})["id"]
        bid = sw.wait_for(lambda: next((b["id"] for b in sw.get("/api/builds")["builds"]
                                        if b["state"] != "finished"), None), 20, "a lease")
        # Below the threshold: 1.8 s stopped (offline after 3 s).
        victim.send_signal(signal.SIGSTOP)
        statuses = set()
        t_end = time.monotonic() + 1.8
        while time.monotonic() < t_end:
            statuses |= {d["status"] for d in sw.get("/api/drones")["drones"]}
            time.sleep(0.1)
        victim.send_signal(signal.SIGCONT)
        sw.wait_complete(rid, 60)
        b = sw.get(f"/api/builds/{bid}")
        ok = b["result"] == "success" and "offline" not in statuses
        it.check(ok, f"round {rnd}: false failover below the threshold: build {b['result']}, "
                     f"statuses seen {statuses}")
        it.tried.append(f"round {rnd}: stopped 1.8 s mid-build: statuses seen {sorted(statuses)}"
                        f", build {bid} {b['result']} on the same drone")
        # Above the threshold: stopped until swarmd declares it offline, plus 5 s.
        rid2 = sw.submit({"packages": [f"=net/above{rnd}-1"]})["id"]
        vid = next(d["id"] for d in sw.get("/api/drones")["drones"] if d["name"] == "victim")

        def victim_build() -> Any:
            return next((b for b in sw.get("/api/builds")["builds"]
                         if b["cpv"] == f"net/above{rnd}-1" and b["drone"] == vid), None)

        vb = sw.wait_for(victim_build, 20, "victim lease")
        t_lease = time.monotonic()
        # The survivor joins only now, so the victim holds the package.
        sw.add_drone("survivor", 8)
        sw.wait_for(lambda: len(sw.get("/api/drones")["drones"]) == 2, 20, "survivor")
        if victim_build()["state"] == "finished":
            it.notes.append(f"round {rnd}: the victim finished before it was stopped; skipped")
            return
        t0 = time.monotonic()
        victim.send_signal(signal.SIGSTOP)
        sw.wait_for(lambda: next(d for d in sw.get("/api/drones")["drones"]
                                 if d["id"] == vid)["status"] == "offline", 15, "offline")
        t_off = time.monotonic() - t0
        # The victim's emerge (12 s) finishes while it is stopped: a stale success waits.
        time.sleep(max(0.0, t_lease + 13 - time.monotonic()))
        t_stopped = time.monotonic() - t0
        victim.send_signal(signal.SIGCONT)
        sw.wait_complete(rid2, 60)
        time.sleep(3)  # let the returning drone try its stale reports
        builds = [b for b in sw.get("/api/builds?limit=1000")["builds"]
                  if b["cpv"] == f"net/above{rnd}-1"]
        old = next(b for b in builds if b["id"] == vb["id"])
        ok_builds = [b for b in builds if b["result"] == "success"]
        it.check(old["result"] == "returned", f"round {rnd}: the stopped drone's build ended "
                                              f"{old['result']}, not returned")
        it.check(len(ok_builds) == 1 and ok_builds[0]["drone_name"] == "survivor",
                 f"round {rnd}: successes {[(b['id'], b['drone_name']) for b in ok_builds]}")
        entry = next(e for e in sw.get("/api/queue")["entries"]
                     if e["cpv"] == f"net/above{rnd}-1")
        it.check(entry["attempts"] == 1, f"round {rnd}: failover counted as an attempt "
                                         f"({entry['attempts']})")
        vlog = (tmp / "victim.log").read_text(errors="replace")
        stale = vlog.count("409") + vlog.lower().count("stale") + vlog.count("superseded")
        it.tried.append(f"round {rnd}: stopped {t_stopped:.1f} s mid-build: offline after "
                        f"{t_off:.1f} s (threshold 3 s + watcher granularity), build "
                        f"{old['id']} -> {old['result']}, the package built once by "
                        f"{ok_builds[0]['drone_name'] if ok_builds else '-'}, attempts "
                        f"{entry['attempts']}; the returning drone's stale reports refused "
                        f"(mentions of 409/stale/superseded in its log: {stale})")
        it.check(t_off < 3 + 3, f"round {rnd}: failover took {t_off:.1f} s (threshold 3 s)")
    finally:
        sw.stop()


# ================================================================ 6. input faults
def item_input(it: Item, quick: bool) -> None:
    n = 300 if quick else 3000
    try:
        r = rf.run_input_faults(n, seed=7, validator=_openapi_validator())
        it.tried.append(f"Hypothesis: {r['examples']} generated requests over {r['endpoints']} "
                        f"method/route pairs (every swarmd endpoint, real ids and leases mixed "
                        f"in, JSON/emerge text/binary bodies, 7 content types, odd queries and "
                        f"headers), in process; statuses {r['statuses']}; every response "
                        f"validated against docs/openapi.yaml; each rejected request compared "
                        f"durable state, /api/queue and /api/drones before and after")
    except Exception as exc:  # noqa: BLE001 - the shrunk example is the report
        text = "".join(traceback.format_exception(exc))
        keep = [ln for ln in text.splitlines() if ln.strip(" |")][-40:]
        it.fail("Hypothesis found:\n" + "\n".join(keep))
    with tempfile.TemporaryDirectory(prefix="rel-input-") as d:
        p = SwarmdProc(Path(d) / "state", Path(d) / "swarmd.log").start()
        try:
            _schemathesis(it, p.url, 50 if quick else 300)
            _malformed_emerge(it, p.url, 50 if quick else 400)
            _huge_body(it, p.url)
            _slowloris(it, p.url, 50 if quick else 200)
            _ws_flood(it, p.url, 50 if quick else 300)
            r2 = httpx.get(p.url + "/api/status", timeout=5)
            it.check(r2.status_code == 200, "swarmd not answering after the input faults")
        finally:
            code = p.stop()
        it.check(code == 0, f"swarmd exited {code} after the input faults")
        text = (Path(d) / "swarmd.log").read_text(errors="replace")
        it.check("Traceback" not in text, "a traceback in swarmd's log")


def _openapi_validator() -> Callable[[str, str, int, Any], None] | None:
    import importlib

    try:  # jsonschema and PyYAML are test extras; without them responses are not validated
        mod = importlib.import_module("harness.reliability_schema")
    except ImportError:
        return None
    v: Callable[[str, str, int, Any], None] = mod.ApiSchema().validate_any
    return v


def _schemathesis(it: Item, url: str, n: int) -> None:
    exe = BIN / "schemathesis"
    if not exe.exists():
        it.notes.append("schemathesis: not run (not installed; pip install schemathesis)")
        return
    before = (httpx.get(url + "/api/queue").json(), httpx.get(url + "/api/drones").json())
    del before
    with tempfile.TemporaryDirectory(prefix="st-") as d:
        cmd = [str(exe), "run", str(REPO / "docs" / "openapi.yaml"), "--url", url,
               "--checks", "not_a_server_error,status_code_conformance,"
               "content_type_conformance,response_schema_conformance",
               "--max-examples", str(n), "--seed", "1", "--request-timeout", "40",
               "--report", "junit", "--report-dir", d, "--exclude-path", "/api/events",
               "--phases", "examples,coverage,fuzzing"]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=420,
                              env={**os.environ, "NO_COLOR": "1"})
        secs = time.monotonic() - t0
    tail = [ln for ln in proc.stdout.splitlines() if ln.strip()][-12:]
    summary = " / ".join(ln.strip() for ln in tail if any(
        w in ln for w in ("passed", "failed", "error", "Test cases", "operations",
                          "Operations", "API probing", "Examples", "Coverage", "Fuzzing",
                          "Stateful")))
    it.notes.append("schemathesis's stateful phase is not run: it links register -> lease with "
                    "a valid session, and every such lease long-polls 30 s, which does not fit "
                    "the time bound (the Hypothesis item above covers valid sessions and leases)")
    it.tried.append(f"schemathesis {_st_version()} against docs/openapi.yaml on the real swarmd "
                    f"(max {n} examples per operation, checks: no 5xx, documented status, "
                    f"content type, response schema; {secs:.0f} s): {summary or tail}")
    if proc.returncode != 0:
        it.fail("schemathesis reported failures:\n" + "\n".join(
            proc.stdout.splitlines()[-60:]))


def _st_version() -> str:
    try:
        from importlib.metadata import version

        return version("schemathesis")
    except Exception:  # noqa: BLE001
        return "?"


def _malformed_emerge(it: Item, url: str, n: int) -> None:
    rng = random.Random(9)
    good = (REPO / "tests" / "data" / "world-tree.txt").read_text().splitlines()
    before = httpx.get(url + "/api/queue").json()
    codes: Counter[int] = Counter()
    for i in range(n):
        lines = list(good)
        for _ in range(rng.randint(1, 4)):
            j = rng.randrange(len(lines))
            op = rng.randrange(5)
            ln = lines[j]
            if op == 0:
                lines[j] = ln[: rng.randrange(len(ln) + 1)]
            elif op == 1 and ln:
                k = rng.randrange(len(ln))
                lines[j] = ln[:k] + chr(rng.choice([0, 7, 0x2028, 0xFFFD, 0x1F600])) + ln[k:]
            elif op == 2:
                lines.insert(j, "[ebuild  N    ] " + "".join(
                    rng.choice("abc/-=.:_1~*") for _ in range(rng.randint(0, 30))))
            elif op == 3:
                lines[j] = ln.replace("]", "", 1)
            else:
                lines[j] = ln * rng.randint(2, 50)
        body = "\n".join(lines).encode("utf-8", "surrogatepass")
        r = httpx.post(url + "/api/queue", content=body, timeout=10,
                       headers={"Content-Type": "text/plain",
                                "X-Request-Id": f"mal-{i}"})
        codes[r.status_code] += 1
        if r.status_code >= 500:
            it.fail(f"malformed emerge output #{i} -> {r.status_code}")
        if r.status_code == 400:
            err = r.json()["error"]
            if not err.get("lines"):
                it.fail(f"malformed emerge output #{i}: 400 without the bad lines")
    after = httpx.get(url + "/api/queue").json()
    accepted = codes[202] + codes[200]
    it.tried.append(f"malformed emerge output (the sample world with 1-4 lines cut, garbled, "
                    f"duplicated or invented): {n} submissions -> {dict(codes)}; each 400 "
                    f"names its bad lines")
    if accepted == 0:
        it.check(after == before, "rejected emerge output changed the queue")


def _huge_body(it: Item, url: str) -> None:
    before = httpx.get(url + "/api/queue").json()
    body = b"[ebuild  N    ] dev-libs/a-1\n" * (9 * 1024 * 1024 // 29 + 1)
    r = httpx.post(url + "/api/queue", content=body, timeout=60,
                   headers={"Content-Type": "text/plain"})
    after = httpx.get(url + "/api/queue").json()
    it.check(r.status_code == 413, f"9 MiB body answered {r.status_code}")
    it.check(before == after, "the 9 MiB body changed the queue")
    r2 = httpx.post(url + "/api/drones/register", content=b"{" * (9 * 1024 * 1024), timeout=60,
                    headers={"Content-Type": "application/json"})
    it.check(r2.status_code == 413, f"9 MiB register body answered {r2.status_code}")
    it.tried.append(f"9 MiB bodies: POST /api/queue -> {r.status_code}, POST "
                    f"/api/drones/register -> {r2.status_code}; queue unchanged")


def _slowloris(it: Item, url: str, n: int) -> None:
    port = int(url.rsplit(":", 1)[1])
    socks: list[socket.socket] = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"POST /api/queue HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n")
        socks.append(s)
    lat = []
    try:
        for k in range(10):
            for s in socks:  # one header byte at a time, never finishing the request
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
            t0 = time.monotonic()
            r = httpx.get(url + "/api/status", timeout=10)
            lat.append(time.monotonic() - t0)
            it.check(r.status_code == 200, f"status during slowloris: {r.status_code}")
            time.sleep(0.2 if k < 9 else 0)
    finally:
        for s in socks:
            s.close()
    it.tried.append(f"slowloris: {n} connections sending an unfinished request head a byte at "
                    f"a time; meanwhile GET /api/status answered 10 of 10, max latency "
                    f"{max(lat) * 1000:.0f} ms")
    it.check(max(lat) < 2.0, f"slowloris slowed other clients to {max(lat):.1f} s")


def _ws_flood(it: Item, url: str, n: int) -> None:
    from trio_websocket import open_websocket_url

    host_url = url.replace("http://", "ws://") + "/api/events"
    got = {"frames": 0, "sent": 0, "clients": 0}

    async def client(i: int) -> None:
        try:
            async with open_websocket_url(host_url) as ws:
                got["clients"] += 1
                for k in range(50):  # junk the server does not expect
                    await ws.send_message(("x" * (k * 97 % 5000)) if k % 2 else b"\x00" * 1000)
                    got["sent"] += 1
                with trio.move_on_after(2):
                    while True:
                        await ws.get_message()
                        got["frames"] += 1
        except Exception:  # noqa: BLE001 - the server may close us; that is allowed
            pass

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(client, i)
            await trio.sleep(0.5)
            async with httpx.AsyncClient() as c:
                t0 = trio.current_time()
                await c.post(url + "/api/queue", json={"packages": ["=ws/flood-1"]})
                r = await c.get(url + "/api/status")
                assert r.status_code == 200
                return float(trio.current_time() - t0)

    lat = trio.run(main)
    it.tried.append(f"WebSocket flood on /api/events: {n} concurrent clients, each sending 50 "
                    f"unexpected text/binary messages ({got['sent']} sent, {got['clients']} "
                    f"connected); a submission plus GET /api/status meanwhile took "
                    f"{lat * 1000:.0f} ms; {got['frames']} event frames delivered")


# ================================================================ 7. security
def item_security(it: Item, quick: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="rel-sec-") as d:
        r = trio.run(rf.security_checks, Path(d))
        it.tried.append(f"in process: {r['no_token_calls']} drone-protocol calls without, with a "
                        f"wrong, a malformed or the control token (SWARM_DRONE_TOKEN set): "
                        f"{r['no_token_refused']} refused 401 with no state change")
        it.tried.append(f"in process: {r['cross_calls']} attempts by drone B on drone A's build "
                        f"(complete success/failed with B's own lease, a guessed lease, log "
                        f"with B's lease, heartbeat claiming A's lease, lease/heartbeat on A's "
                        f"id with B's session): {r['cross_refused']} refused with no state "
                        f"change; A completed its build afterwards")
        for p in r["problems"]:
            it.fail(p)
        _security_real(it, Path(d))
        if _gatewayd_available():
            _gateway_checks(it, Path(d), quick)
        else:
            it.notes.append("admin brute force and leak canaries: not run: gatewayd not "
                            "available")


def _security_real(it: Item, tmp: Path) -> None:
    env = {"SWARM_DRONE_TOKEN": "drone-tok-123456", "SWARM_CONTROL_TOKEN": "ctl-tok-654321"}
    p = SwarmdProc(tmp / "sec-state", tmp / "sec.log", env=env).start()
    try:
        codes = []
        for path, body in (("/api/drones/register", {"name": "x", "cores": 1}),
                           ("/api/drones/d-0001/heartbeat", {"session": "s"}),
                           ("/api/drones/d-0001/lease", {"session": "s", "wait_s": 0}),
                           ("/api/builds/b-0000001/complete", {"lease": "l", "result": "failed"})):
            for hdr in ({}, {"Authorization": "Bearer wrong"}):
                codes.append(httpx.post(p.url + path, json=body, headers=hdr, timeout=5)
                             .status_code)
        drones = httpx.get(p.url + "/api/drones", timeout=5).json()["drones"]
        it.check(set(codes) == {401} and not drones, f"real swarmd without token: {codes}")
        it.tried.append(f"real swarmd with SWARM_DRONE_TOKEN set: {len(codes)} drone calls "
                        f"without or with a wrong token -> {sorted(set(codes))}, no drone "
                        f"registered")
    finally:
        p.stop()


def _gatewayd_available() -> bool:
    try:
        r = subprocess.run([str(BIN / "gatewayd"), "--help"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _gateway_checks(it: Item, tmp: Path, quick: bool) -> None:
    admin_key = "admin-key-canary-8d41c0"
    ctl = "ctl-canary-51ab9e"
    drone_tok = "drone-canary-77f0aa"
    env = {"SWARM_CONTROL_TOKEN": ctl, "SWARM_DRONE_TOKEN": drone_tok}
    sw = SwarmdProc(tmp / "gw-state", tmp / "gw-swarmd.log", env=env).start()
    pub, adm = free_port(), free_port()
    cfg = tmp / "gatewayd.toml"
    cfg.write_text('[identity.hosts]\n"Izar-Host" = "Izar"\n[identity.networks]\n'
                   '"10.42.0.0/24" = "192.0.2.0/24"\n')
    glog = (tmp / "gatewayd.log").open("ab")
    gw = subprocess.Popen(
        [str(BIN / "gatewayd"), "--config", str(cfg), "--listen", f"127.0.0.1:{pub}",
         "--admin-listen", f"127.0.0.1:{adm}", "--orchestrator", sw.url,
         "--spool-dir", str(tmp / "spool"), "--probe-interval-s", "1", "--cache-ttl-s", "0.2",
         "--auth-max-failures", "5", "--auth-window-s", "60", "--auth-lockout-s", "30"],
        stdout=glog, stderr=subprocess.STDOUT,
        env={**os.environ, **env, "SWARM_ADMIN_KEY": admin_key, "PORTAGE_OVERRIDE_EPREFIX": "/"})
    gurl = f"http://127.0.0.1:{pub}"
    try:
        try:
            wait_http(gurl + "/health", proc=gw)
        except (RuntimeError, TimeoutError) as exc:
            glog.close()
            tail = (tmp / "gatewayd.log").read_text(errors="replace").strip().splitlines()[-3:]
            it.fail(f"admin brute force and leak canaries not run: gatewayd did not start "
                    f"({exc}); its log ends: {' | '.join(x.strip() for x in tail)}")
            return
        # Brute force: wrong keys from one address, then even the right key is refused.
        codes = [httpx.get(gurl + "/api/swarm-admin/status", timeout=5,
                           headers={"X-Admin-Key": f"guess-{i}"}).status_code for i in range(20)]
        right = httpx.get(gurl + "/api/swarm-admin/status", timeout=5,
                          headers={"X-Admin-Key": admin_key}).status_code
        q = httpx.get(gurl + f"/api/swarm-admin/status?key={admin_key}", timeout=5).status_code
        first429 = codes.index(429) + 1 if 429 in codes else None
        it.check(first429 is not None and first429 <= 6 and right == 429,
                 f"admin brute force: codes {codes}, right key afterwards {right}")
        it.tried.append(f"admin brute force on the real gatewayd (--auth-max-failures 5): 20 "
                        f"wrong keys -> {dict(Counter(codes))}, 429 from attempt {first429}; "
                        f"the right key from the locked address -> {right}; a key in the query "
                        f"string -> {q}")
        _canaries(it, sw.url, gurl, tmp, {"admin key": admin_key, "control token": ctl,
                                          "drone token": drone_tok}, quick)
    finally:
        gw.send_signal(signal.SIGTERM)
        try:
            gw.wait(15)
        except subprocess.TimeoutExpired:
            gw.kill()
            gw.wait()
        sw.stop()


def _canaries(it: Item, swarmd_url: str, gurl: str, tmp: Path, secrets: dict[str, str],
              quick: bool) -> None:
    """Real-looking private data goes into swarmd; none of it may come out of a public route
    or a /ws/build-status frame."""
    from trio_websocket import open_websocket_url

    auth = {"Authorization": f"Bearer {secrets['drone token']}"}
    ctl = {"Authorization": f"Bearer {secrets['control token']}"}
    canaries = dict(secrets)
    canaries.update({"hostname": "canaryhost-7f3a", "mapped hostname": "izar-host",
                     "private ip": "10.99.12.34", "mapped ip": "10.42.0.77",
                     "mac": "de:ad:be:ef:00:01", "mac (dashes)": "de-ad-be-ef-00-01",
                     "private ip in error": "172.16.5.9"})
    real_host = socket.gethostname().split(".")[0]
    if len(real_host) >= 4 and real_host.lower() not in ("localhost", "gentoo", "build"):
        canaries["this machine's hostname"] = real_host
    frames: list[str] = []
    bodies: dict[str, str] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            async def listen() -> None:
                async with open_websocket_url(gurl.replace("http", "ws") + "/ws/build-status"
                                              ) as ws:
                    while True:
                        frames.append(str(await ws.get_message()))

            nursery.start_soon(listen)
            await trio.sleep(1.0)
            async with httpx.AsyncClient(timeout=10) as c:
                regs = []
                for name, host, ip in (("drone-canaryhost-7f3a", "canaryhost-7f3a.lan",
                                        "10.99.12.34"),
                                       ("drone-Izar-Host", "Izar-Host", "10.42.0.77")):
                    r = await c.post(swarmd_url + "/api/drones/register", headers=auth, json={
                        "name": name, "hostname": host, "ip": ip, "mac": "DE-AD-BE-EF-00-01",
                        "cores": 8, "arch": "amd64", "chost": "x86_64-pc-linux-gnu"})
                    regs.append(r.json())
                    canaries[f"session of {name}"] = r.json()["session"]
                await c.post(swarmd_url + "/api/queue", headers=ctl, json={
                    "packages": ["=leak/a-1", "=leak/b-1", "=leak/c-1"],
                    "request_id": "leak-req"})
                for reg, result in zip(regs, ("failed", "success"), strict=True):
                    ls = (await c.post(f"{swarmd_url}/api/drones/{reg['drone_id']}/lease",
                                       headers=auth, json={"session": reg["session"],
                                                           "wait_s": 2})).json()
                    canaries[f"lease {ls['build_id']}"] = ls["lease"]
                    await c.post(f"{swarmd_url}/api/drones/{reg['drone_id']}/heartbeat",
                                 headers=auth, json={"session": reg["session"],
                                                     "status": "building", "builds": [
                                                         {"build_id": ls["build_id"],
                                                          "lease": ls["lease"], "progress": 30}]})
                    await c.post(f"{swarmd_url}/api/builds/{ls['build_id']}/complete",
                                 headers=auth, json={
                                     "lease": ls["lease"], "result": result, "duration_s": 2,
                                     "artifact": {"path": "leak/a/a-1-1.gpkg.tar", "size": 1,
                                                  "sha256": "0" * 64},
                                     "error": "make failed on canaryhost-7f3a.lan "
                                              "(10.99.12.34), see http://172.16.5.9/log "
                                              "de:ad:be:ef:00:01 Izar-Host"})
                await c.delete(swarmd_url + "/api/queue/leak-req", headers=ctl)
                await trio.sleep(1.5)
                for path in ("/api/v1/services/public/build-swarm",
                             "/api/v1/services/public/build-history",
                             "/api/v1/services/public/infrastructure",
                             "/api/v1/services/public/queue", "/api/v1/binhost",
                             "/api/v1/services", "/health", "/api/v1/services/public/nope",
                             "/nope", "/api/swarm-admin/status"):
                    r = await c.get(gurl + path)
                    bodies[path] = r.text
            await trio.sleep(1.0)
            nursery.cancel_scope.cancel()

    trio.run(main)
    leaks = []
    for where, text in [*bodies.items(), *((f"ws frame {i}", f) for i, f in enumerate(frames))]:
        low = text.lower()
        for what, value in canaries.items():
            if value and value.lower() in low:
                leaks.append(f"{what} in {where}")
    it.check(bool(frames), "no WebSocket frame received from /ws/build-status")
    for leak in leaks:
        it.fail(f"LEAK: {leak}")
    it.tried.append(f"leak canaries: {len(canaries)} private values (an unmapped and a mapped "
                    f"hostname, a private and a mapped address, a MAC in two forms, an "
                    f"address inside a build error, the admin key, control and drone tokens, "
                    f"drone sessions, leases"
                    f"{', this machine hostname' if 'this machine' + chr(39) + 's hostname' in canaries else ''}) "
                    f"fed to swarmd through real drone registrations, builds and a cancel; "
                    f"{len(bodies)} public/error routes and {len(frames)} /ws/build-status "
                    f"frames scanned: {len(leaks)} leaks")


# ================================================================ the report
ITEMS: list[tuple[str, str, Callable[[Item, bool], None]]] = [
    ("crash", "Crash consistency (swarmd SIGKILLed under load)", item_crash),
    ("lazy", "Lazy file: unsynced writes dropped at the crash", item_lazy),
    ("damage", "Journal damage", item_damage),
    ("resource", "Resource faults (ENOSPC, EIO)", item_resource),
    ("network", "Network faults (drone stopped with SIGSTOP)", item_network),
    ("input", "Input faults", item_input),
    ("security", "Security", item_security),
]


def write_report(items: list[Item], started: float, quick: bool, argv: list[str]) -> None:
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    lines = [
        "# Reliability results",
        "",
        "Written by `make reliability` (`python -m bench.reliability`), issue 7's Reliability "
        "list run against the real programs (swarmd, swarm-drone with the fake emerge, "
        "gatewayd). The target for \"lost\" is nothing.",
        "",
        f"- date: {now}; machine: {platform.node() and 'linux'} {platform.release()}, "
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}",
        f"- command: `{' '.join(['python -m bench.reliability', *argv])}` "
        f"({'QUICK run: counts cut' if quick else 'full run'}); total "
        f"{time.monotonic() - started:.0f} s",
        "- one item alone: `python -m bench.reliability --only ITEM` (crash, lazy, damage, "
        "resource, network, input, security); the short version runs in `make test` "
        "(tests/test_reliability_short.py)",
        "",
        "| item | result | lost | time |",
        "|---|---|---|---|",
    ]
    for it in items:
        lost = "nothing" if not it.lost else f"{len(it.lost)} finding(s)"
        lines.append(f"| {it.title} | {it.status} | {lost} | {it.seconds:.0f} s |")
    for it in items:
        lines += ["", f"## {it.title}", "",
                  f"Command: `python -m bench.reliability --only {it.key}`", "",
                  "What was tried, how many times:", ""]
        lines += [f"- {t}" for t in it.tried] or ["- (nothing ran)"]
        if it.notes:
            lines += ["", "Notes:", ""] + [f"- {n}" for n in it.notes]
        lines += ["", "Lost: " + ("nothing." if not it.lost else "")]
        if it.lost:
            lines += [""] + [f"- {x}" for x in it.lost]
    OUT.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m bench.reliability")
    ap.add_argument("--quick", action="store_true", help="cut every count (smoke run)")
    ap.add_argument("--only", default="", help="comma-separated items")
    ap.add_argument("--no-write", action="store_true", help="do not write docs/RELIABILITY.md")
    a = ap.parse_args(args_in)
    want = {k for k in a.only.split(",") if k}
    unknown = want - {k for k, _t, _f in ITEMS}
    if unknown:
        ap.error(f"unknown item(s): {', '.join(sorted(unknown))}")
    started = time.monotonic()
    done: list[Item] = []
    for key, title, fn in ITEMS:
        if want and key not in want:
            continue
        it = Item(key, title)
        log(f"{key}: start")
        t0 = time.monotonic()
        try:
            fn(it, a.quick)
        except Exception:  # noqa: BLE001 - an item that breaks is a finding, not the end
            it.fail("the item itself failed:\n" + traceback.format_exc()[-2000:])
        it.seconds = time.monotonic() - t0
        log(f"{key}: {it.status} in {it.seconds:.0f} s; lost: {it.lost or 'nothing'}")
        done.append(it)
    if not a.no_write:
        write_report(done, started, a.quick, args_in)
        log(f"wrote {OUT}")
    return 0 if all(it.status == "pass" for it in done) else 1


if __name__ == "__main__":
    sys.exit(main())
