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
from swarmd.service import replay
from swarmd.state import Policy

FIXTURE = Path(__file__).parent / "fixtures" / "journal-v1"


def _plain(x: Any) -> Any:
    return json.loads(json.dumps(x))


@pytest.mark.parametrize("name", ["full", "compacted"])
def test_v1_journal_replays_to_the_recorded_state(tmp_path: Path, name: str) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())[name]
    d = tmp_path / name
    shutil.copytree(FIXTURE / name, d)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    state, loaded = replay(d, Policy())
    assert _plain(state.to_snapshot()) == expected["state"]
    assert loaded.last_seq == expected["outcomes"][-1]["seq"]
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # replay changed nothing


@pytest.mark.parametrize("name", ["full", "compacted"])
def test_v1_events_have_the_recorded_outcomes(name: str) -> None:
    from tests.fixtures.make_journal_v1 import expected as replay_outcomes

    got = replay_outcomes(FIXTURE / name)
    want = json.loads((FIXTURE / "expected.json").read_text())[name]
    assert [o["type"] for o in got["outcomes"]] == [o["type"] for o in want["outcomes"]]
    for g, w in zip(got["outcomes"], want["outcomes"], strict=True):
        assert g == w, f"seq {w['seq']} ({w['type']})"
    assert got["state"] == want["state"]


def test_v1_fixture_covers_every_event_type() -> None:
    loaded = jr.load(FIXTURE / "full", repair_torn_tail=False)
    types = {ev["type"] for ev in loaded.events}
    assert types >= {"history", "register", "submit", "assign", "started", "complete",
                     "published", "publish_failed", "unpublished", "cancel", "drone_target",
                     "drone_offline", "prune"}
    assert all("v" not in ev for ev in loaded.events)  # written before records had a version
