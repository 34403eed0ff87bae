// The Sluice console: plain JavaScript over the /api/v1 JSON API (docs/API.md).
// No build step: this file is embedded in the sluice binary as it is.
"use strict";

const $ = (id) => document.getElementById(id);
const NANOS = 1e9;
// tailll's colours for instances (ANSI 31–36 as a terminal shows them).
const PALETTE = ["#c62828", "#2e7d32", "#b58900", "#1565c0", "#8e24aa", "#00838f"];
const JOB_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

// Every request of the page; leaving the page aborts them (and the server
// cancels their queries).
const inflight = new Set();
window.addEventListener("pagehide", () => inflight.forEach((c) => c.abort()));

async function api(method, path, body) {
  const controller = new AbortController();
  inflight.add(controller);
  try {
    const response = await fetch(path, {
      method,
      credentials: "same-origin",
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
    });
    const json = await response.json();
    if (!response.ok) {
      throw new Error(json.error || response.statusText);
    }
    return json;
  } finally {
    inflight.delete(controller);
  }
}

// ---- login -------------------------------------------------------------

async function start() {
  try {
    show(await api("GET", "/api/v1/whoami"));
  } catch (e) {
    $("login").hidden = false;
  }
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    const who = await api("POST", "/api/v1/login", { token: $("token").value });
    $("token").value = "";
    show(who);
  } catch (e) {
    $("login-error").textContent = e.message;
  }
});

$("logout").addEventListener("click", async () => {
  await api("POST", "/api/v1/logout", {}).catch(() => {});
  location.reload();
});

function show(who) {
  $("login").hidden = true;
  $("app").hidden = false;
  $("tabs").hidden = false;
  $("logout").hidden = false;
  const roles = who.readable_roles === null ? "all roles" : who.readable_roles.join(", ");
  $("who").textContent = `${who.user} (${roles})`;
}

document.querySelectorAll("#tabs button").forEach((button) =>
  button.addEventListener("click", () => {
    document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b === button));
    document.querySelectorAll(".tab").forEach((t) => (t.hidden = t.id !== button.dataset.tab));
    if (button.dataset.tab === "status") refreshStatus();
  }),
);

// ---- explore: search, histogram, results, context ----------------------

let range = null; // [from, to] in nanoseconds, set by zooming
let current = { columns: [], rows: [] };

function timeRange() {
  if (range) return range;
  const now = Date.now() * 1e6;
  return [now - Number($("range").value) * NANOS, 0];
}

$("range").addEventListener("change", () => {
  range = null;
  $("range-label").textContent = "";
});

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});

async function search() {
  const [from, to] = timeRange();
  const span = ((to || Date.now() * 1e6) - from) / NANOS;
  const bucket = Math.max(1, Math.round(span / 60));
  if (!$("search").value) {
    $("result-info").textContent = "type what to search for (or use SQL below)";
    return;
  }
  const body = { query: $("search").value, from_unix_nanos: Math.round(from), bucket_seconds: bucket, limit: 1000 };
  if (to) body.to_unix_nanos = Math.round(to);
  if ($("search-job").value) body.job = $("search-job").value;
  $("result-info").textContent = "searching…";
  try {
    const answer = await api("POST", "/api/v1/search", body);
    histogram(answer.histogram, bucket, from, to || Date.now() * 1e6);
    results(answer.columns, answer.rows, answer.warnings);
  } catch (e) {
    $("result-info").textContent = e.message;
  }
}

