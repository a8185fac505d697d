"""Publish cost into a binhost that already holds 20,000 packages (swarmd/binhost.py).

    python -m bench.publish [--index 20000] [--uploads 50] [--contrast 20] [--keep DIR]

Setup (not timed as a figure):
- real packages: a private copy of demo/repo gets ``--uploads`` trivial EAPI-8 ebuilds
  ``swarm-bench/pN-1.0`` (no dependencies); one real ``emerge --oneshot --buildpkg --jobs=2``
  in a portage sandbox (demo/sandbox.py) builds them and ``swarm-demo/libgreet-1.0``;
- the big binhost: 20,000 hardlinks ``bench-X/pkgN/pkgN-1.0-1.gpkg.tar`` to the real libgreet
  package and a ``Packages`` index whose 20,000 stanzas are the real libgreet stanza with CPV
  and PATH changed (the header is the real one with ``PACKAGES`` set);
- the uploads: each real ``swarm-bench`` package copied to
  ``<binhost>/swarm-bench/pN/pN-1.0-1.gpkg.tar.b-000000N.upload``, the name a drone syncs to.

Measured in a child process with swarmd's publisher portage environment
(``demo.sandbox.make_publisher_env``), through ``swarmd.binhost.Binhost`` itself:
- ``Binhost.publish`` of every upload back to back, as swarmd's publisher does with a backlog:
  per publish the wall time and its parts (sha256 of the upload, ``read_meta``, portage's
  ``binarytree.inject``, and the wait for a new second of the index TIMESTAMP), found by
  wrapping those functions (their code is unchanged);
- the same for ``--contrast`` uploads into an empty binhost;
- the start-up check of ``Publisher.reconcile()`` with 20,000 published packages and an intact
  index: the real method on a stand-in orchestrator whose state holds the 20,000 + K published
  packages (reconcile reads only ``state.packages``; it commits only when something is wrong);
- ``Binhost.reindex()`` (portage's ``populate(force_reindex=True)``), which reconcile runs when
  more than 20 published packages are missing from the index. Not on the 20,000 hardlinks: each
  of them holds swarm-demo/libgreet-1.0, so portage reads its metadata, finds that the name does
  not match and drops it (the index it writes is meaningless, and a real tree of 20,000 would
  take minutes to reindex here). Measured instead, per file: the K real, distinct packages with
  the index lost and then intact, and ``--reindex-links`` (2,000) hardlinks plus those with the
  index lost; the 20,000-package figure is the per-file cost times 20,000.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, summary


def _s(values: list[float]) -> dict[str, float]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in summary(values).items()}


def _stanzas(packages_file: Path) -> tuple[str, dict[str, dict[str, str]]]:
    """(header text, {CPV: stanza as an ordered dict}) of a Packages file."""
    blocks = packages_file.read_text().split("\n\n")
    header = blocks[0]
    out = {}
    for block in blocks[1:]:
        d: dict[str, str] = {}
        for line in block.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                d[k] = v.strip()
        if d.get("CPV"):
            out[d["CPV"]] = d
    return header, out


def build_real(root: Path, uploads: int) -> tuple[Path, Path, float]:
    """Build the real packages; (sandbox PKGDIR, repo, seconds)."""
    from bench.real_builds import add_bench_packages
    from demo.portage_swarm import copy_repo
    from demo.sandbox import make_sandbox

    repo = copy_repo(root / "repo")
    deps = add_bench_packages(repo, uploads, dag=False)
    sb = make_sandbox(root / "builder", repo=repo)
    t0 = time.perf_counter()
    r = sb.emerge("--oneshot", "--buildpkg", "--jobs=2", "=swarm-demo/libgreet-1.0",
                  *(f"={c}" for c in sorted(deps)), timeout=900)
    took = time.perf_counter() - t0
    got = list(sb.pkgdir.glob("swarm-bench/*/*.gpkg.tar"))
    if len(got) != uploads or not list(sb.pkgdir.glob("swarm-demo/libgreet/*.gpkg.tar")):
        raise RuntimeError(f"emerge built {len(got)} of {uploads} packages (exit "
                           f"{r.returncode}): {(r.stdout + r.stderr)[-600:]}")
    return sb.pkgdir, repo, took


def make_big_binhost(dest: Path, pkgdir: Path, n: int) -> dict[str, Any]:
    """20,000 hardlinks of the real libgreet package and an index of templated stanzas."""
    header, stanzas = _stanzas(pkgdir / "Packages")
    tpl = stanzas["swarm-demo/libgreet-1.0"]
    src = pkgdir / tpl["PATH"]
    dest.mkdir(parents=True)
    t0 = time.perf_counter()
    hdr = []
    for line in header.splitlines():
        k = line.split(":", 1)[0]
        if k == "PACKAGES":
            line = f"PACKAGES: {n}"
        elif k == "TIMESTAMP":
            line = f"TIMESTAMP: {int(time.time()) - 5}"
        hdr.append(line)
    parts = ["\n".join(hdr) + "\n"]
    for i in range(n):
        cat = f"bench-{i % 100}"
        pn = f"pkg{i}"
        rel = f"{cat}/{pn}/{pn}-1.0-1.gpkg.tar"
        (dest / cat / pn).mkdir(parents=True, exist_ok=True)
        os.link(src, dest / rel)
        d = dict(tpl, CPV=f"{cat}/{pn}-1.0", PATH=rel)
        parts.append("".join(f"{k}: {v}\n" for k, v in d.items()))
    (dest / "Packages").write_text("\n".join(parts) + "\n")
    return {"index_mb": round((dest / "Packages").stat().st_size / 2**20, 2),
            "stanza_bytes": len("".join(f"{k}: {v}\n" for k, v in tpl.items())),
            "make_s": round(time.perf_counter() - t0, 1)}


def stage_uploads(binhost: Path, pkgdir: Path, first_id: int = 1,
                  limit: int | None = None) -> list[dict[str, Any]]:
    """Copy the real swarm-bench packages to the upload name a drone syncs to."""
    out = []
    for i, f in enumerate(sorted(pkgdir.glob("swarm-bench/*/*.gpkg.tar"))[:limit]):
        cat, pn = f.parent.parent.name, f.parent.name
        pf = f.name[: -len("-1.gpkg.tar")]
        rel = f"{cat}/{pn}/{f.name}.b-{first_id + i:07d}.upload"
        (binhost / cat / pn).mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, binhost / rel)
        data = f.read_bytes()
        out.append({"cpv": f"{cat}/{pf}", "rel": rel, "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest()})
    return out


# ------------------------------------------------------------------ the child (publisher env)
def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs with the publisher's PORTAGE_OVERRIDE_EPREFIX: the timed part."""
    import types

    import trio
    from portage.dbapi import bintree

    from swarmd import binhost as bh
    from swarmd.publish import Publisher

    parts: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                parts[name] = parts.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    bintree.binarytree.inject = timed("inject", bintree.binarytree.inject)
    bh.Binhost._wait_new_second = timed("wait", bh.Binhost._wait_new_second)  # type: ignore[method-assign]
    bh.Binhost.read_meta = timed("read_meta", bh.Binhost.read_meta)  # type: ignore[method-assign]
    bh.sha256_of = timed("sha256", bh.sha256_of)

    def publish_all(root: Path, uploads: list[dict[str, Any]]) -> dict[str, Any]:
        b = bh.Binhost(root)
        t0 = time.perf_counter()
        b.open()
        open_s = time.perf_counter() - t0
        rows: list[dict[str, float]] = []
        t_all = time.perf_counter()
        for u in uploads:
            parts.clear()
            t0 = time.perf_counter()
            pub = b.publish(u["cpv"], u["rel"], u["size"], u["sha256"])
            wall = time.perf_counter() - t0
            rows.append({"wall": wall, **parts, "ts": float(b.index_timestamp())})
            assert pub.path
        total = time.perf_counter() - t_all
        ts = [r["ts"] for r in rows]
        work = [r["wall"] - r.get("wait", 0.0) for r in rows]
        return {
            "n": len(rows), "open_s": round(open_s, 3), "total_s": round(total, 2),
            "publishes_per_s": round(len(rows) / total, 2),
            "wall_s": _s([r["wall"] for r in rows]), "work_s": _s(work),
            "inject_s": _s([r.get("inject", 0.0) for r in rows]),
            "wait_s": _s([r.get("wait", 0.0) for r in rows]),
            "sha256_s": _s([r.get("sha256", 0.0) for r in rows]),
            "read_meta_s": _s([r.get("read_meta", 0.0) for r in rows]),
            "first_inject_s": round(rows[0].get("inject", 0.0), 3) if rows else None,
            "distinct_timestamps": len(set(ts)) == len(ts),
            "index_packages": len(b.indexed()),
            "index_mb_after": round((root / "Packages").stat().st_size / 2**20, 2),
        }

    out: dict[str, Any] = {}
    big = Path(spec["big"])
    out["big"] = publish_all(big, spec["uploads"])
    out["empty"] = publish_all(Path(spec["small"]), spec["small_uploads"])

    # reconcile at start-up: 20,000 + K published packages, the index intact.
    pkgs: dict[str, Any] = {}
    for i in range(spec["index"]):
        cat, pn = f"bench-{i % 100}", f"pkg{i}"
        pkgs[f"{cat}/{pn}"] = types.SimpleNamespace(cpv=f"{cat}/{pn}-1.0", artifact={
            "path": f"{cat}/{pn}/{pn}-1.0-1.gpkg.tar", "size": 0, "sha256": "",
            "portage_build_id": 1})
    for u in spec["uploads"]:
        path = bh.final_name(u["rel"])[0]
        pkgs[u["cpv"].rsplit("-", 1)[0]] = types.SimpleNamespace(cpv=u["cpv"], artifact={
            "path": path, "size": u["size"], "sha256": u["sha256"], "portage_build_id": 1})

    async def _commit(ev: dict[str, Any]) -> None:
        raise AssertionError(f"reconcile found the index wrong: {ev}")

    durable = types.SimpleNamespace(state=types.SimpleNamespace(packages=pkgs), commit=_commit,
                                    wall=time.time)
    pub = Publisher(durable, big)
    t0 = time.perf_counter()
    pub.binhost.open()
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    counts = trio.run(pub.reconcile)
    out["reconcile"] = {"s": round(time.perf_counter() - t0, 3), "open_s": round(t_open, 3),
                        "counts": counts}
    t0 = time.perf_counter()
    n_idx = len(bh.Binhost(big).indexed())
    out["reconcile"]["indexed_s"] = round(time.perf_counter() - t0, 3)
    out["reconcile"]["indexed_n"] = n_idx

    # reindex (portage's populate(force_reindex=True)): on real, distinct packages with the
    # index lost, then intact; then on hardlinks with the index lost (see the docstring).
    def reindex(root: Path) -> dict[str, Any]:
        b = bh.Binhost(root)
        b.open()
        files = len(list(root.rglob("*.gpkg.tar")))
        parts.clear()
        t0 = time.perf_counter()
        b.reindex()
        took = time.perf_counter() - t0
        work = took - parts.get("wait", 0.0)
        idx = b.indexed()
        _h, st = _stanzas(root / "Packages")
        return {"files": files, "s": round(took, 2), "wait_s": round(parts.get("wait", 0.0), 2),
                "work_s": round(work, 3), "ms_per_file": round(1000 * work / max(1, files), 2),
                "indexed": len(idx),
                "with_md5": sum(1 for d in st.values() if d.get("MD5")),
                "with_sha1": sum(1 for d in st.values() if d.get("SHA1"))}

    real = Path(spec["reindex_real"])
    out["reindex_real_lost"] = reindex(real)
    out["reindex_real_intact"] = reindex(real)
    links = Path(spec["reindex_links"])
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(devnull, 2)  # one "Binary package name is invalid" line per hardlink from portage
    try:
        out["reindex_links_lost"] = reindex(links)
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)
    return out


