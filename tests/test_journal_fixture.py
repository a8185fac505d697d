"""Journals written by an older swarmd (tests/fixtures/journal-v1/, made by
tests/fixtures/make_journal_v1.py with the untyped journal of that time) still replay with
today's code to the same state, and every event has the same outcome."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from swarmd import journal as jr
from swarmd import journal_events as je
from swarmd.service import replay
from swarmd.state import Policy, State

FIXTURE = Path(__file__).parent / "fixtures" / "journal-v1"


def _plain(x: Any) -> Any:
    return json.loads(json.dumps(x))


# Fields that records gained after the fixture was written, with the value an old record means.
NEW_FIELDS = {"drones": {"commands": [], "commands_sent_to": ""}}


def _as_old(snap: dict[str, Any]) -> dict[str, Any]:
    """``snap`` without the fields the fixture's swarmd did not have, where they hold the value
    an old record stands for (a different value is a difference the test must see)."""
    out = _plain(snap)
    for table, fields in NEW_FIELDS.items():
        for rec in out[table]:
            for k, default in fields.items():
                if rec.get(k) == default:
                    del rec[k]
    return out


@pytest.mark.parametrize("name", ["full", "compacted"])
def test_v1_journal_replays_to_the_recorded_state(tmp_path: Path, name: str) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())[name]
    d = tmp_path / name
    shutil.copytree(FIXTURE / name, d)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    state, loaded = replay(d, Policy())
    assert _as_old(state.to_snapshot()) == expected["state"]
    assert loaded.last_seq == expected["outcomes"][-1]["seq"]
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # replay changed nothing


@pytest.mark.parametrize("name", ["full", "compacted"])
def test_v1_events_have_the_recorded_outcomes(name: str) -> None:
    want = json.loads((FIXTURE / "expected.json").read_text())[name]
    loaded = jr.load(FIXTURE / name, repair_torn_tail=False, decode=je.decode)
    st = State.from_snapshot(loaded.snapshot) if loaded.snapshot else State()
    assert [type(ev).TYPE for ev in loaded.events] == [o["type"] for o in want["outcomes"]]
    outs = []
    for seq, ev in zip(loaded.seqs, loaded.events, strict=True):
        out = st.apply(ev, seq)
        outs.append({"seq": seq, "type": ev.TYPE, "ok": out.ok, "code": out.code,
                     "message": out.message, "result": out.result, "notices": out.notices})
    # Encoded at the end, as the fixture's were (a result may show state that changed later).
    for got, w in zip(_plain(outs), want["outcomes"], strict=True):
        assert got == w, f"seq {w['seq']} ({w['type']})"
    assert _as_old(st.to_snapshot()) == want["state"]


@pytest.mark.parametrize("name", ["full", "compacted"])
def test_v1_journal_reencoded_as_v2_replays_the_same(tmp_path: Path, name: str) -> None:
    """Every v1 record, decoded and written again as v2, decodes to the same event."""
    loaded = jr.load(FIXTURE / name, repair_torn_tail=False, decode=je.decode)
    for seq, ev in zip(loaded.seqs, loaded.events, strict=True):
        rec = json.loads(je.encode(ev, seq))
        assert (rec["v"], rec["seq"]) == (2, seq)
        assert je.decode(rec) == ev


def test_v1_fixture_covers_every_event_type() -> None:
    loaded = jr.load(FIXTURE / "full", repair_torn_tail=False)
    types = {ev["type"] for ev in loaded.events}
    assert types >= {"history", "register", "submit", "assign", "started", "complete",
                     "published", "publish_failed", "unpublished", "cancel", "drone_target",
                     "drone_offline", "prune"}
    assert all("v" not in ev for ev in loaded.events)  # written before records had a version
