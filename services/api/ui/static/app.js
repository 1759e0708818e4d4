// The dashboard: plain modern JavaScript, no framework and no build step.
// Every element is built with createElement and textContent (never innerHTML), so a
// task's data or error cannot become markup; the CSP forbids inline script anyway.
// The session is an HttpOnly cookie; the CSRF token is kept in memory only.
// A pipeline's page and a task's page follow the pipeline's event stream (Server-Sent
// Events); the home page, which lists many pipelines, polls.

const POLL_MS = 3000;
// Events carry task statuses and counts, not a pipeline's state, its deployment (status,
// revision) or its schedules' next fire times: those are re-read this often.
const FALLBACK_MS = 30000;
// A burst of events costs one re-read of the rows it touched, not one per event.
const REREAD_MS = 1000;
// After the API refused a stream (not a dropped connection, which EventSource retries by
// itself): the first pause before trying again, doubled up to the second.
const RETRY_MIN_MS = 2000;
const RETRY_MAX_MS = 60000;
const PAGE_SIZE = 50;
const STATUSES = ["scheduled", "queued", "leased", "succeeded", "failed", "dead", "cancelled", "expired"];
const FINISHED = ["succeeded", "failed", "dead", "cancelled", "expired"];
const CHART_SPAN_MS = 5 * 60 * 1000;
const CHART_SLOT_MS = 3000;

// `leave`: how to undo what the current view started (timers, its event stream).
const state = { session: null, leave: [], samples: new Map(), view: 0 };

// -- DOM helpers -------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "text") el.textContent = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// A control with its label beside it (not around it: a wrapping label would add the
// control's own value, a select's chosen option, to its accessible name).
let fields = 0;
function field(label, input) {
  if (!input.id) input.id = `field-${++fields}`;
  return h("div", { class: "field" }, h("label", { for: input.id }, label), input);
}

function badge(value) {
  return h("span", { class: `status ${value}` }, value);
}

function when(value) {
  if (!value) return "—";
  return new Date(value).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

function table(headers, rows, caption) {
  return h("div", { class: "table-wrap" },
    h("table", {},
      caption ? h("caption", { class: "muted" }, caption) : null,
      h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))),
      h("tbody", {}, rows)));
}

function toast(message) {
  const el = document.getElementById("toast");
  el.textContent = message;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.textContent = ""; }, 5000);
}

function setMain(...children) {
  const main = document.getElementById("main");
  main.replaceChildren(...children);
}

// -- the API ----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.session) headers["X-CSRF-Token"] = state.session.csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const payload = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401 && path !== "/ui/session") signedOut();
    throw new ApiError(response.status, payload?.error ?? "error", payload?.detail);
  }
  return payload;
}

const enc = encodeURIComponent;
const pipelinePath = (app, pipeline) => `/api/applications/${enc(app)}/pipelines/${enc(pipeline)}`;

// -- session ----------------------------------------------------------------------------

function signedOut() {
  state.session = null;
  renderHeader();
  leaveView();
  renderSignIn();
}

function renderHeader() {
  const who = document.getElementById("who");
  const out = document.getElementById("sign-out");
  const s = state.session;
  if (!s) {
    who.textContent = "";
    out.hidden = true;
    return;
  }
  const tenant = s.tenant ? s.tenant.name : "no tenant picked";
  who.textContent = s.kind === "operator" ? `Operator (viewing ${tenant}, read only)` : `Tenant ${tenant}`;
  out.hidden = false;
}

function renderSignIn() {
  const key = h("input", { type: "password", name: "key", autocomplete: "off", required: true });
  const form = h("form", { class: "inline", "aria-label": "Sign in" },
    field("API key", key),
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      state.session = await api("POST", "/ui/session", { key: key.value });
      key.value = "";
      renderHeader();
      route();
    } catch (err) {
      toast(err.message);
    }
  });
  setMain(h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Use a tenant's API key, or the operator key to look at every tenant."),
    form);
  key.focus();
}

// -- views: what a page starts, undone when it is left ---------------------------------

function onLeave(undo) {
  state.leave.push(undo);
}

// Stop the timers and close the event stream of the view being left, so that none
// outlives its page; a refresh of a view left behind is dropped (state.view).
function leaveView() {
  state.view++;
  for (const undo of state.leave.splice(0)) undo();
}

function report(err) {
  if (err instanceof ApiError && err.status === 401) return;
  toast(err.message);
}

