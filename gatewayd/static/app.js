// The status page, live (SPEC section 13). Takes over the DOM that gatewayd/page.py rendered:
// the same ids and classes. Every URL is relative to the page (document.baseURI), so the page
// works under a path prefix behind a proxy; nothing is loaded from another origin.
//
// Data flow: the public API once at start, then ws/build-status (SPEC section 6 messages) for
// live changes. While the socket is down: reconnect with backoff and poll the public API every
// 10 s, saying that the data is stale and since when. health is polled every 3 s, so a downed
// orchestrator shows within seconds of the gateway's probe noticing (the socket carries only
// the four public message types).
//
// Cost at scale (bench/page.py: 1,000 drones, 20,000 queued, 50 events/s): rendering is batched
// per animation frame, at most one every FRAME_MS; a drone's card is rebuilt only when what it shows changed (its progress
// bar and elapsed time are updated in place, once a second); the parts that are whole lists
// (timeline, recent builds, queue, requests, depth chart) render at most every MIN_INTERVAL ms
// however many events come; the timeline shows the MAX_GANTT_ROWS drones with the latest
// builds; queue and requests are re-fetched at most every REFETCH_MS while events flow.
// performance marks "cc-data" (first API data rendered) and "cc-live" (first render after a
// socket message) time the start.

const POLL_MS = 10000;
const HEALTH_MS = 3000;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const REFETCH_MS = 3000;
const HISTORY_REFETCH_MS = 11000;
const MAX_QUEUE_ROWS = 50;
const MAX_HISTORY_ROWS = 30;
const MAX_BUILDS = 400;
const MAX_GANTT_ROWS = 40;
const MAX_REQUEST_ROWS = 30;
const MAX_SAMPLES = 2880;
const SAMPLE_MIN_S = 5;
const MIN_INTERVAL = { gantt: 1000, history: 250, queue: 1000, depth: 1000, requests: 500 };
const GANTT_WINDOW_S = 3 * 3600;
const GANTT_W = 1000, GANTT_H = 20, DEPTH_W = 1000, DEPTH_H = 160;
const RESULTS = ["success", "failed", "returned", "revoked", "cancelled"];
const SVG_NS = "http://www.w3.org/2000/svg";

const url = (path) => new URL(path, document.baseURI).href;

function wsUrl() {
  const u = new URL("ws/build-status", document.baseURI);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  u.hash = "";
  u.search = "";
  return u.href;
}

// -- state ------------------------------------------------------------------------------------

const S = {
  drones: new Map(), // name -> {name, cores, status, current_package, target, build}
  counts: null,
  packages: [], // the first MAX_QUEUE_ROWS (api/v1/services/public/queue?limit=...)
  queued: 0,
  waiting: null, // [{reason, count}] over the whole queue
  builds: [], // newest first, the public build-history shape
  localBuilds: [], // finished builds seen on the socket, not yet in a fetched history
  samples: [],
  requests: new Map(), // request_id -> public request (requests route, build_complete)
  requestsOpen: null,
  completed: new Map(), // request_id -> build_complete data seen on the socket (recent)
  els: new Map(), // drone name -> its <li> (the server's, adopted, or ours)
  messages: 0,
  orchestrator: null,
  orchUp: null,
  version: null,
  binhost: null,
  asOf: null, // envelope timestamp of the last fetched data
  socketUp: false,
  everLive: false,
  staleSince: null, // Date: when live data stopped
  gatewayDownSince: null,
  lastEvent: null,
};

const dirty = { drones: new Set(), droneList: false, counts: false, queue: false,
  history: false, gantt: false, depth: false, header: false, requests: false, progress: false };
let frame = 0;
const lastRun = {};
let laterTimer = 0;
let laterAt = Infinity;

// At most one render per FRAME_MS: 50 events/s would otherwise cost 50 style, layout and
// paint passes a second over a page of 1,000 cards.
const FRAME_MS = 200;
let lastFrame = -Infinity;
let frameTimer = 0;

function schedule() {
  if (frame || frameTimer) return;
  const wait = lastFrame + FRAME_MS - performance.now();
  if (wait <= 0) frame = requestAnimationFrame(render);
  else frameTimer = setTimeout(() => { frameTimer = 0; schedule(); }, wait);
}

function mark(...keys) {
  for (const k of keys) dirty[k] = true;
  schedule();
}

