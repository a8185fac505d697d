"""The orchestrator's durable state: queue entries, requests, drones, builds, history.

Theory of operation
-------------------
Everything swarmd must not forget is changed only by ``State.apply(event)``. The journal holds
the same events in the same order, so ``replay(journal) == live state``: recovery runs exactly
the code that ran live. ``apply`` is deterministic: it reads time only from the event's ``ts``,
and every id or token it needs was minted by the shell and written into the event.

Entry states and transitions::

    pending --(all deps built)--> ready --(assign)--> assigned --(started)--> building
    building|assigned --(complete success)--> built
    building|assigned --(complete failed, attempts left)--> ready
    building|assigned --(complete failed, none left)--> failed
    building|assigned --(returned: drone offline, new session, drone gave it back)--> ready
    pending|ready|assigned|building --(cancel)--> cancelled
    pending|ready --(a dependency failed, was cancelled or blocked)--> blocked

``built``, ``failed``, ``blocked`` and ``cancelled`` are final. An entry is shared by every
request that asked for its CPV while it was unfinished; a CPV already built is skipped.

Invariants (checked by tests/test_state_properties.py):
- an entry is ``ready`` iff it is unfinished, unassigned, and every dependency is ``built``;
- every ``assigned``/``building`` entry has exactly one active build whose lease is valid;
- a request is complete iff every one of its entries is final.

Soft state (heartbeat times, load, progress, lateness) lives in the shell, not here: it is not
journaled and is rebuilt from the drones' next heartbeats after a restart. Restart commands for
a drone's agent are durable (``Drone.commands``: ``restart_requested`` adds, ``restart_delivered``
records the session they were first sent to, a new session clears them: until the agent
re-registers, every heartbeat reply of its session carries them again).

Events are the classes of ``swarmd.journal_events``; ``apply`` finds each one's handler in
``_HANDLERS`` (class -> method), so an event without a handler is found by a test, not at
replay.

``apply`` returns an ``Outcome``: the result for the caller (or a refusal that changed nothing)
and the notices (live events) the shell publishes.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from swarmd import journal_events as je
from swarmd.journal_events import BuildResult, BuildState, DroneStatus, EntryState
from swarmd.journal_events import BuildResult as BR
from swarmd.journal_events import BuildState as BS
from swarmd.journal_events import EntryState as ES
from swarmlib.counts import public_counts
from swarmlib.errors import NotFound, SessionSuperseded

ENTRY_STATES: tuple[EntryState, ...] = tuple(EntryState)
FINAL = frozenset({ES.BUILT, ES.FAILED, ES.BLOCKED, ES.CANCELLED})
ACTIVE = frozenset({ES.ASSIGNED, ES.BUILDING})

DEFAULT_ESTIMATE_S = 180.0
EWMA_ALPHA = 0.3


@attrs.frozen(kw_only=True)
class Policy:
    """Knobs that decide transitions; part of configuration, constant during a run."""

    max_retries: int = 2
    failure_streak: int = 4
    cooldown_s: float = 300.0
    cooldown_max_s: float = 3600.0


@attrs.define(kw_only=True)
class Entry:
    id: str
    cpv: str
    cp: str
    state: EntryState = ES.PENDING
    requests: list[str] = attrs.field(factory=list)
    deps: list[str] = attrs.field(factory=list)  # entry ids
    dep_cpvs: list[str] = attrs.field(factory=list)
    dependents: list[str] = attrs.field(factory=list)
    waiting: int = 0  # deps not yet built
    attempts: int = 0
    failed_on: list[str] = attrs.field(factory=list)  # drone ids
    build_id: str | None = None
    drone: str | None = None
    estimate_s: float = DEFAULT_ESTIMATE_S  # seconds on 8 cores
    crit_s: float = 0.0  # critical path from here to the end of the graph
    req_priority: int = 0
    order: int = 0
    reason: str | None = None
    created: float = 0.0
    updated: float = 0.0
    history: list[dict[str, Any]] = attrs.field(factory=list)
    use: list[str] | None = None  # enabled USE flags asked for (None: not checked)
    target_id: str = ""  # only drones of this target may build it ("" = any drone)
    excluded: list[str] = attrs.field(factory=list)  # drones whose plan refused it
    key: str = ""  # identity among unfinished entries (see entry_key); "" = cpv
    cancel_asked: bool = False  # cancelled while its package was being published


@attrs.define(kw_only=True)
class Request:
    id: str
    entries: list[str]
    packages: int
    priority: int = 0
    cycles: list[list[str]] = attrs.field(factory=list)
    skipped_cpvs: list[str] = attrs.field(factory=list)
    merged_cpvs: list[str] = attrs.field(factory=list)
    queued: int = 0
    created: float = 0.0
    finished: float | None = None
    unfinished: int = 0
    target_id: str = ""
    target: dict[str, Any] | None = None


@attrs.define(kw_only=True)
class Drone:
    id: str
    name: str
    session: str
    hostname: str = ""
    ip: str = ""
    mac: str = ""
    cores: int = 1
    arch: str = ""
    chost: str = ""
    version: str = ""
    slots: int = 1
    online: bool = True
    registered: float = 0.0
    builds: list[str] = attrs.field(factory=list)  # active build ids
    failures_in_row: int = 0
    streak_cps: list[str] = attrs.field(factory=list)
    cooldown_until: float | None = None
    next_cooldown_s: float = 0.0
    target_id: str = ""
    target: dict[str, Any] | None = None
    commands: list[str] = attrs.field(factory=list)  # queued for the agent (Command values)
    commands_sent_to: str = ""  # the session a heartbeat reply first carried them to


@attrs.define(kw_only=True)
class Build:
    id: str
    entry_id: str
    cpv: str
    drone_id: str
    drone_name: str
    session: str
    lease: str
    attempt: int
    state: BuildState = BS.ASSIGNED
    result: BuildResult | None = None
    started: float = 0.0
    finished: float | None = None
    duration_s: float | None = None
    artifact: dict[str, Any] | None = None
    error: str | None = None


@attrs.define(kw_only=True)
class Package:
    cpv: str
    build_id: str
    artifact: dict[str, Any] | None
    drone: str
    built: float
    target_id: str = ""
    use: list[str] | None = None


@attrs.frozen(kw_only=True)
class Outcome:
    ok: bool = True
    result: dict[str, Any] = attrs.field(factory=dict)
    code: str = ""  # refusal code (not_found, stale_lease, conflict, ...)
    message: str = ""
    notices: list[dict[str, Any]] = attrs.field(factory=list)


# How to copy a field into a snapshot record, by its annotation: containers are copied so that
# later changes to the state cannot reach a snapshot being written by another thread.
_COPY = {
    "list[str]": "{v}[:]",
    "list[str] | None": "(None if {v} is None else {v}[:])",
    "list[list[str]]": "[x[:] for x in {v}]",
    "list[dict[str, Any]]": "[dict(x) for x in {v}]",
    "dict[str, Any] | None": "(None if {v} is None else dict({v}))",
}
_RECORD: dict[type, Any] = {}
SNAPSHOT_TABLES = ("entries", "requests", "drones", "builds", "packages")


def _record_fn(cls: type) -> Any:
    """A function ``obj -> dict`` equal to ``attrs.asdict(obj)`` for the state's classes,
    generated once per class as one dict display: about ten times faster than ``asdict``,
    which matters because the snapshot is taken while commits wait (Committer._compact).
    tests/test_state_properties.py checks it against ``attrs.asdict``."""
    parts = []
    for f in attrs.fields(cls):
        v = f"o.{f.name}"
        t = f.type if isinstance(f.type, str) else repr(f.type)
        if t.startswith(("list", "dict")) and t not in _COPY:
            raise TypeError(f"{cls.__name__}.{f.name}: no snapshot copy rule for {t}")
        parts.append(f"{f.name!r}: " + (_COPY[t].format(v=v) if t in _COPY else v))
    fn = eval("lambda o: {" + ", ".join(parts) + "}")  # noqa: S307 - fixed field names
    return fn


def records(objs: Iterable[Any]) -> list[dict[str, Any]]:
    """Snapshot records of ``objs`` (Entry, Request, Drone, Build or Package)."""
    out = []
    for o in objs:
        fn = _RECORD.get(type(o))
        if fn is None:
            fn = _RECORD[type(o)] = _record_fn(type(o))
        out.append(fn(o))
    return out


def can_build(d: Drone, e: Entry) -> bool:
    """May drone ``d`` build entry ``e``: the entry's target (if any) is the drone's, and the
    drone's plan has not refused it."""
    return (not e.target_id or e.target_id == d.target_id) and d.id not in e.excluded


