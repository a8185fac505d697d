"""Finding the binary package a build produced, naming it on the binhost, hashing it.

Plain functions over the filesystem; no trio.

Layouts of PKGDIR that portage writes:
- binpkg-multi-instance (the default since portage 3.0.x with FEATURES=binpkg-multi-instance):
  ``cat/pn/pf-N.gpkg.tar`` or ``cat/pn/pf-N.xpak`` (N is portage's build id);
- classic: ``cat/pf.gpkg.tar`` or ``cat/pf.tbz2``.

Binhost upload name (``relpath``): ``cat/pn/<file>.<build_id>.upload``, e.g.
``swarm-demo/hello/hello-1.0-1.gpkg.tar.b-0000007.upload``. swarmd mints build ids from its
journal, never reuses one and gives each to exactly one drone, so no two uploads collide; the
``.upload`` suffix keeps portage (``emaint binhost``, a client's index scan) from taking the file
for a package before swarmd has checked its size and sha256 and moved it into its index itself.
"""

from __future__ import annotations

import re
from pathlib import Path

from portage.versions import catpkgsplit

from swarmlib.files import sha256_file

SUFFIXES = (".gpkg.tar", ".tbz2", ".xpak")
_SAFE = re.compile(r"[^A-Za-z0-9._+-]")

# How much older than the build's start a file may look (coarse filesystem timestamps).
MTIME_SLACK_S = 1.0


def split_cpv(cpv: str) -> tuple[str, str, str]:
    """``cat/pn-ver-rN`` -> (cat, pn, pf). Raises ValueError for something that is not a CPV."""
    parts = catpkgsplit(cpv)
    if parts is None or parts[0] is None:
        raise ValueError(f"not a full CPV: {cpv!r}")
    cat, pn, _ver, _rev = parts
    pf = cpv.split("/", 1)[1]
    return str(cat), str(pn), pf


def _suffix(name: str) -> str | None:
    for s in SUFFIXES:
        if name.endswith(s):
            return s
    return None


def candidates(pkgdir: Path, cpv: str) -> list[Path]:
    """Every binary package file for exactly this CPV (not ``pf`` as a prefix of another)."""
    cat, pn, pf = split_cpv(cpv)
    stem = re.compile(re.escape(pf) + r"(-[0-9]+)?")
    found = []
    for d in (pkgdir / cat / pn, pkgdir / cat):
        try:
            entries = list(d.iterdir())
        except OSError:
            continue
        for p in entries:
            sfx = _suffix(p.name)
            if sfx is None or not p.is_file():
                continue
            if stem.fullmatch(p.name[: -len(sfx)]):
                found.append(p)
    return found


def find_package(pkgdir: Path, cpv: str, *, since: float) -> Path | None:
    """The newest binary package of ``cpv`` modified at or after ``since`` (wall time)."""
    best: tuple[float, Path] | None = None
    for p in candidates(pkgdir, cpv):
        try:
            mtime = p.stat().st_mtime
        except OSError:
            continue
        if mtime + MTIME_SLACK_S < since:
            continue
        if best is None or mtime > best[0]:
            best = (mtime, p)
    return best[1] if best else None


def binhost_relpath(cpv: str, artifact: Path, *, build_id: str) -> str:
    """Where the drone uploads ``artifact`` under the binhost (see the module docstring)."""
    cat, pn, _pf = split_cpv(cpv)
    bid = _SAFE.sub("_", build_id) or "build"
    return f"{cat}/{pn}/{artifact.name}.{bid}.upload"


digest = sha256_file  # (size, sha256 hex) of a file; blocking: run it in a thread
