// The p2pcluster dashboard: one snapshot a second from /api/stream (server-sent events),
// drawn into the four panels. No framework, no build step; every text from the cluster goes
// in with textContent, never as HTML.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const withToken = (path) => token ? `${path}?token=${encodeURIComponent(token)}` : path;
const $ = (id) => document.getElementById(id);
let snapshot = null;
let selectedJob = null;
let detailTimer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "style") Object.assign(node.style, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function hue(text) {
  // FNV-1a, then the golden angle: names that differ in one letter get distant hues.
  let h = 2166136261;
  for (const c of text) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
  return Math.round((h % 1000) * 137.508) % 360;
}
const jobColour = (id) => `hsl(${hue(id)}, 62%, 52%)`;
const peerColour = (name) => `hsl(${hue(name)}, 45%, 58%)`;

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i < 2 ? 0 : 1)} ${units[i]}`;
}
const dash = (v, f) => (v === null || v === undefined) ? "–" : (f ? f(v) : String(v));
const clock = (t) => new Date(t * 1000).toLocaleTimeString([], {hour12: false});

function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return `${(s * 1000).toFixed(s < 0.01 ? 2 : 0)} ms`;
  if (s < 90) return `${s.toFixed(1)} s`;
  if (s < 5400) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${(s / 3600).toFixed(1)} h`;
}

// --- the cluster -------------------------------------------------------------------------

function renderMembers(data) {
  const body = $("members").tBodies[0];
  body.replaceChildren(...data.members.map((m) => {
    const departed = m.status === "dead" || m.status === "left";
    const classes = [departed ? "departed" : "", m.self ? "me" : "",
                     m.answered === false && !departed ? "silent" : ""].join(" ").trim();
    const busy = m.busy === null ? "–" : `${m.busy} / ${m.workers}`;
    return el("tr", {"class": classes, "data-peer": m.name},
      el("td", {}, m.name + (m.self ? " *" : "")),
      el("td", {"class": `state-${m.status}`}, m.status),
      el("td", {}, `${m.host}:${m.port}`),
      el("td", {"class": "num"}, departed ? "–" : busy),
      el("td", {"class": "num"}, departed ? "–" : dash(m.queued !== null ? m.queued : m.queue)),
      el("td", {"class": "num"}, dash(m.cpu, (v) => `${v.toFixed(0)} %`)),
      el("td", {"class": "num"}, bytes(m.rss)),
      el("td", {"class": "num"}, dash(m.load, (v) => v.toFixed(2))),
      el("td", {}, m.version || "–"),
      el("td", {}, m.python || "–"),
      el("td", {}, m.tags.join(", ")));
  }));
  const alive = data.members.filter((m) => m.status === "alive" || m.status === "suspect");
  const workers = alive.reduce((n, m) => n + (m.workers || 0), 0);
  $("cluster").textContent = `cluster ${data.cluster}`;
  $("summary").textContent = `${alive.length} peer${alive.length === 1 ? "" : "s"}, ` +
    `${workers} worker${workers === 1 ? "" : "s"}`;
}

// --- jobs --------------------------------------------------------------------------------

function progressBar(job) {
  const bar = el("div", {"class": "bar", "title": ""});
  const parts = Object.entries(job.done_by).sort();
  const tip = [];
  for (const [peer, count] of parts) {
    const width = job.total ? (100 * count / job.total) : 0;
    bar.append(el("span", {"style": {width: `${width}%`, background: peerColour(peer)}}));
    tip.push(`${peer}: ${count} done`);
  }
  for (const [peer, count] of Object.entries(job.held_by).sort()) tip.push(`${peer}: ${count} held`);
  bar.title = tip.join("\n");
  const legend = el("span", {"class": "quiet"}, ...parts.map(([peer, count]) =>
    el("span", {}, el("span", {"class": "swatch", "style": {background: peerColour(peer)}}),
       `${peer} ${count} `)));
  return el("div", {"class": "progress"}, bar,
            el("span", {"class": "text"}, `${job.done} / ${job.total}`), legend);
}

