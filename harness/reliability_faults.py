"""In-process fault injection shared by tests/test_reliability_short.py and
bench/reliability.py: the "lazy file" journal, journal damage, Hypothesis input faults and the
drone-protocol security checks. Each function returns a plain dict of counts that the caller
asserts on (the short test) or writes down (docs/RELIABILITY.md).

Everything here runs the real swarmd code (``Orchestrator``, ``create_app``, ``journal.load``)
in this process; only the journal file underneath is a fake where the item says so.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import trio

os.environ.setdefault("PORTAGE_OVERRIDE_EPREFIX", "/")

import trio.lowlevel

from swarmd import journal as jr  # noqa: E402
from swarmd import journal_events as je  # noqa: E402
from swarmd.api import create_app  # noqa: E402
from swarmd.config import SwarmdConfig  # noqa: E402
from swarmd.service import Orchestrator, replay  # noqa: E402
from swarmlib.errors import JournalCorrupt  # noqa: E402

SHA = "0" * 64


# ---------------------------------------------------------------------------- lazy file
class SimulatedCrash(Exception):
    """The power went out: raised inside the journal writer between write and fsync."""


class LazyJournal(jr.Journal):
    """A journal whose file behaves like a page cache at a crash: bytes written since the
    last fsync of a segment are lost (``drop_unsynced``), all of them, or, with
    ``torn=True``, all but a random prefix (the kernel wrote some pages back)."""

    def __init__(self, state_dir: Path, next_seq: int, *, crash_at: int) -> None:
        super().__init__(state_dir, next_seq)
        self.crash_at = crash_at
        self.calls = 0
        self.synced: dict[Path, int] = {self.path: self.bytes}

    def append_batch(self, frames: list[bytes]) -> None:
        data = b"".join(frames)
        self.calls += 1
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        if self.calls >= self.crash_at:
            raise SimulatedCrash(f"crash after write #{self.calls}, before its fsync")
        os.fsync(self.fd)
        self.synced[self.path] = os.fstat(self.fd).st_size
        self.bytes += len(data)
        self.appends += len(frames)
        self.fsyncs += 1

    def compact(self, snapshot: dict[str, Any]) -> None:
        super().compact(snapshot)  # snapshot and new segment are fsynced by the real code
        self.synced = {p: p.stat().st_size for p in jr.segments(self.state_dir)}

    def rotate(self, seq: int) -> list[Path]:
        older = super().rotate(seq)
        self.synced[self.path] = 0  # created empty, directory fsynced by the real code
        return older

    def drop_unsynced(self, rng: random.Random, torn: bool) -> int:
        """Cut every segment back to its last fsync; returns the bytes dropped."""
        self.close()
        dropped = 0
        for path, synced in self.synced.items():
            if not path.exists():
                continue
            size = path.stat().st_size
            keep = rng.randint(synced, size) if torn and size > synced else synced
            if keep < size:
                with path.open("r+b") as fh:
                    fh.truncate(keep)
                dropped += size - keep
        return dropped


class _Acks:
    def __init__(self) -> None:
        self.submits: dict[str, set[str]] = {}
        self.success: dict[str, str] = {}  # build id -> cpv
        self.failed: set[str] = set()
        self.cancels: set[str] = set()
        self.cancel_sent: set[str] = set()  # acknowledged or not
        self.drones: dict[str, str] = {}

    def count(self) -> int:
        return (len(self.submits) + len(self.success) + len(self.failed) + len(self.cancels)
                + len(self.drones))


async def _lazy_workload(orch: Orchestrator, acks: _Acks, rng: random.Random) -> None:
    """Submissions, two drones leasing and completing, cancels, all at once. Calls the
    Orchestrator as the HTTP handlers do (the test client does not survive a cancel mid-call);
    a call that returned is a call that was acknowledged."""
    from swarmd import submission
    from swarmlib.errors import SwarmError

    async def submitter() -> None:
        for i in range(40):
            rid = f"r{i}"
            pkgs = [f"=cat-{rng.randint(0, 3)}/p{rng.randint(0, 60)}-1.{i % 3}" for _ in range(4)]
            pkgs = sorted(set(pkgs))
            deps = {pkgs[-1]: pkgs[:-1]} if len(pkgs) > 1 else {}
            sub, prio, _ = submission.parse_json({"packages": pkgs, "deps": deps,
                                                  "request_id": rid})
            await orch.commit(je.Submit(ts=orch.wall(), request_id=rid, packages=sub.packages,
                                        deps=sub.deps, cycles=sub.cycles, priority=prio))
            acks.submits[rid] = {p[1:] for p in pkgs}
            await trio.lowlevel.checkpoint()

    async def drone(name: str) -> None:
        doc = await orch.register(je.Register(ts=0.0, session="", name=name, cores=4))
        acks.drones[name] = doc["drone_id"]
        did, sess = doc["drone_id"], doc["session"]
        for _ in range(60):
            ls = await orch.lease(did, sess, 0.0)
            if ls is None:
                await trio.sleep(0.001)
                continue
            result = "failed" if rng.random() < 0.15 else "success"
            art = ({"path": f"x/{ls['build_id']}.gpkg.tar", "size": 1, "sha256": SHA}
                   if result == "success" else None)
            try:
                await orch.complete(je.Complete(ts=0.0, build_id=ls["build_id"],
                                                lease=ls["lease"], result=je.Report(result),
                                                duration_s=1.0, artifact=art))
            except SwarmError:
                continue  # cancelled meanwhile: a refusal, not an acknowledgement
            if result == "success":
                acks.success[ls["build_id"]] = ls["package"]
            else:
                acks.failed.add(ls["build_id"])

    async def canceller() -> None:
        for _ in range(8):
            await trio.sleep(0.002)
            if not acks.submits:
                continue
            rid = rng.choice(sorted(acks.submits))
            acks.cancel_sent.add(rid)
            out = await orch.commit(je.Cancel(ts=orch.wall(), target=rid))
            if out.ok:
                acks.cancels.add(rid)

    async with trio.open_nursery() as n:
        n.start_soon(submitter)
        n.start_soon(drone, "lazy-a")
        n.start_soon(drone, "lazy-b")
        n.start_soon(canceller)


def _lost(state_dir: Path, acks: _Acks) -> tuple[list[str], Any]:
    """What the recovered state misses of what was acknowledged."""
    cfg = SwarmdConfig(state_dir=str(state_dir), compact_after_bytes=4096)
    o = Orchestrator(cfg)
    state, _ = replay(state_dir, o.policy)
    lost: list[str] = []
    for rid, cpvs in acks.submits.items():
        r = state.requests.get(rid)
        if r is None:
            lost.append(f"request {rid}")
            continue
        have = {state.entries[e].cpv for e in r.entries if e in state.entries}
        have |= set(r.skipped_cpvs)
        if rid in acks.cancel_sent:
            continue  # cancelled: it let go of the packages it shared with other requests
        lost += [f"{cpv} of {rid}" for cpv in cpvs - have]
    for bid, cpv in acks.success.items():
        b = state.builds.get(bid)
        if b is None or b.result != "success" or cpv not in state.packages:
            lost.append(f"success of {bid} ({cpv})")
    for bid in acks.failed:
        b = state.builds.get(bid)
        if b is None or b.result != "failed":
            lost.append(f"failure report {bid}")
    for rid in acks.cancels:
        r = state.requests.get(rid)
        if r is None or r.finished is None:
            lost.append(f"cancel of {rid}")
    for name, did in acks.drones.items():
        if state.drone_by_name.get(name) != did:
            lost.append(f"registration of {name}")
    return lost, state


async def lazy_trial(tmp: Path, seed: int, *, torn: bool) -> dict[str, Any]:
    """One crash of the in-process swarmd over a LazyJournal at a random write."""
    rng = random.Random(seed)
    state_dir = tmp / f"lazy-{seed}-{int(torn)}"
    cfg = SwarmdConfig(state_dir=str(state_dir), compact_after_bytes=4096)
    orch = Orchestrator(cfg)
    orch.recover()
    assert orch.journal is not None
    orch.journal.close()
    lazy = LazyJournal(state_dir, orch.state.seq + 1, crash_at=rng.randint(1, 120))
    orch.journal = lazy
    acks = _Acks()
    crashed = False
    try:
        async with trio.open_nursery() as n:
            await n.start(orch.run)
            await _lazy_workload(orch, acks, rng)
            n.cancel_scope.cancel()  # the workload ended first: "crash" now
    except* SimulatedCrash:
        crashed = True
    live = orch.state.to_snapshot()
    dropped = lazy.drop_unsynced(rng, torn)
    lost, state = _lost(state_dir, acks)
    rec = state.to_snapshot()
    same = rec == live
    # Without a torn prefix the recovered state is exactly the live one at the crash; with one,
    # it may hold more (durable but never answered), never less.
    if not torn and not same:
        lost.append("recovered state differs from the live state at the crash")
    if torn and rec["seq"] < live["seq"]:
        lost.append(f"recovered seq {rec['seq']} < acknowledged seq {live['seq']}")
    shutil.rmtree(state_dir, ignore_errors=True)
    return {"crashed_mid_write": crashed, "acked": acks.count(), "dropped_bytes": dropped,
            "lost": lost, "identical": same}


async def lazy_trials(n: int, seed: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {"trials": 0, "torn_trials": 0, "crashed_mid_write": 0, "acked": 0,
                           "dropped_bytes": 0, "lost": [], "identical": 0}
    with tempfile.TemporaryDirectory(prefix="lazy-") as d:
        for i in range(n):
            torn = i % 2 == 1
            r = await lazy_trial(Path(d), seed * 100_000 + i, torn=torn)
            out["trials"] += 1
            out["torn_trials"] += int(torn)
            out["crashed_mid_write"] += int(r["crashed_mid_write"])
            out["acked"] += r["acked"]
            out["dropped_bytes"] += r["dropped_bytes"]
            out["identical"] += int(r["identical"])
            out["lost"] += [f"trial {i}: {x}" for x in r["lost"]]
    return out


# ---------------------------------------------------------------------------- journal damage
async def build_journal(state_dir: Path) -> None:
    """A real journal from a small real workload (submissions, two drones, builds, a cancel)."""
    orch = Orchestrator(SwarmdConfig(state_dir=str(state_dir)))
    orch.recover()
    acks = _Acks()
    async with trio.open_nursery() as n:
        await n.start(orch.run)
        await _lazy_workload(orch, acks, random.Random(7))
        n.cancel_scope.cancel()
    assert orch.journal is not None
    orch.journal.close()


def _records(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every record of an undamaged segment."""
    out = []
    off = 0
    while off < len(data):
        _magic, length, _crc = jr.HEADER.unpack_from(data, off)
        end = off + jr.HEADER.size + length
        out.append((off, end))
        off = end
    return out


