// The status page, live (SPEC section 13). Takes over the DOM that gatewayd/page.py rendered:
// the same ids and classes. Every URL is relative to the page (document.baseURI), so the page
// works under a path prefix behind a proxy; nothing is loaded from another origin.
//
// Data flow: the public API once at start, then ws/build-status (SPEC section 6 messages) for
// live changes. While the socket is down: reconnect with backoff and poll the public API every
// 10 s, saying that the data is stale and since when. health is polled every 3 s, so a downed
// orchestrator shows within seconds of the gateway's probe noticing (the socket carries only
// the four public message types). Rendering is batched per animation frame; a drone's card is
// rebuilt only when that drone changed.

const POLL_MS = 10000;
const HEALTH_MS = 3000;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const MAX_QUEUE_ROWS = 50;
const MAX_HISTORY_ROWS = 30;
const MAX_BUILDS = 400;
const MAX_SAMPLES = 2880;
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
  packages: [],
  queued: 0,
  builds: [], // newest first, the public build-history shape
  localBuilds: [], // finished builds seen on the socket, not yet in a fetched history
  samples: [],
  requests: new Map(), // request_id -> build_complete data (recent)
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
  history: false, gantt: false, depth: false, header: false, requests: false };
let frame = 0;

function mark(...keys) {
  for (const k of keys) dirty[k] = true;
  if (!frame) frame = requestAnimationFrame(render);
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
    const b = d.build && d.build.package === d.current_package ? d.build : null;
    if (b) {
      const elapsed = b.elapsed_s + (Date.now() - b.at) / 1000;
      const est = b.estimate_s || 0;
      const pct = b.percent > 0 ? b.percent : est > 0 ? Math.min(99, (100 * elapsed) / est) : 0;
      parts.push(h("progress", { max: 100, value: pct.toFixed(0),
        "aria-label": `${d.current_package} progress` }, `${pct.toFixed(0)}%`));
      parts.push(h("p", { class: "eta" },
        `${pct.toFixed(0)}% · ${duration(elapsed)} of ~${est > 0 ? duration(est) : "?"}`));
    }
  } else {
    parts.push(h("p", { class: "current idle" }, "idle"));
  }
  return h("li", { class: `drone st-${status}`, "data-name": d.name }, parts);
}