function renderJobs(jobs) {
  $("no-jobs").hidden = jobs.length > 0;
  $("jobs").hidden = jobs.length === 0;
  $("jobs").tBodies[0].replaceChildren(...jobs.map((job) => {
    const row = el("tr", {"class": `job${job.stale ? " stale" : ""}` +
                               `${job.id === selectedJob ? " selected" : ""}`,
                          "data-job": job.id},
      el("td", {}, el("span", {"class": "swatch", "style": {background: jobColour(job.id)}}),
         job.label, job.label !== job.function ? el("span", {"class": "quiet"}, ` ${job.function}`) : null),
      el("td", {}, job.owner),
      el("td", {}, job.state + (job.stale ? " (last known)" : "")),
      el("td", {}, progressBar(job)),
      el("td", {"class": "num"}, dash(job.rate, (r) => `${r < 10 ? r.toFixed(1) : r.toFixed(0)}/s`)),
      el("td", {"class": "num"}, dash(job.eta, seconds)),
      el("td", {"class": `num${job.errors ? " errors" : ""}`}, job.errors),
      el("td", {}, clock(job.started)));
    row.addEventListener("click", () => selectJob(job.id));
    return row;
  }));
}

// --- the task stream ---------------------------------------------------------------------

const ROW = 14;
let streamRows = [];
let streamBars = [];
let streamEnd = 0;

function renderStream(data) {
  const canvas = $("stream");
  const rows = [];
  for (const r of data.rows) for (let s = 0; s < r.slots; s++) rows.push([r.peer, s]);
  streamRows = rows;
  streamEnd = data.time;
  const index = new Map(rows.map(([p, s], i) => [`${p}/${s}`, i]));
  streamBars = data.bars.map((b) => ({...b, row: index.get(`${b.peer}/${b.slot}`)}))
                        .filter((b) => b.row !== undefined);
  $("stream-labels").replaceChildren(...rows.map(([p, s]) => el("div", {}, `${p} #${s}`)));
  const height = Math.max(1, rows.length) * ROW;
  const width = canvas.clientWidth || 600;
  const scale = window.devicePixelRatio || 1;
  canvas.style.height = `${height}px`;
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(height * scale);
  const g = canvas.getContext("2d");
  g.setTransform(scale, 0, 0, scale, 0, 0);
  g.clearRect(0, 0, width, height);
  const x = (t) => (t - (streamEnd - data.window)) / data.window * width;
  g.strokeStyle = "#e4e8ec";
  for (let t = 0; t <= data.window; t += 10) {
    g.beginPath(); g.moveTo(x(streamEnd - t) + 0.5, 0); g.lineTo(x(streamEnd - t) + 0.5, height);
    g.stroke();
  }
  for (let i = 1; i < rows.length; i++) {
    g.fillStyle = "#f0f2f4"; g.fillRect(0, i * ROW, width, 1);
  }
  for (const b of streamBars) {
    const left = Math.max(0, x(b.start));
    const right = Math.max(left + 1, x(b.end));
    g.fillStyle = b.errors ? "#c62828" : jobColour(b.job);
    g.fillRect(left, b.row * ROW + 2, right - left, ROW - 3);
  }
}

function streamHover(event) {
  const canvas = $("stream");
  const tip = $("tooltip");
  const box = canvas.getBoundingClientRect();
  const window_ = snapshot ? snapshot.window : 60;
  const row = Math.floor((event.clientY - box.top) / ROW);
  const t = streamEnd - window_ + (event.clientX - box.left) / box.width * window_;
  const slack = window_ / box.width * 2;
  const bar = streamBars.find((b) => b.row === row && b.start - slack <= t && t <= b.end + slack);
  if (!bar) { tip.hidden = true; return; }
  const jobs = snapshot ? snapshot.jobs : [];
  const job = jobs.find((j) => j.id === bar.job);
  tip.textContent = `${bar.function}${job && job.label !== bar.function ? ` (${job.label})` : ""}\n` +
    `${bar.tasks} task${bar.tasks === 1 ? "" : "s"}, ${seconds(bar.busy)}` +
    (bar.tasks > 1 ? ` (${seconds(bar.busy / bar.tasks)} each)` : "") +
    (bar.errors ? `, ${bar.errors} failed` : "") + `\non ${bar.peer} worker #${bar.slot}`;
  tip.style.left = `${event.clientX + 12}px`;
  tip.style.top = `${event.clientY + 12}px`;
  tip.hidden = false;
}

