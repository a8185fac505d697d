"""Parse a submission (emerge --pretend output or JSON) into an ordered dependency graph.

Pure. ``parse_text`` and ``parse_json`` return a ``Submission`` or raise ``BadSubmission``
naming every bad line; ``order_graph`` uses graphlib to check the graph, reports cycles and
breaks them deterministically (the edges that point forward in emerge's own order go first).

USE (SPEC section 12): the ``USE="..."`` and USE_EXPAND groups (``PYTHON_TARGETS="..."``) of a
``-v`` row are kept per package as the sorted list of *enabled* flags (``Submission.use``); a
row without any such group leaves its package out of ``use`` (unknown: not checked). The
build target travels beside the body: ``json_target`` (JSON field ``target``) and
``header_target`` (the ``X-Swarm-Target`` header of a text/plain body) check it with
``swarmlib.target.normalize``.
"""

from __future__ import annotations

import graphlib
import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from swarmd.atoms import parse_atom, parse_job_cpv
from swarmlib import target as swarmtarget
from swarmlib.errors import BadRequest, BadSubmission

MAX_BODY = 8 * 1024 * 1024

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
# "[ebuild  N    ]", "[binary   R    ]", "[nomerge       ]", "[blocks B      ]", "[uninstall ]"
_ROW = re.compile(r"^\[(?P<kind>[a-z]+)(?P<flags>[^\]]*)\](?P<indent>\s*)(?P<token>\S+)(?P<rest>.*)$")
_JOB_KINDS = frozenset({"ebuild", "binary"})
_OTHER_KINDS = frozenset({"nomerge", "blocks", "uninstall"})
# A flag group of a -v row: USE="a -b (c) d%*" or a USE_EXPAND one, PYTHON_TARGETS="...".
_GROUP = re.compile(r'(?<![\w-])([A-Z][A-Z0-9_]*)="([^"]*)"')
# Portage's rule for USE flag names (PMS 3.1.4); USE_EXPAND flags are ordinary flags.
_FLAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9+_@.-]*")
# What emerge -v puts around a flag: (forced/masked), % new, * changed, {test-only} markers.
_DECOR = "()%*{}"


@attrs.frozen(kw_only=True)
class Submission:
    packages: list[str]  # CPVs in emerge order, each once
    deps: dict[str, list[str]]  # cpv -> the CPVs it depends on
    cycles: list[list[str]] = attrs.field(factory=list)
    tree: bool = False
    # cpv -> sorted enabled USE flags (USE_EXPAND ones as python_targets_python3_12); a package
    # whose rows carry no flag group has no key: its USE is unknown and not checked.
    use: dict[str, list[str]] = attrs.field(factory=dict)
    # CPVs of [binary] rows: already on a binhost, so not jobs (SPEC section 12).
    binary: list[str] = attrs.field(factory=list)


def enabled_flags(rest: str) -> list[str] | None:
    """The enabled USE flags of the flag groups in ``rest`` (a row after its atom), sorted.

    ``None`` when the row has no flag group at all (plain or --quiet output, or a package
    without IUSE). ``-flag`` and ``(-flag)`` are disabled, ``flag``, ``(flag)`` (forced),
    ``flag%``/``flag*``/``flag%*`` (new/changed) are enabled. A group other than ``USE`` is a
    USE_EXPAND variable: ``PYTHON_TARGETS="python3_12"`` enables ``python_targets_python3_12``.
    Tokens that are no flag name are ignored (display quirks never reject a submission).
    """
    groups = _GROUP.findall(rest)
    if not groups:
        return None
    on: set[str] = set()
    for var, value in groups:
        prefix = "" if var == "USE" else var.lower() + "_"
        for tok in value.split():
            core = tok.strip(_DECOR)
            disabled = core.startswith("-")
            name = core.lstrip("-").strip(_DECOR)
            if not _FLAG.fullmatch(name):
                continue
            if not disabled:
                on.add(prefix + name)
    return sorted(on)