// Refresh now and every `every` ms until the view is left.
function poll(refresh, every = POLL_MS) {
  const view = state.view;
  const tick = async () => {
    if (view !== state.view) return;
    await refresh().catch(report);
  };
  tick();
  const timer = setInterval(tick, every);
  onLeave(() => clearInterval(timer));
}

// `read` at most once per `ms` while the view lasts; a call meanwhile runs once that time
// is over, so the last change is never left unread.
function throttled(read, ms = REREAD_MS) {
  const view = state.view;
  let timer = null;
  let again = false;
  const run = () => {
    if (view !== state.view) return;
    timer = setTimeout(() => {
      timer = null;
      if (again) {
        again = false;
        run();
      }
    }, ms);
    read().catch(report);
  };
  onLeave(() => clearTimeout(timer));
  return () => {
    if (timer) again = true;
    else run();
  };
}

// -- live updates: a pipeline's event stream -----------------------------------------

// Follow GET .../events while the view lasts: `resync` reads the page through the REST
// calls, then the stream is opened and hands `counts` the pipeline's counts and `changes`
// its tasks' new statuses. A fresh stream starts with the counts read after it subscribed,
// so nothing committed between `resync` and the stream is lost.
//
// One stream per page, closed when the view is left: the API holds a subscription per
// open stream, and a browser keeps at most 6 connections to a host over HTTP/1.1.
// EventSource sends the session cookie (same origin) and can send no header: the key is
// never in its URL, and a GET needs no CSRF token.
//
// When the API ends a stream (after its duration, 5 minutes) or the connection drops, the
// browser reconnects by itself with Last-Event-ID and the API resumes from there.
// `reconnect` (this stream fell behind) and `gap` (the events after ours have expired)
// mean changes were missed: read everything again and start a fresh stream. A stream
// the API refused (signed out, pipeline gone, API away) is retried the same way after a
// growing pause; a 401 on the way signs the page out, which ends it.
function follow(base, { resync, counts = () => {}, changes = () => {} }) {
  const view = state.view;
  let source = null;
  let retry = null;
  let pause = RETRY_MIN_MS;
  const start = async () => {
    source?.close();
    await resync().catch(report);
    if (view !== state.view) return;
    source = new EventSource(`${base}/events`);
    source.addEventListener("open", () => { pause = RETRY_MIN_MS; });
    source.addEventListener("counts", (event) => counts(JSON.parse(event.data).counts));
    source.addEventListener("tasks", (event) => {
      const data = JSON.parse(event.data);
      changes(data.changes);
      counts(data.counts);
    });
    source.addEventListener("reconnect", start);
    source.addEventListener("gap", start);
    source.addEventListener("error", (event) => {
      if (event.target.readyState !== EventSource.CLOSED || view !== state.view) return;
      retry = setTimeout(start, pause);
      pause = Math.min(2 * pause, RETRY_MAX_MS);
    });
  };
  onLeave(() => {
    clearTimeout(retry);
    source?.close();
  });
  start();
}

async function act(promise, done) {
  try {
    const answer = await promise;
    toast(done(answer));
  } catch (err) {
    toast(err.message);
  }
}

// -- home: applications and pipelines ----------------------------------------------------

function deployment(p) {
  const d = p.deployment || {};
  return `${d.status ?? "—"} (revision ${d.revision ?? 0})`;
}

function pipelineRow(p, tenant) {
  const counts = p.counts || {};
  const cells = [
    tenant === undefined ? null : h("td", {}, tenant),
    h("td", {}, p.application),
    h("td", {}, tenant === undefined
      ? h("a", { href: `#/p/${enc(p.application)}/${enc(p.name)}` }, p.name)
      : p.name),
    h("td", {}, badge(p.state)),
    h("td", {}, deployment(p)),
    ...["queued", "leased", "succeeded", "dead"].map((s) => h("td", {}, counts[s] ?? 0)),
    h("td", {}, counts.backlog ?? counts.queued ?? 0),
  ];
  return h("tr", {}, cells);
}

const PIPELINE_HEADERS = ["Application", "Pipeline", "State", "Deployment", "Queued", "Running", "Succeeded", "Dead", "Backlog"];

