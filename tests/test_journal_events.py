"""The typed journal: every event class round-trips through its record, version 1 records
are migrated, a record that does not decode is refused naming the field, and a typo is caught
(by decode at run time, by mypy where the event is made)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from swarmd import journal as jr
from swarmd import journal_events as je
from swarmd.service import replay
from swarmd.state import _HANDLERS, Policy, State
from swarmlib.errors import JournalCorrupt, JournalRecordInvalid
from tests.conftest import REPO, make_orch

TARGET = {"arch": "amd64", "chost": "x86_64-pc-linux-gnu", "cflags": "-O2", "cxxflags": "-O2",
          "ldflags": "", "profile": "default/linux/amd64/23.0", "accept_keywords": "amd64",
          "binpkg_format": "gpkg", "repos": {"gentoo": "abc"}}

# One example of each event class, every optional field set to something other than its
# default so that a field the record forgets shows up.
SAMPLES: list[je.Event] = [
    je.Submit(ts=1.5, request_id="r-1", packages=["a/b-1", "a/c-2"],
              deps={"a/c-2": ["a/b-1"]}, cycles=[["a/x-1", "a/y-1"]], priority=-3,
              use={"a/b-1": ["ssl"]}, target=TARGET, target_id="t1"),
    je.Cancel(ts=2.0, target="r-1"),
    je.Register(ts=3.0, name="d1", session="s1", hostname="h", ip="10.0.0.1",
                mac="aa:bb:cc:dd:ee:ff", cores=16, arch="amd64", chost="x", version="1",
                slots=2, target=TARGET, target_id="t1"),
    je.DroneTarget(ts=4.0, drone_id="d-0001", session="s1", target=TARGET, target_id="t2"),
    je.DroneOffline(ts=5.0, drone_id="d-0001", session="s1", why="silence"),
    je.Assign(ts=6.0, entry_id="e-000001", drone_id="d-0001", session="s1", lease="L"),
    je.Started(ts=7.0, build_id="b-0000001", lease="L"),
    je.Complete(ts=8.0, build_id="b-0000001", lease="L", result=je.Report.RETURNED,
                duration_s=12.5, artifact={"path": "a/b/x.gpkg.tar", "size": 3,
                                           "sha256": "0" * 64},
                error="plan", publish=True, unbuildable=True, needs=["a/z-1"]),
    je.Published(ts=9.0, build_id="b-0000001", path="a/b/b-1-1.gpkg.tar", size=3,
                 sha256="f" * 64, portage_build_id=1, upload="a/b/.upload"),
    je.PublishFailed(ts=10.0, build_id="b-0000001", error="corrupt", collision=True),
    je.Unpublished(ts=11.0, key="a/b-1", why="file missing"),
    je.History(ts=12.0, packages={"a/b": 60.0}),
    je.Prune(ts=13.0, before=1.0),
    je.RestartRequested(ts=14.0, drone_id="d-0001"),
    je.RestartDelivered(ts=15.0, drone_id="d-0001", session="s1"),
]


def test_every_event_class_has_a_sample_and_a_handler() -> None:
    assert {type(s) for s in SAMPLES} == set(je.EVENT_CLASSES)
    assert set(_HANDLERS) == set(je.EVENT_CLASSES)
    assert len(je.BY_TYPE) == len(je.EVENT_CLASSES)  # no two classes share a type name


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.TYPE)
def test_event_round_trips_through_its_record(event: je.Event) -> None:
    raw = jr.encode_event(event, 42)
    payload = raw[jr.HEADER.size:]
    rec = json.loads(payload)
    assert (rec["v"], rec["seq"], rec["type"]) == (2, 42, event.TYPE)
    assert je.decode(rec) == event
    # Every field is in the record, under its own name.
    assert set(rec) == {f.name for f in attrs.fields(type(event))} | {"v", "seq", "type"}


def test_v1_record_is_migrated() -> None:
    """As the untyped journal wrote them: no "v", nulls meaning "absent", keys the old apply
    ignored."""
    rec = {"type": "complete", "seq": 9, "ts": 100, "build_id": "b-1", "lease": "L",
           "result": "failed", "duration_s": None, "artifact": None, "error": None,
           "needs": None, "atom": "=a/b-1"}
    assert je.decode(rec) == je.Complete(ts=100.0, build_id="b-1", lease="L",
                                         result=je.Report.FAILED)
    reg = {"type": "register", "seq": 1, "ts": 1.0, "name": "d", "session": "s", "cores": 4}
    assert je.decode(reg) == je.Register(ts=1.0, name="d", session="s", cores=4)
    # history events of old tests and tools had no ts: their handler never read it
    assert je.decode({"type": "history", "packages": {"a/b": 1}}) == je.History(
        ts=0.0, packages={"a/b": 1.0})


@pytest.mark.parametrize(("change", "field", "why"), [
    ({"build_id": 7}, "build_id", "expected a string, got int"),
    ({"result": "maybe"}, "result", "expected one of 'success', 'failed', 'returned'"),
    ({"duration_s": "long"}, "duration_s", "expected a number"),
    ({"publish": "yes"}, "publish", "expected true or false"),
    ({"lease": None}, "lease", "expected a string"),
    ({"buidl_id": "b-1"}, "buidl_id", "extra fields found (buidl_id)"),  # a typo
    ({"v": 3}, "v", "unknown record version 3"),
    ({"type": "complet"}, "type", "unknown event type 'complet'"),
])
def test_bad_field_is_named(change: dict[str, Any], field: str, why: str) -> None:
    rec = je.to_record(SAMPLES[7], 5) | change
    with pytest.raises(je.BadRecord) as info:
        je.decode(json.loads(json.dumps(rec)))
    assert info.value.field == field
    assert why in str(info.value)


def test_missing_field_is_named() -> None:
    rec = je.to_record(SAMPLES[5], 5)
    del rec["lease"]
    with pytest.raises(je.BadRecord, match="required field missing") as info:
        je.decode(rec)
    assert info.value.field == "lease"


def _write(state_dir: Path, recs: list[dict[str, Any]]) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    seg = state_dir / "journal-00000000000000000001.log"
    seg.write_bytes(b"".join(jr.encode(r) for r in recs))
    return seg


def test_record_that_does_not_decode_refuses_start_up_and_changes_nothing(
        tmp_path: Path) -> None:
    good = [je.to_record(e, i + 1) for i, e in enumerate(SAMPLES[:3])]
    bad = je.to_record(je.Cancel(ts=4.0, target="r-1"), 4)
    bad["target"] = ["r-1"]
    torn = jr.encode(je.to_record(je.Cancel(ts=5.0, target="x"), 5))[:-3]
    seg = _write(tmp_path, [*good, bad])
    with seg.open("ab") as fh:
        fh.write(torn)  # a torn tail after it: must not be cut either
    before = seg.read_bytes()
    offset = sum(len(jr.encode(r)) for r in good)
    with pytest.raises(JournalRecordInvalid) as info:
        replay(tmp_path, Policy())
    exc = info.value
    assert isinstance(exc, JournalCorrupt)
    assert (exc.path, exc.offset, exc.seq, exc.field) == (str(seg), offset, 4, "target")
    for part in (str(seg), f"offset {offset}", "seq 4", "'target'", "expected a string"):
        assert part in str(exc)
    # Not the damaged-frame advice: repair finds nothing to cut here, and cutting would lose
    # acknowledged work.
    assert "--truncate-at-damage" not in str(exc)
    assert "do not truncate" in str(exc)
    assert seg.read_bytes() == before
    ok, lines = jr.check(tmp_path)
    assert not ok
    assert any("seq 4" in ln and "'target'" in ln for ln in lines)


def test_a_typo_in_an_event_is_a_mypy_error(tmp_path: Path) -> None:
    src = tmp_path / "producer.py"
    src.write_text(
        "from swarmd import journal_events as je\n"
        "ok = je.Assign(ts=1.0, entry_id='e', drone_id='d', session='s', lease='l')\n"
        "typo = je.Assign(ts=1.0, entry_idd='e', drone_id='d', session='s', lease='l')\n"
        "wrong = je.Started(ts=1.0, build_id=5, lease='l')\n")
    env = {**os.environ, "MYPYPATH": f"{REPO}:{REPO / 'lib'}"}
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--follow-imports=silent",
         "--cache-dir", str(REPO / ".mypy_cache"), str(src)],
        capture_output=True, text=True, env=env, cwd=REPO, check=False)
    errors = [ln for ln in out.stdout.splitlines() if ": error:" in ln]
    assert any(":3:" in ln and "entry_idd" in ln for ln in errors), out.stdout
    assert any(":4:" in ln and "build_id" in ln for ln in errors), out.stdout
    assert not any(":2:" in ln for ln in errors), out.stdout


def test_state_refuses_an_event_it_cannot_decode() -> None:
    s = State()
    with pytest.raises(ValueError, match="unknown event type"):
        s.apply({"type": "nope", "ts": 1.0})
    assert s.seq == 0


# ------------------------------------------------------------------ restart commands
async def test_restart_command_survives_a_swarmd_restart(tmp_path: Path) -> None:
    """queue_restart journals restart_requested; the drone's next heartbeats (after swarmd
    restarted) carry it: restart_delivered is journaled once, before the first reply, and
    the command stays queued until the agent registers again (also across a replay)."""
    o1 = make_orch(tmp_path, memory=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(o1.run)
        reg = await o1.register(je.Register(ts=0.0, session="", name="d1", cores=4))
        did, session = reg["drone_id"], reg["session"]
        await o1.queue_restart(did)
        await o1.queue_restart(did)  # asked twice: queued once
        nursery.cancel_scope.cancel()
    assert o1.journal is not None
    o1.journal.close()

    o2 = make_orch(tmp_path, memory=False)  # swarmd restarted: replay
    assert o2.state.drones[did].commands == ["restart"]
    async with trio.open_nursery() as nursery:
        await nursery.start(o2.run)
        first = await o2.heartbeat(did, session, "ready", 0.0, [])
        second = await o2.heartbeat(did, session, "ready", 0.0, [])
        nursery.cancel_scope.cancel()
    assert first["commands"] == [{"command": "restart"}]
    assert second["commands"] == [{"command": "restart"}]  # the first reply may be lost
    assert o2.journal is not None
    o2.journal.close()

    state, loaded = replay(tmp_path / "state", Policy())
    assert state.drones[did].commands == ["restart"]  # until the agent registers again
    assert state.drones[did].commands_sent_to == session  # delivered is durable too
    types = [e.TYPE for e in loaded.events]
    assert types.count("restart_requested") == 2
    assert types.count("restart_delivered") == 1

    o3 = make_orch(tmp_path, memory=False)  # a third swarmd: the next reply still carries it
    async with trio.open_nursery() as nursery:
        await nursery.start(o3.run)
        third = await o3.heartbeat(did, session, "ready", 0.0, [])
        await o3.register(je.Register(ts=0.0, session="", name="d1", cores=4))  # it restarted
        nursery.cancel_scope.cancel()
    assert third["commands"] == [{"command": "restart"}]
    assert o3.state.drones[did].commands == []
    assert o3.journal is not None
    o3.journal.close()
    assert [e.TYPE for e in replay(tmp_path / "state", Policy())[1].events].count(
        "restart_delivered") == 1


async def test_restart_for_unknown_drone_is_refused(tmp_path: Path) -> None:
    from swarmlib.errors import NotFound

    o = make_orch(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(o.run)
        with pytest.raises(NotFound):
            await o.queue_restart("d-9999")
        nursery.cancel_scope.cancel()
    assert o.state.seq == 0  # nothing journaled


def test_new_session_drops_queued_commands() -> None:
    s = State()
    s.apply(je.Register(ts=1.0, name="d1", session="s1"), 1)
    s.apply(je.RestartRequested(ts=2.0, drone_id="d-0001"), 2)
    assert s.drones["d-0001"].commands == ["restart"]
    stale = s.apply(je.RestartDelivered(ts=3.0, drone_id="d-0001", session="old"), 3)
    assert not stale.ok
    assert s.drones["d-0001"].commands == ["restart"]
    s.apply(je.Register(ts=4.0, name="d1", session="s2"), 4)  # the agent restarted
    assert s.drones["d-0001"].commands == []


def test_fixture_copy_is_untouched_by_check(tmp_path: Path) -> None:
    src = Path(__file__).parent / "fixtures" / "journal-v1" / "full"
    shutil.copytree(src, tmp_path / "j")
    ok, lines = jr.check(tmp_path / "j")
    assert ok, lines