function histogram(buckets, bucketSeconds, from, to) {
  const box = $("histogram");
  const width = 1000, height = 140;
  const jobs = [...new Set(buckets.map((b) => b.job))].sort();
  const totals = new Map();
  buckets.forEach((b) => totals.set(b.bucket, (totals.get(b.bucket) || 0) + b.n));
  const max = Math.max(1, ...totals.values());
  const x = (ns) => ((ns - from) / (to - from)) * width;
  const barWidth = Math.max(1, (bucketSeconds * NANOS / (to - from)) * width - 1);
  const stacked = new Map();
  let svg = `<svg viewBox="0 0 ${width} ${height}" preserveAspectRatio="none">`;
  for (const b of buckets) {
    const start = Date.parse(b.bucket + (b.bucket.endsWith("Z") ? "" : "Z")) * 1e6;
    const below = stacked.get(b.bucket) || 0;
    stacked.set(b.bucket, below + b.n);
    const h = (b.n / max) * (height - 10);
    const y = height - ((below + b.n) / max) * (height - 10);
    const colour = JOB_COLOURS[jobs.indexOf(b.job) % JOB_COLOURS.length];
    svg += `<rect x="${x(start)}" y="${y}" width="${barWidth}" height="${h}" fill="${colour}"` +
      ` data-bucket="${b.bucket}" data-job="${escape(b.job)}" data-n="${b.n}"><title>${escape(b.job)} ${b.bucket}: ${b.n}</title></rect>`;
  }
  svg += `<rect id="zoom" x="0" y="0" width="0" height="${height}" fill="rgba(31,119,180,.2)"></rect></svg>`;
  box.innerHTML = svg + jobs.map((j, i) => `<span style="color:${JOB_COLOURS[i % JOB_COLOURS.length]}">■ ${escape(j)}</span> `).join("");
  // Dragging across the histogram zooms the time range.
  const element = box.querySelector("svg");
  let down = null;
  const at = (event) => {
    const r = element.getBoundingClientRect();
    return Math.min(1, Math.max(0, (event.clientX - r.left) / r.width));
  };
  element.addEventListener("mousedown", (e) => (down = at(e)));
  element.addEventListener("mousemove", (e) => {
    if (down === null) return;
    const [a, b] = [down, at(e)].sort((p, q) => p - q);
    const zoom = element.querySelector("#zoom");
    zoom.setAttribute("x", a * width);
    zoom.setAttribute("width", (b - a) * width);
  });
  element.addEventListener("mouseup", (e) => {
    if (down === null) return;
    const [a, b] = [down, at(e)].sort((p, q) => p - q);
    down = null;
    if (b - a < 0.005) return;
    range = [from + a * (to - from), from + b * (to - from)];
    $("range-label").textContent = `${new Date(range[0] / 1e6).toISOString()} – ${new Date(range[1] / 1e6).toISOString()}`;
    search();
  });
}

// A virtualized table: only the rows in view are in the page.
const ROW = 20;
function results(columns, rows, warnings) {
  current = { columns, rows };
  $("csv").disabled = $("json").disabled = rows.length === 0;
  $("result-info").textContent = `${rows.length} rows` + (warnings && warnings.length ? ` (${warnings.join("; ")})` : "");
  const table = $("results");
  const shown = columns.filter((c) => c !== "ts_nanos" && c !== "source_id" && c !== "offset");
  table.innerHTML = `<div class="head">${escape(shown.join(" │ "))}</div><div id="spacer"></div>`;
  $("spacer").style.height = `${rows.length * ROW}px`;
  const paint = () => {
    table.querySelectorAll(".row").forEach((r) => r.remove());
    const first = Math.floor(table.scrollTop / ROW);
    const last = Math.min(rows.length, first + Math.ceil(table.clientHeight / ROW) + 1);
    for (let i = first; i < last; i++) {
      const div = document.createElement("div");
      div.className = "row";
      div.dataset.i = i;
      div.style.top = `${(i + 1) * ROW}px`;
      div.textContent = shown.map((c) => cell(rows[i][c])).join(" │ ");
      div.addEventListener("click", () => context(rows[i]));
      table.appendChild(div);
    }
  };
  table.onscroll = paint;
  paint();
}

function cell(value) {
  if (value === undefined || value === null) return "";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

async function context(row) {
  if (row.source_id === undefined || row.ts_nanos === undefined) return;
  const answer = await api("POST", "/api/v1/context", {
    hits: [{ job: row.job, source_id: row.source_id, offset: row.offset, ts_unix_nanos: row.ts_nanos }],
    before: 5,
    after: 5,
  }).catch((e) => ({ groups: [], error: e.message }));
  const lines = (answer.groups[0] || { lines: [] }).lines;
  $("context").innerHTML = answer.error ? escape(answer.error) :
    lines.map((l) => `<div class="${l.hit ? "hit" : ""}">[${l.instance}] ${escape(l.line)}</div>`).join("");
}

$("sql-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const [from, to] = timeRange();
  $("result-info").textContent = "running…";
  try {
    const answer = await api("POST", "/api/v1/query", { sql: $("sql").value, from_unix_nanos: Math.round(from), to_unix_nanos: Math.round(to) });
    results(answer.columns, answer.rows, answer.warnings);
  } catch (e) {
    $("result-info").textContent = e.message;
  }
});

function download(name, type, text) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type }));
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

$("csv").addEventListener("click", () => {
  const quote = (v) => `"${cell(v).replace(/"/g, '""')}"`;
  const lines = [current.columns.map(quote).join(",")].concat(
    current.rows.map((r) => current.columns.map((c) => quote(r[c])).join(",")),
  );
  download("sluice.csv", "text/csv", lines.join("\n") + "\n");
});
$("json").addEventListener("click", () => download("sluice.json", "application/json", JSON.stringify(current.rows)));