def _classify(work: Path, seg_name: str, damaged: bytes, original: list[dict[str, Any]],
              expect_events: int | None) -> str:
    """Load a damaged copy the way swarmd's start-up does; name the outcome.

    ``recovered``: loads, and holds every record that is still intact in the file (for a cut
    tail: every record that ends before the cut). ``refused``: JournalCorrupt with file and
    offset. ``silent_loss``: loads but misses or changes events that are intact on disk.
    """
    for p in work.glob("journal-*.log"):
        p.unlink()
    (work / seg_name).write_bytes(damaged)
    try:
        loaded = jr.load(work, repair_torn_tail=False)
    except JournalCorrupt as exc:
        if seg_name in str(exc) and "offset" in str(exc):
            return "refused"
        return "unclear_refusal"
    got = loaded.events
    if got != original[:len(got)]:
        return "silent_loss"
    if expect_events is not None and len(got) < expect_events:
        return "silent_loss"
    return "recovered"


def damage_trials(src: Path, *, tail_bytes: int | None, flips: int, zero_runs: int,
                  seed: int = 3) -> dict[str, Any]:
    """Damage copies of the newest segment of ``src`` and load each one.

    - truncation at every byte offset of the last ``tail_bytes`` (None: the whole file);
    - ``flips`` single-bit flips at random offsets that have at least one whole record after;
    - ``zero_runs`` zeroed 512-byte runs likewise in the middle.
    """
    rng = random.Random(seed)
    seg = jr.segments(src)[-1]
    data = seg.read_bytes()
    original = jr.load(src, repair_torn_tail=False).events
    recs = _records(data)
    out: dict[str, Any] = {"segment_bytes": len(data), "records": len(recs)}
    with tempfile.TemporaryDirectory(prefix="damage-") as d:
        work = Path(d)
        snap = src / jr.SNAPSHOT
        if snap.exists():
            shutil.copy(snap, work / jr.SNAPSHOT)
        base = len(original) - len(recs)  # events that come from earlier segments
        trunc: Counter[str] = Counter()
        start = 0 if tail_bytes is None else max(0, len(data) - tail_bytes)
        for k in range(start, len(data)):
            whole = sum(1 for _s, e in recs if e <= k)
            trunc[_classify(work, seg.name, data[:k], original, base + whole)] += 1
        out["truncate"] = dict(trunc)
        last_start = recs[-1][0]
        flip: Counter[str] = Counter()
        for _ in range(flips):
            off = rng.randrange(0, last_start)
            b = bytearray(data)
            b[off] ^= 1 << rng.randrange(8)
            flip[_classify(work, seg.name, bytes(b), original, None)] += 1
        out["bitflip"] = dict(flip)
        zero: Counter[str] = Counter()
        for _ in range(zero_runs):
            off = rng.randrange(0, max(1, last_start - 512))
            b = bytearray(data)
            b[off:off + 512] = bytes(min(512, len(b) - off))
            zero[_classify(work, seg.name, bytes(b), original, None)] += 1
        out["zero512"] = dict(zero)
    return out