// Many pipelines at once, and no stream of them all: this page polls.
async function renderHome() {
  const s = state.session;
  const view = state.view;
  const parts = [];
  if (s.kind === "operator") parts.push(...(await operatorParts()));
  if (view !== state.view) return;
  if (s.tenant) parts.push(...tenantParts(s.kind === "operator"));
  setMain(...parts);
  poll(async () => {
    if (s.kind === "operator") await refreshOverview();
    if (s.tenant) await refreshApplications();
  });
}

async function operatorParts() {
  const { tenants } = await api("GET", "/api/tenants");
  const pick = h("select", { name: "tenant" },
    h("option", { value: "" }, "—"),
    tenants.map((t) => h("option", { value: t.id, selected: state.session.tenant?.id === t.id }, t.name)));
  const form = h("form", { class: "inline", "aria-label": "Pick a tenant" },
    field("Tenant", pick), h("button", { type: "submit" }, "View tenant"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!pick.value) return;
    try {
      state.session = await api("PUT", "/ui/session/tenant", { tenant_id: pick.value });
      renderHeader();
      route();
    } catch (err) {
      toast(err.message);
    }
  });
  return [
    h("h1", {}, "Every tenant"),
    form,
    h("section", { class: "card", "aria-label": "All pipelines" },
      h("h2", {}, "All pipelines"), h("div", { id: "overview" }, "Loading…")),
  ];
}

async function refreshOverview() {
  const { pipelines } = await api("GET", "/ui/overview");
  const rows = pipelines.map((row) => pipelineRow(row.pipeline, row.tenant));
  document.getElementById("overview")?.replaceChildren(
    rows.length ? table(["Tenant", ...PIPELINE_HEADERS], rows) : h("p", { class: "muted" }, "No pipelines yet."));
}

function tenantParts(readOnly) {
  const parts = [h("h1", {}, "Applications"), h("div", { id: "apps" }, "Loading…")];
  if (!readOnly) parts.push(newApplicationForm(), newPipelineForm());
  return parts;
}

function newApplicationForm() {
  const name = h("input", { name: "name", required: true });
  const form = h("form", { class: "inline", "aria-label": "New application" },
    field("Application name", name), h("button", { type: "submit" }, "Create application"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await act(api("POST", "/api/applications", { name: name.value }), (a) => `Application ${a.name} created`);
    name.value = "";
    refreshApplications();
  });
  return h("section", { class: "card" }, h("h2", {}, "New application"), form);
}

function newPipelineForm() {
  const app = h("select", { name: "application", id: "new-pipeline-app", required: true });
  const name = h("input", { name: "name", required: true });
  const chart = h("input", { name: "chart", required: true, value: "charts/examples/echo" });
  const attempts = h("input", { name: "max_attempts", type: "number", min: 1, max: 100, value: 3 });
  const token = h("div", { id: "worker-token" });
  const form = h("form", { class: "inline", "aria-label": "New pipeline" },
    field("Application", app), field("Pipeline name", name), field("Chart", chart),
    field("Max attempts", attempts), h("button", { type: "submit" }, "Create pipeline"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: name.value, chart: chart.value, max_attempts: Number(attempts.value) || 3 };
    await act(api("POST", `/api/applications/${enc(app.value)}/pipelines`, body), (p) => {
      token.replaceChildren(workerToken(p));
      return `Pipeline ${p.name} created (${p.state})`;
    });
    name.value = "";
    refreshApplications();
  });
  return h("section", { class: "card" }, h("h2", {}, "New pipeline"), form, token);
}

// The worker token is in the create answer only: show it once, for the user to copy.
function workerToken(p) {
  return h("section", { "aria-label": `Worker token of ${p.name}` },
    h("p", { class: "muted" }, `Worker token of ${p.name} (shown once: keep it for its workers):`),
    h("pre", {}, h("code", { "data-worker-token": p.name }, p.worker_token)));
}

async function refreshApplications() {
  const { applications } = await api("GET", "/api/applications");
  const lists = await Promise.all(applications.map((a) => api("GET", `/api/applications/${enc(a.name)}/pipelines`)));
  const rows = lists.flatMap((list) => list.pipelines.map((p) => pipelineRow(p)));
  const empty = applications.length ? "No pipelines yet: create one below." : "No applications yet: create one below.";
  document.getElementById("apps")?.replaceChildren(
    h("p", { class: "muted" }, `${applications.length} application(s): ${applications.map((a) => a.name).join(", ") || "none"}`),
    rows.length ? table(PIPELINE_HEADERS, rows) : h("p", { class: "muted" }, empty));
  const select = document.getElementById("new-pipeline-app");
  if (select && select.options.length !== applications.length) {
    const chosen = select.value;
    select.replaceChildren(...applications.map((a) => h("option", { value: a.name, selected: a.name === chosen }, a.name)));
  }
}

