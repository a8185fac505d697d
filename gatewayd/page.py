"""The status page (SPEC section 13): the server-rendered first paint and its static files.

Plain Python: no trio, no I/O after ``load_static``. ``render`` turns the *sanitized public
payloads* (the very dicts the public routes send, nothing else) into one HTML document that is
useful with scripts off; ``static/app.js`` then keeps it live from ``ws/build-status`` and the
public API. Both write the same markup (ids, classes, ``data-*`` attributes), so the script can
take over the server's DOM in place.

Rules the markup keeps (and tests check):

- Only relative URLs (``static/app.css``, ``api/v1/...``): the page works under a path prefix
  behind a proxy. Nothing from another origin; no inline script or style attribute (the
  Content-Security-Policy of ``CSP`` forbids them), so colours come from classes and progress
  from ``<progress>`` elements.
- Every state is written as a word next to its colour (``ready``, ``building``, ``failed``...).
- Every string is escaped here, although it is already sanitized: a package name is data.
"""

from __future__ import annotations

import hashlib
import html
import mimetypes
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import Any

import attrs

STATIC_DIR = Path(__file__).resolve().parent / "static"

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
       "form-action 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

# How much of each list the first paint shows (the page must stay small with 20,000 queued).
MAX_QUEUE_ROWS = 50
MAX_HISTORY_ROWS = 30
MAX_GANTT_BARS = 400
# The timeline shows the drones with the latest builds, at most this many rows (1,000 drones
# would be 1,000 strips); the rest is counted under it.
MAX_GANTT_ROWS = 40
MAX_REQUEST_ROWS = 30
GANTT_WINDOW_S = 3 * 3600
# Viewbox sizes of the charts (the SVGs stretch to the width of the page).
GANTT_W, GANTT_H = 1000, 20
DEPTH_W, DEPTH_H = 1000, 160

STATE_WORDS = {
    "ready": "ready", "building": "building", "degraded": "degraded", "offline": "offline",
    "up": "up", "down": "down",
}
RESULT_CLASSES = ("success", "failed", "returned", "revoked", "cancelled")


# -- static files ---------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str
    last_modified: str