function renderDrones() {
  const list = $("drone-list");
  if (!list) return;
  if (dirty.droneList) {
    const names = [...S.drones.keys()].sort();
    list.replaceChildren(...(names.length ? names.map((n) => droneItem(S.drones.get(n)))
      : [h("li", { class: "empty" }, "No drones registered.")]));
    $("drone-count").textContent = String(names.length);
    dirty.droneList = false;
    dirty.drones.clear();
    return;
  }
  for (const name of dirty.drones) {
    const d = S.drones.get(name);
    const old = list.querySelector(`li[data-name="${CSS.escape(name)}"]`);
    if (d && old) old.replaceWith(droneItem(d));
    else { dirty.droneList = true; }
  }
  dirty.drones.clear();
  if (dirty.droneList) renderDrones();
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
  const waits = new Map();
  for (const p of S.packages) if (p.waiting) waits.set(p.waiting, (waits.get(p.waiting) || 0) + 1);
  $("waiting").replaceChildren(...[...waits].sort((a, b) => b[1] - a[1]).map(([w, n]) =>
    h("li", null, h("strong", null, String(n)), ` waiting: ${w}`)));
  $("queued-count").textContent = String(S.packages.length);
  const rows = S.packages.slice(0, MAX_QUEUE_ROWS).map((p) =>
    h("tr", { class: `q-${p.state}` },
      h("td", null, String(p.position ?? "")),
      h("td", { class: "pkg" }, p.package ?? ""),
      h("td", null, h("span", { class: `badge q-${p.state}` }, p.state)),
      h("td", null, p.waiting || (p.target ? `target ${p.target}` : ""))));
  const more = S.packages.length - MAX_QUEUE_ROWS;
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
  const rows = [...per.keys()].sort().map((drone) => {
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

function renderRequests() {
  const sec = $("requests");
  const items = [...S.requests.values()].slice(-10).reverse();
  sec.hidden = items.length === 0;
  $("request-list").replaceChildren(...items.map((r) =>
    h("li", null, h("strong", null, r.request_id ?? "request"),
      ` finished in ${duration(r.duration_s)}: ${r.built}/${r.packages} built, ${r.failed} failed, ${r.blocked} blocked, ${r.cancelled} cancelled`)));
}

function render() {
  frame = 0;
  try {
    if (dirty.header) { renderHeader(); dirty.header = false; }
    if (dirty.droneList || dirty.drones.size) renderDrones();
    if (dirty.counts) { renderCounts(); dirty.counts = false; }
    if (dirty.queue) { renderQueue(); dirty.queue = false; }
    if (dirty.history) { renderHistory(); dirty.history = false; }
    if (dirty.gantt) { renderGantt(); dirty.gantt = false; }
    if (dirty.depth) { renderDepth(); dirty.depth = false; }
    if (dirty.requests) { renderRequests(); dirty.requests = false; }
  } catch (err) {
    // A bug in one render must not stop the page; say so once in the console.
    console.warn("render failed", err);
  }
}

// -- applying data ----------------------------------------------------------------------------

function upsertDrone(data) {
  const old = S.drones.get(data.name);
  const d = { ...(old || {}), ...data };
  if (d.status !== "building" || !d.current_package) {
    if (d.status !== "building") d.build = null;
  }
  S.drones.set(d.name, d);
  if (old) markDrone(d.name);
  else mark("droneList", "header");
}

function applySwarm(data) {
  S.orchestrator = data.orchestrator;
  S.version = data.swarm_version;
  const seen = new Set();
  for (const d of data.drones || []) {
    seen.add(d.name);
    const old = S.drones.get(d.name);
    if (old && old.build && old.build.package !== d.current_package) old.build = null;
    upsertDrone(d);
  }
  for (const name of [...S.drones.keys()]) {
    if (!seen.has(name)) { S.drones.delete(name); mark("droneList"); }
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
  S.queued = data.queued || 0;
  if (data.counts) { S.counts = data.counts; mark("counts"); }
  mark("queue");
}

function addSample(t, counts) {
  const last = S.samples[S.samples.length - 1];
  const keys = ["pending", "building", "completed", "failed"];
  if (last && keys.every((k) => last[k] === counts[k])) return;
  S.samples.push({ t, pending: counts.pending, building: counts.building,
    completed: counts.completed, failed: counts.failed });
  if (S.samples.length > MAX_SAMPLES) S.samples.splice(0, S.samples.length - MAX_SAMPLES);
  mark("depth");
}

let queueRefetch = 0;
let historyRefetch = 0;

function onMessage(msg) {
  const d = msg.data || {};
  S.lastEvent = new Date();
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
        clearTimeout(historyRefetch);
        historyRefetch = setTimeout(() => fetchRoute("build-history").catch(() => {}), 11000);
      } else {
        drone.build = { build_id: d.build_id, package: d.package, percent: d.percent || 0,
          elapsed_s: d.elapsed_s || 0, estimate_s: d.estimate_s || 0, at: Date.now() };
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
      clearTimeout(queueRefetch);
      queueRefetch = setTimeout(() => fetchRoute("queue").catch(() => {}), 1500);
      break;
    case "build_complete":
      S.requests.delete(d.request_id);
      S.requests.set(d.request_id, d);
      while (S.requests.size > 20) S.requests.delete(S.requests.keys().next().value);
      mark("requests");
      break;
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
};

async function fetchRoute(route) {
  const resp = await fetch(url(`api/v1/services/public/${route}`), { cache: "no-store" });
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
  for (const d of S.drones.values()) if (d.build) dirty.drones.add(d.name);
  mark("header");
}

function start() {
  document.documentElement.classList.add("js");
  S.orchUp = $("orch-state") ? $("orch-state").textContent === "up" : null;
  fetchAll();
  connect();
  pollHealth();
  setInterval(pollHealth, HEALTH_MS);
  setInterval(tick, 1000);
  setInterval(() => mark("gantt", "depth"), 30000);
}

start();
