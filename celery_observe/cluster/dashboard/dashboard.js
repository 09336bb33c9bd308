// The live dashboard: one Server-Sent Events stream from the API ("events", relative to
// the page), each frame drawn into rows that are reused, so a page open for a day holds
// what it shows and no more.

import { LineChart, clusterPoints, perMinute, SPAN_SECONDS, taskPoints } from "./charts.js";
import { notify, request, Revoker, searchPath, TaskDetail } from "./tasks.js";
import { byId, bytes, clock, count, duration, Rows, setText } from "./view.js";

const RETRY_MS = 2000;
const page = {
  frame: null, // the last frame in which the API reached the broker
  series: [],
  frames: 0,
  offset: 0, // the API's clock minus this browser's, in seconds
  heardAt: Date.now(), // when the stream last said anything (this browser's ms)
  freshAt: null, // when the last good frame came (unix seconds, this browser's clock)
  staleSince: null,
  source: null,
  scope: null, // the task name the charts show; null for all tasks
  scopeEntries: [],
  scopeLoading: false,
  searching: false,
};

const rows = {
  workers: new Rows(byId("workers-rows"), byId("workers-empty")),
  active: new Rows(byId("active-rows"), byId("active-empty")),
  waiting: new Rows(byId("waiting-rows"), byId("waiting-empty")),
  queues: new Rows(byId("queues-rows"), byId("queues-empty")),
  history: new Rows(byId("history-rows"), byId("history-empty")),
};
const charts = {
  rate: new LineChart(byId("chart-rate"), ["finished", "failed"]),
  failures: new LineChart(byId("chart-failures"), ["failed"], { fixedMax: 100, unit: "%" }),
};
const revoker = new Revoker();
const heldTask = (id) => {
  const tasks = page.frame ? page.frame.tasks : { active: [], waiting: [] };
  return [...tasks.active, ...tasks.waiting].find((task) => task.id === id) || null;
};
const detail = new TaskDetail(revoker, heldTask, () => Boolean(page.frame && page.frame.revoke_enabled));
const serverNow = () => Date.now() / 1000 + page.offset;

// --- cells -----------------------------------------------------------------------------

const nameCell = (name) => ({ buttons: [{ text: name, cls: "link", data: { action: "scope", name }, label: `Charts of ${name}` }] });
// Ids are shown by their first 8 characters (enough to tell tasks apart on one screen).
const shortId = (id) => (id.length > 9 ? `${id.slice(0, 8)}…` : id);
const idCell = (id) => ({ buttons: [{ text: shortId(id), cls: "link id", data: { action: "detail", id }, label: `Detail of task ${id}` }] });

function actionCells(task) {
  if (!page.frame || !page.frame.revoke_enabled) return "";
  return { buttons: [
    { text: "Revoke", data: { action: "revoke", id: task.id }, label: `Revoke task ${task.id}` },
    task.state === "running" && { text: "Terminate", cls: "danger", data: { action: "terminate", id: task.id }, label: `Terminate task ${task.id}` },
  ] };
}

function metricsLink(worker) {
  const url = worker.metrics_url || (worker.http_port && worker.http_address
    ? `http://${worker.http_address.includes(":") ? `[${worker.http_address}]` : worker.http_address}:${worker.http_port}/metrics` : null);
  return url ? { href: url, text: "/metrics" } : "–";
}

function processes(worker) {
  const list = worker.processes || [];
  if (!list.length) return "–";
  const text = list.map((p) => `${p.role === "main" ? "main" : p.pid} ${bytes(p.rss_bytes)}`).join(", ");
  return { text, title: list.map((p) => `${p.role} pid ${p.pid}: ${bytes(p.rss_bytes)}`).join("\n") };
}

// --- drawing a frame -------------------------------------------------------------------

function drawHealth(frame) {
  const health = frame.health;
  const verdict = byId("verdict");
  verdict.dataset.status = health.status;
  setText(verdict, health.status);
  setText(byId("health-message"), health.message);
  const advice = byId("recommendations");
  const wanted = health.recommendations || [];
  if ([...advice.children].map((item) => item.textContent).join("\n") !== wanted.join("\n")) {
    advice.replaceChildren(...wanted.map((text) => {
      const item = document.createElement("li");
      item.textContent = text;
      return item;
    }));
  }
  const { workers, tasks, queues } = frame;
  setText(byId("figure-workers"), workers.online_workers);
  setText(byId("figure-missing"), workers.total_workers - workers.online_workers);
  setText(byId("figure-active"), tasks.summary.active);
  setText(byId("figure-reserved"), tasks.summary.reserved);
  setText(byId("figure-scheduled"), tasks.summary.scheduled);
  const lengths = Object.values(queues).map((queue) => queue.length);
  setText(byId("figure-queued"), lengths.includes(null) ? "?" : lengths.reduce((a, b) => a + b, 0));
}

