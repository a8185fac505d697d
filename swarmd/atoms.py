"""Gentoo atoms and CPVs, by portage's own rules (portage.versions / portage.dep).

Pure: no I/O beyond importing portage (which needs PORTAGE_OVERRIDE_EPREFIX on a non-Gentoo
host; set here before the import so every entry point gets it).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache

os.environ.setdefault("PORTAGE_OVERRIDE_EPREFIX", "/")

import portage.dep  # noqa: E402
import portage.exception  # noqa: E402
import portage.versions  # noqa: E402

_BUILD_ID = re.compile(r"^(.*)-(\d+)$")


@lru_cache(maxsize=65536)
def split_cpv(cpv: str) -> tuple[str, str, str, str] | None:
    """(category, pn, version, revision) or None when ``cpv`` is not a full versioned CPV."""
    if "/" not in cpv or cpv.count("/") != 1:
        return None
    parts = portage.versions.catpkgsplit(cpv)
    if parts is None or parts[0] is None or parts[0] == "null":
        return None
    cat, pn, ver, rev = parts
    if not portage.versions.catpkgsplit(f"{cat}/{pn}-{ver}"):
        return None
    return (str(cat), str(pn), str(ver), str(rev))


def cp_of(cpv: str) -> str:
    parts = split_cpv(cpv)
    if parts is None:
        raise ValueError(f"{cpv!r} is not a versioned CPV")
    return f"{parts[0]}/{parts[1]}"


def normalize_cpv(cpv: str) -> str:
    """``cat/pn-ver`` with ``-r0`` dropped, as portage prints it."""
    parts = split_cpv(cpv)
    if parts is None:
        raise ValueError(f"{cpv!r} is not a versioned CPV")
    cat, pn, ver, rev = parts
    rev = f"r{int(rev[1:])}"  # -r01 and -r1 are the same revision
    return f"{cat}/{pn}-{ver}" + ("" if rev == "r0" else f"-{rev}")


def strip_decorations(token: str) -> str:
    """Drop ``::repo`` and ``:slot/subslot`` from an emerge output token."""
    token = token.split("::", 1)[0]
    return token.split(":", 1)[0]


def parse_job_cpv(token: str, binary: bool = False) -> str:
    """The CPV of an emerge row's package token; raises ValueError with the reason.

    A ``[binary]`` row may carry a trailing build id (``zstd-1.5.6-1``) that is not part of the
    CPV: it is dropped when what remains is still a valid CPV.
    """
    raw = strip_decorations(token)
    if binary:
        m = _BUILD_ID.match(raw)
        if m and split_cpv(m.group(1)) is not None:
            return normalize_cpv(m.group(1))
    if split_cpv(raw) is None:
        raise ValueError(f"{token!r} is not a full versioned package (category/name-version)")
    return normalize_cpv(raw)


def parse_atom(atom: str) -> str:
    """The CPV of a JSON package atom: ``=cat/pkg-1.2.3`` (``cat/pkg-1.2.3`` is accepted)."""
    if not isinstance(atom, str) or not atom:
        raise ValueError(f"{atom!r} is not a valid package atom")
    text = atom.strip()
    if text.startswith("="):
        try:
            a = portage.dep.Atom(text)
        except portage.exception.InvalidAtom:
            raise ValueError(f"{atom!r} is not a valid package atom") from None
        if a.operator != "=" or a.blocker or a.use or a.slot or a.repo:
            raise ValueError(f"{atom!r}: only '=category/name-version' atoms name one build")
        return normalize_cpv(str(a.cpv))
    if ":" in text:
        raise ValueError(f"{atom!r}: write '=category/name-version' without slot or repository")
    return parse_job_cpv(text)


def vercmp(a: str, b: str) -> int:
    """Gentoo version comparison (for example ``1.0_p1 > 1.0-r9``)."""
    r = portage.versions.vercmp(a, b)
    if r is None:
        raise ValueError(f"cannot compare versions {a!r} and {b!r}")
    return int(r)