// A render of ``key`` now, or a frame later when its MIN_INTERVAL has passed.
function due(key, now) {
  const min = MIN_INTERVAL[key] || 0;
  const last = lastRun[key] || -Infinity;
  if (now - last >= min) {
    lastRun[key] = now;
    return true;
  }
  const at = last + min;
  if (at < laterAt) {
    clearTimeout(laterTimer);
    laterAt = at;
    laterTimer = setTimeout(() => { laterAt = Infinity; laterTimer = 0; schedule(); },
      Math.max(0, at - performance.now()));
  }
  return false;
}

function markDrone(name) {
  dirty.drones.add(name);
  mark("header");
}

// -- small DOM helpers ------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") el.setAttribute("class", v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

function clock(ts) {
  const d = ts instanceof Date ? ts : new Date(ts);
  if (Number.isNaN(d.getTime())) return "-";
  return d.toISOString().slice(11, 19);
}

function duration(sec) {
  if (typeof sec !== "number" || !(sec >= 0)) return "-";
  const t = Math.round(sec);
  if (t < 60) return `${t}s`;
  if (t < 3600) return `${Math.floor(t / 60)}m ${String(t % 60).padStart(2, "0")}s`;
  return `${Math.floor(t / 3600)}h ${String(Math.floor((t % 3600) / 60)).padStart(2, "0")}m`;
}

const STATE_WORDS = new Set(["ready", "building", "degraded", "offline", "up", "down"]);
const stateWord = (w) => (STATE_WORDS.has(w) ? w : "unknown");
const resultWord = (r) => (RESULTS.includes(r) ? r : r === null || r === undefined ? "running" : "unknown");

// -- rendering --------------------------------------------------------------------------------

// The current build's numbers: percent, elapsed and estimate (s), now (as page.py).
function activeBuild(d) {
  return d.current_package && d.build && d.build.package === d.current_package ? d.build : null;
}

function buildNumbers(b) {
  const elapsed = Math.max(0, b.elapsed_s + (Date.now() - b.at) / 1000);
  const est = b.estimate_s || 0;
  const pct = b.percent > 0 ? b.percent : est > 0 ? Math.min(99, (100 * elapsed) / est) : 0;
  return { elapsed, est, pct };
}

const progressText = (n) => `${n.pct.toFixed(0)}% \u00b7 ${duration(n.elapsed)} of ~${n.est > 0 ? duration(n.est) : "?"}`;

// A build known from the public API (progress and start time of build-swarm's drone).
function apiBuild(d) {
  const started = Date.parse(d.started);
  const elapsed = Number.isNaN(started) ? 0 : Math.max(0, (Date.now() - started) / 1000);
  const pct = typeof d.progress === "number" ? d.progress : 0;
  return { package: d.current_package, percent: pct, elapsed_s: elapsed,
    estimate_s: pct > 0 && elapsed > 0 ? (elapsed * 100) / pct : 0, at: Date.now(), live: false };
}

function droneSig(d) {
  return `${d.status}|${d.cores}|${d.target}|${d.current_package}|${activeBuild(d) ? 1 : 0}`;
}

function droneItem(d) {
  const status = d.status || "unknown";
  const parts = [
    h("div", { class: "drone-head" },
      h("span", { class: "name" }, d.name),
      " ",
      h("span", { class: `badge st-${status} state` }, status)),
    h("p", { class: "meta" },
      h("span", { class: "cores" }, `${d.cores ?? "?"} cores`), " ",
      h("span", { class: "target" }, `target ${d.target || "-"}`)),
  ];
  if (d.current_package) {
    parts.push(h("p", { class: "current" }, h("span", { class: "label" }, "building"), " ",
      h("span", { class: "pkg" }, d.current_package)));
    const b = activeBuild(d);
    if (b) {
      const n = buildNumbers(b);
      parts.push(h("progress", { max: 100, value: n.pct.toFixed(0),
        "aria-label": `${d.current_package} progress` }, `${n.pct.toFixed(0)}%`));
      parts.push(h("p", { class: "eta" }, progressText(n)));
    }
  } else {
    parts.push(h("p", { class: "current idle" }, "idle"));
  }
  return h("li", { class: `drone st-${status}`, "data-name": d.name }, parts);
}

// Progress bar and elapsed time of a card, in place (no rebuild), only what changed.
function updateProgress(el, d) {
  const b = activeBuild(d);
  if (!b) return;
  const n = buildNumbers(b);
  const bar = el.querySelector("progress");
  const eta = el.querySelector(".eta");
  const pct = Number(n.pct.toFixed(0));
  if (bar && bar.value !== pct) { bar.value = pct; bar.textContent = `${pct}%`; }
  const text = progressText(n);
  if (eta && eta.textContent !== text) eta.textContent = text;
}