function drawWorkers(frame) {
  rows.workers.update(frame.workers.workers, (w) => w.name, (w) => {
    const counts = frame.counts[w.name] || {};
    const online = w.status === "online";
    return [
      w.name, { pill: w.status, cls: `state-${w.status}` }, w.pool_type || "–",
      { text: online && w.pool ? `${w.pool.busy_workers} / ${count(w.pool.max_concurrency)}` : "–", num: true },
      { text: count(w.prefetch_count), num: true },
      { text: count(counts.success), num: true }, { text: count(counts.failure), num: true },
      { text: bytes(w.rss_bytes), num: true }, processes(w),
      { text: duration(w.uptime_seconds), num: true }, metricsLink(w),
    ];
  });
}

function drawActive() {
  const tasks = page.frame ? page.frame.tasks.active : [];
  const now = serverNow();
  rows.active.update(tasks, (t) => t.id, (t) => [
    nameCell(t.name), idCell(t.id), t.worker,
    { text: t.time_start ? duration(now - t.time_start) : "–", num: true }, actionCells(t),
  ]);
  setText(byId("active-title"), `Active tasks (${tasks.length})`);
}

function drawWaiting(frame) {
  const { waiting, summary } = frame.tasks;
  rows.waiting.update(waiting, (t) => t.id, (t) => [
    nameCell(t.name), idCell(t.id), t.worker, { pill: t.state, cls: `state-${t.state}` },
    t.eta || "–", actionCells(t),
  ]);
  const total = summary.reserved + summary.scheduled;
  setText(byId("waiting-title"), `Waiting tasks (${total})`);
  setText(byId("waiting-note"), total > waiting.length
    ? `The first ${waiting.length} of ${total}, reserved by a worker or scheduled for later.`
    : "Reserved by a worker, or scheduled for later.");
}

function drawQueues(frame) {
  const queues = Object.entries(frame.queues).map(([name, queue]) => ({ name, ...queue }));
  rows.queues.update(queues, (q) => q.name, (q) => {
    const priorities = Object.entries(q.by_priority || {}).filter(([, n]) => n > 0);
    return [
      q.name, { text: q.length === null ? "?" : q.length, num: true },
      priorities.length ? priorities.map(([step, n]) => `${step}: ${n}`).join(", ") : "–",
      { text: duration(q.oldest_message_age_seconds), num: true },
      q.unconsumed ? { pill: "no consumer", cls: "flag", title: "No worker that answers consumes this queue: its tasks will not run." }
        : q.consumers.length ? q.consumers.join(", ") : "none",
    ];
  });
}

function drawHistory(entries) {
  rows.history.update(entries, (e) => `${e.id}:${e.ended}:${e.worker}`, (e) => [
    clock(e.ended), nameCell(e.name), e.id ? idCell(e.id) : "–",
    { pill: e.state, cls: `state-${e.state}` },
    { text: duration(e.duration_seconds), num: true }, e.worker,
  ]);
}

function drawCharts() {
  const series = page.series;
  const points = page.scope ? taskPoints(series, page.scopeEntries) : clusterPoints(series);
  const rates = perMinute(points);
  const now = serverNow();
  charts.rate.draw([rates.finished, rates.failed], now);
  charts.failures.draw([rates.failureRate], now);
  const last = (line) => (line.length ? line[line.length - 1][1] : null);
  const scope = page.scope || "all tasks";
  byId("chart-rate").setAttribute("aria-label", `${scope}: ${count(last(rates.finished))} finished and ${count(last(rates.failed))} failed in the last minute`);
  const rate = last(rates.failureRate);
  byId("chart-failures").setAttribute("aria-label", `${scope}: failure rate ${rate === null ? "–" : `${rate.toFixed(1)}%`} in the last minute`);
}

