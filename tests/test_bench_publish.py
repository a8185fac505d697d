"""Smoke test of bench/publish.py: a tiny run through real portage (no timing asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import publish, real_builds
from bench.run import publish_rows

pytestmark = pytest.mark.slow


def test_publish_bench_tiny_run() -> None:
    raw = publish.run(index=200, uploads=3, contrast=2, reindex_links=20)
    big = raw["big"]
    assert big["n"] == 3
    assert big["index_packages"] == 203
    assert big["distinct_timestamps"]
    assert raw["empty"]["distinct_timestamps"]
    assert raw["reconcile"]["counts"]["published"] == 203
    assert raw["reconcile"]["counts"]["restored"] == 0
    assert raw["reindex_real_lost"]["indexed"] == raw["reindex_real_lost"]["files"] == 4
    assert raw["reindex_links_lost"]["files"] == 24
    assert publish_rows(raw)


def test_bench_repo_is_a_tree_with_one_root(tmp_path: Path) -> None:
    from demo.portage_swarm import copy_repo

    repo = copy_repo(tmp_path / "repo")
    deps = real_builds.add_bench_packages(repo, 12)
    assert real_builds.leaves(deps) == ["swarm-bench/p11"]
    dependents: dict[str, int] = {}
    for ds in deps.values():
        for d in ds:
            dependents[d] = dependents.get(d, 0) + 1
    assert set(dependents.values()) == {1}
    assert "swarm-bench" in (repo / "profiles" / "categories").read_text().split()