def load_static(directory: Path = STATIC_DIR) -> dict[str, StaticFile]:
    """Every file of ``directory`` (not recursive), read once at start; ETag = content hash."""
    files: dict[str, StaticFile] = {}
    if not directory.is_dir():
        return files
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        body = path.read_bytes()
        ctype = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".svg": "image/svg+xml"}.get(path.suffix)
        if ctype is None:
            ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        files[path.name] = StaticFile(
            body=body,
            content_type=ctype,
            etag='"' + hashlib.sha256(body).hexdigest()[:16] + '"',
            last_modified=formatdate(path.stat().st_mtime, usegmt=True),
        )
    return files


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of an ``If-None-Match`` header with our (strong) ETag."""
    if not if_none_match:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


# -- the view -------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Section:
    """One public payload as the page sees it: its envelope status, time and data."""

    status: str  # ok | degraded | error
    timestamp: str
    data: Mapping[str, Any] | None


@attrs.frozen(kw_only=True)
class PageView:
    swarm: Section
    infrastructure: Section
    queue: Section
    history: Section
    queue_history: Section
    orchestrator_up: bool
    now: datetime
    requests: Section | None = None


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def clock(value: Any) -> str:
    """``2026-02-23T10:30:05Z`` -> ``10:30:05`` (UTC, as the data is)."""
    ts = parse_ts(value)
    return ts.astimezone(UTC).strftime("%H:%M:%S") if ts is not None else "-"


def duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _state_badge(word: str, *, element_id: str = "") -> str:
    word = STATE_WORDS.get(word, "unknown")
    ident = f' id="{element_id}"' if element_id else ""
    return f'<span{ident} class="badge st-{word}">{word}</span>'


def _result_badge(result: Any) -> str:
    word = result if result in RESULT_CLASSES else "running" if result is None else "unknown"
    return f'<span class="badge r-{word}">{word}</span>'


def render(view: PageView) -> str:
    """The whole document (``text/html``)."""
    swarm = view.swarm.data or {}
    infra = view.infrastructure.data or {}
    orch_word = "up" if view.orchestrator_up else "down"
    as_of = view.swarm.timestamp if view.swarm.data is not None else None
    stale = view.swarm.status != "ok"
    banner = ""
    if view.swarm.data is None:
        banner = ("No data yet: the orchestrator is "
                  + ("down or unreachable." if not view.orchestrator_up else "not answering."))
    elif not view.orchestrator_up:
        banner = ("The orchestrator is down: the data below is the last the gateway saw"
                  + (f" (as of {_e(as_of)})." if as_of else "."))
    orch_infra = infra.get("orchestrator")
    orch_version = orch_infra.get("version") if isinstance(orch_infra, dict) else None
    parts = [
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="color-scheme" content="light dark">',
        "<title>Build Swarm - Command Center</title>",
        '<link rel="stylesheet" href="static/app.css">',
        '<link rel="icon" href="static/favicon.svg" type="image/svg+xml">',
        '<script type="module" src="static/app.js"></script>',
        "</head>",
        "<body>",
        '<header class="top">',
        "<h1>Build Swarm <span class=\"sub\">Command Center</span></h1>",
        '<dl class="facts">',
        f'<div><dt>Orchestrator</dt><dd><span id="orch-name">{_e(swarm.get("orchestrator"))}'
        f"</span> {_state_badge(orch_word, element_id='orch-state')}</dd></div>",
        f'<div><dt>Version</dt><dd id="swarm-version">'
        f'{_e(swarm.get("swarm_version") or orch_version or "-")}</dd></div>',
        f'<div><dt>Binhost</dt><dd id="binhost">{_e(infra.get("binhost_url") or "-")}</dd></div>',
        "</dl>",
        f'<p id="live" class="live {"stale" if stale else ""}" role="status" '
        f'data-as-of="{_e(as_of)}">'
        + (f"Snapshot as of {_e(clock(as_of))} UTC" if as_of else "No snapshot yet")
        + (" (stale: the orchestrator is not answering)" if stale and as_of else "")
        + ". Live updates need JavaScript.</p>",
        f'<p id="banner" class="banner"{"" if banner else " hidden"}>{banner}</p>',
        "</header>",
        "<main>",
        _render_queue_counts(view.queue, swarm),
        _render_requests(view.requests.data if view.requests else None, view.now),
        _render_drones(swarm.get("drones"), view.now),
        _render_gantt(view.history.data, view.now),
        _render_depth(view.queue_history.data, view.now),
        _render_queue(view.queue.data),
        _render_history(view.history.data),
        "</main>",
        f'<footer><p>Rendered {_e(view.now.strftime("%Y-%m-%d %H:%M:%S"))} UTC from the '
        'gateway\'s sanitized public API (<a href="api/v1/services">api/v1/services</a>).'
        "</p></footer>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _render_queue_counts(queue: Section, swarm: Mapping[str, Any]) -> str:
    data = queue.data or {}
    counts = swarm.get("queue") or data.get("counts") or {}
    cells = []
    for key in ("pending", "building", "completed", "failed"):
        cells.append(f'<div class="count c-{key}"><dt>{key}</dt>'
                     f'<dd id="count-{key}">{_e(counts.get(key, "-"))}</dd></div>')
    return ('<section id="summary" class="card wide"><h2>Queue</h2>'
            f'<dl class="counts">{"".join(cells)}</dl></section>')


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def build_numbers(d: Mapping[str, Any], now: datetime) -> tuple[float, float, float] | None:
    """(percent, elapsed s, estimate s or 0) of a drone's current build from its public
    ``progress`` and ``started`` (kept in step with app.js ``apiBuild``/``buildNumbers``)."""
    started = parse_ts(d.get("started"))
    progress = _num(d.get("progress"))
    if started is None and progress is None:
        return None
    elapsed = max((now - started).total_seconds(), 0.0) if started is not None else 0.0
    pct = progress or 0.0
    est = elapsed * 100 / pct if pct > 0 and elapsed > 0 else 0.0
    return pct, elapsed, est


def progress_text(pct: float, elapsed: float, est: float) -> str:
    return (f"{pct:.0f}% \u00b7 {duration(elapsed)} of ~"
            f"{duration(est) if est > 0 else '?'}")


def drone_item(d: Mapping[str, Any], now: datetime | None = None) -> str:
    """One drone as the script renders it too (keep app.js ``droneItem`` in step)."""
    name = d.get("name") or "drone"
    status = d.get("status") or "unknown"
    current = d.get("current_package")
    build = ('<p class="current"><span class="label">building</span> '
             f'<span class="pkg">{_e(current)}</span></p>') if current else \
        '<p class="current idle">idle</p>'
    nums = build_numbers(d, now or datetime.now(UTC)) if current else None
    if nums is not None:
        pct, elapsed, est = nums
        build += (f'<progress max="100" value="{pct:.0f}" aria-label="{_e(current)} progress">'
                  f'{pct:.0f}%</progress><p class="eta">{_e(progress_text(pct, elapsed, est))}'
                  "</p>")
    return (f'<li class="drone st-{_e(status)}" data-name="{_e(name)}">'
            f'<div class="drone-head"><span class="name">{_e(name)}</span> '
            f'<span class="badge st-{_e(status)} state">{_e(status)}</span></div>'
            f'<p class="meta"><span class="cores">{_e(d.get("cores") or "?")} cores</span>'
            f' <span class="target">target {_e(d.get("target") or "-")}</span></p>'
            f"{build}</li>")


def _render_drones(drones: Any, now: datetime) -> str:
    listed = sorted((d for d in drones if isinstance(d, dict)),
                    key=lambda d: str(d.get("name") or "drone")) if isinstance(drones, list) \
        else []
    items = [drone_item(d, now) for d in listed]
    body = "".join(items) or '<li class="empty">No drones registered.</li>'
    return (f'<section id="drones" class="card wide"><h2>Drones <span id="drone-count" '
            f'class="sub">{len(items)}</span></h2><ul id="drone-list" class="drones">{body}</ul>'
            "</section>")


def gantt_window(starts: Iterable[float]) -> float:
    """The timeline's span in seconds: back to the oldest build start it shows (ages in
    seconds), at least 10 minutes, at most ``GANTT_WINDOW_S`` (kept in step with app.js)."""
    oldest = max(starts, default=0.0)
    return max(600.0, min(float(GANTT_WINDOW_S), oldest * 1.02))


def _spans(builds: Iterable[Any], now: datetime) -> dict[str, list[tuple[float, float, dict[str,
                                                                                            Any]]]]:
    """Builds per drone as (start, end) seconds before ``now`` (running builds end now)."""
    per: dict[str, list[tuple[float, float, dict[str, Any]]]] = {}
    for b in builds:
        if not isinstance(b, dict):
            continue
        start = parse_ts(b.get("started"))
        if start is None:
            continue
        end = parse_ts(b.get("finished")) or now
        t0 = (now - start).total_seconds()
        t1 = (now - end).total_seconds()
        if t1 > GANTT_WINDOW_S:
            continue
        per.setdefault(str(b.get("drone") or "?"), []).append((t0, max(t1, 0.0), b))
    return per


def _render_gantt(history: Mapping[str, Any] | None, now: datetime) -> str:
    builds = (history or {}).get("builds") or []
    per = _spans(builds[:MAX_GANTT_BARS], now)
    window = gantt_window(t0 for spans in per.values() for t0, _t1, _b in spans)
    rows = []
    # The drones whose builds are the latest (smallest age of the end, then of the start).
    shown = sorted(per, key=lambda k: (min(t1 for _t0, t1, _b in per[k]),
                                       min(t0 for t0, _t1, _b in per[k]), k))[:MAX_GANTT_ROWS]
    hidden = len(per) - len(shown)
    for drone in sorted(shown):
        rects = []
        texts = []
        for t0, t1, b in per[drone]:
            x0 = GANTT_W * (1 - min(t0, window) / window)
            x1 = GANTT_W * (1 - min(t1, window) / window)
            result = b.get("result")
            word = result if result in RESULT_CLASSES else "running"
            label = (f"{b.get('package') or '?'}: {word}, "
                     f"{duration(b.get('duration_s') if b.get('duration_s') is not None else t0 - t1)}")
            rects.append(f'<rect class="bar r-{word}" x="{x0:.1f}" y="2" '
                         f'width="{max(x1 - x0, 2):.1f}" height="{GANTT_H - 4}">'
                         f"<title>{_e(label)}</title></rect>")
            texts.append(f"<li>{_e(clock(b.get('started')))} {_e(label)}</li>")
        rows.append(
            f'<div class="gantt-row" data-drone="{_e(drone)}"><span class="gantt-label">'
            f'{_e(drone)}</span><svg class="gantt-strip" viewBox="0 0 {GANTT_W} {GANTT_H}" '
            f'preserveAspectRatio="none" role="img" aria-label="builds on {_e(drone)}">'
            f'{"".join(rects)}</svg><details class="gantt-text"><summary>{len(texts)} '
            f'build(s)</summary><ul>{"".join(texts)}</ul></details></div>')
    body = "".join(rows) or '<p class="empty">No builds in the last hours.</p>'
    if hidden > 0:
        body += (f'<p class="sub gantt-more">and {hidden} more drones with builds in the '
                 "window (the latest shown)</p>")
    return ('<section id="timeline" class="card wide"><h2>Builds per drone '
            f'<span class="sub">last {GANTT_WINDOW_S // 3600} h at most</span></h2>'
            f'<div id="gantt">{body}</div>'
            '<p class="legend"><span class="badge r-success">success</span> '
            '<span class="badge r-failed">failed</span> '
            '<span class="badge r-returned">returned</span> '
            '<span class="badge r-running">running</span> '
            f'<span id="gantt-axis" class="axis">{_e(duration(window))} ago to now</span></p>'
            "</section>")


def depth_points(samples: list[dict[str, Any]], key: str, now: datetime, window_s: float,
                 top: float) -> str:
    """A step line of ``key`` over the window, as SVG ``points`` (kept in step with app.js)."""
    pts: list[str] = []
    last_y: float | None = None
    for smp in samples:
        ts = parse_ts(smp.get("t"))
        if ts is None:
            continue
        age = (now - ts).total_seconds()
        x = DEPTH_W * (1 - min(max(age, 0.0), window_s) / window_s)
        y = DEPTH_H * (1 - (smp.get(key) or 0) / top)
        if last_y is not None:
            pts.append(f"{x:.1f},{last_y:.1f}")
        pts.append(f"{x:.1f},{y:.1f}")
        last_y = y
    if last_y is not None:
        pts.append(f"{DEPTH_W},{last_y:.1f}")
    return " ".join(pts)


def _render_depth(data: Mapping[str, Any] | None, now: datetime) -> str:
    samples = [s for s in (data or {}).get("samples") or [] if isinstance(s, dict)]
    if samples:
        first = parse_ts(samples[0].get("t")) or now
        window = max(60.0, min(float(GANTT_WINDOW_S), (now - first).total_seconds() * 1.05))
        top = float(max([1, *[max(s.get("pending") or 0, s.get("building") or 0)
                              for s in samples]]))
        pending = depth_points(samples, "pending", now, window, top)
        building = depth_points(samples, "building", now, window, top)
        last = samples[-1]
        summary = (f"now {last.get('pending', 0)} pending, {last.get('building', 0)} building; "
                   f"peak {int(top)}; {len(samples)} samples since {clock(samples[0].get('t'))}")
    else:
        pending = building = ""
        summary = "No queue changes seen yet by this gateway."
    return (
        '<section id="depth" class="card wide"><h2>Queue depth</h2>'
        f'<svg id="depth-chart" class="depth" viewBox="0 0 {DEPTH_W} {DEPTH_H}" '
        'preserveAspectRatio="none" role="img" aria-label="queue depth over time">'
        f'<polyline class="line pending" points="{pending}"/>'
        f'<polyline class="line building" points="{building}"/></svg>'
        '<p class="legend"><span class="key pending">pending (solid)</span> '
        '<span class="key building">building (dashed)</span></p>'
        f'<p id="depth-summary" class="sub">{_e(summary)}</p></section>')


def _render_queue(data: Mapping[str, Any] | None) -> str:
    packages = [p for p in (data or {}).get("packages") or [] if isinstance(p, dict)]
    waits: dict[str, int] = {}
    for p in packages:
        if p.get("waiting"):
            waits[p["waiting"]] = waits.get(p["waiting"], 0) + 1
    why = "".join(f"<li><strong>{n}</strong> waiting: {_e(w)}</li>"
                  for w, n in sorted(waits.items(), key=lambda kv: -kv[1]))
    rows = "".join(
        f'<tr class="q-{_e(p.get("state"))}"><td>{_e(p.get("position"))}</td>'
        f'<td class="pkg">{_e(p.get("package"))}</td>'
        f'<td><span class="badge q-{_e(p.get("state"))}">{_e(p.get("state"))}</span></td>'
        f'<td>{_e(p.get("waiting") or (("target " + p["target"]) if p.get("target") else ""))}'
        "</td></tr>"
        for p in packages[:MAX_QUEUE_ROWS])
    more = len(packages) - MAX_QUEUE_ROWS
    more_text = f'<p class="sub">and {more} more</p>' if more > 0 else ""
    table = ('<table><thead><tr><th>#</th><th>package</th><th>state</th><th>waits for</th>'
             f"</tr></thead><tbody>{rows}</tbody></table>") if rows else \
        '<p class="empty">Nothing queued.</p>'
    return (f'<section id="queue" class="card wide"><h2>Queued <span id="queued-count" '
            f'class="sub">{len(packages)}</span></h2><ul id="waiting" class="plain">{why}</ul>'
            f'<div id="queue-table">{table}{more_text}</div></section>')


def _render_history(data: Mapping[str, Any] | None) -> str:
    builds = [b for b in (data or {}).get("builds") or [] if isinstance(b, dict)]
    rows = "".join(
        f'<tr><td>{_e(clock(b.get("finished") or b.get("started")))}</td>'
        f'<td class="pkg">{_e(b.get("package"))}</td><td>{_e(b.get("drone"))}</td>'
        f'<td>{_result_badge(b.get("result"))}</td><td>{_e(duration(b.get("duration_s")))}</td>'
        "</tr>"
        for b in builds[:MAX_HISTORY_ROWS])
    table = ('<table><thead><tr><th>time</th><th>package</th><th>drone</th><th>result</th>'
             f"<th>took</th></tr></thead><tbody>{rows}</tbody></table>") if rows else \
        '<p class="empty">No builds yet.</p>'
    return ('<section id="history" class="card wide"><h2>Recent builds</h2>'
            f'<div id="history-table">{table}</div></section>')


def request_text(r: Mapping[str, Any], now: datetime) -> tuple[int, int, str]:
    """(done, total, the line under the bar) of one public request (kept in step with app.js
    ``requestItem``)."""
    built, failed, blocked, cancelled = (int(r.get(k) or 0) for k in (
        "built", "failed", "blocked", "cancelled"))
    done = built + failed + blocked + cancelled
    total = max(int(r.get("packages") or 0), done)
    text = (f"{done}/{total} done \u00b7 {built} built \u00b7 {failed} failed \u00b7 "
            f"{blocked} blocked")
    if cancelled:
        text += f" \u00b7 {cancelled} cancelled"
    if r.get("state") == "complete":
        text += f" \u00b7 finished {clock(r.get('finished'))} UTC" if r.get("finished") else \
            " \u00b7 finished"
    else:
        eta = parse_ts(r.get("estimated_finish"))
        if eta is not None:
            text += (f" \u00b7 finish ~{clock(r.get('estimated_finish'))} UTC (in "
                     f"{duration(max((eta - now).total_seconds(), 0.0))})")
        elif r.get("waiting"):
            text += f" \u00b7 waits: {r.get('waiting')}"
        else:
            text += " \u00b7 finish not estimated"
    return done, total, text


def request_item(r: Mapping[str, Any], now: datetime) -> str:
    rid = r.get("request_id") or "request"
    state = r.get("state") if r.get("state") in ("open", "complete") else "unknown"
    done, total, text = request_text(r, now)
    return (f'<li class="request rq-{state}" data-id="{_e(rid)}"><div class="request-head">'
            f'<strong class="rid">{_e(rid)}</strong> '
            f'<span class="badge rq-{state}">{state}</span></div>'
            f'<progress max="{max(total, 1)}" value="{done}" aria-label="request {_e(rid)} '
            f'done">{done}/{total}</progress><p class="meta">{_e(text)}</p></li>')


def _render_requests(data: Mapping[str, Any] | None, now: datetime) -> str:
    listed = [r for r in (data or {}).get("requests") or [] if isinstance(r, dict)]
    items = "".join(request_item(r, now) for r in listed[:MAX_REQUEST_ROWS])
    n_open = (data or {}).get("open")
    n_open = n_open if isinstance(n_open, int) else sum(
        1 for r in listed if r.get("state") == "open")
    return (f'<section id="requests" class="card wide"{"" if items else " hidden"}>'
            f'<h2>Requests <span id="request-count" class="sub">{n_open} open</span></h2>'
            f'<ul id="request-list" class="plain requests">{items}</ul></section>')
