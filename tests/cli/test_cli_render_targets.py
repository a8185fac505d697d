"""Targets, waiting entries and the binhost stanza as people see them (pure functions)."""

from __future__ import annotations

from swarmlib import clirender as r


def test_status_shows_per_target_info_in_either_shape() -> None:
    base = {"status": "ok", "version": "0.2.0", "counts": {"ready": 2, "built": 5}}
    as_map = r.status({**base, "targets": {
        "1a2b3c4d5e6f": {"drones": 2, "entries": {"ready": 1, "built": 5}},
        "9f8e7d6c5b4a": {"drones": 0, "waiting": 1}}})
    assert "queue    ready 2  built 5" in as_map
    assert "target   1a2b3c4d5e6f: drones 2  entries (ready 1  built 5)" in as_map
    assert "target   9f8e7d6c5b4a: drones 0  waiting 1" in as_map
    as_list = r.status({**base, "targets": [{"target_id": "1a2b3c4d5e6f", "drones": 2,
                                             "describe": "amd64 x86_64-pc-linux-gnu"}]})
    assert "target   1a2b3c4d5e6f: drones 2  describe amd64 x86_64-pc-linux-gnu" in as_list
    assert "target" not in r.status(base)  # an older server: nothing about targets
    assert "target" not in r.status({**base, "targets": "garbage"})


def test_queue_waiting_without_target_ids_adds_no_column() -> None:
    out = r.queue({"entries": [{"id": "e-1", "state": "ready", "cpv": "a/b-1",
                                "waiting": "no drone for target 1a2b3c4d5e6f"},
                               {"id": "e-2", "state": "blocked", "cpv": "a/c-1",
                                "reason": "dependency a/d-1 failed",
                                "waiting": "no drone for target 1a2b3c4d5e6f"}]})
    lines = out.splitlines()
    assert "TARGET" not in lines[0]
    assert lines[1].endswith("no drone for target 1a2b3c4d5e6f")
    assert lines[2].endswith("dependency a/d-1 failed; no drone for target 1a2b3c4d5e6f")


def test_submitted_mentions_binary_rows_target_and_waiting() -> None:
    out = r.submitted({"id": "r-1", "queued": 2, "skipped": 0, "merged": 0, "packages": 2,
                       "binary": ["dev-libs/gmp-6.3.0-r1", "app-arch/zstd-1.5.6"],
                       "target_id": "1a2b3c4d5e6f",
                       "waiting": "no drone for target 1a2b3c4d5e6f"})
    assert "  2 already on a binhost ([binary] rows, not queued)" in out.splitlines()
    assert "  for target 1a2b3c4d5e6f" in out.splitlines()
    assert "  waiting: no drone for target 1a2b3c4d5e6f" in out.splitlines()
    assert "binhost" not in r.submitted({"id": "r-1"})


def test_binhost_stanza() -> None:
    assert r.binhost_stanza("http://10.42.0.199/binpkgs/", path="/etc/x.conf").splitlines() == [
        "# /etc/x.conf",
        "[build-swarm]",
        "priority = 10",
        "sync-uri = http://10.42.0.199/binpkgs/",
        "# then install what the swarm built: "
        "emerge -uDN --getbinpkgonly --binpkg-respect-use=y @world",
    ]