function renderDrones() {
  const list = $("drone-list");
  if (!list) return;
  for (const name of dirty.drones) {
    const d = S.drones.get(name);
    const el = S.els.get(name);
    if (!d) {
      if (el) { el.remove(); S.els.delete(name); }
      dirty.droneList = true;
      continue;
    }
    if (!el) { dirty.droneList = true; continue; }
    const sig = droneSig(d);
    if (el.ccSig === sig) { updateProgress(el, d); continue; }
    const fresh = droneItem(d);
    fresh.ccSig = sig;
    if (el.ccSig === undefined && fresh.outerHTML === el.outerHTML) { el.ccSig = sig; continue; }
    el.replaceWith(fresh);
    S.els.set(name, fresh);
  }
  dirty.drones.clear();
  if (!dirty.droneList) return;
  dirty.droneList = false;
  const names = [...S.drones.keys()].sort();
  const items = names.map((n) => {
    let el = S.els.get(n);
    if (!el) {
      const d = S.drones.get(n);
      el = droneItem(d);
      el.ccSig = droneSig(d);
      S.els.set(n, el);
    }
    return el;
  });
  for (const [n, el] of S.els) if (!S.drones.has(n)) { el.remove(); S.els.delete(n); }
  const kids = list.children;
  const same = kids.length === items.length && items.every((el, i) => kids[i] === el);
  if (!same) {
    list.replaceChildren(...(items.length ? items
      : [h("li", { class: "empty" }, "No drones registered.")]));
  }
  $("drone-count").textContent = String(names.length);
}

function renderProgress() {
  for (const d of S.drones.values()) {
    if (!d.build) continue;
    const el = S.els.get(d.name);
    if (el && el.ccSig !== undefined) updateProgress(el, d);
  }
}

