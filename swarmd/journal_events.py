"""The journal's events: one frozen class per type, and their records on disk.

Pure (no Trio, no I/O). ``State.apply`` takes these classes; the shell constructs them, so a
misspelt or mistyped field is a mypy error where the event is made, not a surprise at replay.

A record (the JSON payload of one journal frame, see ``swarmd.journal``) is the event's fields
plus ``"type"``, ``"seq"`` and ``"v"``::

    {"v": 2, "seq": 17, "type": "assign", "ts": 1780000063.0, "entry_id": "e-000001", ...}

Versions:

- 1 (no ``"v"``): written before the events were typed; ``State.apply`` then read the dict
  with ``ev.get(...)``, so keys it did not know were ignored and optional keys could be
  absent. ``decode`` migrates such a record: unknown keys are dropped, absent ones take the
  field's default (the same value the old ``ev.get`` used).
- 2: the fields of the class, exactly; an unknown key is an error (a typo, or a record of a
  newer swarmd).

``decode`` raises ``BadRecord(field, why)`` for a record that does not fit its class; the
journal turns it into ``JournalRecordInvalid`` with the file, offset and sequence number.
"""

from __future__ import annotations

import enum
import json
from typing import Any, ClassVar

import attrs

from swarmlib import convert

VERSION = 2


class _State(enum.StrEnum):
    """A StrEnum that hashes as its string does, in C: states are dict keys and set members
    on every event applied (Enum's own ``__hash__`` is a Python call, 3x slower)."""

    __hash__ = str.__hash__


class EntryState(_State):
    PENDING = "pending"
    READY = "ready"
    ASSIGNED = "assigned"
    BUILDING = "building"
    BUILT = "built"
    FAILED = "failed"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"


class BuildState(_State):
    ASSIGNED = "assigned"
    BUILDING = "building"
    PUBLISHING = "publishing"  # on the binhost, not yet in its index
    FINISHED = "finished"


class BuildResult(_State):
    """How a finished build ended (``Build.result``)."""

    SUCCESS = "success"
    FAILED = "failed"
    RETURNED = "returned"
    CANCELLED = "cancelled"


class Report(_State):
    """What a drone reports for its build (``complete``)."""

    SUCCESS = "success"
    FAILED = "failed"
    RETURNED = "returned"


class DroneStatus(_State):
    READY = "ready"
    BUILDING = "building"
    DEGRADED = "degraded"
    OFFLINE = "offline"


class Command(_State):
    """Commands an operator queues for a drone's agent (delivered in a heartbeat reply)."""

    RESTART = "restart"


@attrs.frozen(kw_only=True)
class Event:
    """Base of every journaled event. ``ts`` is wall-clock seconds, stamped by the shell."""

    TYPE: ClassVar[str] = ""
    ts: float


@attrs.frozen(kw_only=True)
class Submit(Event):
    TYPE: ClassVar[str] = "submit"
    request_id: str
    packages: list[str]
    deps: dict[str, list[str]] = attrs.field(factory=dict)
    cycles: list[list[str]] = attrs.field(factory=list)
    priority: int = 0
    use: dict[str, list[str]] | None = None
    target: dict[str, Any] | None = None
    target_id: str = ""


@attrs.frozen(kw_only=True)
class Cancel(Event):
    TYPE: ClassVar[str] = "cancel"
    target: str  # a request id or an entry id


@attrs.frozen(kw_only=True)
class Register(Event):
    TYPE: ClassVar[str] = "register"
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
    target: dict[str, Any] | None = None
    target_id: str = ""


@attrs.frozen(kw_only=True)
class DroneTarget(Event):
    TYPE: ClassVar[str] = "drone_target"
    drone_id: str
    session: str | None = None
    target: dict[str, Any] | None = None
    target_id: str = ""


@attrs.frozen(kw_only=True)
class DroneOffline(Event):
    TYPE: ClassVar[str] = "drone_offline"
    drone_id: str
    session: str | None = None  # None: whatever session the drone has
    why: str = "drone went offline"


@attrs.frozen(kw_only=True)
class Assign(Event):
    TYPE: ClassVar[str] = "assign"
    entry_id: str
    drone_id: str
    session: str
    lease: str


@attrs.frozen(kw_only=True)
class Started(Event):
    TYPE: ClassVar[str] = "started"
    build_id: str
    lease: str


@attrs.frozen(kw_only=True)
class Complete(Event):
    TYPE: ClassVar[str] = "complete"
    build_id: str
    lease: str
    result: Report
    duration_s: float = 0.0
    artifact: dict[str, Any] | None = None  # {path, size, sha256} of a success
    error: str | None = None
    publish: bool = False  # a success that swarmd puts into the binhost index first
    unbuildable: bool = False  # returned: the drone's plan refused the package
    needs: list[str] = attrs.field(factory=list)  # CPVs the refused plan wanted built first


