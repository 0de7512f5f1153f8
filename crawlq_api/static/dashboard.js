// crawlq dashboard: polls the API every few seconds and draws what it reads. No build step, no network
// beyond this API. Everything from the API is written with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "crawlq.token";
const INTERVAL_MS = Number(new URLSearchParams(location.search).get("interval_ms")) || 3000;
const HISTORY_POINTS = 200;  // about 10 minutes at the default interval

// ------------------------------------------------------------------ batch actions
// Pause (resume, once paused) and cancel, shown on every batch not yet complete. Each is enabled only when
// the API's OpenAPI schema has the endpoint (POST /batches/{batch}/pause, /resume, /cancel).
// They need the full token: the read-only token gets 401, which the page reports.
const ACTIONS = {
  pause: { path: "/batches/{batch}/pause", available: false },
  resume: { path: "/batches/{batch}/resume", available: false },
  cancel: { path: "/batches/{batch}/cancel", available: false },
};

async function detectActions() {
  try {
    const schema = await api("/openapi.json");
    for (const action of Object.values(ACTIONS)) {
      action.available = Boolean(schema.paths && schema.paths[action.path] && schema.paths[action.path].post);
    }
  } catch (err) { /* schema unreadable: keep the buttons disabled */ }
}

async function runAction(name, batch) {
  const path = ACTIONS[name].path.replace("{batch}", encodeURIComponent(batch));
  try {
    await api(path, { method: "POST" });
    tick();
  } catch (err) {
    showProblem(`${name} ${batch}: ${err.message}`);
  }
}

// ------------------------------------------------------------------ API access
function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(path, init = {}) {
  const headers = Object.assign({}, init.headers, { Authorization: `Bearer ${token()}` });
  const response = await fetch(path, Object.assign({}, init, { headers }));
  if (response.status === 401) {
    const err = new Error("the token was refused (401)");
    err.unauthorized = true;
    throw err;
  }
  if (!response.ok) {
    const detail = await response.json().then((body) => body.detail, () => null);
    throw new Error(typeof detail === "string" ? `HTTP ${response.status}: ${detail}` : `HTTP ${response.status}`);
  }
  return response.json();
}

// ------------------------------------------------------------------ small DOM helpers
const $ = (id) => document.getElementById(id);
const fmt = new Intl.NumberFormat("en-US");
const num = (value) => (value === null || value === undefined ? "-" : fmt.format(value));
const rate = (value) => (value === null || value === undefined ? "-" : value >= 100 ? fmt.format(Math.round(value)) : value.toFixed(1));

function cell(text, className, field) {
  const td = document.createElement("td");
  if (text !== undefined && text !== null) td.textContent = text;
  if (className) td.className = className;
  if (field) td.dataset.field = field;
  return td;
}

function progressBar(ok, bad, total, label) {
  const bar = document.createElement("div");
  bar.className = "progress";
  for (const [cls, part] of [["ok", ok], ["bad", bad]]) {
    const span = document.createElement("span");
    span.className = cls;
    span.style.width = total > 0 ? `${(100 * part) / total}%` : "0";
    bar.appendChild(span);
  }
  const pct = document.createElement("span");
  pct.className = "pct";
  pct.textContent = label;
  bar.appendChild(pct);
  return bar;
}

function fillTable(id, rows, build) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren(...rows.map(build));
  $(`${id}-empty`).hidden = rows.length > 0;
}