function renderHeader() {
  const orch = $("orch-state");
  if (S.orchUp !== null && orch) {
    const w = S.orchUp ? "up" : "down";
    orch.className = `badge st-${w}`;
    orch.textContent = w;
  }
  if (S.orchestrator) $("orch-name").textContent = S.orchestrator;
  if (S.version) $("swarm-version").textContent = S.version;
  if (S.binhost !== null) $("binhost").textContent = S.binhost || "-";
  const live = $("live");
  const banner = $("banner");
  let text;
  let stale = true;
  if (S.gatewayDownSince) {
    text = `Gateway unreachable since ${clock(S.gatewayDownSince)} UTC; data is stale since ${clock(S.staleSince || S.gatewayDownSince)} UTC.`;
  } else if (S.socketUp && S.orchUp !== false) {
    stale = false;
    text = `Live${S.lastEvent ? ` · last event ${clock(S.lastEvent)} UTC` : ""}`;
  } else if (S.socketUp) {
    text = `Connected, but the orchestrator is down: data is stale since ${clock(S.staleSince || new Date())} UTC.`;
  } else {
    text = `Live updates disconnected: data is stale since ${clock(S.staleSince || new Date())} UTC; polling every ${POLL_MS / 1000} s${S.asOf ? ` (last data ${clock(S.asOf)} UTC)` : ""}.`;
  }
  live.textContent = text;
  live.className = `live ${stale ? "stale" : "ok"}`;
  if (S.orchUp === false) {
    banner.textContent = `The orchestrator is down: the data shown is the last the gateway saw${S.staleSince ? ` (stale since ${clock(S.staleSince)} UTC)` : ""}.`;
    banner.hidden = false;
  } else if (S.gatewayDownSince) {
    banner.textContent = `The gateway does not answer (since ${clock(S.gatewayDownSince)} UTC).`;
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
}

function renderCounts() {
  if (!S.counts) return;
  for (const k of ["pending", "building", "completed", "failed"]) {
    const el = $(`count-${k}`);
    if (el) el.textContent = String(S.counts[k] ?? "-");
  }
}

function renderQueue() {
  let waits = S.waiting ? S.waiting.map((w) => [w.reason, w.count]) : null;
  if (!waits) {
    const m = new Map();
    for (const p of S.packages) if (p.waiting) m.set(p.waiting, (m.get(p.waiting) || 0) + 1);
    waits = [...m].sort((a, b) => b[1] - a[1]);
  }
  $("waiting").replaceChildren(...waits.map(([w, n]) =>
    h("li", null, h("strong", null, String(n)), ` waiting: ${w}`)));
  $("queued-count").textContent = String(S.queued);
  const rows = S.packages.slice(0, MAX_QUEUE_ROWS).map((p) =>
    h("tr", { class: `q-${p.state}` },
      h("td", null, String(p.position ?? "")),
      h("td", { class: "pkg" }, p.package ?? ""),
      h("td", null, h("span", { class: `badge q-${p.state}` }, p.state)),
      h("td", null, p.waiting || (p.target ? `target ${p.target}` : ""))));
  const more = S.queued - Math.min(S.packages.length, MAX_QUEUE_ROWS);
  $("queue-table").replaceChildren(...(rows.length
    ? [h("table", null, h("thead", null, h("tr", null, h("th", null, "#"), h("th", null, "package"),
      h("th", null, "state"), h("th", null, "waits for"))), h("tbody", null, rows)),
    more > 0 ? h("p", { class: "sub" }, `and ${more} more`) : null]
    : [h("p", { class: "empty" }, "Nothing queued.")]).filter(Boolean));
}

function allBuilds() {
  return [...S.localBuilds, ...S.builds];
}

function renderHistory() {
  const rows = allBuilds().slice(0, MAX_HISTORY_ROWS).map((b) => {
    const w = resultWord(b.result);
    return h("tr", null,
      h("td", null, clock(b.finished || b.started)),
      h("td", { class: "pkg" }, b.package ?? ""),
      h("td", null, b.drone ?? ""),
      h("td", null, h("span", { class: `badge r-${w}` }, w)),
      h("td", null, duration(b.duration_s)));
  });
  $("history-table").replaceChildren(rows.length
    ? h("table", null, h("thead", null, h("tr", null, h("th", null, "time"), h("th", null, "package"),
      h("th", null, "drone"), h("th", null, "result"), h("th", null, "took"))), h("tbody", null, rows))
    : h("p", { class: "empty" }, "No builds yet."));
}

function renderGantt() {
  const now = Date.now();
  const per = new Map();
  const spans = allBuilds().slice(0, MAX_BUILDS);
  // Running builds (from the socket) are bars up to now.
  for (const d of S.drones.values()) {
    if (d.build && d.current_package === d.build.package) {
      spans.push({ package: d.build.package, drone: d.name, result: null,
        started: new Date(d.build.at - d.build.elapsed_s * 1000).toISOString(), finished: null,
        duration_s: null });
    }
  }
  for (const b of spans) {
    const t0 = Date.parse(b.started);
    if (Number.isNaN(t0)) continue;
    const t1 = b.finished ? Date.parse(b.finished) : now;
    if ((now - t1) / 1000 > GANTT_WINDOW_S) continue;
    const key = b.drone || "?";
    if (!per.has(key)) per.set(key, []);
    per.get(key).push({ t0, t1, b });
  }
  let oldest = 0;
  for (const spansOf of per.values()) for (const { t0 } of spansOf) oldest = Math.max(oldest, (now - t0) / 1000);
  // Back to the oldest start shown: at least 10 minutes, at most GANTT_WINDOW_S (as page.py).
  const windowS = Math.max(600, Math.min(GANTT_WINDOW_S, oldest * 1.02));
  const axis = $("gantt-axis");
  if (axis) axis.textContent = `${duration(windowS)} ago to now`;
  // The drones with the latest builds (as page.py), at most MAX_GANTT_ROWS.
  const latest = new Map();
  for (const [k, list] of per) {
    let end = -Infinity;
    let start = -Infinity;
    for (const { t0, t1 } of list) { end = Math.max(end, t1); start = Math.max(start, t0); }
    latest.set(k, [end, start]);
  }
  const shown = [...per.keys()].sort((a, b) => {
    const [ea, sa] = latest.get(a);
    const [eb, sb] = latest.get(b);
    return eb - ea || sb - sa || (a < b ? -1 : a > b ? 1 : 0);
  }).slice(0, MAX_GANTT_ROWS);
  const hidden = per.size - shown.length;
  const rows = shown.sort().map((drone) => {
    const bars = [];
    const texts = [];
    for (const { t0, t1, b } of per.get(drone)) {
      const age0 = Math.min((now - t0) / 1000, windowS);
      const age1 = Math.min(Math.max((now - t1) / 1000, 0), windowS);
      const x0 = GANTT_W * (1 - age0 / windowS);
      const x1 = GANTT_W * (1 - age1 / windowS);
      const w = resultWord(b.result);
      const label = `${b.package ?? "?"}: ${w}, ${duration(b.duration_s ?? (t1 - t0) / 1000)}`;
      bars.push(s("rect", { class: `bar r-${w}`, x: x0.toFixed(1), y: 2,
        width: Math.max(x1 - x0, 2).toFixed(1), height: GANTT_H - 4 }, s("title", null, label)));
      texts.push(h("li", null, `${clock(b.started)} ${label}`));
    }
    return h("div", { class: "gantt-row", "data-drone": drone },
      h("span", { class: "gantt-label" }, drone),
      s("svg", { class: "gantt-strip", viewBox: `0 0 ${GANTT_W} ${GANTT_H}`,
        preserveAspectRatio: "none", role: "img", "aria-label": `builds on ${drone}` }, bars),
      h("details", { class: "gantt-text" }, h("summary", null, `${texts.length} build(s)`),
        h("ul", null, texts)));
  });
  if (hidden > 0) {
    rows.push(h("p", { class: "sub gantt-more" },
      `and ${hidden} more drones with builds in the window (the latest shown)`));
  }
  $("gantt").replaceChildren(...(rows.length ? rows
    : [h("p", { class: "empty" }, "No builds in the last hours.")]));
}

function depthPoints(samples, key, now, windowS, top) {
  const pts = [];
  let lastY = null;
  for (const smp of samples) {
    const t = Date.parse(smp.t);
    if (Number.isNaN(t)) continue;
    const age = Math.min(Math.max((now - t) / 1000, 0), windowS);
    const x = DEPTH_W * (1 - age / windowS);
    const y = DEPTH_H * (1 - (smp[key] || 0) / top);
    if (lastY !== null) pts.push(`${x.toFixed(1)},${lastY.toFixed(1)}`);
    pts.push(`${x.toFixed(1)},${y.toFixed(1)}`);
    lastY = y;
  }
  if (lastY !== null) pts.push(`${DEPTH_W},${lastY.toFixed(1)}`);
  return pts.join(" ");
}

function renderDepth() {
  const chart = $("depth-chart");
  const samples = S.samples;
  const summary = $("depth-summary");
  if (!samples.length) {
    summary.textContent = "No queue changes seen yet by this gateway.";
    return;
  }
  const now = Date.now();
  const first = Date.parse(samples[0].t);
  const windowS = Math.max(60, Math.min(GANTT_WINDOW_S, ((now - first) / 1000) * 1.05));
  let top = 1;
  for (const smp of samples) top = Math.max(top, smp.pending || 0, smp.building || 0);
  chart.querySelector(".pending").setAttribute("points", depthPoints(samples, "pending", now, windowS, top));
  chart.querySelector(".building").setAttribute("points", depthPoints(samples, "building", now, windowS, top));
  const last = samples[samples.length - 1];
  summary.textContent = `now ${last.pending ?? 0} pending, ${last.building ?? 0} building; peak ${top}; ${samples.length} samples since ${clock(samples[0].t)}`;
}

// One request's line (as page.py ``request_text``).
function requestText(r) {
  const [built, failed, blocked, cancelled] = ["built", "failed", "blocked", "cancelled"]
    .map((k) => Number(r[k]) || 0);
  const done = built + failed + blocked + cancelled;
  const total = Math.max(Number(r.packages) || 0, done);
  let text = `${done}/${total} done \u00b7 ${built} built \u00b7 ${failed} failed \u00b7 ${blocked} blocked`;
  if (cancelled) text += ` \u00b7 ${cancelled} cancelled`;
  if (r.state === "complete") {
    text += r.finished ? ` \u00b7 finished ${clock(r.finished)} UTC` : " \u00b7 finished";
  } else {
    const eta = Date.parse(r.estimated_finish);
    if (!Number.isNaN(eta)) {
      text += ` \u00b7 finish ~${clock(r.estimated_finish)} UTC (in ${duration(Math.max(0, (eta - Date.now()) / 1000))})`;
    } else if (r.waiting) {
      text += ` \u00b7 waits: ${r.waiting}`;
    } else {
      text += " \u00b7 finish not estimated";
    }
  }
  return { done, total, text };
}

function requestItem(r) {
  const rid = r.request_id || "request";
  const state = r.state === "open" || r.state === "complete" ? r.state : "unknown";
  const { done, total, text } = requestText(r);
  return h("li", { class: `request rq-${state}`, "data-id": rid },
    h("div", { class: "request-head" }, h("strong", { class: "rid" }, rid), " ",
      h("span", { class: `badge rq-${state}` }, state)),
    h("progress", { max: Math.max(total, 1), value: done, "aria-label": `request ${rid} done` },
      `${done}/${total}`),
    h("p", { class: "meta" }, text));
}

function renderRequests() {
  const sec = $("requests");
  const all = [...S.requests.values()];
  const open = all.filter((r) => r.state !== "complete")
    .sort((a, b) => String(a.created || "").localeCompare(String(b.created || "")));
  const done = all.filter((r) => r.state === "complete")
    .sort((a, b) => String(b.finished || "").localeCompare(String(a.finished || "")));
  const items = [...open, ...done].slice(0, MAX_REQUEST_ROWS);
  sec.hidden = items.length === 0;
  $("request-list").replaceChildren(...items.map(requestItem));
  $("request-count").textContent = `${S.requestsOpen ?? open.length} open`;
}

const PARTS = [["header", () => renderHeader()], ["counts", () => renderCounts()],
  ["queue", () => renderQueue()], ["history", () => renderHistory()],
  ["gantt", () => renderGantt()], ["depth", () => renderDepth()],
  ["requests", () => renderRequests()]];
let liveMarked = false;

function render() {
  frame = 0;
  const now = performance.now();
  lastFrame = now;
  try {
    if (dirty.droneList || dirty.drones.size) renderDrones();
    if (dirty.progress) { dirty.progress = false; renderProgress(); }
    for (const [key, fn] of PARTS) {
      if (dirty[key] && due(key, now)) { dirty[key] = false; fn(); }
    }
  } catch (err) {
    // A bug in one render must not stop the page; say so once in the console.
    console.warn("render failed", err);
  }
  if (!liveMarked && S.socketUp && S.messages > 0) {
    liveMarked = true;
    performance.mark("cc-live");
  }
}

// -- applying data ----------------------------------------------------------------------------

function upsertDrone(data) {
  const old = S.drones.get(data.name);
  const d = { ...(old || {}), ...data };
  if (d.status !== "building") d.build = null;
  S.drones.set(d.name, d);
  markDrone(d.name);
  if (!old) mark("droneList");
}

function applySwarm(data) {
  S.orchestrator = data.orchestrator;
  S.version = data.swarm_version;
  const seen = new Set();
  for (const d of data.drones || []) {
    seen.add(d.name);
    const old = S.drones.get(d.name);
    const rec = { ...d };
    const oldBuild = old && old.build && old.build.package === d.current_package ? old.build : null;
    if (oldBuild && oldBuild.live) rec.build = oldBuild; // the socket's is fresher
    else if (d.current_package && (d.started || typeof d.progress === "number")) rec.build = apiBuild(d);
    else rec.build = oldBuild;
    upsertDrone(rec);
  }
  for (const name of [...S.drones.keys()]) {
    if (!seen.has(name)) { S.drones.delete(name); markDrone(name); }
  }
  if (data.queue) { S.counts = data.queue; mark("counts"); }
  mark("header", "gantt");
}

function applyHistory(data) {
  S.builds = data.builds || [];
  const known = new Set(S.builds.map((b) => `${b.package}|${b.drone}|${b.result}`));
  S.localBuilds = S.localBuilds.filter((b) => !known.has(`${b.package}|${b.drone}|${b.result}`));
  mark("history", "gantt");
}

function applyQueue(data) {
  S.packages = data.packages || [];
  S.queued = typeof data.queued === "number" ? data.queued : S.packages.length;
  S.waiting = Array.isArray(data.waiting) ? data.waiting : null;
  if (data.counts) { S.counts = data.counts; mark("counts"); }
  mark("queue");
}

function applyRequests(data) {
  S.requests = new Map();
  for (const r of data.requests || []) S.requests.set(r.request_id, r);
  // A request the socket saw finish is finished, whatever an older cached answer says.
  for (const [rid, c] of S.completed) {
    const r = S.requests.get(rid);
    if (!r || r.state !== "complete") S.requests.set(rid, completedRequest(r, c));
  }
  S.requestsOpen = typeof data.open === "number" ? data.open : null;
  if (S.requestsOpen !== null) {
    for (const rid of S.completed.keys()) {
      const r = (data.requests || []).find((x) => x.request_id === rid);
      if (r && r.state === "open") S.requestsOpen -= 1;
    }
  }
  mark("requests");
}

function completedRequest(old, c) {
  return { ...(old || {}), request_id: c.request_id, state: "complete", packages: c.packages,
    built: c.built, failed: c.failed, blocked: c.blocked, cancelled: c.cancelled, remaining: 0,
    finished: c.finished, estimate_s: null, estimated_finish: null, waiting: null };
}

function addSample(t, counts) {
  const last = S.samples[S.samples.length - 1];
  const keys = ["pending", "building", "completed", "failed"];
  if (last && keys.every((k) => last[k] === counts[k])) return;
  // Within SAMPLE_MIN_S of the previous sample: replace its values (as the gateway's ring).
  if (last && Date.parse(t) - Date.parse(last.t) < SAMPLE_MIN_S * 1000) {
    for (const k of keys) last[k] = counts[k];
    mark("depth");
    return;
  }
  S.samples.push({ t, pending: counts.pending, building: counts.building,
    completed: counts.completed, failed: counts.failed });
  if (S.samples.length > MAX_SAMPLES) S.samples.splice(0, S.samples.length - MAX_SAMPLES);
  mark("depth");
}

// Re-fetch a route soon, at most once per ``minMs`` (a steady event stream must not postpone
// it forever, nor fetch 20,000 queued packages per event).
const refetchTimer = {};
const lastFetch = {};

function refetch(route, minMs) {
  if (refetchTimer[route]) return;
  const wait = Math.max(300, minMs - (Date.now() - (lastFetch[route] || 0)));
  refetchTimer[route] = setTimeout(() => {
    refetchTimer[route] = 0;
    fetchRoute(route).catch(() => {});
  }, wait);
}

function onMessage(msg) {
  const d = msg.data || {};
  S.lastEvent = new Date();
  S.messages += 1;
  switch (msg.type) {
    case "drone_status":
      upsertDrone(d);
      mark("gantt");
      break;
    case "build_progress": {
      const name = d.drone || "?";
      const drone = S.drones.get(name) || { name, cores: null, status: "building", target: null };
      if (d.phase === "finished") {
        if (drone.build && drone.build.build_id === d.build_id) drone.build = null;
        if (drone.current_package === d.package) drone.current_package = null;
        const finished = Date.parse(msg.timestamp) || Date.now();
        S.localBuilds.unshift({ package: d.package, drone: name, result: d.result ?? null,
          started: new Date(finished - (d.elapsed_s || 0) * 1000).toISOString(),
          finished: new Date(finished).toISOString(), duration_s: d.elapsed_s ?? null });
        S.localBuilds.length = Math.min(S.localBuilds.length, MAX_BUILDS);
        // The fetched history may still list this build as running: it is not any more.
        S.builds = S.builds.filter((b) => !(b.result === null && b.package === d.package && b.drone === name));
        mark("history");
        refetch("build-history", HISTORY_REFETCH_MS);
      } else {
        drone.build = { build_id: d.build_id, package: d.package, percent: d.percent || 0,
          elapsed_s: d.elapsed_s || 0, estimate_s: d.estimate_s || 0, at: Date.now(), live: true };
        drone.current_package = d.package;
        drone.status = "building";
      }
      S.drones.set(name, drone);
      markDrone(name);
      mark("gantt");
      break;
    }
    case "queue_update":
      S.counts = d;
      addSample(msg.timestamp, d);
      mark("counts");
      refetch("queue", REFETCH_MS);
      refetch("requests", REFETCH_MS);
      break;
    case "build_complete": {
      const c = { ...d, finished: msg.timestamp };
      S.completed.delete(d.request_id);
      S.completed.set(d.request_id, c);
      while (S.completed.size > 50) S.completed.delete(S.completed.keys().next().value);
      const old = S.requests.get(d.request_id);
      if (old && old.state !== "complete" && typeof S.requestsOpen === "number") S.requestsOpen -= 1;
      S.requests.set(d.request_id, completedRequest(old, c));
      while (S.requests.size > 200) S.requests.delete(S.requests.keys().next().value);
      mark("requests");
      refetch("requests", REFETCH_MS);
      break;
    }
    default:
      break;
  }
}

// -- fetching ---------------------------------------------------------------------------------

const ROUTES = {
  "build-swarm": applySwarm,
  infrastructure: (data) => {
    S.binhost = data.binhost_url ?? "";
    if (!S.version && data.orchestrator) S.version = data.orchestrator.version;
    mark("header");
  },
  queue: applyQueue,
  "build-history": applyHistory,
  "queue-history": (data) => { S.samples = data.samples || []; mark("depth"); },
  requests: applyRequests,
};

const inflight = {};

function fetchRoute(route) {
  // One fetch of a route at a time: a slow answer (20,000 queued packages) is not asked twice.
  if (!inflight[route]) {
    inflight[route] = fetchRouteNow(route).finally(() => { inflight[route] = null; });
  }
  return inflight[route];
}

// The queue's first rows only: 20,000 queued packages are 1.7 MB of JSON the page never shows.
const QUERY = { queue: `?limit=${MAX_QUEUE_ROWS}` };

async function fetchRouteNow(route) {
  lastFetch[route] = Date.now();
  const resp = await fetch(url(`api/v1/services/public/${route}${QUERY[route] || ""}`),
    { cache: "no-store" });
  if (!resp.ok) return null; // 503 before any data: nothing to show yet
  const doc = await resp.json();
  if (doc && doc.data) {
    ROUTES[route](doc.data);
    if (route === "build-swarm") {
      S.asOf = doc.timestamp;
      if (doc.status !== "ok" && !S.staleSince) S.staleSince = new Date(doc.timestamp);
      mark("header");
    }
  }
  return doc;
}

async function fetchAll() {
  await Promise.all(Object.keys(ROUTES).map((r) => fetchRoute(r).catch(() => null)));
}

async function pollHealth() {
  try {
    const resp = await fetch(url("health"), { cache: "no-store" });
    const doc = await resp.json();
    const up = doc.orchestrator && doc.orchestrator.state === "up";
    if (S.gatewayDownSince) { S.gatewayDownSince = null; }
    if (up && S.orchUp === false && S.socketUp) { S.staleSince = null; fetchAll(); }
    if (!up && S.orchUp !== false) {
      const last = doc.orchestrator && doc.orchestrator.last_success;
      S.staleSince = S.staleSince || (last ? new Date(last) : new Date());
    }
    S.orchUp = up;
  } catch {
    if (!S.gatewayDownSince) S.gatewayDownSince = new Date();
    if (!S.staleSince) S.staleSince = new Date();
  }
  mark("header");
}

// -- the socket -------------------------------------------------------------------------------

let backoff = BACKOFF_MIN_MS;
let pollTimer = 0;

function startPolling() {
  if (pollTimer) return;
  pollTimer = setInterval(fetchAll, POLL_MS);
}

function stopPolling() {
  clearInterval(pollTimer);
  pollTimer = 0;
}

function connect() {
  let ws;
  try {
    ws = new WebSocket(wsUrl());
  } catch {
    scheduleReconnect();
    return;
  }
  ws.addEventListener("open", () => {
    backoff = BACKOFF_MIN_MS;
    S.socketUp = true;
    S.everLive = true;
    if (S.orchUp !== false) S.staleSince = null;
    stopPolling();
    fetchAll();
    mark("header");
  });
  ws.addEventListener("message", (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    if (msg && typeof msg.type === "string") onMessage(msg);
  });
  ws.addEventListener("close", () => {
    if (S.socketUp) S.staleSince = S.staleSince || new Date();
    else if (!S.staleSince) S.staleSince = new Date();
    S.socketUp = false;
    startPolling();
    mark("header");
    scheduleReconnect();
  });
}

function scheduleReconnect() {
  const delay = backoff * (0.5 + Math.random());
  backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
  setTimeout(connect, delay);
}

// Running builds' elapsed time and the charts' "now" move without events.
function tick() {
  mark("progress", "header");
}

function start() {
  document.documentElement.classList.add("js");
  S.orchUp = $("orch-state") ? $("orch-state").textContent === "up" : null;
  // Take over the server's drone cards: kept as they are unless the data says otherwise.
  for (const li of document.querySelectorAll("#drone-list li.drone")) S.els.set(li.dataset.name, li);
  fetchAll().then(() => {
    if (frame) { cancelAnimationFrame(frame); frame = 0; }
    render();
    performance.mark("cc-data");
  });
  connect();
  pollHealth();
  setInterval(pollHealth, HEALTH_MS);
  setInterval(tick, 1000);
  setInterval(() => mark("gantt", "depth"), 30000);
}

start();