@attrs.frozen(kw_only=True)
class Published(Event):
    TYPE: ClassVar[str] = "published"
    build_id: str
    path: str
    size: int
    sha256: str
    portage_build_id: int | None = None
    upload: str = ""


@attrs.frozen(kw_only=True)
class PublishFailed(Event):
    TYPE: ClassVar[str] = "publish_failed"
    build_id: str
    error: str = ""
    collision: bool = False  # another build took the BUILD_ID first: no attempt counted


@attrs.frozen(kw_only=True)
class Unpublished(Event):
    TYPE: ClassVar[str] = "unpublished"
    key: str
    why: str = ""


@attrs.frozen(kw_only=True)
class History(Event):
    TYPE: ClassVar[str] = "history"
    packages: dict[str, float]  # cat/pn -> seconds on 8 cores


@attrs.frozen(kw_only=True)
class Prune(Event):
    TYPE: ClassVar[str] = "prune"
    before: float


@attrs.frozen(kw_only=True)
class RestartRequested(Event):
    """An operator asked for the drone's agent to restart; delivered in a heartbeat reply."""

    TYPE: ClassVar[str] = "restart_requested"
    drone_id: str


@attrs.frozen(kw_only=True)
class RestartDelivered(Event):
    """The drone's pending commands were handed to it in a heartbeat reply."""

    TYPE: ClassVar[str] = "restart_delivered"
    drone_id: str
    session: str


EVENT_CLASSES: tuple[type[Event], ...] = (
    Submit, Cancel, Register, DroneTarget, DroneOffline, Assign, Started, Complete, Published,
    PublishFailed, Unpublished, History, Prune, RestartRequested, RestartDelivered,
)
BY_TYPE: dict[str, type[Event]] = {c.TYPE: c for c in EVENT_CLASSES}
_FIELDS: dict[type[Event], frozenset[str]] = {
    c: frozenset(f.name for f in attrs.fields(c)) for c in EVENT_CLASSES}
_ENVELOPE = ("v", "seq", "type")

for _cls in EVENT_CLASSES:
    convert.forbid_extra_keys(_cls)


class BadRecord(ValueError):
    """A record that does not decode: ``field`` names the offending key ("" for the whole)."""

    def __init__(self, field: str, why: str) -> None:
        self.field = field
        self.why = why
        super().__init__(f"field {field!r}: {why}" if field else why)


def to_record(event: Event, seq: int) -> dict[str, Any]:
    """The JSON-ready record of ``event`` as journal sequence number ``seq``."""
    rec: dict[str, Any] = convert.unstructure(event)
    rec["type"] = event.TYPE
    rec["seq"] = seq
    rec["v"] = VERSION
    return rec


def encode(event: Event, seq: int) -> bytes:
    """The record's payload bytes (compact, sorted keys: equal events give equal bytes)."""
    return json.dumps(to_record(event, seq), separators=(",", ":"), sort_keys=True).encode()


def _migrate_v1(cls: type[Event], body: dict[str, Any]) -> dict[str, Any]:
    """A version 1 record's keys as the class takes them: unknown keys dropped (the old
    ``apply`` ignored them) and ``null`` where the field takes none dropped (the old code read
    it as absent: ``ev.get(key) or default``)."""
    fields, nullable = _FIELDS[cls], _NULLABLE[cls]
    out = {k: x for k, x in body.items() if k in fields and (x is not None or k in nullable)}
    if "ts" not in out:
        out["ts"] = 0.0  # only events whose handler never read the time lacked it
    return out


_NULLABLE: dict[type[Event], frozenset[str]] = {
    c: frozenset(f.name for f in attrs.fields(c) if "None" in str(f.type))
    for c in EVENT_CLASSES}


def decode(rec: Any) -> Event:
    """The event of a decoded JSON record (either version). Raises BadRecord."""
    if not isinstance(rec, dict):
        raise BadRecord("", f"expected a JSON object, got {type(rec).__name__}")
    kind = rec.get("type")
    cls = BY_TYPE.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise BadRecord("type", f"unknown event type {kind!r}")
    v = rec.get("v", 1)
    if v == VERSION:
        body = {k: x for k, x in rec.items() if k not in _ENVELOPE}
    elif v == 1 and "v" not in rec:
        body = _migrate_v1(cls, rec)
    else:
        raise BadRecord("v", f"unknown record version {v!r} (this swarmd reads 1 and "
                             f"{VERSION})")
    try:
        return convert.structure_strict(body, cls)
    except convert.StructureError as exc:
        raise BadRecord(exc.field, exc.why) from None