// -- a pipeline: stats, throughput, tasks, schedules -----------------------------------

function renderPipeline(app, name) {
  const base = pipelinePath(app, name);
  const readOnly = state.session.kind === "operator";
  const filter = h("select", { name: "status" }, h("option", { value: "" }, "any"),
    STATUSES.map((s) => h("option", { value: s }, s)));
  // Pages of tasks by id: the cursors of the pages before this one, to go back.
  const paging = { cursors: [], cursor: null, next: null };
  // Created from (inclusive) and before (exclusive), in the browser's time zone.
  const since = h("input", { name: "created-after", type: "datetime-local", step: "1" });
  const until = h("input", { name: "created-before", type: "datetime-local", step: "1" });
  const criteria = () => ({ status: filter.value, since: instant(since.value), until: instant(until.value) });
  const tasks = () => refreshTasks(app, name, criteria(), paging);
  const again = () => tasks().catch(report);
  for (const input of [filter, since, until]) {
    input.addEventListener("change", () => {
      Object.assign(paging, { cursors: [], cursor: null, next: null });
      again();
    });
  }
  paging.again = again;
  // The schedules' ids, to know their runs' events (a run's id is `<schedule id>@...`).
  const known = { ids: [] };
  const schedules = () => refreshSchedules(base, readOnly, known);
  setMain(
    h("p", {}, h("a", { href: "#/" }, "← Applications")),
    h("h1", {}, `${app} / ${name}`),
    h("div", { id: "pipeline-state", class: "muted" }),
    h("dl", { id: "stats", class: "stats" }),
    h("h2", {}, "Throughput"),
    h("div", { id: "chart" }),
    readOnly ? null : submitForm(base),
    h("h2", {}, "Tasks"),
    taskTools(app, name, base, [field("Status", filter), field("Created from", since),
      field("Created before", until)], readOnly),
    h("div", { id: "tasks" }, "Loading…"),
    h("h2", {}, "Schedules"),
    h("div", { id: "schedules" }, "Loading…"),
  );
  const rereadTasks = throttled(tasks);
  const rereadSchedules = throttled(schedules);
  follow(base, {
    resync: () => Promise.all([refreshStats(base), tasks()]),
    counts: (counts) => showCounts(base, counts),
    changes: (changes) => {
      if (markTasks(changes, paging)) rereadTasks();
      if (changes.some((c) => known.ids.some((id) => c.id.startsWith(`${id}@`)))) rereadSchedules();
    },
  });
  poll(() => Promise.all([refreshPipelineState(base), schedules()]), FALLBACK_MS);
  // The chart moves on with time, events or not (a quiet pipeline's rate falls to 0).
  const redraw = setInterval(() => drawChart(base), CHART_SLOT_MS);
  onLeave(() => clearInterval(redraw));
}

function submitForm(base) {
  const data = h("textarea", { name: "data", rows: 2 }, '{"hello": "world"}');
  const copies = h("input", { name: "copies", type: "number", min: 1, max: 50, value: 1 });
  const form = h("form", { class: "inline", "aria-label": "Submit tasks" },
    field("Task data (JSON object)", data), field("Copies", copies),
    h("button", { type: "submit" }, "Submit"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let parsed;
    try {
      parsed = JSON.parse(data.value);
    } catch {
      toast("The task data is not valid JSON");
      return;
    }
    const tasks = Array.from({ length: Number(copies.value) || 1 }, () => ({ data: parsed }));
    await act(api("POST", `${base}/tasks`, { tasks }), (out) => `${out.queued} task(s) submitted`);
  });
  return h("section", { class: "card" }, h("h2", {}, "Submit tasks"), form);
}

function taskTools(app, name, base, filters, readOnly) {
  const search = h("input", { name: "task-id", type: "search" });
  const find = h("form", { class: "inline", role: "search", "aria-label": "Find a task" },
    ...filters, field("Task id", search), h("button", { type: "submit" }, "Open task"));
  find.addEventListener("submit", (event) => {
    event.preventDefault();
    if (search.value.trim()) location.hash = `#/p/${enc(app)}/${enc(name)}/t/${enc(search.value.trim())}`;
  });
  const requeue = h("button", { type: "button", class: "secondary" }, "Requeue all dead tasks");
  requeue.addEventListener("click", () =>
    act(api("POST", `${base}/tasks:requeue`, {}), (out) => `${out.acted} dead task(s) requeued`));
  return h("div", {}, find, readOnly ? null : requeue);
}