function duration(seconds) {
  if (seconds === null || !isFinite(seconds)) return "-";
  if (seconds < 60) return `${Math.ceil(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

// ------------------------------------------------------------------ charts (uPlot)
const history = { t: [], ready: [], deferred: [], inflight: [], rate: [] };
let queueChart = null;
let rateChart = null;
let lastDone = null;

function makeChart(target, series) {
  const el = $(target);
  const options = {
    width: el.clientWidth, height: 220, legend: { show: true, live: false },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    axes: [{ stroke: "#6b7685" }, { stroke: "#6b7685", size: 60 }],
    series: [{}].concat(series.map(([label, color]) => ({ label, stroke: color, width: 2, fill: color + "22" }))),
  };
  return new uPlot(options, [[]].concat(series.map(() => [])), el);
}

function record(queue, totals) {
  const now = Date.now() / 1000;
  let pagesPerS = null;
  if (totals && lastDone && now > lastDone.t) pagesPerS = Math.max(0, (totals.done - lastDone.done) / (now - lastDone.t));
  if (totals) lastDone = { t: now, done: totals.done };
  const urls = (queue && queue.urls) || {};
  history.t.push(now);
  history.ready.push(urls.ready ?? null);
  history.deferred.push(urls.deferred ?? null);
  history.inflight.push(urls.in_flight ?? null);
  history.rate.push(pagesPerS);
  for (const list of Object.values(history)) if (list.length > HISTORY_POINTS) list.shift();
  queueChart.setData([history.t, history.ready, history.deferred, history.inflight]);
  rateChart.setData([history.t, history.rate]);
}

// ------------------------------------------------------------------ panels
function drawTiles(queue, workers, totals) {
  const urls = (queue && queue.urls) || {};
  $("t-ready").textContent = num(urls.ready);
  $("t-deferred").textContent = num(urls.deferred);
  $("t-inflight").textContent = num(urls.in_flight);
  $("t-workers").textContent = workers ? num(workers.count) : "-";
  const perWorker = workers ? workers.workers.map((beat) => beat.pages_per_s_1m || 0) : [];
  $("t-rate").textContent = workers ? rate(perWorker.reduce((a, b) => a + b, 0)) : "-";
  $("t-failed").textContent = totals ? num(totals.failed) : "-";
}

function batchActions(stats) {
  const td = cell(null, "actions");
  const shown = [stats.state === "paused" ? "resume" : "pause", "cancel"];
  for (const name of shown) {
    const action = ACTIONS[name];
    const button = document.createElement("button");
    button.textContent = name;
    button.dataset.action = name;
    button.disabled = stats.complete || !action.available;
    button.title = action.available
      ? `POST ${action.path} (needs the full token)`
      : `not available: this API has no POST ${action.path}`;
    button.addEventListener("click", () => {
      if (name === "cancel" && !confirm(`Cancel batch ${stats.batch}? Its URLs not yet done are recorded as cancelled.`)) return;
      runAction(name, stats.batch);
    });
    td.appendChild(button);
  }
  return td;
}

function batchRow(stats) {
  const tr = document.createElement("tr");
  tr.dataset.batch = stats.batch;
  const name = cell(stats.batch, "name", "batch");
  name.title = stats.batch;
  const state = document.createElement("span");
  const cancelled = Boolean(stats.cancelled_at);
  state.className = `state ${stats.state}${cancelled ? " cancelled" : ""}`;
  state.textContent = cancelled ? "cancelled" : stats.state;
  if (cancelled) state.title = `cancelled at ${stats.cancelled_at}`;
  const stateCell = cell(null, null, "state");
  stateCell.appendChild(state);
  const pct = stats.total ? Math.floor((100 * stats.done) / stats.total) : 100;
  const bar = cell(null, null, "progress");
  bar.appendChild(progressBar(stats.succeeded, stats.failed, stats.total, `${pct} %`));
  const left = stats.total - stats.done;
  const eta = stats.complete ? "done" : stats.pages_per_s ? duration(left / stats.pages_per_s) : "-";
  const done = cell(`${num(stats.done)} / ${num(stats.total)}`, null, "done");
  done.dataset.done = stats.done;
  done.dataset.total = stats.total;
  const failed = cell(num(stats.failed), stats.failed ? "failed" : null, "failed");
  failed.dataset.failed = stats.failed;
  tr.append(name, stateCell, bar, done, failed, cell(rate(stats.pages_per_s), null, "pages_per_s"),
    cell(eta, null, "eta"), batchActions(stats));
  return tr;
}

function workerRow(beat) {
  const tr = document.createElement("tr");
  tr.dataset.worker = beat.id;
  const name = cell(beat.id, "name");
  name.title = beat.id;
  tr.append(name, cell(`${beat.in_flight} / ${beat.concurrency}`), cell(rate(beat.pages_per_s_1m)),
    cell(num(beat.urls_done)), cell(beat.draining ? "draining" : ""));
  return tr;
}

function hostRow(host) {
  const tr = document.createElement("tr");
  tr.dataset.host = host.host;
  if (host.in_flight >= host.limit) tr.className = "at-limit";
  const name = cell(host.host, "name");
  name.title = host.host;
  const bar = cell();
  bar.appendChild(progressBar(Math.min(host.in_flight, host.limit), 0, host.limit, `${host.in_flight} / ${host.limit}`));
  const cooldown = host.cooldown_s > 0 ? cell(duration(host.cooldown_s), "cooldown") : cell("");
  tr.append(name, bar, cooldown);
  return tr;
}

function drawHistogram(totals) {
  const target = $("histogram");
  if (!totals) return;
  $("percentiles").textContent = totals.p50_ms === null ? "" :
    `p50 ${totals.p50_ms.toFixed(0)} ms · p95 ${totals.p95_ms.toFixed(0)} ms · p99 ${totals.p99_ms.toFixed(0)} ms`;
  const most = Math.max(1, ...totals.latency.map((bucket) => bucket.count));
  const parts = [];
  for (const bucket of totals.latency) {
    const le = document.createElement("span");
    le.className = "le";
    le.textContent = bucket.le_ms === null ? "more" : bucket.le_ms >= 1000 ? `≤ ${bucket.le_ms / 1000} s` : `≤ ${bucket.le_ms} ms`;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(100 * bucket.count) / most}%`;
    const count = document.createElement("span");
    count.textContent = num(bucket.count);
    parts.push(le, bar, count);
  }
  target.replaceChildren(...parts);
}