async function loadScope() {
  if (!page.scope || page.scopeLoading) return;
  const name = page.scope;
  const since = Math.floor((serverNow() - SPAN_SECONDS) / 60) * 60; // one cache key a minute
  page.scopeLoading = true;
  try {
    const answer = await request(`tasks?task=${encodeURIComponent(name)}&since=${since}&limit=1000`);
    if (page.scope === name && answer.status === 200) page.scopeEntries = answer.body.tasks;
  } catch {
    // the stream's banner says the API is gone; the next frame asks again
  } finally {
    page.scopeLoading = false;
  }
  if (page.scope === name) drawCharts();
}

function setScope(name) {
  page.scope = name;
  page.scopeEntries = [];
  setText(byId("chart-scope"), name || "all tasks");
  byId("chart-all").hidden = !name;
  drawCharts();
  loadScope();
}

// --- the stream ------------------------------------------------------------------------

function markStale(reason) {
  if (page.staleSince === null) page.staleSince = page.freshAt ?? Date.now() / 1000;
  document.body.classList.add("stale");
  const banner = byId("stale");
  setText(banner, `Stale since ${clock(page.staleSince)}: ${reason}`);
  banner.hidden = false;
}

function markFresh() {
  page.staleSince = null;
  document.body.classList.remove("stale");
  byId("stale").hidden = true;
}

function onFrame(frame) {
  page.heardAt = Date.now();
  page.offset = frame.now - Date.now() / 1000;
  page.series = frame.series;
  page.frames += 1;
  byId("main").dataset.frames = String(page.frames);
  if (!frame.connected) {
    markStale(`the API cannot reach the broker (${frame.error}).`);
    drawCharts();
    return;
  }
  page.frame = frame;
  page.freshAt = Date.now() / 1000;
  markFresh();
  setText(byId("updated"), clock(page.freshAt));
  drawHealth(frame);
  drawWorkers(frame);
  drawActive();
  drawWaiting(frame);
  drawQueues(frame);
  if (!page.searching) drawHistory(frame.history);
  drawCharts();
  loadScope();
}

function connect() {
  if (page.source) page.source.close();
  const source = new EventSource("events");
  page.source = source;
  source.addEventListener("snapshot", (event) => onFrame(JSON.parse(event.data)));
  source.addEventListener("heartbeat", () => { page.heardAt = Date.now(); });
  source.addEventListener("error", () => {
    markStale("the page lost its connection to the API and reconnects by itself.");
    // The browser retries a broken stream itself, but not one refused outright.
    if (source.readyState === EventSource.CLOSED) {
      setTimeout(() => { if (page.source === source) connect(); }, RETRY_MS);
    }
  });
}

// A stream that says nothing for longer than its heartbeat promises is as good as broken.
function watch() {
  const frame = page.frame;
  const quiet = 2 * Math.max(frame ? frame.heartbeat : 15, frame ? 2 * frame.interval : 10);
  if (Date.now() - page.heardAt > quiet * 1000) {
    markStale(`no word from the API for ${Math.round(quiet)} s; reconnecting.`);
    page.heardAt = Date.now();
    connect();
  }
}

// --- what a person does ----------------------------------------------------------------

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button || button.closest("#detail")) return;
  const { action, id, name } = button.dataset;
  if (action === "scope") setScope(name);
  else if (action === "detail") detail.show(id);
  else if (action === "revoke" || action === "terminate") revoker.ask(id, action === "terminate");
});
byId("chart-all").addEventListener("click", () => setScope(null));

byId("search").addEventListener("submit", async (event) => {
  event.preventDefault();
  const path = searchPath(event.target);
  page.searching = path !== null;
  if (!path) {
    setText(byId("history-note"), "The last finished tasks, live.");
    if (page.frame) drawHistory(page.frame.history);
    return;
  }
  setText(byId("history-note"), "Searching…");
  try {
    const answer = await request(path);
    if (answer.status !== 200) throw new Error(answer.body && answer.body.detail);
    drawHistory(answer.body.tasks);
    setText(byId("history-note"), `${answer.body.tasks.length} matching tasks (the search does not follow live updates; Clear does).`);
  } catch (error) {
    setText(byId("history-note"), `The search failed: ${error.message || "the API cannot be reached"}.`);
  }
});
byId("search").addEventListener("reset", () => {
  page.searching = false;
  setText(byId("history-note"), "The last finished tasks, live.");
  if (page.frame) drawHistory(page.frame.history);
});
byId("lookup").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = new FormData(event.target).get("task_id").trim();
  if (id) detail.show(id);
  else notify("Enter a task ID.");
});

connect();
setInterval(() => {
  drawActive();
  watch();
}, 1000);