async function refreshPipelineState(base) {
  const pipeline = await api("GET", base);
  document.getElementById("pipeline-state")?.replaceChildren(
    "State ", badge(pipeline.state), ` · deployment ${deployment(pipeline)}`,
    pipeline.reason ? ` · ${pipeline.reason}` : "");
}

// Counts as last flushed, before the stream starts (and again after a missed stretch).
async function refreshStats(base) {
  const stats = await api("GET", `${base}/stats`);
  showCounts(base, { ...stats.counts, backlog: stats.backlog });
}

// The counts of /stats, or of an event (there `backlog` is one of them).
function showCounts(base, counts) {
  const cards = [["backlog", counts.backlog ?? counts.queued ?? 0], ...STATUSES.map((s) => [s, counts[s] ?? 0])];
  document.getElementById("stats")?.replaceChildren(
    ...cards.map(([label, value]) => h("div", {}, h("dt", {}, label), h("dd", { "data-count": label }, value))));
  const finished = FINISHED.reduce((sum, s) => sum + (counts[s] ?? 0), 0);
  const now = Date.now();
  const samples = (state.samples.get(base) || []).filter((s) => now - s.t <= CHART_SPAN_MS + CHART_SLOT_MS);
  samples.push({ t: now, finished });
  state.samples.set(base, samples);
  drawChart(base);
}

// Tasks finished per second in each slot of the last minutes, from the counts the page
// has seen: the finished count at a time is the last one seen by then.
function rates(base, now) {
  const samples = state.samples.get(base) || [];
  const at = (t) => samples.findLast((s) => s.t <= t)?.finished;
  const out = [];
  for (let end = now; end - CHART_SLOT_MS >= now - CHART_SPAN_MS; end -= CHART_SLOT_MS) {
    const [before, after] = [at(end - CHART_SLOT_MS), at(end)];
    if (before === undefined) break;
    out.unshift(Math.max(0, (after - before) / (CHART_SLOT_MS / 1000)));
  }
  return out;
}

function drawChart(base) {
  const slots = rates(base, Date.now());
  const latest = slots.length ? slots[slots.length - 1] : 0;
  const top = Math.max(1, ...slots);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 100 40");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `Tasks finished per second over the last minutes; latest ${latest.toFixed(1)}`);
  const axis = document.createElementNS(ns, "line");
  for (const [name, value] of [["x1", 0], ["x2", 100], ["y1", 39.8], ["y2", 39.8]]) axis.setAttribute(name, String(value));
  svg.append(axis);
  // One slot per few seconds over the span, the latest on the right.
  const width = 100 / (CHART_SPAN_MS / CHART_SLOT_MS);
  slots.forEach((rate, i) => {
    const bar = document.createElementNS(ns, "rect");
    const height = (rate / top) * 38;
    bar.setAttribute("x", String(100 - (slots.length - i) * width));
    bar.setAttribute("y", String(40 - height));
    bar.setAttribute("width", String(Math.max(width - 0.3, 0.2)));
    bar.setAttribute("height", String(height));
    svg.append(bar);
  });
  document.getElementById("chart")?.replaceChildren(svg,
    h("p", { class: "muted" }, slots.length
      ? `${latest.toFixed(1)} tasks/s now, at most ${top.toFixed(1)} in the last ${CHART_SPAN_MS / 60000} minutes (since this page opened)`
      : "Measuring: the first figure comes in a few seconds."));
}

// A datetime-local input's value (the browser's time zone) as an instant; null if empty.
function instant(value) {
  return value ? new Date(value).toISOString() : null;
}

