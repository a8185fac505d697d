"""Start-up time after 1,000,000 journaled events, with and without compaction.

    python -m bench.startup [--events 1000000] [--keep DIR]

The history is made by the real code path: every event is numbered, framed by
``swarmd.journal.encode``, written and fsynced in batches by ``Journal.append_batch`` and
applied by ``State.apply``; whenever the segment passes ``compact_after_bytes`` (or
``compact_after_events`` events were journaled since the last snapshot) a ``prune``
event (``before = now - retention_s``) is journaled and applied and ``Journal.compact`` writes
the snapshot, exactly as ``Orchestrator._writer`` / ``_compact`` do. The event mix is a swarm's
life: two dozen drones registering (and now and then re-registering or going offline), a
submission of ~100 packages every two simulated hours with dependencies, assign / started /
complete for every build, 3% failed attempts that are retried, a few packages that fail for
good (their dependents blocked), a cancelled request now and then, and ``history`` events.
Simulated time runs ~9 months up to now, so prune drops everything finished more than 14 days
(the default retention) before.

The same frames go to three state directories:
- ``compacted``: the state dir swarmd would have (snapshot + tail of the newest segment);
- ``worst``: a copy taken just before the last compaction, i.e. a tail just over the threshold
  (the slowest start-up compaction allows);
- ``uncompacted``: one segment holding all events, for contrast. If replaying it would take
  more than ``budget_s`` (60 s), a prefix is measured and the full time extrapolated.

Measured: (a) the real ``swarmd`` process, exec to ``/api/status`` answering 200, and (b)
``swarmd.service.replay()`` in this process. Target: under 2 s with compaction.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, Swarmd, summary
from swarmd import journal as jr
from swarmd import journal_events as je
from swarmd.config import SwarmdConfig
from swarmd.service import replay
from swarmd.state import FINAL, Policy, State

BATCH = 2000  # events per append_batch (one fsync), like a busy writer's group commit
HOUR = 3600.0


class _Dirs:
    """The journals the frames are written to, and the compaction rule of the writer."""

    def __init__(self, root: Path, threshold: int, retention_s: float,
                 threshold_events: int = 20000) -> None:
        self.compacted = root / "compacted"
        self.worst = root / "worst"
        self.uncompacted = root / "uncompacted"
        for d in (self.compacted, self.uncompacted):
            d.mkdir(parents=True)
        self.j = jr.Journal(self.compacted, 1)
        self.ju = jr.Journal(self.uncompacted, 1)
        self.threshold = threshold
        self.threshold_events = threshold_events
        self.since = 0  # events since the last compaction, as the writer counts them
        self.retention_s = retention_s
        self.compactions = 0
        self.compact_s: list[float] = []
        self.prefix_marks: dict[int, int] = {}  # events -> byte offset in the uncompacted segment
        self.marks_left = [100_000, 200_000, 300_000, 500_000]


class Generator:
    def __init__(self, dirs: _Dirs, target: int, seed: int = 7) -> None:
        self.dirs = dirs
        self.target = target
        self.rng = random.Random(seed)
        self.state = State(Policy())
        self.frames: list[bytes] = []
        self.now = 0.0
        self.cps = [f"cat-{i % 61}/pkg{i}" for i in range(3000)]
        self.version = dict.fromkeys(self.cps, 0)
        self.doomed: set[str] = set()  # CPVs whose every build fails
        self.drones: dict[str, dict[str, Any]] = {}  # name -> {id, session, cores, build}
        self.n_submit = 0
        self.start = 0.0
        self.mix: dict[str, int] = {}

    # ------------------------------------------------------------------ the writer's path
    @property
    def seq(self) -> int:
        return self.state.seq

    def emit(self, raw: dict[str, Any]) -> Any:
        """Number, frame (as swarmd writes records: typed, version 2) and apply one event;
        flush a batch when it is full."""
        raw.setdefault("ts", self.now)
        ev = je.decode(raw)
        seq = self.state.seq + 1
        self.frames.append(jr.encode_event(ev, seq))
        out = self.state.apply(ev, seq)
        self.mix[ev.TYPE] = self.mix.get(ev.TYPE, 0) + 1
        if len(self.frames) >= BATCH:
            self.flush()
        return out

    def flush(self) -> None:
        if not self.frames:
            return
        d = self.dirs
        d.j.append_batch(self.frames)
        d.ju.append_batch(self.frames)
        d.since += len(self.frames)
        self.frames = []
        while d.marks_left and self.state.seq >= d.marks_left[0]:
            d.marks_left.pop(0)
            d.prefix_marks[self.state.seq] = d.ju.bytes
        if d.j.bytes > d.threshold or d.since > d.threshold_events:
            self.compact()
            d.since = 0

    def compact(self) -> None:
        d = self.dirs
        # The slowest start-up compaction allows: a tail just over the threshold.
        if d.worst.exists():
            shutil.rmtree(d.worst)
        shutil.copytree(d.compacted, d.worst)
        t0 = time.perf_counter()
        prune = je.Prune(ts=self.now, before=self.now - d.retention_s)
        frame = [jr.encode_event(prune, self.state.seq + 1)]
        d.j.append_batch(frame)
        d.ju.append_batch(frame)
        self.state.apply(prune, self.state.seq + 1)
        self.mix["prune"] = self.mix.get("prune", 0) + 1
        d.j.compact(self.state.to_snapshot())
        d.compact_s.append(time.perf_counter() - t0)
        d.compactions += 1

    # ------------------------------------------------------------------ the swarm's life
    def token(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def register(self, name: str, cores: int) -> None:
        session = self.token()
        out = self.emit({"type": "register", "session": session, "name": name,
                         "hostname": name + "-host", "ip": f"10.42.0.{len(self.drones) + 10}",
                         "mac": f"52:54:00:{1:02x}:{2:02x}:{len(self.drones):02x}",
                         "cores": cores, "arch": "amd64", "chost": "x86_64-pc-linux-gnu",
                         "version": "0.1.0", "slots": 1})
        self.drones[name] = {"id": out.result["drone_id"], "session": session, "cores": cores}

    def submit(self) -> str:
        self.n_submit += 1
        picks = self.rng.sample(self.cps, self.rng.randint(80, 120))
        cpvs = []
        for cp in picks:
            self.version[cp] += 1
            cpvs.append(f"{cp}-1.{self.version[cp]}")
            if self.rng.random() < 0.002:
                self.doomed.add(cpvs[-1])
        deps: dict[str, list[str]] = {}
        for i, cpv in enumerate(cpvs):
            if i and self.rng.random() < 0.6:
                deps[cpv] = self.rng.sample(cpvs[:i], min(i, self.rng.randint(1, 2)))
        rid = f"r-{self.n_submit:06d}"
        self.emit({"type": "submit", "request_id": rid, "packages": cpvs, "deps": deps,
                   "cycles": [], "priority": 0})
        return rid

    def build_round(self) -> bool:
        """Every free drone takes the best ready entry, starts and finishes it."""
        st = self.state
        running = []
        for info in self.drones.values():
            if self.seq >= self.target:
                break
            if not st.ready_index:
                break
            eid = st.ready_index[0][3]
            out = self.emit({"type": "assign", "entry_id": eid, "drone_id": info["id"],
                             "session": info["session"], "lease": self.token()})
            if out.ok:
                running.append((info, out.result))
        if not running:
            return False
        self.now += 5
        for _info, res in running:
            if self.seq >= self.target:
                return True
            self.emit({"type": "started", "build_id": res["build_id"], "lease": res["lease"]})
        self.now += self.rng.uniform(30, 600)
        for info, res in running:
            if self.seq >= self.target:
                return True
            cpv = res["package"]
            fail = cpv in self.doomed or self.rng.random() < 0.03
            dur = self.rng.uniform(20, 2400) * 8 / info["cores"]
            body: dict[str, Any] = {"type": "complete", "build_id": res["build_id"],
                                    "lease": res["lease"], "duration_s": round(dur, 1)}
            if fail:
                body.update(result="failed", artifact=None,
                            error=f"emerge exited 1: * ERROR: {cpv}::gentoo failed (compile)")
            else:
                cp, _, _ = cpv.rpartition("-1.")
                pn = cp.split("/")[1]
                body.update(result="success", error=None, artifact={
                    "path": f"{cp}/{pn}-{cpv.rpartition('-')[2]}-1.gpkg.tar",
                    "size": self.rng.randint(10_000, 50_000_000), "sha256": f"{self.rng.getrandbits(256):064x}"})
            self.emit(body)
            self.now += 1
        return True

    def run(self, span_s: float) -> None:
        per_submit = 2 * HOUR
        # ~3.15 events per package built (assign, started, complete, some retries).
        expected_submits = self.target / (100 * 3.15)
        self.now = self.start = time.time() - max(span_s, expected_submits * per_submit)
        for i in range(24):
            self.register(f"drone-{i:02d}", self.rng.choice([4, 8, 8, 16, 16, 32]))
        while self.seq < self.target:
            t_next = self.now + per_submit
            rid = self.submit()
            cancel_at = self.rng.randint(2, 6) if self.rng.random() < 0.01 else -1
            rounds = 0
            while self.seq < self.target and self.build_round():
                rounds += 1
                if rounds == cancel_at and rid in self.state.requests \
                        and self.state.requests[rid].finished is None:
                    self.emit({"type": "cancel", "target": rid})
            if self.seq >= self.target:
                break
            if self.rng.random() < 0.1:
                hist = {cp: round(self.rng.uniform(10, 3000), 1)
                        for cp in self.rng.sample(self.cps, 20)}
                self.emit({"type": "history", "packages": hist})
            if self.rng.random() < 0.02:
                # A drone's agent restarts (new session) or it drops off and comes back.
                name = self.rng.choice(list(self.drones))
                if self.rng.random() < 0.5:
                    info = self.drones[name]
                    self.emit({"type": "drone_offline", "drone_id": info["id"],
                               "session": info["session"], "why": "drone offline: no heartbeat "
                               "for 90 s"})
                self.register(name, self.drones[name]["cores"])
            self.now = max(self.now, t_next)
        self.flush()


def _prefix_dir(src: Path, dst: Path, nbytes: int) -> None:
    dst.mkdir(parents=True)
    seg = jr.segments(src)[0]
    with seg.open("rb") as fi, (dst / seg.name).open("wb") as fo:
        left = nbytes
        while left > 0:
            chunk = fi.read(min(left, 1 << 24))
            if not chunk:
                break
            fo.write(chunk)
            left -= len(chunk)


def _replay_s(state_dir: Path, repeats: int) -> tuple[list[float], list[float], State]:
    """In-process replay: total seconds and the load-only (read + parse) part."""
    totals, loads = [], []
    st: State | None = None
    for r in range(repeats):
        if r == 0:  # the read + parse part alone, once
            t0 = time.perf_counter()
            jr.load(state_dir)
            loads.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        st, _loaded = replay(state_dir, Policy())
        totals.append(time.perf_counter() - t0)
    assert st is not None
    return totals, loads, st


def _process_s(state_dir: Path, repeats: int, timeout: float = 300) -> list[float]:
    out = []
    for _ in range(repeats):
        sd = Swarmd(state_dir)
        try:
            sd.start(timeout=timeout)
            out.append(sd.ready_s)
        finally:
            sd.stop()
    return out


def _dir_info(d: Path) -> dict[str, Any]:
    snap = d / jr.SNAPSHOT
    segs = jr.segments(d)
    return {"snapshot_mb": round(snap.stat().st_size / 2**20, 1) if snap.exists() else 0.0,
            "tail_mb": round(sum(p.stat().st_size for p in segs) / 2**20, 1)}


def _live(st: State) -> dict[str, int]:
    return {"entries": len(st.entries), "unfinished": sum(
        1 for e in st.entries.values() if e.state not in FINAL), "requests": len(st.requests),
        "builds": len(st.builds), "packages": len(st.packages), "drones": len(st.drones)}


def run(events: int = 1_000_000, repeats: int = 3, budget_s: float = 60.0,
        keep: Path | None = None, compact_after_bytes: int | None = None) -> dict[str, Any]:
    cfg = SwarmdConfig()
    if compact_after_bytes is not None:
        cfg = SwarmdConfig(compact_after_bytes=compact_after_bytes)
    out: dict[str, Any] = {"events": events, "compact_after_bytes": cfg.compact_after_bytes,
                           "retention_s": cfg.retention_s}
    (REPO / ".bench").mkdir(exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="startup-", dir=REPO / ".bench")
    root = Path(tmp)
    try:
        dirs = _Dirs(root, cfg.compact_after_bytes, cfg.retention_s, cfg.compact_after_events)
        gen = Generator(dirs, events)
        t0 = time.perf_counter()
        gen.run(span_s=0)
        dirs.j.close()
        dirs.ju.close()
        out["generate_s"] = round(time.perf_counter() - t0, 1)
        out["journaled"] = gen.seq
        out["mix"] = dict(sorted(gen.mix.items(), key=lambda kv: -kv[1]))
        out["compactions"] = dirs.compactions
        out["compaction_s"] = summary(dirs.compact_s)
        out["uncompacted_mb"] = round(dirs.ju.bytes / 2**20, 1)
        out["simulated_days"] = round((gen.now - gen.start) / 86400, 1)
        out["submissions"] = gen.n_submit

        # With compaction: the state dir as swarmd leaves it, and the worst case.
        for label, d in (("compacted", dirs.compacted), ("worst", dirs.worst)):
            if not d.exists():
                continue
            k = repeats if label == "compacted" else 1
            tot, loads, st = _replay_s(d, k)
            proc = _process_s(d, k)
            out[label] = {**_dir_info(d), "replay_s": summary(tot), "load_s": summary(loads),
                          "process_s": summary(proc), "live": _live(st),
                          "tail_events": st.seq - int(json.loads(
                              (d / jr.SNAPSHOT).read_bytes())["seq"]) if (
                              d / jr.SNAPSHOT).exists() else st.seq}
        live_compacted = _live(gen.state)

        # Without compaction: measure a prefix first, the whole only if it fits the budget.
        # The process start-up (exec -> /api/status) is measured on the prefix and scaled:
        # on this machine it is the replay plus imports, and the full run costs minutes.
        marks = sorted(dirs.prefix_marks.items())
        probe_n, probe_b = marks[0] if marks else (gen.seq, dirs.ju.bytes)
        pdir = root / "prefix"
        _prefix_dir(dirs.uncompacted, pdir, probe_b)
        ptot, _pl, _ = _replay_s(pdir, 1)
        pproc = _process_s(pdir, 1)
        per_event = ptot[0] / probe_n
        unc: dict[str, Any] = {"mb": out["uncompacted_mb"], "probe_events": probe_n,
                               "probe_replay_s": round(ptot[0], 2),
                               "probe_process_s": round(pproc[0], 2),
                               "process_s_full_extrapolated": round(
                                   pproc[0] * gen.seq / probe_n, 1),
                               "predicted_full_replay_s": round(per_event * gen.seq, 1)}
        if per_event * gen.seq <= budget_s:
            tot, loads, st = _replay_s(dirs.uncompacted, 1)
            unc.update(events=gen.seq, replay_s=round(tot[0], 2), load_s=round(loads[0], 2),
                       extrapolated=False)
            if _live(st) != live_compacted:
                unc["mismatch"] = "replay without compaction differs from the live state"
        else:
            unc.update(events=probe_n, replay_s=round(ptot[0], 2), extrapolated=True,
                       replay_s_full_extrapolated=round(per_event * gen.seq, 1))
        out["uncompacted"] = unc
        out["baseline_empty_process_s"] = summary(_process_s(root / "empty", repeats))
        if keep is not None:
            shutil.copytree(root, keep, dirs_exist_ok=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=60.0)
    p.add_argument("--keep", type=Path, help="copy the generated state dirs here")
    p.add_argument("--compact-after-bytes", type=int, help="default: swarmd's default")
    a = p.parse_args()
    print(json.dumps(run(a.events, a.repeats, a.budget_s, a.keep, a.compact_after_bytes),
                     indent=1))


if __name__ == "__main__":
    main()
