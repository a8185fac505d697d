"""What build-swarm shows people: tables, durations, progress bars and the watch view. Pure.

Every function takes decoded JSON (the shapes of docs/API.md) and returns text; missing fields
show as ``-`` so an older or newer server never crashes the CLI. The watch view is a reducer:
``WatchView.apply(event, now=t)`` folds one event in, ``WatchView.render(now=t)`` draws it.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

FINAL_STATES = frozenset({"built", "failed", "blocked", "cancelled"})
STATE_ORDER = ("pending", "ready", "assigned", "building", "built", "failed", "blocked",
               "cancelled")


def dash(v: Any) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return str(v)


def duration(seconds: Any) -> str:
    """``3725`` -> ``1h02m``, ``245`` -> ``4m05s``, ``12.4`` -> ``12s``; None -> ``-``."""
    if seconds is None or isinstance(seconds, bool):
        return "-"
    try:
        s = int(round(float(seconds)))
    except (TypeError, ValueError):
        return "-"
    if s < 0:
        s = 0
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def when(value: Any) -> str:
    """An ISO-8601 timestamp or an epoch number as ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    if value is None or value == "":
        return "-"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _dt.datetime.fromtimestamp(value, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    s = str(value)
    return s.replace("T", " ").removesuffix("Z").split(".")[0]


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A left-aligned text table; numbers are right-aligned."""
    cells = [[dash(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in cells:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    numeric = [
        all(_is_number(r[i]) for r in cells if r[i] != "-") and any(r[i] != "-" for r in cells)
        for i in range(len(headers))
    ]

    def line(r: Sequence[str]) -> str:
        parts = [
            c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i]) for i, c in enumerate(r)
        ]
        return "  ".join(parts).rstrip()

    out = [line(list(headers))]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def bar(fraction: float, width: int = 20) -> str:
    f = min(max(fraction, 0.0), 1.0)
    full = int(f * width)
    return "[" + "#" * full + "." * (width - full) + "]"


# -- one command each -------------------------------------------------------------------------


def counts_line(counts: Mapping[str, Any]) -> str:
    keys = [k for k in STATE_ORDER if k in counts] + sorted(k for k in counts if k not in STATE_ORDER)
    return "  ".join(f"{k} {counts[k]}" for k in keys)


def status(doc: Mapping[str, Any]) -> str:
    j = doc.get("journal") or {}
    lines = [
        f"swarmd {dash(doc.get('version'))} on {dash(doc.get('hostname'))}: "
        f"{dash(doc.get('status'))}, up {duration(doc.get('uptime_s'))}",
        f"journal  {dash(j.get('dir'))}: {dash(j.get('records'))} records, "
        f"{dash(j.get('bytes'))} bytes, last seq {dash(j.get('last_seq'))}",
    ]
    if doc.get("counts"):
        lines.append("queue    " + counts_line(doc["counts"]))
    if doc.get("drones"):
        lines.append("drones   " + "  ".join(f"{k} {v}" for k, v in doc["drones"].items()))
    if doc.get("requests"):
        lines.append("requests " + "  ".join(f"{k} {v}" for k, v in doc["requests"].items()))
    lines.extend(_targets(doc.get("targets")))
    return "\n".join(lines)


def _targets(targets: Any) -> list[str]:
    """Per-target lines of ``status`` in whatever shape the server gives: ``{id: {...}}`` or
    ``[{"target_id": id, ...}]``, the values being counts (or nested counts)."""
    if isinstance(targets, Mapping):
        items = list(targets.items())
    elif isinstance(targets, list):
        items = [(t.get("target_id") or t.get("id"), {k: v for k, v in t.items()
                                                     if k not in ("target_id", "id")})
                 for t in targets if isinstance(t, Mapping)]
    else:
        return []
    lines = []
    for tid, info in items:
        if isinstance(info, Mapping):
            text = "  ".join(_flat(k, v) for k, v in info.items() if v not in (None, "", {}))
        else:
            text = dash(info)
        lines.append(f"target   {dash(tid)}: {text or '-'}")
    return lines


def _flat(k: str, v: Any) -> str:
    if isinstance(v, Mapping):
        return f"{k} (" + "  ".join(f"{kk} {dash(vv)}" for kk, vv in v.items()) + ")"
    if isinstance(v, list):
        return f"{k} {len(v)}"
    return f"{k} {dash(v)}"


def drones(doc: Mapping[str, Any]) -> str:
    rows = []
    for d in doc.get("drones", []):
        current = ", ".join(
            f"{b.get('cpv')}" + (f" {b['progress']:.0f}%" if b.get("progress") is not None else "")
            for b in d.get("current_builds") or []
        )
        rows.append([d.get("name"), d.get("id"), d.get("status"), d.get("cores"), d.get("load"),
                     d.get("target_id"), d.get("ip"), when(d.get("last_heartbeat")), current])
    if not rows:
        return "no drones registered"
    return table(["NAME", "ID", "STATUS", "CORES", "LOAD", "TARGET", "IP", "LAST HEARTBEAT",
                  "BUILDING"], rows)


def queue(doc: Mapping[str, Any]) -> str:
    """The queue table; a TARGET column when entries carry one, ``waiting`` (``no drone for
    target ...``) shown with the reason."""
    entries = doc.get("entries", [])
    with_target = any(e.get("target_id") for e in entries)
    rows = []
    for e in entries:
        why = "; ".join(str(x) for x in (e.get("reason"), e.get("waiting")) if x)
        row = [e.get("id"), e.get("state"), e.get("cpv"), e.get("attempts"), e.get("drone"),
               duration(e.get("estimate_s")), why]
        if with_target:
            row.insert(5, e.get("target_id"))
        rows.append(row)
    headers = ["ID", "STATE", "PACKAGE", "TRIES", "DRONE", "ESTIMATE", "REASON"]
    if with_target:
        headers.insert(5, "TARGET")
    out = table(headers, rows) if rows else "queue is empty"
    if doc.get("counts"):
        out += "\n\n" + counts_line(doc["counts"])
    return out


def builds(doc: Mapping[str, Any]) -> str:
    rows = [
        [b.get("id"), b.get("cpv"), b.get("drone_name") or b.get("drone"),
         b.get("result") or b.get("state"), b.get("attempt"), when(b.get("started")),
         duration(b.get("duration_s"))]
        for b in doc.get("builds", [])
    ]
    if not rows:
        return "no builds yet"
    return table(["ID", "PACKAGE", "DRONE", "RESULT", "TRY", "STARTED", "TIME"], rows)


def build(doc: Mapping[str, Any]) -> str:
    art = doc.get("artifact") or {}
    lines = [
        f"build     {dash(doc.get('id'))} (entry {dash(doc.get('entry_id'))}, "
        f"attempt {dash(doc.get('attempt'))})",
        f"package   {dash(doc.get('cpv'))}",
        f"drone     {dash(doc.get('drone_name') or doc.get('drone'))}",
        f"state     {dash(doc.get('state'))}, result {dash(doc.get('result'))}",
        f"started   {when(doc.get('started'))}, finished {when(doc.get('finished'))}, "
        f"took {duration(doc.get('duration_s'))}",
    ]
    if art:
        lines.append(f"artifact  {dash(art.get('path'))} ({dash(art.get('size'))} bytes, "
                     f"sha256 {dash(art.get('sha256'))})")
    if doc.get("error"):
        lines.append(f"error     {doc['error']}")
    log = doc.get("log")
    if log:
        lines.append("--- log ---")
        lines.append(str(log).rstrip("\n"))
    return "\n".join(lines)


def packages(doc: Mapping[str, Any]) -> str:
    rows = [
        [p.get("cpv"), p.get("state"), p.get("built"), p.get("synced"), p.get("build_id"),
         (p.get("artifact") or {}).get("path") if isinstance(p.get("artifact"), dict)
         else p.get("artifact")]
        for p in doc.get("packages", [])
    ]
    if not rows:
        return "no packages known"
    return table(["PACKAGE", "STATE", "BUILT", "SYNCED", "BUILD", "ARTIFACT"], rows)


def logs(doc: Mapping[str, Any]) -> str:
    rows = [
        [when(entry.get("time")), entry.get("level"), entry.get("logger"), entry.get("message")]
        for entry in doc.get("lines", [])
    ]
    if not rows:
        return "no log lines"
    return table(["TIME", "LEVEL", "LOGGER", "MESSAGE"], rows)


def config(doc: Mapping[str, Any]) -> str:
    cfg = doc.get("config", doc)
    lines: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for k in sorted(value):
                walk(f"{prefix}.{k}" if prefix else str(k), value[k])
        else:
            lines.append(f"{prefix} = {value!r}" if isinstance(value, str) else
                         f"{prefix} = {value}")

    walk("", cfg)
    return "\n".join(lines)


def submitted(doc: Mapping[str, Any]) -> str:
    dup = " (duplicate: this request id was submitted before)" if doc.get("duplicate") else ""
    lines = [
        f"request {dash(doc.get('id'))}{dup}",
        f"  {dash(doc.get('queued'))} queued, {dash(doc.get('skipped'))} skipped (already built), "
        f"{dash(doc.get('merged'))} merged (already queued), of {dash(doc.get('packages'))} packages",
    ]
    binary = doc.get("binary")
    if binary:
        n = len(binary) if isinstance(binary, list) else binary
        lines.append(f"  {n} already on a binhost ([binary] rows, not queued)")
    if doc.get("target_id"):
        lines.append(f"  for target {doc['target_id']}")
    if doc.get("waiting"):
        lines.append(f"  waiting: {doc['waiting']}")
    for cycle in doc.get("cycles") or []:
        lines.append("  dependency cycle (broken in emerge order): " + " -> ".join(cycle))
    return "\n".join(lines)


INSTALL_COMMAND = "emerge -uDN --getbinpkgonly --binpkg-respect-use=y @world"


def binhost_stanza(url: str, *, path: str) -> str:
    """A ready ``binrepos.conf`` file for the swarm's binhost, ending in a newline."""
    return (f"# {path}\n"
            "[build-swarm]\n"
            "priority = 10\n"
            f"sync-uri = {url}\n"
            f"# then install what the swarm built: {INSTALL_COMMAND}\n")


def bad_lines(error: Mapping[str, Any]) -> str:
    rows = error.get("lines") or []
    if not rows:
        return str(error.get("message", "bad submission"))
    out = [f"submission rejected, {len(rows)} bad line(s); nothing was queued:"]
    for r in rows:
        out.append(f"  line {r.get('line')}: {r.get('why', '')}")
        out.append(f"    {r.get('text', '')}")
    return "\n".join(out)


def request_progress(rid: str, counts: Mapping[str, Any], total: Any) -> str:
    done = sum(int(counts.get(k, 0) or 0) for k in FINAL_STATES)
    return (f"{rid}: {done}/{dash(total)} done  " + counts_line(
        {k: v for k, v in counts.items() if v}))


def history_import(total: int, longest: Sequence[tuple[str, float]], *, builds: int,
                   binary: int, unfinished: int, dry_run: bool, recorded: Any = None) -> str:
    verb = "would send" if dry_run else "sent"
    lines = [
        f"{verb} compile times for {total} packages "
        f"(from {builds} source builds; skipped {binary} binary merges, "
        f"{unfinished} unfinished or failed builds)"
    ]
    if recorded is not None:
        lines[0] += f"; swarmd recorded {recorded}"
    if longest:
        lines.append("longest:")
        lines.append(table(["PACKAGE", "TIME"], [[cp, duration(s)] for cp, s in longest]))
    return "\n".join(lines)


# -- watch ------------------------------------------------------------------------------------


@attrs.define
class Progress:
    build_id: str
    package: str
    drone: str
    percent: float | None
    elapsed_s: float
    estimate_s: float | None
    seen_at: float  # the ``now`` at which elapsed_s was true


@attrs.define
class WatchView:
    """The live state of the swarm as the event stream describes it."""

    drones: dict[str, dict[str, Any]] = attrs.Factory(dict)
    builds: dict[str, Progress] = attrs.Factory(dict)  # running, by build id
    queue: dict[str, Any] = attrs.Factory(dict)
    recent: list[str] = attrs.Factory(list)
    keep_recent: int = 8

    def apply(self, event: Mapping[str, Any], *, now: float) -> str | None:
        """Fold one event in; returns the plain line that describes it (None to stay quiet)."""
        kind = event.get("type")
        data = event.get("data") or {}
        ts = when(event.get("timestamp")).split(" ")[-1]
        if kind == "resync":
            self.drones.clear()
            self.builds.clear()
            return f"{ts} stream resynchronised (missed events)"
        if kind == "drone_status":
            name = str(data.get("name") or data.get("drone_id") or "?")
            old = self.drones.get(name, {}).get("status")
            self.drones[name] = dict(data)
            if data.get("status") == "offline":
                for bid in [b for b, p in self.builds.items() if p.drone == name]:
                    del self.builds[bid]
            if old == data.get("status") and old is not None:
                return None
            cur = f" {data['current_package']}" if data.get("current_package") else ""
            return f"{ts} drone {name} {dash(data.get('status'))}{cur}"
        if kind == "build_progress":
            bid = str(data.get("build_id"))
            phase = data.get("phase")
            if phase == "finished":
                self.builds.pop(bid, None)
                line = (f"{ts} {dash(data.get('result'))} {dash(data.get('package'))} on "
                        f"{dash(data.get('drone'))} in {duration(data.get('elapsed_s'))}")
                self.recent.insert(0, line)
                del self.recent[self.keep_recent:]
                return line
            self.builds[bid] = Progress(
                build_id=bid, package=str(data.get("package") or "?"),
                drone=str(data.get("drone") or "?"),
                percent=_num(data.get("percent")), elapsed_s=_num(data.get("elapsed_s")) or 0.0,
                estimate_s=_num(data.get("estimate_s")), seen_at=now,
            )
            if phase == "started":
                return f"{ts} started {dash(data.get('package'))} on {dash(data.get('drone'))}"
            return None
        if kind == "queue_update":
            self.queue = dict(data)
            return f"{ts} queue " + "  ".join(f"{k} {v}" for k, v in data.items())
        if kind == "build_complete":
            line = (f"{ts} request {dash(data.get('request_id'))} complete: "
                    f"{dash(data.get('built'))} built, {dash(data.get('failed'))} failed, "
                    f"{dash(data.get('blocked'))} blocked, {dash(data.get('cancelled'))} "
                    f"cancelled in {duration(data.get('duration_s'))}")
            self.recent.insert(0, line)
            del self.recent[self.keep_recent:]
            return line
        return None

    def render(self, *, now: float, title: str = "") -> str:
        out = [title] if title else []
        q = self.queue
        out.append("queue: " + ("  ".join(f"{k} {v}" for k, v in q.items()) if q else "-"))
        out.append("")
        by_drone: dict[str, list[Progress]] = {}
        for p in self.builds.values():
            by_drone.setdefault(p.drone, []).append(p)
        names = sorted(set(self.drones) | set(by_drone))
        if not names:
            out.append("no drones")
        rows = []
        for name in names:
            d = self.drones.get(name, {})
            running = by_drone.get(name, [])
            if not running:
                rows.append([name, d.get("status"), d.get("cores"),
                             d.get("current_package") or "", "", ""])
            for p in running:
                elapsed = p.elapsed_s + max(0.0, now - p.seen_at)
                frac, eta = _fraction(p, elapsed)
                rows.append([name, d.get("status", "building"), d.get("cores"), p.package,
                             bar(frac) + f" {frac * 100:3.0f}%",
                             "ETA " + duration(eta) if eta is not None else
                             "elapsed " + duration(elapsed)])
        if rows:
            out.append(table(["DRONE", "STATUS", "CORES", "PACKAGE", "PROGRESS", ""], rows))
        if self.recent:
            out.append("")
            out.append("recent:")
            out.extend("  " + r for r in self.recent)
        return "\n".join(out)


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _fraction(p: Progress, elapsed: float) -> tuple[float, float | None]:
    """Progress from the drone's percent when it reports one, else elapsed / estimate."""
    eta = None
    if p.estimate_s:
        eta = max(0.0, p.estimate_s - elapsed)
    if p.percent is not None:
        return p.percent / 100.0, eta
    if p.estimate_s:
        return min(elapsed / p.estimate_s, 0.99), eta
    return 0.0, None