async function refreshTasks(app, name, { status, since, until }, paging) {
  const base = pipelinePath(app, name);
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (status) query.set("status", status);
  if (since) query.set("created_after", since);
  if (until) query.set("created_before", until);
  if (paging.cursor) query.set("cursor", paging.cursor);
  const { tasks, next_cursor: next } = await api("GET", `${base}/tasks?${query}`);
  paging.next = next;
  const rows = tasks.map((t) => h("tr", { "data-task": t.id },
    h("td", {}, h("a", { href: `#/p/${enc(app)}/${enc(name)}/t/${enc(t.id)}` }, t.id)),
    h("td", { "data-field": "status" }, badge(t.status)), h("td", { "data-field": "attempt" }, t.attempt),
    h("td", {}, t.worker ?? "—"), h("td", {}, when(t.created_at)), h("td", {}, when(t.finished_at)),
    h("td", { class: "wrap" }, t.error ?? "")));
  document.getElementById("tasks")?.replaceChildren(rows.length
    ? table(["Task", "Status", "Attempt", "Worker", "Created", "Finished", "Error"], rows)
    : h("p", { class: "muted" }, "No tasks" + (status ? ` with status ${status}` : "") +
      (since || until ? " created in that time" : "") + "."),
  pager(paging));
}

// An event's statuses in the rows shown, at once. True when the rows should be read
// again: a shown task changed (its worker, finish time or error come with the row), or a
// task not shown may belong on this page (the last one, not full: a new task).
function markTasks(changes, paging) {
  const rows = new Map([...document.querySelectorAll("#tasks tr[data-task]")].map((row) => [row.dataset.task, row]));
  const room = !paging.next && rows.size < PAGE_SIZE;
  let reread = false;
  for (const change of changes) {
    const row = rows.get(change.id);
    if (row) {
      row.querySelector('[data-field="status"]')?.replaceChildren(badge(change.status));
      if (change.attempt) row.querySelector('[data-field="attempt"]')?.replaceChildren(String(change.attempt));
    }
    reread ||= Boolean(row) || room;
  }
  return reread;
}

function pager(paging) {
  const earlier = h("button", { type: "button", class: "secondary", disabled: !paging.cursors.length }, "Previous tasks");
  earlier.addEventListener("click", () => {
    paging.cursor = paging.cursors.pop() ?? null;
    paging.again();
  });
  const later = h("button", { type: "button", class: "secondary", disabled: !paging.next }, "Next tasks");
  later.addEventListener("click", () => {
    paging.cursors.push(paging.cursor);
    paging.cursor = paging.next;
    paging.again();
  });
  const page = paging.cursors.length + 1;
  return h("nav", { class: "actions", "aria-label": "Pages of tasks" }, earlier, later,
    h("span", { class: "muted" }, `page ${page}, ${PAGE_SIZE} tasks a page, oldest first`));
}

async function refreshSchedules(base, readOnly, known) {
  const { schedules } = await api("GET", `${base}/schedules`);
  known.ids = schedules.map((s) => s.id);
  const again = () => refreshSchedules(base, readOnly, known).catch(report);
  const rows = schedules.map((s) => h("tr", {},
    h("td", {}, s.name), h("td", {}, s.cron ?? `every ${s.every}`),
    h("td", {}, s.paused ? "paused" : "active"),
    h("td", { class: "wrap" }, s.next_fire_times.slice(0, 3).map(when).join(", ") || "—"),
    h("td", { class: "wrap" }, s.last_runs.slice(0, 3).map((r) => `${when(r.fire_at)} ${r.status}`).join(", ") || "—"),
    h("td", {}, readOnly ? "" : scheduleButtons(base, s, again))));
  document.getElementById("schedules")?.replaceChildren(rows.length
    ? table(["Schedule", "When", "State", "Next fire times", "Last runs", "Actions"], rows)
    : h("p", { class: "muted" }, "No schedules."));
}

function scheduleButtons(base, s, again) {
  const path = `${base}/schedules/${enc(s.name)}`;
  const verb = s.paused ? "resume" : "pause";
  const toggle = h("button", { type: "button", class: "secondary", "aria-label": `${s.paused ? "Resume" : "Pause"} ${s.name}` },
    s.paused ? "Resume" : "Pause");
  toggle.addEventListener("click", async () => {
    await act(api("POST", `${path}:${verb}`, {}), () => `Schedule ${s.name}: ${verb}d`);
    again();
  });
  const trigger = h("button", { type: "button", class: "secondary", "aria-label": `Trigger ${s.name} now` }, "Trigger");
  trigger.addEventListener("click", async () => {
    await act(api("POST", `${path}:trigger`, {}), () => `Schedule ${s.name} triggered`);
    again();
  });
  return [toggle, " ", trigger];
}

// -- a task: data, result, attempts, timeline ------------------------------------------

