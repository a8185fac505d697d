"""Parse a submission (emerge --pretend output or JSON) into an ordered dependency graph.

Pure. ``parse_text`` and ``parse_json`` return a ``Submission`` or raise ``BadSubmission``
naming every bad line; ``order_graph`` uses graphlib to check the graph, reports cycles and
breaks them deterministically (the edges that point forward in emerge's own order go first).
"""

from __future__ import annotations

import graphlib
import re
from collections.abc import Mapping
from typing import Any

import attrs

from swarmd.atoms import parse_atom, parse_job_cpv
from swarmlib.errors import BadRequest, BadSubmission

MAX_BODY = 8 * 1024 * 1024

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
# "[ebuild  N    ]", "[binary   R    ]", "[nomerge       ]", "[blocks B      ]", "[uninstall ]"
_ROW = re.compile(r"^\[(?P<kind>[a-z]+)(?P<flags>[^\]]*)\](?P<indent>\s*)(?P<token>\S+)(?P<rest>.*)$")
_JOB_KINDS = frozenset({"ebuild", "binary"})
_OTHER_KINDS = frozenset({"nomerge", "blocks", "uninstall"})


@attrs.frozen(kw_only=True)
class Submission:
    packages: list[str]  # CPVs in emerge order, each once
    deps: dict[str, list[str]]  # cpv -> the CPVs it depends on
    cycles: list[list[str]] = attrs.field(factory=list)
    tree: bool = False


def parse_text(body: str) -> Submission:
    """Parse ``emerge --pretend`` output. Every ``[ebuild]``/``[binary]`` row is a job."""
    lines = body.split("\n")
    bad: list[tuple[int, str, str]] = []
    packages: list[str] = []
    seen: set[str] = set()
    deps: dict[str, list[str]] = {}
    # (indent, cpv or None for a non-job row) of the rows above, for --tree edges
    stack: list[tuple[int, str | None]] = []
    indents: set[int] = set()
    rows: list[tuple[int, int, str | None]] = []  # (line no, indent, cpv or None)
    for n, raw in enumerate(lines, start=1):
        line = _ANSI.sub("", raw).rstrip("\r")
        stripped = line.strip()
        if not stripped.startswith("["):
            continue
        m = _ROW.match(stripped)
        if m is None:
            if stripped.startswith(("[ebuild", "[binary")):
                bad.append((n, raw, f"{stripped!r} is not a package row"))
            continue
        kind = m.group("kind")
        if kind not in _JOB_KINDS:
            if kind in _OTHER_KINDS:
                rows.append((n, len(m.group("indent")), None))
            continue
        token = m.group("token")
        try:
            cpv = parse_job_cpv(token, binary=(kind == "binary"))
        except ValueError as exc:
            bad.append((n, raw, str(exc)))
            continue
        rows.append((n, len(m.group("indent")), cpv))
        indents.add(len(m.group("indent")))
    if bad:
        raise BadSubmission(bad)
    tree = len(indents) > 1
    for _n, indent, row_cpv in rows:
        if row_cpv is not None and row_cpv not in seen:
            seen.add(row_cpv)
            packages.append(row_cpv)
            deps.setdefault(row_cpv, [])
        if not tree:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if stack and row_cpv is not None:
            parent = stack[-1][1]
            if parent is not None and parent != row_cpv and row_cpv not in deps[parent]:
                deps[parent].append(row_cpv)
        stack.append((indent, row_cpv))
    if not packages:
        raise BadRequest("the submission has no package rows ([ebuild ...] or [binary ...] "
                         "lines of emerge --pretend output): nothing to build")
    return order_graph(packages, deps, tree=tree)


def parse_json(doc: Any) -> tuple[Submission, int, str | None]:
    """Parse ``{"packages", "deps", "priority", "request_id"}``; returns (sub, priority, rid)."""
    if not isinstance(doc, dict):
        raise BadRequest("body: expected a JSON object with a 'packages' list")
    unknown = set(doc) - {"packages", "deps", "priority", "request_id"}
    if unknown:
        raise BadRequest(f"body: unknown field(s) {', '.join(sorted(unknown))}")
    pkgs = doc.get("packages")
    if not isinstance(pkgs, list) or not pkgs:
        raise BadRequest("body.packages: expected a non-empty list of '=category/name-version'")
    priority = doc.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or abs(priority) > 1000:
        raise BadRequest("body.priority: expected an integer between -1000 and 1000")
    rid = doc.get("request_id")
    if rid is not None and (not isinstance(rid, str) or not re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", rid)):
        raise BadRequest("body.request_id: expected 1-128 characters of [A-Za-z0-9._:-]")
    bad: list[tuple[int, str, str]] = []
    packages: list[str] = []
    seen: set[str] = set()
    for i, atom in enumerate(pkgs):
        try:
            cpv = parse_atom(atom)
        except ValueError as exc:
            bad.append((i + 1, str(atom), f"packages[{i}]: {exc}"))
            continue
        if cpv not in seen:
            seen.add(cpv)
            packages.append(cpv)
    raw_deps = doc.get("deps", {})
    deps: dict[str, list[str]] = {p: [] for p in packages}
    if not isinstance(raw_deps, dict):
        raise BadRequest("body.deps: expected an object mapping an atom to a list of atoms")
    for k, vs in raw_deps.items():
        try:
            kc = parse_atom(k)
        except ValueError as exc:
            bad.append((0, str(k), f"deps key: {exc}"))
            continue
        if not isinstance(vs, list):
            bad.append((0, str(k), f"deps[{k!r}]: expected a list of atoms"))
            continue
        for v in vs:
            try:
                vc = parse_atom(v)
            except ValueError as exc:
                bad.append((0, str(v), f"deps[{k!r}]: {exc}"))
                continue
            if kc in deps and vc != kc and vc not in deps[kc]:
                deps[kc].append(vc)
    if bad:
        raise BadSubmission(bad)
    return order_graph(packages, deps, tree=False), priority, rid


def order_graph(packages: list[str], deps: Mapping[str, list[str]], *, tree: bool) -> Submission:
    """Check the graph with graphlib; report and break cycles deterministically."""
    index = {p: i for i, p in enumerate(packages)}
    graph: dict[str, list[str]] = {p: [d for d in deps.get(p, []) if d in index] for p in packages}
    cycles: list[list[str]] = []
    while True:
        ts = graphlib.TopologicalSorter(graph)
        try:
            ts.prepare()
            break
        except graphlib.CycleError as exc:
            cyc: list[str] = list(exc.args[1])[:-1]
            cycles.append(cyc)
            # graphlib lists the cycle so that node[i + 1] depends on node[i]. Break it at the
            # edge that contradicts emerge's own order most: in merge order (plain output,
            # JSON) a dependency normally comes before its dependent; in --tree display order
            # it comes after. Deterministic for a given input.
            edges = [(cyc[i], cyc[(i + 1) % len(cyc)]) for i in range(len(cyc))]
            sign = -1 if tree else 1
            victim = max(edges, key=lambda e: (sign * (index[e[0]] - index[e[1]]), e))
            dep, dependent = victim
            graph[dependent] = [d for d in graph[dependent] if d != dep]
    clean = {p: list(graph[p]) for p in packages if graph[p]}
    return Submission(packages=packages, deps=clean, cycles=cycles, tree=tree)


def bad_lines_json(exc: BadSubmission) -> list[dict[str, Any]]:
    return [{"line": n, "text": text, "why": why} for n, text, why in exc.lines]