// --- job detail --------------------------------------------------------------------------

function selectJob(id) {
  selectedJob = id;
  $("detail-panel").hidden = false;
  clearInterval(detailTimer);
  loadDetail();
  detailTimer = setInterval(loadDetail, 3000);
  if (snapshot) renderJobs(snapshot.jobs);
}

function closeDetail() {
  selectedJob = null;
  clearInterval(detailTimer);
  $("detail-panel").hidden = true;
  if (snapshot) renderJobs(snapshot.jobs);
}

async function loadDetail() {
  const id = selectedJob;
  if (!id) return;
  let response;
  try {
    response = await fetch(withToken(`api/jobs/${id}`));
  } catch (error) {
    return;  // the stream's status already says we are offline
  }
  if (id !== selectedJob) return;
  if (!response.ok) {
    $("detail").replaceChildren(el("p", {"class": "quiet"}, await response.text()));
    return;
  }
  renderDetail(await response.json());
}

function taskTable(rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ...["task", "peer", "worker", "seconds", "status", "started"]
      .map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((t) => el("tr", {},
      el("td", {"class": "num"}, t.task), el("td", {}, t.peer), el("td", {"class": "num"}, t.slot),
      el("td", {"class": "num"}, seconds(t.seconds)),
      el("td", {"class": t.status ? "errors" : ""}, t.status ? "error" : "ok"),
      el("td", {}, clock(t.started))))));
}

function renderDetail(detail) {
  const job = detail.job;
  $("detail-title").textContent = job ? `${job.label} (${job.function}), owned by ${job.owner}`
                                      : selectedJob.slice(0, 8);
  const parts = [];
  const byPeer = Object.entries(detail.by_peer).sort();
  parts.push(el("h3", {}, "Tasks per peer (as recorded by the peers that ran them)"));
  parts.push(el("table", {},
    el("thead", {}, el("tr", {}, ...["peer", "tasks", "errors", "worker time"]
      .map((h) => el("th", {}, h)))),
    el("tbody", {}, ...byPeer.map(([peer, r]) => el("tr", {},
      el("td", {}, peer), el("td", {"class": "num"}, r.tasks),
      el("td", {"class": `num${r.errors ? " errors" : ""}`}, r.errors),
      el("td", {"class": "num"}, seconds(r.seconds)))))));
  if (job) parts.push(el("p", {"class": "quiet"},
    `${job.done} of ${job.total} done, ${job.errors} error(s); state ${job.state}`));
  parts.push(el("h3", {}, "Slowest tasks"), taskTable(detail.slowest));
  parts.push(el("h3", {}, `Output (${detail.output.length} task(s) printed something)`));
  for (const t of detail.output) {
    parts.push(el("div", {}, el("span", {"class": "quiet"}, `task ${t.task} on ${t.peer}`),
      t.stdout ? el("pre", {}, t.stdout) : null,
      t.stderr ? el("pre", {"class": "errors"}, t.stderr) : null));
  }
  const silent = Object.entries(detail.peers).filter(([, p]) => !p.answered);
  if (silent.length) parts.push(el("p", {"class": "quiet"},
    `Not answering: ${silent.map(([name]) => name).join(", ")}`));
  $("detail").replaceChildren(...parts);
}

// --- the stream of snapshots -------------------------------------------------------------

function render(data) {
  snapshot = data;
  renderMembers(data);
  renderJobs(data.jobs);
  renderStream(data);
}

function connect() {
  const source = new EventSource(withToken("api/stream"));
  source.onopen = () => { $("status").textContent = "live"; $("status").className = "status live"; };
  source.onmessage = (event) => render(JSON.parse(event.data));
  source.onerror = () => {
    $("status").textContent = "reconnecting";
    $("status").className = "status connecting";
  };
}

document.addEventListener("DOMContentLoaded", () => {
  $("stream").addEventListener("mousemove", streamHover);
  $("stream").addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
  $("detail-close").addEventListener("click", closeDetail);
  window.addEventListener("resize", () => { if (snapshot) renderStream(snapshot); });
  connect();
});