function renderTask(app, name, id) {
  const base = pipelinePath(app, name);
  const path = `${base}/tasks/${enc(id)}`;
  setMain(
    h("p", {}, h("a", { href: `#/p/${enc(app)}/${enc(name)}` }, `← ${app} / ${name}`)),
    h("h1", {}, `Task ${id}`),
    h("div", { id: "task" }, "Loading…"));
  const read = async () => {
    try {
      const task = await api("GET", `${path}?attempts=true`);
      document.getElementById("task")?.replaceChildren(...taskParts(task, path, again));
    } catch (err) {
      if (err.status !== 404) throw err;
      document.getElementById("task")?.replaceChildren(h("p", {}, err.message));
    }
  };
  const again = throttled(read);
  // Everything on this page changes with the task's status, which the events name.
  follow(base, { resync: read, changes: (changes) => changes.some((c) => c.id === id) && again() });
}

function taskParts(task, path, again) {
  const readOnly = state.session.kind === "operator";
  const buttons = [];
  if (!readOnly && !FINISHED.includes(task.status)) {
    const cancel = h("button", { type: "button", class: "secondary" }, "Cancel task");
    cancel.addEventListener("click", () => act(api("DELETE", path), () => "Cancelling the task").then(again));
    buttons.push(cancel);
  }
  if (!readOnly && task.status === "dead") {
    const requeue = h("button", { type: "button" }, "Requeue task");
    requeue.addEventListener("click", () => act(api("POST", `${path}/requeue`, {}), () => "Requeueing the task").then(again));
    buttons.push(requeue);
  }
  const facts = [["Status", badge(task.status)], ["Attempt", task.attempt], ["Worker", task.worker ?? "—"],
    ["Created", when(task.created_at)], ["Due", when(task.due_at)], ["Finished", when(task.finished_at)]];
  const attempts = (task.attempts || []).map((a) => h("tr", {},
    h("td", {}, a.attempt), h("td", {}, a.worker ?? "—"), h("td", {}, when(a.started_at)),
    h("td", {}, when(a.ended_at)), h("td", {}, badge(a.outcome)), h("td", { class: "wrap" }, a.error ?? "")));
  return [
    h("dl", { class: "stats facts" }, facts.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v)))),
    h("div", { class: "actions" }, buttons),
    task.error ? h("section", { class: "card" }, h("h2", {}, "Error"), h("pre", {}, task.error)) : null,
    h("h2", {}, "Data"), h("pre", {}, JSON.stringify(task.data, null, 2)),
    h("h2", {}, "Result"), h("pre", {}, task.result === null ? "—" : JSON.stringify(task.result, null, 2)),
    h("h2", {}, "Attempts"),
    attempts.length ? table(["Attempt", "Worker", "Started", "Ended", "Outcome", "Error"], attempts) : h("p", { class: "muted" }, "No attempt yet."),
    h("h2", {}, "Timeline"), timeline(task),
  ];
}

function timeline(task) {
  const events = [[task.created_at, "created"], [task.due_at, "due"]];
  for (const a of task.attempts || []) {
    events.push([a.started_at, `attempt ${a.attempt} started${a.worker ? ` on ${a.worker}` : ""}`]);
    events.push([a.ended_at, `attempt ${a.attempt} ended: ${a.outcome}`]);
  }
  if (FINISHED.includes(task.status)) events.push([task.finished_at, `finished: ${task.status}`]);
  const known = events.filter(([t]) => t).sort(([a], [b]) => new Date(a) - new Date(b));
  return h("ol", { class: "timeline" }, known.map(([t, what]) => h("li", {}, h("time", { datetime: t }, when(t)), ` ${what}`)));
}

// -- routing -----------------------------------------------------------------------------

function route() {
  leaveView();
  if (!state.session) return renderSignIn();
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "p" && parts.length === 3 && state.session.tenant) return renderPipeline(parts[1], parts[2]);
  if (parts[0] === "p" && parts.length === 5 && parts[3] === "t" && state.session.tenant) return renderTask(parts[1], parts[2], parts[4]);
  return renderHome().catch((err) => toast(err.message));
}

async function start() {
  document.getElementById("sign-out").addEventListener("click", async () => {
    await api("DELETE", "/ui/session").catch(() => null);
    location.hash = "#/";
    signedOut();
  });
  window.addEventListener("hashchange", route);
  try {
    state.session = await api("GET", "/ui/session");
  } catch {
    state.session = null;
  }
  renderHeader();
  route();
}

start();