def refuse(code: str, message: str) -> Outcome:
    return Outcome(ok=False, code=code, message=message)


def entry_key(cpv: str, target_id: str, use: list[str] | None) -> str:
    """What makes two requests' packages the same build: CPV, target and USE.

    A plain CPV when neither is given (the key of every entry before targets existed)."""
    if not target_id and use is None:
        return cpv
    return f"{cpv}@{target_id or '*'}" + ("" if use is None else "[" + " ".join(use) + "]")


def cp_of(cpv: str) -> str:
    """``cat/pn`` of a ``cat/pn-ver[-rN]`` string (already validated by the parser)."""
    from swarmd.atoms import cp_of as _cp

    return _cp(cpv)


class State:
    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self.entries: dict[str, Entry] = {}
        self.requests: dict[str, Request] = {}
        self.drones: dict[str, Drone] = {}
        self.builds: dict[str, Build] = {}
        self.packages: dict[str, Package] = {}
        self.history: dict[str, float] = {}  # cat/pn -> EWMA seconds on 8 cores
        self.active_by_cpv: dict[str, str] = {}  # unfinished entry per CPV
        self.drone_by_name: dict[str, str] = {}
        self.lease_index: dict[str, str] = {}  # valid lease -> build id
        self.next_entry = 1
        self.next_build = 1
        self.next_drone = 1
        self.next_order = 0
        self.seq = 0  # last applied journal sequence number
        # Derived: ready entries sorted best-first. Rebuilt on load, never serialized.
        self.ready_index: list[tuple[int, float, int, str]] = []
        # Derived: the same keys split by the entry's target_id ("" = any drone).
        self.ready_by_target: dict[str, list[tuple[int, float, int, str]]] = {}
        # Derived: unfinished entries some drone's plan refused (see _fail_unbuildable).
        self.refused: set[str] = set()
        self.counts: dict[str, int] = dict.fromkeys(ENTRY_STATES, 0)
        # Derived: ids of online drones by core count, all and those with a free slot (ordered
        # sets), so that the scheduler looks at the few faster drones that matter instead of
        # walking the whole fleet on every decision. Kept by ``_index_drone``.
        self.online_by_cores: dict[int, dict[str, None]] = {}
        self.free_by_cores: dict[int, dict[str, None]] = {}
        self._indexed_cores: dict[str, int] = {}

    # ---------------------------------------------------------------- dispatch
    def apply(self, event: je.Event | Mapping[str, Any], seq: int | None = None) -> Outcome:
        """Apply one event (journaled as ``seq``, if given) and return its outcome.

        A mapping (a journal record as JSON, as tests write them) is decoded first with
        ``journal_events.decode`` (BadRecord, a ValueError, if it is not a valid event) and
        its ``seq``, if any, is used."""
        if not isinstance(event, je.Event):
            if seq is None and "seq" in event:
                seq = int(event["seq"])
            event = je.decode(dict(event))
        if seq is not None:
            self.seq = seq
        return _HANDLERS[type(event)](self, event)

    # ---------------------------------------------------------------- helpers
    def _key(self, e: Entry) -> tuple[int, float, int, str]:
        return (-e.req_priority, -e.crit_s, e.order, e.id)

    def sort_key(self, e: Entry) -> tuple[int, float, int, str]:
        """The queue's order: best first (request priority, critical path, submission)."""
        return self._key(e)

    def _set_state(self, e: Entry, new: EntryState, ts: float) -> None:
        old = e.state
        if old == new:
            return
        if old == "ready":
            k = self._key(e)
            for index in (self.ready_index, self.ready_by_target.get(e.target_id, [])):
                i = bisect.bisect_left(index, k)
                if i < len(index) and index[i] == k:
                    del index[i]
            if not self.ready_by_target.get(e.target_id, True):
                del self.ready_by_target[e.target_id]
        if new == "ready":
            k = self._key(e)
            bisect.insort(self.ready_index, k)
            bisect.insort(self.ready_by_target.setdefault(e.target_id, []), k)
        self.counts[old] -= 1
        self.counts[new] += 1
        e.state = new
        e.updated = ts
        key = e.key or e.cpv
        if new in FINAL and self.active_by_cpv.get(key) == e.id:
            del self.active_by_cpv[key]

    def rebuild_derived(self) -> None:
        self.counts = dict.fromkeys(ENTRY_STATES, 0)
        for e in self.entries.values():
            self.counts[e.state] += 1
        self.ready_index = sorted(self._key(e) for e in self.entries.values() if e.state == "ready")
        self.ready_by_target = {}
        for k in self.ready_index:
            self.ready_by_target.setdefault(self.entries[k[3]].target_id, []).append(k)
        self.refused = {e.id for e in self.entries.values() if e.excluded and e.state not in FINAL}
        self.online_by_cores, self.free_by_cores, self._indexed_cores = {}, {}, {}
        for d in self.drones.values():
            self._index_drone(d)

    def _index_drone(self, d: Drone) -> None:
        """Re-file ``d`` in the derived drone indexes after its cores, online state, slots or
        builds changed."""
        for index in (self.online_by_cores, self.free_by_cores):
            for cores in {self._indexed_cores.get(d.id, d.cores), d.cores}:
                ids = index.get(cores)
                if ids is not None and d.id in ids:
                    del ids[d.id]
                    if not ids:
                        del index[cores]
        self._indexed_cores[d.id] = d.cores
        if d.online:
            self.online_by_cores.setdefault(d.cores, {})[d.id] = None
            if len(d.builds) < d.slots:
                self.free_by_cores.setdefault(d.cores, {})[d.id] = None

    def estimate_for(self, cp: str) -> float:
        return self.history.get(cp, DEFAULT_ESTIMATE_S)

    def queue_counts(self) -> dict[str, int]:
        """The eight entry states as the public four (swarmlib.counts)."""
        return public_counts(self.counts)

    def _queue_notice(self) -> dict[str, Any]:
        return {"type": "queue_update", "data": self.queue_counts()}

    def drone_status(self, d: Drone, now: float | None = None) -> DroneStatus:
        if not d.online:
            return DroneStatus.OFFLINE
        if d.cooldown_until is not None and now is not None and now < d.cooldown_until:
            return DroneStatus.DEGRADED
        return DroneStatus.BUILDING if d.builds else DroneStatus.READY

    def drone_notice(self, d: Drone, ts: float) -> dict[str, Any]:
        current = None
        if d.builds:
            current = self.builds[d.builds[0]].cpv
        return {
            "type": "drone_status",
            "data": {
                "drone_id": d.id,
                "name": d.name,
                "hostname": d.hostname,
                "ip": d.ip,
                "cores": d.cores,
                "target_id": d.target_id or None,
                "status": self.drone_status(d, ts),
                "current_package": current,
            },
        }

    def progress_notice(self, b: Build, phase: str, ts: float) -> dict[str, Any]:
        e = self.entries[b.entry_id]
        cores = self.drones[b.drone_id].cores if b.drone_id in self.drones else 8
        est = e.estimate_s * 8 / max(cores, 1)
        elapsed = (b.finished or ts) - b.started
        return {
            "type": "build_progress",
            "data": {
                "build_id": b.id,
                "package": b.cpv,
                "drone": b.drone_name,
                "drone_id": b.drone_id,
                "phase": phase,
                "percent": 100.0 if phase == "finished" else 0.0,
                "elapsed_s": round(max(elapsed, 0.0), 1),
                "estimate_s": round(est, 1),
                "result": b.result,
            },
        }

    # ---------------------------------------------------------------- finishing
    def _finish_entry(self, e: Entry, new: EntryState, ts: float, reason: str | None,
                      notices: list[dict[str, Any]],
                      blocked_out: list[str] | None = None) -> None:
        """Move ``e`` to a final state and propagate to dependents and requests."""
        self._set_state(e, new, ts)
        e.reason = reason
        if new == "built":
            for did in e.dependents:
                d = self.entries[did]
                if d.state == "pending":
                    d.waiting -= 1
                    if d.waiting <= 0:
                        self._set_state(d, ES.READY, ts)
        else:
            # Everything downstream that has not finished is blocked, with the reason.
            why = f"dependency {e.cpv} {new}" if new != "blocked" else (reason or "")
            stack = list(e.dependents)
            while stack:
                did = stack.pop()
                d = self.entries[did]
                if d.state in ("pending", "ready"):
                    self._set_state(d, ES.BLOCKED, ts)
                    d.reason = why if new != "blocked" else f"dependency {e.cpv} blocked"
                    if blocked_out is not None:
                        blocked_out.append(d.id)
                    self._entry_done_for_requests(d, ts, notices)
                    stack.extend(d.dependents)
        self._entry_done_for_requests(e, ts, notices)

    def _entry_done_for_requests(self, e: Entry, ts: float,
                                 notices: list[dict[str, Any]]) -> None:
        for rid in e.requests:
            r = self.requests[rid]
            r.unfinished -= 1
            if r.unfinished <= 0 and r.finished is None:
                r.finished = ts
                notices.append({"type": "build_complete", "data": self.request_summary(r)})

    def request_counts(self, r: Request) -> dict[str, int]:
        c: dict[str, int] = dict.fromkeys(ENTRY_STATES, 0)
        for eid in r.entries:
            c[self.entries[eid].state] += 1
        return c

    def request_summary(self, r: Request) -> dict[str, Any]:
        c = self.request_counts(r)
        return {
            "request_id": r.id,
            "packages": r.packages,
            "built": c["built"] + len(r.skipped_cpvs),
            "failed": c["failed"],
            "blocked": c["blocked"],
            "cancelled": c["cancelled"],
            "duration_s": round((r.finished or r.created) - r.created, 1),
        }

    def _end_build(self, b: Build, result: BuildResult | None, ts: float,
                   error: str | None = None) -> None:
        b.state = BS.FINISHED
        b.result = result
        b.finished = ts
        if b.error is None:
            b.error = error
        self.lease_index.pop(b.lease, None)
        d = self.drones.get(b.drone_id)
        if d is not None and b.id in d.builds:
            d.builds.remove(b.id)
            self._index_drone(d)

    def _return_build(self, b: Build, ts: float, why: str,
                      notices: list[dict[str, Any]]) -> None:
        """The drone lost the build through no fault of the package: back to ready."""
        self._end_build(b, BR.RETURNED, ts, why)
        e = self.entries[b.entry_id]
        e.history.append({"build_id": b.id, "drone": b.drone_id, "result": "returned",
                          "error": why})
        if e.state in ACTIVE and e.build_id == b.id:
            e.build_id = None
            e.drone = None
            self._set_state(e, ES.READY, ts)
        notices.append(self.progress_notice(b, "finished", ts))

    # ---------------------------------------------------------------- events
    def _on_submit(self, ev: je.Submit) -> Outcome:
        rid = ev.request_id
        if rid in self.requests:
            return Outcome(result=self.request_record(self.requests[rid], duplicate=True))
        ts = ev.ts
        packages: list[str] = list(ev.packages)
        deps: dict[str, list[str]] = ev.deps
        priority = ev.priority
        target_id = ev.target_id
        uses: dict[str, list[str]] = ev.use or {}
        keys = {cpv: entry_key(cpv, target_id, uses.get(cpv)) for cpv in packages}
        req = Request(id=rid, entries=[], packages=len(packages), priority=priority,
                      cycles=[list(c) for c in ev.cycles], created=ts,
                      target_id=target_id, target=ev.target)
        new_entries: list[Entry] = []
        for cpv in packages:
            key = keys[cpv]
            existing = self.active_by_cpv.get(key)
            if existing is not None:
                e = self.entries[existing]
                if rid not in e.requests:
                    e.requests.append(rid)
                    req.entries.append(e.id)
                    req.merged_cpvs.append(cpv)
                    if priority > e.req_priority and e.state == "ready":
                        self._set_state(e, ES.PENDING, ts)
                        e.req_priority = priority
                        self._set_state(e, ES.READY, ts)
                    elif priority > e.req_priority:
                        e.req_priority = priority
                continue
            if key in self.packages:
                req.skipped_cpvs.append(cpv)
                continue
            cp = cp_of(cpv)
            use = uses.get(cpv)
            e = Entry(id=f"e-{self.next_entry:06d}", cpv=cpv, cp=cp, requests=[rid],
                      estimate_s=self.estimate_for(cp), req_priority=priority,
                      order=self.next_order, created=ts, updated=ts,
                      use=None if use is None else list(use), target_id=target_id,
                      key="" if key == cpv else key)
            self.next_entry += 1
            self.next_order += 1
            self.entries[e.id] = e
            self.counts["pending"] += 1
            self.active_by_cpv[key] = e.id
            req.entries.append(e.id)
            new_entries.append(e)
        new_ids = {e.id for e in new_entries}
        merged_waiting: list[Entry] = []
        for eid in req.entries:
            e = self.entries[eid]
            is_new = eid in new_ids
            if not is_new and e.state not in ("pending", "ready"):
                continue  # already building or finished: its inputs are fixed
            for dep_cpv in deps.get(e.cpv, []):
                did = self.active_by_cpv.get(
                    keys.get(dep_cpv) or entry_key(dep_cpv, target_id, None))
                if did is None or did == e.id or did in e.deps:
                    continue  # built, not in the queue, or known: satisfied
                if not is_new and self._reaches(did, e.id):
                    continue  # would close a cycle across requests: keep the older order
                d = self.entries[did]
                e.deps.append(did)
                e.dep_cpvs.append(dep_cpv)
                d.dependents.append(e.id)
                e.waiting += 1
                if not is_new and e.state == "ready":
                    self._set_state(e, ES.PENDING, ts)
                if not is_new and e not in merged_waiting:
                    merged_waiting.append(e)
        req.queued = len(new_entries)
        req.unfinished = sum(1 for eid in req.entries if self.entries[eid].state not in FINAL)
        self.requests[rid] = req
        self._recompute_priorities([*new_entries, *merged_waiting])
        notices: list[dict[str, Any]] = []
        for e in new_entries:
            if e.waiting == 0:
                self._set_state(e, ES.READY, ts)
        if req.unfinished == 0:
            req.finished = ts
            notices.append({"type": "build_complete", "data": self.request_summary(req)})
        notices.append(self._queue_notice())
        return Outcome(result=self.request_record(req), notices=notices)

    def _active_for(self, cpv: str, target_id: str) -> Entry | None:
        """The unfinished entry of ``cpv`` for ``target_id`` (any USE), if one is queued."""
        eid = self.active_by_cpv.get(entry_key(cpv, target_id, None))
        if eid is not None:
            return self.entries[eid]
        prefix = f"{cpv}@{target_id or '*'}["
        for key, eid in self.active_by_cpv.items():
            if key.startswith(prefix):
                return self.entries[eid]
        return None

    def _is_built(self, cpv: str, target_id: str) -> bool:
        if entry_key(cpv, target_id, None) in self.packages:
            return True
        prefix = f"{cpv}@{target_id or '*'}["
        return any(k.startswith(prefix) for k in self.packages)

    def _queued_deps(self, e: Entry, needs: list[str], ts: float) -> list[Entry] | None:
        """The entries ``e`` must wait for so that its drone's plan compiles only ``e``: the
        unfinished entry (same target) of each CPV in ``needs``, or a new one queued for
        ``e``'s requests when the CPV is neither queued nor built (emerge's --tree output did
        not list it, or it was unpublished). None when one is built already (the drone's view
        of the binhost is stale, or another USE was built: a real refusal), is not a CPV, or
        waiting for it would close a cycle."""
        if not needs:
            return None
        found: list[Entry] = []
        for cpv in needs:
            match = self._active_for(cpv, e.target_id)
            if match is None:
                if self._is_built(cpv, e.target_id):
                    return None
                try:
                    cp = cp_of(cpv)
                except ValueError:
                    return None
                match = self._queue_for(e, cpv, cp, ts)
            if match.id == e.id:
                return None
            if match.id in e.deps:
                continue
            if self._reaches(match.id, e.id):
                return None
            found.append(match)
        return found or None

    def _queue_for(self, e: Entry, cpv: str, cp: str, ts: float) -> Entry:
        """A new entry for a dependency that ``e``'s plan needs, in ``e``'s requests."""
        key = entry_key(cpv, e.target_id, None)
        n = Entry(id=f"e-{self.next_entry:06d}", cpv=cpv, cp=cp, requests=list(e.requests),
                  estimate_s=self.estimate_for(cp), req_priority=e.req_priority,
                  order=self.next_order, created=ts, updated=ts, target_id=e.target_id,
                  key="" if key == cpv else key)
        self.next_entry += 1
        self.next_order += 1
        self.entries[n.id] = n
        self.counts["pending"] += 1
        self.active_by_cpv[key] = n.id
        for rid in n.requests:
            r = self.requests[rid]
            r.entries.append(n.id)
            r.unfinished += 1
        self._set_state(n, ES.READY, ts)
        return n

    def _fail_unbuildable(self, ts: float, notices: list[dict[str, Any]]) -> None:
        """Entries some drone refused that no online drone of their target may build any more
        (the others went offline or changed target): failed with the reason, since nothing
        may wait forever. Called after every change of the drones that could cause it."""
        for eid in sorted(self.refused):
            e = self.entries[eid]
            if e.state != "ready":
                if e.state in FINAL:
                    self.refused.discard(eid)
                continue
            if not any(x.online and can_build(x, e) for x in self.drones.values()):
                self.refused.discard(eid)
                last = e.history[-1]["error"] if e.history else "its plan was refused"
                self._finish_entry(
                    e, ES.FAILED, ts,
                    f"no drone of target {e.target_id or 'any'} can build it; last: {last}",
                    notices)

    def _publishing(self, e: Entry) -> bool:
        return e.build_id is not None and self.builds[e.build_id].state == "publishing"

    def _reaches(self, start: str, target: str) -> bool:
        """Does entry ``start`` (transitively) depend on ``target``?"""
        seen = {start}
        stack = [start]
        while stack:
            cur = self.entries[stack.pop()]
            for did in cur.deps:
                if did == target:
                    return True
                if did not in seen and self.entries[did].state not in FINAL:
                    seen.add(did)
                    stack.append(did)
        return False

    def _recompute_priorities(self, new_entries: Iterable[Entry]) -> None:
        """Critical path (estimated seconds) from each entry to the end of the graph.

        New entries can only lengthen the paths of the entries they depend on, so the walk
        starts at the new entries and goes up through their dependencies.
        """
        todo = list(new_entries)
        if not todo:
            return
        # Entries whose crit may change: new ones and all their ancestors (dependencies).
        affected: dict[str, Entry] = {}
        stack = list(todo)
        while stack:
            e = stack.pop()
            if e.id in affected:
                continue
            affected[e.id] = e
            for did in e.deps:
                d = self.entries[did]
                if d.state not in FINAL:
                    stack.append(d)
        # Topological order over the affected subgraph: dependents before dependencies.
        indeg = {eid: 0 for eid in affected}
        for e in affected.values():
            for did in e.deps:
                if did in indeg:
                    indeg[did] += 1
        order = [eid for eid, n in indeg.items() if n == 0]
        i = 0
        while i < len(order):
            e = affected[order[i]]
            i += 1
            for did in e.deps:
                if did in indeg:
                    indeg[did] -= 1
                    if indeg[did] == 0:
                        order.append(did)
        ready_changed = []
        for eid in order:
            e = affected[eid]
            best = 0.0
            for sid in e.dependents:
                s = self.entries[sid]
                if s.state not in FINAL and s.crit_s > best:
                    best = s.crit_s
            crit = e.estimate_s + best
            if crit != e.crit_s:
                if e.state == "ready":
                    ready_changed.append(e)
                    self._set_state(e, ES.PENDING, e.updated)
                    e.crit_s = crit
                    self._set_state(e, ES.READY, e.updated)
                else:
                    e.crit_s = crit

    def request_record(self, r: Request, duplicate: bool = False) -> dict[str, Any]:
        return {
            "id": r.id,
            "queued": r.queued,
            "skipped": len(r.skipped_cpvs),
            "merged": len(r.merged_cpvs),
            "packages": r.packages,
            "cycles": r.cycles,
            "skipped_cpvs": r.skipped_cpvs,
            "merged_cpvs": r.merged_cpvs,
            "entries": r.entries,
            "created": r.created,
            "duplicate": duplicate,
        }

    def _on_cancel(self, ev: je.Cancel) -> Outcome:
        target = ev.target
        ts = ev.ts
        notices: list[dict[str, Any]] = []
        cancelled: list[str] = []
        if target in self.requests:
            r = self.requests[target]
            if r.finished is not None:
                return refuse("conflict", f"request {target} has already finished")
            victims = []
            for eid in list(r.entries):
                e = self.entries[eid]
                if e.state in FINAL:
                    continue
                if len(e.requests) > 1:
                    # Shared with another request: keep it, this request just lets go.
                    e.requests.remove(target)
                    r.entries.remove(eid)
                    r.unfinished -= 1
                    continue
                victims.append(e)
        elif target in self.entries:
            e = self.entries[target]
            if e.state in FINAL:
                return refuse("conflict", f"entry {target} is already {e.state}")
            if self._publishing(e):
                return refuse("conflict", f"entry {target} is built and being published")
            victims = [e]
        else:
            return refuse("not_found", f"no request or queue entry with id {target!r}")
        blocked_ids: list[str] = []
        for e in victims:
            if e.state in FINAL:
                continue  # blocked by an earlier victim of this same cancel
            if self._publishing(e):
                # Built and on its way into the index: it completes the request when it is
                # there; if the publish fails it is cancelled then, not built again.
                e.cancel_asked = True
                continue
            if e.state in ACTIVE and e.build_id:
                b = self.builds[e.build_id]
                self._end_build(b, BR.CANCELLED, ts, "cancelled by operator")
                notices.append(self.progress_notice(b, "finished", ts))
                d = self.drones.get(b.drone_id)
                if d is not None:
                    notices.append(self.drone_notice(d, ts))
            e.build_id = None
            self._finish_entry(e, ES.CANCELLED, ts, "cancelled by operator", notices,
                               blocked_ids)
            cancelled.append(e.id)
        if target in self.requests:
            r = self.requests[target]
            if r.unfinished <= 0 and r.finished is None:
                r.finished = ts
                notices.append({"type": "build_complete", "data": self.request_summary(r)})
        notices.append(self._queue_notice())
        return Outcome(result={"id": target, "cancelled": cancelled, "blocked": blocked_ids},
                       notices=notices)

    def _on_register(self, ev: je.Register) -> Outcome:
        ts = ev.ts
        name = ev.name
        notices: list[dict[str, Any]] = []
        did = self.drone_by_name.get(name)
        if did is None:
            did = f"d-{self.next_drone:04d}"
            self.next_drone += 1
            d = Drone(id=did, name=name, session=ev.session, registered=ts)
            self.drones[did] = d
            self.drone_by_name[name] = did
        else:
            d = self.drones[did]
            # A new session supersedes the old: the agent restarted, its builds are gone.
            for bid in list(d.builds):
                self._return_build(self.builds[bid], ts, "drone re-registered (new session)",
                                   notices)
            d.session = ev.session
            d.registered = ts
            d.commands = []  # the agent restarted: what was queued for the old one is moot
            d.commands_sent_to = ""
        d.hostname, d.ip, d.mac = ev.hostname, ev.ip, ev.mac
        d.arch, d.chost, d.version = ev.arch, ev.chost, ev.version
        d.target = ev.target
        d.target_id = ev.target_id
        self._fail_unbuildable(ts, notices)
        d.cores = max(1, ev.cores)
        d.slots = max(1, ev.slots)
        d.online = True
        self._index_drone(d)
        notices.append(self.drone_notice(d, ts))
        if any(n["type"] == "build_progress" for n in notices):
            notices.append(self._queue_notice())
        return Outcome(result={"drone_id": did, "session": d.session}, notices=notices)

    def _drone_of(self, ev: je.DroneTarget | je.DroneOffline) -> Drone | Outcome:
        """The event's drone, or the refusal: unknown drone, or a session that is not its
        current one (an event without ``session`` applies to any)."""
        d = self.drones.get(ev.drone_id)
        if d is None:
            return refuse("not_found", f"no drone {ev.drone_id!r}")
        if ev.session is not None and ev.session != d.session:
            return refuse("session_superseded", "drone has a newer session")
        return d

    def _on_drone_target(self, ev: je.DroneTarget) -> Outcome:
        """A drone's build environment changed (a repository sync, a new profile)."""
        ts = ev.ts
        d = self._drone_of(ev)
        if isinstance(d, Outcome):
            return d
        d.target = ev.target
        d.target_id = ev.target_id
        notices = [self.drone_notice(d, ts)]
        self._fail_unbuildable(ts, notices)
        return Outcome(result={"drone_id": d.id, "target_id": d.target_id}, notices=notices)

    def _on_drone_offline(self, ev: je.DroneOffline) -> Outcome:
        ts = ev.ts
        d = self._drone_of(ev)
        if isinstance(d, Outcome):
            return d
        if not d.online:
            return Outcome(result={"drone_id": d.id, "status": "offline"})
        notices: list[dict[str, Any]] = []
        for bid in list(d.builds):
            self._return_build(self.builds[bid], ts, ev.why,
                               notices)
        d.online = False
        self._index_drone(d)
        self._fail_unbuildable(ts, notices)
        notices.append(self.drone_notice(d, ts))
        notices.append(self._queue_notice())
        return Outcome(result={"drone_id": d.id, "status": "offline"}, notices=notices)

    def check_session(self, drone_id: str, session: str) -> Drone:
        """The drone if ``session`` is its current one; raises for the API to turn into 404/409."""
        d = self.drones.get(drone_id)
        if d is None:
            raise NotFound(f"no drone with id {drone_id!r}; register first")
        if not d.online or d.session != session:
            raise SessionSuperseded(
                f"session {session!r} of drone {drone_id} is no longer current; register again"
            )
        return d

    def _on_assign(self, ev: je.Assign) -> Outcome:
        ts = ev.ts
        d = self.drones.get(ev.drone_id)
        if d is None or not d.online or d.session != ev.session:
            return refuse("session_superseded", "drone session is no longer current")
        e = self.entries.get(ev.entry_id)
        if e is None or e.state != "ready":
            return refuse("conflict", "entry is no longer ready")
        if len(d.builds) >= d.slots:
            return refuse("conflict", "drone has no free slot")
        if not can_build(d, e):
            return refuse("conflict", f"drone {d.name} cannot build entry {e.id} "
                          f"(target {e.target_id or 'any'}, drone target {d.target_id or 'none'})")
        bid = f"b-{self.next_build:07d}"
        self.next_build += 1
        b = Build(id=bid, entry_id=e.id, cpv=e.cpv, drone_id=d.id, drone_name=d.name,
                  session=d.session, lease=ev.lease, attempt=e.attempts + 1, started=ts)
        self.builds[bid] = b
        self.lease_index[b.lease] = bid
        d.builds.append(bid)
        self._index_drone(d)
        e.build_id = bid
        e.drone = d.id
        self._set_state(e, ES.ASSIGNED, ts)
        notices = [self.progress_notice(b, "started", ts), self.drone_notice(d, ts),
                   self._queue_notice()]
        return Outcome(
            result={"build_id": bid, "lease": b.lease, "package": e.cpv, "atom": "=" + e.cpv,
                    "estimate_s": round(e.estimate_s * 8 / d.cores, 1),
                    "use": None if e.use is None else list(e.use),
                    "target_id": e.target_id or None},
            notices=notices,
        )

    def _valid_build(self, ev: je.Started | je.Complete) -> Build | Outcome:
        b = self.builds.get(ev.build_id)
        if b is None:
            return refuse("not_found", f"no build with id {ev.build_id!r}")
        if b.state == "finished" or self.lease_index.get(ev.lease) != b.id:
            return refuse("stale_lease", f"build {b.id}: lease is no longer valid "
                          "(the package was returned to the queue or finished)")
        return b

    def _on_started(self, ev: je.Started) -> Outcome:
        b = self._valid_build(ev)
        if isinstance(b, Outcome):
            return b
        e = self.entries[b.entry_id]
        if b.state == "assigned":
            b.state = BS.BUILDING
            self._set_state(e, ES.BUILDING, ev.ts)
        return Outcome(result={"build_id": b.id, "state": b.state})

    def _on_complete(self, ev: je.Complete) -> Outcome:
        b = self._valid_build(ev)
        if isinstance(b, Outcome):
            return b
        ts = ev.ts
        result = ev.result
        e = self.entries[b.entry_id]
        d = self.drones[b.drone_id]
        notices: list[dict[str, Any]] = []
        b.duration_s = ev.duration_s
        learned = (self._queued_deps(e, list(ev.needs), ts)
                   if result == "returned" and ev.unbuildable else None)
        if learned:
            # The drone's plan wants packages that are queued but not built yet: dependency
            # edges emerge's --tree output did not show (a package is printed once, under one
            # of its parents). Wait for them; the drone did nothing wrong.
            why = ev.error or "waits for dependencies"
            self._return_build(b, ts, why, notices)
            for dep in learned:
                e.deps.append(dep.id)
                e.dep_cpvs.append(dep.cpv)
                dep.dependents.append(e.id)
                e.waiting += 1
            if e.state == "ready":
                self._set_state(e, ES.PENDING, ts)
            self._recompute_priorities([e])
        elif result == "returned" and ev.unbuildable:
            why = ev.error or "the drone's plan refused the package"
            self._return_build(b, ts, why, notices)
            if d.id not in e.excluded:
                e.excluded.append(d.id)
            self.refused.add(e.id)
            self._fail_unbuildable(ts, notices)
        elif result == "returned":
            self._return_build(b, ts, ev.error or "returned by drone", notices)
        elif result == "success" and ev.publish:
            # On the binhost but not yet in its index: the drone is free, the entry waits
            # for ``published`` (or ``publish_failed``) before it is built.
            b.artifact = None if ev.artifact is None else dict(ev.artifact)
            self._end_build(b, None, ts)
            b.state = BS.PUBLISHING
            b.result = None
            if e.state == "assigned":
                self._set_state(e, ES.BUILDING, ts)
            notices.append(self.progress_notice(b, "progress", ts))
            notices[-1]["data"]["percent"] = 100.0
        elif result == "success":
            b.artifact = None if ev.artifact is None else dict(ev.artifact)
            self._succeed(b, e, d, ts, notices)
        else:  # failed
            self._fail(b, e, d, ts, ev.error or "build failed", notices)
        notices.append(self.drone_notice(d, ts))
        notices.append(self._queue_notice())
        return Outcome(result={"build_id": b.id, "state": e.state}, notices=notices)

    def _on_published(self, ev: je.Published) -> Outcome:
        """swarmd put the build's package into the binhost index: the entry is built."""
        b = self.builds.get(ev.build_id)
        if b is None or b.state != "publishing":
            return refuse("conflict", f"build {ev.build_id} is not being published")
        ts = ev.ts
        e = self.entries[b.entry_id]
        d = self.drones[b.drone_id]
        notices: list[dict[str, Any]] = []
        b.artifact = {"path": ev.path, "size": ev.size, "sha256": ev.sha256}
        if ev.portage_build_id is not None:
            b.artifact["portage_build_id"] = ev.portage_build_id
        if ev.upload:
            b.artifact["upload"] = ev.upload
        self._succeed(b, e, d, ts, notices)
        notices.append(self._queue_notice())
        return Outcome(result={"build_id": b.id, "state": e.state}, notices=notices)

    def _on_publish_failed(self, ev: je.PublishFailed) -> Outcome:
        """The package could not be published (never arrived, corrupt, collision): a failed
        attempt like any other, retried preferably elsewhere."""
        b = self.builds.get(ev.build_id)
        if b is None or b.state != "publishing":
            return refuse("conflict", f"build {ev.build_id} is not being published")
        ts = ev.ts
        e = self.entries[b.entry_id]
        d = self.drones[b.drone_id]
        notices: list[dict[str, Any]] = []
        why = "publish: " + (ev.error or "failed")
        if e.cancel_asked:
            self._end_build(b, BR.CANCELLED, ts, why)
            e.build_id = None
            self._finish_entry(e, ES.CANCELLED, ts, "cancelled by operator", notices)
        elif ev.collision:
            # Not the package's or the drone's fault (another build of it took the BUILD_ID
            # first): built again, no attempt counted.
            self._return_build(b, ts, why, notices)
        else:
            self._fail(b, e, d, ts, why, notices)
        notices.append(self._queue_notice())
        return Outcome(result={"build_id": b.id, "state": e.state}, notices=notices)

    def _on_unpublished(self, ev: je.Unpublished) -> Outcome:
        """A published package's file is gone from the binhost (found at start-up): forget that
        it is built, so that the next submission that asks for it builds it again."""
        key = ev.key
        p = self.packages.pop(key, None)
        if p is None:
            return refuse("not_found", f"no built package {key!r}")
        return Outcome(result={"cpv": p.cpv, "build_id": p.build_id})

    def _succeed(self, b: Build, e: Entry, d: Drone, ts: float,
                 notices: list[dict[str, Any]]) -> None:
        self._end_build(b, BR.SUCCESS, ts)
        e.attempts += 1
        e.history.append({"build_id": b.id, "drone": d.id, "result": "success",
                          "error": None})
        key = e.key or e.cpv
        self.packages[key] = Package(cpv=e.cpv, build_id=b.id, artifact=b.artifact,
                                     drone=d.id, built=ts, target_id=e.target_id,
                                     use=None if e.use is None else list(e.use))
        if b.duration_s and b.duration_s > 0:
            self._learn(e.cp, b.duration_s * d.cores / 8)
        d.failures_in_row = 0
        d.streak_cps = []
        d.cooldown_until = None
        d.next_cooldown_s = 0.0
        notices.append(self.progress_notice(b, "finished", ts))
        self._finish_entry(e, ES.BUILT, ts, None, notices)

    def _fail(self, b: Build, e: Entry, d: Drone, ts: float, error: str,
              notices: list[dict[str, Any]]) -> None:
        self._end_build(b, BR.FAILED, ts, error)
        e.attempts += 1
        e.history.append({"build_id": b.id, "drone": d.id, "result": "failed",
                          "error": error})
        if d.id not in e.failed_on:
            e.failed_on.append(d.id)
        if e.cp not in d.streak_cps:
            d.streak_cps.append(e.cp)
        d.failures_in_row += 1
        if len(d.streak_cps) >= self.policy.failure_streak:
            cool = d.next_cooldown_s or self.policy.cooldown_s
            d.cooldown_until = ts + cool
            d.next_cooldown_s = min(cool * 2, self.policy.cooldown_max_s)
            d.streak_cps = []
        notices.append(self.progress_notice(b, "finished", ts))
        e.build_id = None
        e.drone = None
        if e.state in FINAL:
            return
        if e.attempts > self.policy.max_retries:
            self._finish_entry(e, ES.FAILED, ts,
                               f"failed {e.attempts} attempts; last error: {error}", notices)
        else:
            self._set_state(e, ES.READY, ts)

    def _learn(self, cp: str, seconds8: float) -> None:
        old = self.history.get(cp)
        self.history[cp] = seconds8 if old is None else old + EWMA_ALPHA * (seconds8 - old)

    def _on_history(self, ev: je.History) -> Outcome:
        n = 0
        for cp, secs in sorted(ev.packages.items()):
            self.history[str(cp)] = float(secs)
            n += 1
        return Outcome(result={"recorded": n})

    def _on_prune(self, ev: je.Prune) -> Outcome:
        """Forget finished history older than ``before``: finished requests, the final entries
        that belong only to them, and their finished builds. ``packages`` (what is built) and
        ``history`` (compile times) are kept, so start-up follows the live state, not the past.
        """
        before = ev.before
        gone_r = {rid for rid, r in self.requests.items()
                  if r.finished is not None and r.finished < before}
        for rid in gone_r:
            del self.requests[rid]
        gone_e: set[str] = set()
        for eid, e in self.entries.items():
            if e.state in FINAL and e.updated < before and not any(
                    rid in self.requests for rid in e.requests):
                gone_e.add(eid)
        for eid in gone_e:
            e = self.entries.pop(eid)
            self.counts[e.state] -= 1
            for did in e.deps:
                d = self.entries.get(did)
                if d is not None and eid in d.dependents:
                    d.dependents.remove(eid)
            for sid in e.dependents:
                d = self.entries.get(sid)
                if d is not None and eid in d.deps:
                    d.deps.remove(eid)
        gone_b = [bid for bid, b in self.builds.items()
                  if b.state == "finished" and b.entry_id in gone_e]
        for bid in gone_b:
            del self.builds[bid]
        # Built packages: keep the newest of each cat/pn for good (what is on the binhost now);
        # older versions are forgotten once they are past the retention too.
        newest: dict[tuple[str, str], tuple[str, Package]] = {}
        for k, p in self.packages.items():
            cp = (cp_of(p.cpv), p.target_id)
            if cp not in newest or p.built > newest[cp][1].built:
                newest[cp] = (k, p)
        keep = {k for k, _p in newest.values()}
        gone_p = [c for c, p in self.packages.items() if c not in keep and p.built < before]
        for c in gone_p:
            del self.packages[c]
        return Outcome(result={"requests": len(gone_r), "entries": len(gone_e),
                               "builds": len(gone_b), "packages": len(gone_p)})

    def _on_restart_requested(self, ev: je.RestartRequested) -> Outcome:
        """An operator's restart for the drone's agent, kept until the agent registers a new
        session (queued once, however often it was asked for)."""
        d = self.drones.get(ev.drone_id)
        if d is None:
            return refuse("not_found", f"no drone with id {ev.drone_id!r}")
        if je.Command.RESTART not in d.commands:
            d.commands.append(je.Command.RESTART)
        return Outcome(result={"drone_id": d.id, "commands": list(d.commands)})

    def _on_restart_delivered(self, ev: je.RestartDelivered) -> Outcome:
        """The drone's queued commands first went out in a heartbeat reply of session
        ``session``. They stay queued: a reply lost on the way would otherwise lose them, so
        every later reply of that session carries them again, until the agent registers a new
        session (which clears them). The agent acts on a repeat as on the first."""
        d = self.drones.get(ev.drone_id)
        if d is None:
            return refuse("not_found", f"no drone with id {ev.drone_id!r}")
        if d.session != ev.session:
            return refuse("session_superseded", "drone has a newer session")
        d.commands_sent_to = ev.session
        return Outcome(result={"drone_id": d.id, "commands": self.commands_for(d)})

    @staticmethod
    def commands_for(d: Drone) -> list[dict[str, Any]]:
        """The drone's queued commands as a heartbeat reply carries them."""
        return [{"command": str(c)} for c in d.commands]

    # ---------------------------------------------------------------- snapshot
    def to_snapshot(self) -> dict[str, Any]:
        """A fresh, JSON-ready copy of the durable state (derived indexes excluded)."""
        snap = self.snapshot_header()
        for table in SNAPSHOT_TABLES:
            snap[table] = records(getattr(self, table).values())
        snap["history"] = dict(self.history)
        return snap

    def snapshot_header(self) -> dict[str, Any]:
        """The snapshot's scalars; ``to_snapshot`` adds SNAPSHOT_TABLES, then "history"."""
        return {
            "version": 1,
            "seq": self.seq,
            "counters": [self.next_entry, self.next_build, self.next_drone, self.next_order],
        }

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any], policy: Policy | None = None) -> State:
        s = cls(policy)
        s.seq = int(snap["seq"])
        s.next_entry, s.next_build, s.next_drone, s.next_order = snap["counters"]
        for raw in snap["entries"]:
            e = Entry(**raw)
            e.state = EntryState(e.state)
            s.entries[e.id] = e
            if e.state not in FINAL:
                s.active_by_cpv[e.key or e.cpv] = e.id
        for raw in snap["requests"]:
            r = Request(**raw)
            s.requests[r.id] = r
        for raw in snap["drones"]:
            d = Drone(**raw)
            s.drones[d.id] = d
            s.drone_by_name[d.name] = d.id
        for raw in snap["builds"]:
            b = Build(**raw)
            b.state = BuildState(b.state)
            if b.result is not None:
                b.result = BuildResult(b.result)
            s.builds[b.id] = b
            if b.state not in ("finished", "publishing"):
                s.lease_index[b.lease] = b.id
        for raw in snap["packages"]:
            p = Package(**raw)
            s.packages[entry_key(p.cpv, p.target_id, p.use)] = p
        s.history = {str(k): float(v) for k, v in snap["history"].items()}
        s.rebuild_derived()
        return s


_HANDLERS: dict[type[je.Event], Callable[[State, Any], Outcome]] = {
    je.Submit: State._on_submit,
    je.Cancel: State._on_cancel,
    je.Register: State._on_register,
    je.DroneTarget: State._on_drone_target,
    je.DroneOffline: State._on_drone_offline,
    je.Assign: State._on_assign,
    je.Started: State._on_started,
    je.Complete: State._on_complete,
    je.Published: State._on_published,
    je.PublishFailed: State._on_publish_failed,
    je.Unpublished: State._on_unpublished,
    je.History: State._on_history,
    je.Prune: State._on_prune,
    je.RestartRequested: State._on_restart_requested,
    je.RestartDelivered: State._on_restart_delivered,
}