// ------------------------------------------------------------------ the loop
function showProblem(text) {
  $("problem").hidden = !text;
  $("problem").textContent = text || "";
}

async function tick() {
  const names = ["queue", "workers", "batches", "hosts", "totals"];
  const paths = ["/queue", "/workers", "/batches?limit=15", "/hosts?limit=10", "/totals"];
  const settled = await Promise.allSettled(paths.map((path) => api(path)));
  const got = {};
  const failed = [];
  if (settled.some((outcome) => outcome.status === "rejected" && outcome.reason.unauthorized)) {
    signOut("The token was refused: enter a valid one.");
    return;
  }
  settled.forEach((outcome, i) => {
    if (outcome.status === "fulfilled") got[names[i]] = outcome.value;
    else failed.push(`${names[i]} (${outcome.reason.message})`);
  });
  if (got.queue && got.queue.partial_failure) failed.push("queue (partial)");
  drawTiles(got.queue, got.workers, got.totals);
  record(got.queue, got.totals);
  if (got.batches) fillTable("batches", got.batches.batches, batchRow);
  if (got.workers) fillTable("workers", got.workers.workers, workerRow);
  if (got.hosts) {
    fillTable("hosts", got.hosts.hosts, hostRow);
    $("hosts-summary").textContent = `${got.hosts.total} hosts · ${got.hosts.at_limit} at limit · ${got.hosts.in_cooldown} cooling down`;
  }
  drawHistogram(got.totals);
  showProblem(failed.length ? `could not read: ${failed.join(", ")}` : "");
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()} · every ${INTERVAL_MS / 1000} s`;
  document.body.dataset.ticks = String(Number(document.body.dataset.ticks || 0) + 1);
}

let timer = null;

async function start() {
  $("login").hidden = true;
  $("board").hidden = false;
  $("forget").hidden = false;
  if (!queueChart) {
    queueChart = makeChart("chart-queue", [["ready", "#2f6fdf"], ["deferred", "#e0a100"], ["in flight", "#16a34a"]]);
    rateChart = makeChart("chart-rate", [["pages/s", "#7c3aed"]]);
  }
  await detectActions();
  await tick();
  timer = setInterval(tick, INTERVAL_MS);
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(timer);
  $("board").hidden = true;
  $("forget").hidden = true;
  $("login").hidden = false;
  showProblem(message || "");
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const given = $("token").value.trim();
  if (!given) return;
  sessionStorage.setItem(TOKEN_KEY, given);
  $("token").value = "";
  start();
});
$("forget").addEventListener("click", () => signOut(""));
window.addEventListener("resize", () => {
  for (const [chart, id] of [[queueChart, "chart-queue"], [rateChart, "chart-rate"]]) {
    if (chart) chart.setSize({ width: $(id).clientWidth, height: 220 });
  }
});

if (token()) start(); else $("login").hidden = false;