def run(index: int = 20000, uploads: int = 50, contrast: int = 20,
        reindex_links: int = 2000, keep: Path | None = None) -> dict[str, Any]:
    from demo.sandbox import make_publisher_env

    (REPO / ".bench").mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="publish-", dir=REPO / ".bench"))
    out: dict[str, Any] = {"index": index, "uploads": uploads, "contrast": contrast}
    try:
        pkgdir, _repo, build_s = build_real(root, uploads)
        out["build_real_s"] = round(build_s, 1)
        big = root / "binhost-big"
        out.update(make_big_binhost(big, pkgdir, index))
        ups = stage_uploads(big, pkgdir)
        small = root / "binhost-small"
        small.mkdir()
        small_ups = stage_uploads(small, pkgdir, first_id=1000, limit=contrast)
        out["upload_bytes"] = _s([float(u["size"]) for u in ups])
        # Trees for reindex: the real packages under their final names; hardlinks + those.
        real = root / "reindex-real"
        for f in pkgdir.glob("*/*/*.gpkg.tar"):
            (real / f.parent.relative_to(pkgdir)).mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, real / f.relative_to(pkgdir))
        links = root / "reindex-links"
        shutil.copytree(real, links, copy_function=os.link)
        lib = next(pkgdir.glob("swarm-demo/libgreet/*.gpkg.tar"))
        for i in range(reindex_links):
            d = links / f"bench-{i % 100}" / f"pkg{i}"
            d.mkdir(parents=True, exist_ok=True)
            os.link(lib, d / f"pkg{i}-1.0-1.gpkg.tar")
        env = {**os.environ, **make_publisher_env(root / "publisher")}
        spec = {"big": str(big), "small": str(small), "uploads": ups,
                "small_uploads": small_ups, "index": index,
                "reindex_real": str(real), "reindex_links": str(links)}
        (root / "spec.json").write_text(json.dumps(spec))
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "bench.publish", "--child",
                            str(root / "spec.json")], env=env, cwd=REPO, capture_output=True,
                           text=True, timeout=900, check=False)
        out["child_s"] = round(time.perf_counter() - t0, 1)
        if r.returncode != 0:
            raise RuntimeError(f"publisher child exited {r.returncode}: {r.stderr[-1500:]}")
        out.update(json.loads(r.stdout.strip().splitlines()[-1]))
        if keep is not None:
            shutil.copytree(root, keep, dirs_exist_ok=True, symlinks=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=int, default=20000)
    p.add_argument("--uploads", type=int, default=50)
    p.add_argument("--contrast", type=int, default=20)
    p.add_argument("--reindex-links", type=int, default=2000)
    p.add_argument("--keep", type=Path)
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(a.child.read_text()))))
        return
    print(json.dumps(run(a.index, a.uploads, a.contrast, a.reindex_links, a.keep), indent=1))


if __name__ == "__main__":
    main()