// ---- live tail -----------------------------------------------------------

let source = null;
let paused = false;
let held = [];

$("tail-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (source) source.close();
  $("tail-lines").textContent = "";
  held = [];
  paused = false;
  $("pause").textContent = "Pause";
  $("pause").disabled = false;
  const params = new URLSearchParams({ job: $("tail-job").value, lines: "10" });
  if ($("tail-instances").value) params.set("instances", $("tail-instances").value);
  if ($("tail-grep").value) params.set("grep", $("tail-grep").value);
  source = new EventSource(`/api/v1/tail?${params}`);
  $("tail-info").textContent = "following…";
  source.onmessage = (message) => {
    const record = JSON.parse(message.data);
    if (paused) held.push(record);
    else append(record);
  };
  source.addEventListener("error", (event) => {
    if (event.data) {
      $("tail-info").textContent = JSON.parse(event.data).error;
      source.close();
    }
  });
});

// Pausing keeps every line that arrives; resuming shows them, in order.
$("pause").addEventListener("click", () => {
  paused = !paused;
  $("pause").textContent = paused ? "Resume" : "Pause";
  $("tail-info").textContent = paused ? "paused (lines are kept)" : "following…";
  if (!paused) {
    held.forEach(append);
    held = [];
  }
});
window.addEventListener("pagehide", () => source && source.close());

function append(record) {
  const box = $("tail-lines");
  const div = document.createElement("div");
  div.className = "line";
  const instance = record.instance === undefined ? "" : record.instance;
  div.dataset.instance = instance;
  div.style.color = instance === "" ? "#57606a" : PALETTE[instance % PALETTE.length];
  div.textContent = record.line !== undefined ? `[${instance}] ${record.line}` : `[${instance}] ${record.notice || JSON.stringify(record)}`;
  const follow = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  box.appendChild(div);
  while (box.childElementCount > 5000) box.firstChild.remove();
  if (follow) box.scrollTop = box.scrollHeight;
}

// ---- events timeline -------------------------------------------------------

const KIND_COLOURS = { quota_kill: "#c62828", data_loss: "#b00020", task_state: "#1565c0", api_call: "#6a737d", sandbox_collected: "#2e7d32" };

$("events-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = {};
  for (const key of ["job", "kind", "actor"]) {
    if ($(`events-${key}`).value) body[key] = $(`events-${key}`).value;
  }
  body.from_unix_nanos = Math.round(timeRange()[0]);
  try {
    const answer = await api("POST", "/api/v1/events", body);
    $("timeline").innerHTML = answer.rows.slice(-2000).map((e) =>
      `<li style="--c:${KIND_COLOURS[e.kind] || "#888"}" data-kind="${escape(e.kind)}"><time>${escape(e.ts)}</time> ` +
      `<span class="kind">${escape(e.kind)}</span> ${escape(e.job || "")} <em>${escape(e.actor || "")}</em> ${escape(e.message || "")}</li>`,
    ).join("");
  } catch (e) {
    $("timeline").innerHTML = `<li class="error">${escape(e.message)}</li>`;
  }
});

// ---- status --------------------------------------------------------------------

$("refresh").addEventListener("click", refreshStatus);

async function refreshStatus() {
  try {
    const status = await api("GET", "/api/v1/status");
    const d = status.detail || {};
    const jobs = d.jobs || [];
    const nodes = d.nodes || [];
    $("status-summary").innerHTML =
      `<p>sluice ${escape(status.version)}, up ${status.uptime_seconds} s, bus ${escape(status.bus_url)}</p>` +
      `<table id="status-nodes"><tr><th>node</th><th>detail</th></tr>` +
      nodes.map((n) => `<tr><td>${escape(n.node || n.name || "")}</td><td>${escape(JSON.stringify(n).slice(0, 160))}</td></tr>`).join("") +
      `</table><table id="status-jobs"><tr><th>job</th><th>instances</th></tr>` +
      jobs.map((j) => `<tr><td>${escape(j.job || j.name || "")}</td><td>${escape(JSON.stringify(j.instances || j.states || "").slice(0, 160))}</td></tr>`).join("") +
      `</table>`;
    $("status-raw").textContent = JSON.stringify(status, null, 2);
  } catch (e) {
    $("status-summary").textContent = e.message;
  }
}

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

start();
