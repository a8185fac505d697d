"""The plan check: would this emerge build exactly the leased package and nothing else?

Plain functions over emerge's ``--pretend`` output; no trio, no portage configuration.

Before a build the agent runs the build argv plus ``--pretend --color=n`` (with ``NO_COLOR=1``)
and reads the merge list. Rows look like::

    [ebuild  N     ] swarm-demo/hello-1.0  USE="-shout"
    [ebuild   R    ] dev-libs/foo-1.2:2::gentoo [1.1:2::gentoo]
    [binary   R    ] swarm-demo/libgreet-1.0-1
    [nomerge       ]  dev-libs/bar-3
    [blocks B      ] dev-libs/old ("dev-libs/new-1" is blocking dev-libs/old-1)

The plan is good when the only ``[ebuild`` row is the leased CPV and it is there exactly once:
dependencies then come as binaries (``[binary``) from the binhost, and ``[nomerge`` rows are
parents shown by ``--tree``. Anything compiled besides the package, a missing row, a hard blocker
or a failing emerge means "this drone cannot build it alone": the lease goes back, marked
unbuildable, instead of the drone compiling dependencies nobody asked it for.
"""

from __future__ import annotations

import os
import re

import attrs
from portage.versions import catpkgsplit, vercmp

PLAN_FLAGS = ("--pretend", "--color=n")
MAX_ERROR_LINES = 15

_ROW = re.compile(r"^\s*\[(?P<kind>ebuild|binary|nomerge|blocks|uninstall)\b(?P<flags>[^\]]*)\]"
                  r"\s+(?P<atom>\S+)")


@attrs.frozen(kw_only=True)
class PlanRow:
    kind: str  # ebuild, binary, nomerge, blocks, uninstall
    flags: str  # the letters between the kind and "]", e.g. "N", "R", "U", "B"
    cpv: str  # without ":slot", "::repo" (and for binary rows, still with "-BUILD_ID")
    line: str


def is_emerge(argv: list[str]) -> bool:
    """True when the build command is emerge itself (the plan check and probe apply)."""
    return bool(argv) and os.path.basename(argv[0]) == "emerge"


def plan_argv(argv: list[str]) -> list[str]:
    """The build argv as a dry run: the same options, plus ``--pretend --color=n``."""
    return [*argv, *PLAN_FLAGS]


def parse_rows(output: str) -> list[PlanRow]:
    rows = []
    for line in output.splitlines():
        m = _ROW.match(line)
        if m is None:
            continue
        atom = m.group("atom").split("::", 1)[0].split(":", 1)[0]
        rows.append(PlanRow(kind=m.group("kind"), flags=" ".join(m.group("flags").split()),
                            cpv=atom.lstrip("="), line=line.strip()))
    return rows


def same_cpv(a: str, b: str) -> bool:
    """Equal CPVs by portage's rules (``foo-1.0`` == ``foo-1.0-r0``, != ``foo-1.0.0``)."""
    pa, pb = catpkgsplit(a), catpkgsplit(b)
    if pa is None or pb is None or pa[0] is None or pb[0] is None:
        return a == b
    if pa[:2] != pb[:2]:
        return False
    return bool(vercmp(f"{pa[2]}-{pa[3]}", f"{pb[2]}-{pb[3]}") == 0)


def _tail(output: str, n: int = MAX_ERROR_LINES) -> str:
    lines = [ln.rstrip() for ln in output.splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


def check_plan(output: str, cpv: str, *, returncode: int = 0) -> str | None:
    """None when the plan builds exactly ``cpv`` from source; else why not (one short text)."""
    if returncode != 0:
        return f"emerge --pretend failed with exit code {returncode}:\n{_tail(output)}"
    rows = parse_rows(output)
    others = [r.cpv for r in rows if r.kind == "ebuild" and not same_cpv(r.cpv, cpv)]
    if others:
        return "would compile " + ", ".join(others) + " from source"
    blockers = [r.line for r in rows if r.kind == "blocks" and "B" in r.flags.split()]
    if blockers:
        return "blocked: " + "; ".join(blockers)
    mine = [r for r in rows if r.kind == "ebuild"]
    if len(mine) > 1:
        return f"{cpv} appears {len(mine)} times in the plan"
    if not mine:
        if any(r.kind == "binary" and _binary_is(r.cpv, cpv) for r in rows):
            return (f"would install {cpv} as a binary package instead of building it "
                    "(is --usepkg-exclude={cp} in build_command?)")
        return f"no row for {cpv} in the plan:\n{_tail(output)}"
    return None


def needed(output: str, cpv: str) -> list[str]:
    """The CPVs the plan would compile besides ``cpv`` (sent to swarmd as ``needs``: when they
    are queued in the same request, swarmd learns the dependency edges that emerge's --tree
    output did not show and lets the package wait for them)."""
    out: list[str] = []
    for r in parse_rows(output):
        if r.kind == "ebuild" and not same_cpv(r.cpv, cpv) and r.cpv not in out:
            out.append(r.cpv)
    return out


def _binary_is(row_cpv: str, cpv: str) -> bool:
    """A binary row's CPV may carry its build id (``foo-1.0-3``)."""
    if same_cpv(row_cpv, cpv):
        return True
    base, sep, build_id = row_cpv.rpartition("-")
    return bool(sep) and build_id.isdigit() and same_cpv(base, cpv)