def parse_text(body: str) -> Submission:
    """Parse ``emerge --pretend`` output. Every ``[ebuild]`` row is a job.

    ``[binary]`` rows are checked like job rows (a bad one is a bad line) but not queued: the
    package is already on a binhost, so a dependency on it is satisfied. Output of nothing but
    ``[binary]`` rows is a valid submission with no packages (everything is built already).
    """
    lines = body.split("\n")
    bad: list[tuple[int, str, str]] = []
    packages: list[str] = []
    seen: set[str] = set()
    deps: dict[str, list[str]] = {}
    use: dict[str, list[str]] = {}
    binary: list[str] = []
    # the rows above that are still open in --tree output: (indent, kind, cpv)
    stack: list[tuple[int, str, str | None]] = []
    indents: set[int] = set()
    # (indent, kind, cpv or None): kind "job", "binary" or "other" ([nomerge] and the like)
    rows: list[tuple[int, str, str | None]] = []
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
        indent = len(m.group("indent"))
        if kind not in _JOB_KINDS:
            if kind in _OTHER_KINDS:
                rows.append((indent, "other", None))
            continue
        token = m.group("token")
        try:
            cpv = parse_job_cpv(token, binary=(kind == "binary"))
        except ValueError as exc:
            bad.append((n, raw, str(exc)))
            continue
        indents.add(indent)
        if kind == "binary":
            rows.append((indent, "binary", cpv))
            continue
        rows.append((indent, "job", cpv))
        flags = enabled_flags(m.group("rest"))
        if flags is not None and cpv not in use:
            use[cpv] = flags
    if bad:
        raise BadSubmission(bad)
    tree = len(indents) > 1
    for indent, kind, row_cpv in rows:
        if kind == "binary" and row_cpv is not None and row_cpv not in binary:
            binary.append(row_cpv)
        if kind == "job" and row_cpv is not None and row_cpv not in seen:
            seen.add(row_cpv)
            packages.append(row_cpv)
            deps.setdefault(row_cpv, [])
        if not tree:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if kind == "job" and row_cpv is not None:
            # A [binary] row is not a job and is transparent for edges: the rows below it hang
            # under the nearest job above it. They are what the binary needs at run time, so
            # the job that pulls the binary in needs them as well (a drone building that job
            # installs the binary and must find them on the binhost too, or it would have to
            # compile them itself). A [nomerge] row stays opaque: what is under it belongs to
            # an installed package, not to the job above.
            parent = next((p for _i, k, p in reversed(stack) if k != "binary"), None)
            if parent is not None and parent != row_cpv and row_cpv not in deps[parent]:
                deps[parent].append(row_cpv)
        stack.append((indent, kind, row_cpv))
    if not packages and not binary:
        raise BadRequest("the submission has no package rows ([ebuild ...] or [binary ...] "
                         "lines of emerge --pretend output): nothing to build")
    binary = [b for b in binary if b not in seen]  # also an [ebuild] row: it is a job
    sub = order_graph(packages, deps, tree=tree)
    return attrs.evolve(sub, use=use, binary=binary)


def parse_json(doc: Any) -> tuple[Submission, int, str | None]:
    """Parse ``{"packages", "deps", "priority", "request_id", "use", "target"}``.

    Returns (sub, priority, rid). ``use`` (``{atom: [enabled flags]}``) lands in ``sub.use``;
    ``target`` is checked here (400 naming the field) and read with ``json_target``.
    """
    if not isinstance(doc, dict):
        raise BadRequest("body: expected a JSON object with a 'packages' list")
    unknown = set(doc) - {"packages", "deps", "priority", "request_id", "use", "target"}
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
    json_target(doc)
    use = _json_use(doc.get("use", {}), set(packages), bad)
    if bad:
        raise BadSubmission(bad)
    return attrs.evolve(order_graph(packages, deps, tree=False), use=use), priority, rid


def _json_use(raw: Any, packages: set[str], bad: list[tuple[int, str, str]]) -> dict[str, list[str]]:
    """``{atom: [enabled flags]}`` -> ``{cpv: sorted flags}``; bad entries are added to ``bad``."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequest("body.use: expected an object mapping an atom to its enabled USE flags")
    use: dict[str, list[str]] = {}
    for k, flags in raw.items():
        try:
            cpv = parse_atom(k)
        except ValueError as exc:
            bad.append((0, str(k), f"use key: {exc}"))
            continue
        if cpv not in packages:
            bad.append((0, str(k), f"use[{k!r}]: not one of the packages"))
            continue
        if not isinstance(flags, list):
            bad.append((0, str(k), f"use[{k!r}]: expected a list of enabled USE flags"))
            continue
        wrong = [f for f in flags if not isinstance(f, str) or not _FLAG.fullmatch(f)]
        if wrong:
            bad.append((0, str(k), f"use[{k!r}]: {wrong[0]!r} is not a USE flag name "
                                   f"(list the enabled flags only, without '-')"))
            continue
        use[cpv] = sorted(set(flags))
    return use


def json_target(doc: Any) -> dict[str, Any] | None:
    """The normalized ``target`` of a JSON submission, None when it has none.

    Raises BadRequest naming the field (``body.target.cflags: ...``).
    """
    raw = doc.get("target") if isinstance(doc, dict) else None
    if raw is None:
        return None
    try:
        return swarmtarget.normalize(raw)
    except ValueError as exc:
        raise BadRequest(f"body.{exc}") from None


def header_target(value: str | None) -> dict[str, Any] | None:
    """The normalized target of an ``X-Swarm-Target`` header (compact JSON), None if absent.

    Raises BadRequest naming the header and the field that is wrong.
    """
    if value is None or not value.strip():
        return None
    try:
        raw = json.loads(value)
    except ValueError as exc:
        raise BadRequest(f"X-Swarm-Target: expected the target as JSON ({exc})") from None
    try:
        return swarmtarget.normalize(raw)
    except ValueError as exc:
        raise BadRequest(f"X-Swarm-Target: {exc}") from None


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