# ---------------------------------------------------------------------------- input faults
def run_input_faults(max_examples: int, seed: int = 0,
                     validator: Any = None) -> dict[str, Any]:
    """Hypothesis-generated requests against every swarmd endpoint (quart test client over
    an in-process swarmd with a fake journal): no 5xx, no crash, and a rejected (4xx) request
    changes nothing (durable state, GET /api/queue and GET /api/drones all compared).

    ``validator(method, path, status, body)``: optional OpenAPI check of every response.
    Returns counts; raises AssertionError (Hypothesis's shrunk example) on a failure.
    """
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    from harness.memory_journal import MemoryJournal

    statuses: Counter[int] = Counter()
    endpoints: Counter[str] = Counter()
    leaf = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40))
    jsonish = st.recursive(leaf, lambda c: st.lists(c, max_size=4)
                           | st.dictionaries(st.text(max_size=10), c, max_size=4), max_leaves=12)
    ident = st.sampled_from(["<drone>", "<build>", "<request>", "<entry>", "<name>", "nope",
                             "..", "%00", "a" * 300, "<drone2>"]) | st.text(
        alphabet=st.characters(codec="ascii", exclude_characters="/?#%"), min_size=1, max_size=20)
    real = st.sampled_from(["<session>", "<lease>", "<build>", "<drone>"])
    fields = {
        "name": real | jsonish, "cores": jsonish, "slots": jsonish, "session": real | jsonish,
        "status": st.sampled_from(["ready", "building", "x"]) | jsonish, "load": jsonish,
        "builds": st.lists(st.fixed_dictionaries({"build_id": real | jsonish,
                                                  "lease": real | jsonish,
                                                  "progress": jsonish}), max_size=3) | jsonish,
        "wait_s": st.sampled_from([0, 0.0, -1, 31]) | jsonish,
        "lease": real | jsonish, "result": st.sampled_from(["success", "failed", "returned"])
        | jsonish, "duration_s": jsonish,
        "artifact": st.fixed_dictionaries({"path": jsonish, "size": jsonish, "sha256": jsonish})
        | jsonish, "error": jsonish, "atom": jsonish,
        "packages": st.lists(st.sampled_from(["=a/b-1", "=cat/new-2.0", "bogus", "=a/b-"])
                             | jsonish, max_size=4) | st.dictionaries(
            st.sampled_from(["dev-libs/foo", "bad", "a/b/c"]) | st.text(max_size=8), jsonish,
            max_size=3) | jsonish,
        "deps": jsonish, "priority": jsonish, "request_id": st.sampled_from(["<request>", "new"])
        | jsonish,
    }
    structured = st.fixed_dictionaries({}, optional=fields)
    emerge = st.lists(st.sampled_from([
        "[ebuild  N    ] dev-libs/ok-1.0", "[ebuild   R   ] sys-libs/zlib-1.3.1-r1 USE=\"-x\"",
        "[binary   U   ] app-arch/zstd-1.5.6-1", "[ebuild  N    ] foo", "[nomerge       ] a/b-1",
        "  [ebuild  N    ] dev-libs/c-2 ", "Total: 3 packages", "", "[blocks B      ] a/b",
        "[ebuild  N    ] dev-libs/foo-", "\x00\xff", "[ebuild] =a/b-1",
    ]) | st.text(max_size=60), max_size=12).map("\n".join)
    body = (structured.map(lambda d: json.dumps(d).encode())
            | jsonish.map(lambda d: json.dumps(d).encode())
            | emerge.map(lambda s: s.encode("utf-8", "surrogatepass"))
            | st.binary(max_size=300))
    ctype = st.sampled_from(["application/json", "text/plain", "", "application/octet-stream",
                             "text/xml", "application/json; charset=utf-8", "multipart/form-data"])
    query = st.sampled_from(["", "?state=ready", "?state=bogus,ready", "?limit=5", "?limit=-1",
                             "?limit=x", "?tail=3", "?tail=99999999", "?priority=x",
                             "?request_id=<request>", "?since=1"])
    routes = st.sampled_from([
        ("GET", "/api/status"), ("GET", "/api/queue"), ("POST", "/api/queue"),
        ("DELETE", "/api/queue/{id}"), ("GET", "/api/requests"), ("GET", "/api/requests/{id}"),
        ("GET", "/api/drones"), ("GET", "/api/drones/{id}"), ("POST", "/api/drones/{id}/restart"),
        ("GET", "/api/builds"), ("GET", "/api/builds/{id}"), ("GET", "/api/packages"),
        ("GET", "/api/config"), ("GET", "/api/logs"), ("POST", "/api/history"),
        ("GET", "/metrics"), ("POST", "/api/drones/register"),
        ("POST", "/api/drones/{id}/heartbeat"), ("POST", "/api/drones/{id}/lease"),
        ("POST", "/api/builds/{id}/log"), ("POST", "/api/builds/{id}/complete"),
        ("PUT", "/api/queue"), ("PATCH", "/api/drones/{id}"), ("GET", "/api/nope/{id}"),
    ])
    lease_hdr = st.sampled_from([None, "<lease>", "", "x" * 5000, "wrong"])

    ctx: dict[str, Any] = {}

    async def prepare(c: Any, orch: Orchestrator) -> dict[str, str]:
        """Ids worth poking at: a request, two drones, a build in flight (renewed when the
        fuzzer finished it)."""
        if "reg" not in ctx:
            await c.post("/api/queue", json={"packages": ["=a/b-1", "=a/c-1", "=a/d-1"],
                                             "deps": {"=a/d-1": ["=a/c-1"]},
                                             "request_id": "r-prep"})
        for name in ("fz", "fz2"):
            did = orch.state.drone_by_name.get(name)
            d = orch.state.drones.get(did) if did else None
            if d is None or not d.online or (name == "fz" and d.session != ctx["reg"]["session"]):
                ctx["reg" if name == "fz" else "reg2"] = await (await c.post(
                    "/api/drones/register", json={"name": name, "cores": 4})).get_json()
                ctx.pop("ls", None) if name == "fz" else None
        ls = ctx.get("ls")
        if ls is None or orch.state.builds[ls["build_id"]].state == "finished":
            ctx["n"] = ctx.get("n", 0) + 1
            await c.post("/api/queue", json={"packages": [f"=f/pkg{ctx['n']}-1"]})
            r = await c.post(f"/api/drones/{ctx['reg']['drone_id']}/lease",
                             json={"session": ctx["reg"]["session"], "wait_s": 0})
            ctx["ls"] = await r.get_json() if r.status_code == 200 else ls
        ls = ctx["ls"] or {"build_id": "b-none", "lease": "none"}
        return {"<drone>": ctx["reg"]["drone_id"], "<drone2>": ctx["reg2"]["drone_id"],
                "<build>": ls["build_id"], "<request>": "r-prep", "<entry>": "e-000001",
                "<name>": "fz", "<session>": ctx["reg"]["session"], "<lease>": ls["lease"]}

    async def one(c: Any, orch: Orchestrator, method: str, path: str, raw: bytes, ct: str,
                  q: str, lease_h: str | None) -> None:
        subst = await prepare(c, orch)

        def fill(s: str) -> str:
            for k, v in subst.items():
                s = s.replace(k, v)
            return s

        full = fill(path) + fill(q)
        headers = {"Content-Type": ct} if ct else {}
        if lease_h is not None:
            headers["X-Swarm-Lease"] = fill(lease_h)
        try:
            data = fill(raw.decode("utf-8")).encode("utf-8")
        except UnicodeDecodeError:
            data = raw
        before = (orch.state.to_snapshot(), await (await c.get("/api/queue")).get_data(),
                  await (await c.get("/api/drones")).get_data())
        resp = await c.open(full, method=method, data=data, headers=headers)
        status = resp.status_code
        payload = await resp.get_data()
        statuses[status] += 1
        endpoints[f"{method} {path}"] += 1
        assert status < 500, f"{method} {full} -> {status}: {payload[:300]!r}"
        if (resp.content_type or "").startswith("application/json"):
            doc = json.loads(payload, parse_constant=_no_constants)
            if validator is not None and not path.startswith("/api/nope"):
                validator(method, full, status, doc)
        if status >= 400:
            after = (orch.state.to_snapshot(), await (await c.get("/api/queue")).get_data(),
                     await (await c.get("/api/drones")).get_data())
            assert after == before, f"rejected {method} {full} ({status}) changed state"
        for p in ("/api/status", "/api/queue", "/api/drones", "/api/builds", "/api/packages"):
            r2 = await c.get(p)
            assert r2.status_code == 200, f"after {method} {full}: GET {p} -> {r2.status_code}"
            json.loads(await r2.get_data(), parse_constant=_no_constants)

    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="fuzz-") as d:
            orch = Orchestrator(SwarmdConfig(state_dir=str(Path(d) / "state")))
            (Path(d) / "state" / "logs").mkdir(parents=True)
            orch.journal = MemoryJournal()  # type: ignore[assignment]
            async with trio.open_nursery() as n:
                await n.start(orch.run)
                c = create_app(orch).test_client()

                @hseed(seed)
                @settings(max_examples=max_examples, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
                @given(routes, ident, body, ctype, query, lease_hdr)
                def prop(route: tuple[str, str], pid: str, raw: bytes, ct: str, q: str,
                         lease_h: str | None) -> None:
                    method, path = route
                    trio.from_thread.run(one, c, orch, method, path.replace("{id}", pid), raw,
                                         ct, q, lease_h)

                await trio.to_thread.run_sync(prop)
                n.cancel_scope.cancel()

    trio.run(main)
    return {"examples": sum(statuses.values()), "statuses": dict(sorted(statuses.items())),
            "endpoints": len(endpoints)}


def _no_constants(name: str) -> Any:
    raise ValueError(f"response holds the non-JSON constant {name}")


# ---------------------------------------------------------------------------- security
async def security_checks(tmp: Path) -> dict[str, Any]:
    """Drone protocol without (or with a wrong) token is refused and changes nothing; a drone
    cannot complete, log to or heartbeat another drone's build."""
    from harness.memory_journal import MemoryJournal

    cfg = SwarmdConfig(state_dir=str(tmp / "sec"), drone_token="drone-secret",
                       control_token="ctl-secret")
    orch = Orchestrator(cfg)
    (tmp / "sec" / "logs").mkdir(parents=True, exist_ok=True)
    orch.journal = MemoryJournal()  # type: ignore[assignment]
    out: dict[str, Any] = {"no_token_refused": 0, "no_token_calls": 0, "cross_refused": 0,
                           "cross_calls": 0, "problems": []}
    good = {"Authorization": "Bearer drone-secret"}
    ctl = {"Authorization": "Bearer ctl-secret"}
    async with trio.open_nursery() as n:
        await n.start(orch.run)
        c = create_app(orch).test_client()
        await c.post("/api/queue", json={"packages": ["=s/a-1", "=s/b-1"]}, headers=ctl)
        a = await (await c.post("/api/drones/register", json={"name": "A", "cores": 4},
                                headers=good)).get_json()
        b = await (await c.post("/api/drones/register", json={"name": "B", "cores": 4},
                                headers=good)).get_json()
        la = await (await c.post(f"/api/drones/{a['drone_id']}/lease", headers=good,
                                 json={"session": a["session"], "wait_s": 0})).get_json()
        lb = await (await c.post(f"/api/drones/{b['drone_id']}/lease", headers=good,
                                 json={"session": b["session"], "wait_s": 0})).get_json()
        art = {"path": "s/a/a-1-1.gpkg.tar", "size": 1, "sha256": SHA}
        calls = [
            ("/api/drones/register", {"name": "evil", "cores": 4}, None),
            (f"/api/drones/{a['drone_id']}/heartbeat", {"session": a["session"]}, None),
            (f"/api/drones/{a['drone_id']}/lease", {"session": a["session"], "wait_s": 0}, None),
            (f"/api/builds/{la['build_id']}/log", None, la["lease"]),
            (f"/api/builds/{la['build_id']}/complete",
             {"lease": la["lease"], "result": "success", "artifact": art}, None),
        ]
        for hdrs in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "drone-secret"},
                     {"Authorization": "Bearer "}, ctl):
            for path, body, lease_h in calls:
                before = orch.state.to_snapshot()
                h = dict(hdrs)
                if lease_h:
                    h["X-Swarm-Lease"] = lease_h
                r = await (c.post(path, json=body, headers=h) if body is not None
                           else c.post(path, data=b"log", headers=h))
                out["no_token_calls"] += 1
                if r.status_code == 401 and orch.state.to_snapshot() == before:
                    out["no_token_refused"] += 1
                else:
                    out["problems"].append(f"{path} with {hdrs}: {r.status_code}")
        # Cross-drone: B holds its own valid lease and A's build id.
        cross = [
            ("complete", f"/api/builds/{la['build_id']}/complete",
             {"lease": lb["lease"], "result": "success", "artifact": art}, None),
            ("complete-failed", f"/api/builds/{la['build_id']}/complete",
             {"lease": lb["lease"], "result": "failed", "error": "sabotage"}, None),
            ("complete-guess", f"/api/builds/{la['build_id']}/complete",
             {"lease": la["lease"][:-2] + "xx", "result": "failed"}, None),
            ("log", f"/api/builds/{la['build_id']}/log", None, lb["lease"]),
            ("heartbeat", f"/api/drones/{b['drone_id']}/heartbeat",
             {"session": b["session"], "status": "building",
              "builds": [{"build_id": la["build_id"], "lease": la["lease"]}]}, None),
            ("lease-as-A", f"/api/drones/{a['drone_id']}/lease",
             {"session": b["session"], "wait_s": 0}, None),
            ("heartbeat-as-A", f"/api/drones/{a['drone_id']}/heartbeat",
             {"session": b["session"]}, None),
        ]
        for what, path, body, lease_h in cross:
            before = orch.state.to_snapshot()
            h = dict(good)
            if lease_h:
                h["X-Swarm-Lease"] = lease_h
            r = await (c.post(path, json=body, headers=h) if body is not None
                       else c.post(path, data=b"sabotage", headers=h))
            doc = await r.get_json()
            out["cross_calls"] += 1
            refused = r.status_code in (409, 404) or (
                what == "heartbeat" and r.status_code == 200 and la["lease"] in doc["revoked"])
            if refused and orch.state.to_snapshot() == before:
                out["cross_refused"] += 1
            else:
                out["problems"].append(f"cross-drone {what}: {r.status_code} {doc}")
        # A's build is still A's, and A can still finish it.
        r = await c.post(f"/api/builds/{la['build_id']}/complete", headers=good,
                         json={"lease": la["lease"], "result": "success", "artifact": art})
        if r.status_code != 200:
            out["problems"].append(f"owner's completion refused after the attacks: "
                                   f"{r.status_code}")
        n.cancel_scope.cancel()
    return out
