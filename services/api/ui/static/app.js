// The dashboard: plain modern JavaScript, no framework and no build step.
// Every element is built with createElement and textContent (never innerHTML), so a
// task's data or error cannot become markup; the CSP forbids inline script anyway.
// The session is an HttpOnly cookie; the CSRF token is kept in memory only.

const POLL_MS = 3000;
const PAGE_SIZE = 50;
const STATUSES = ["scheduled", "queued", "leased", "succeeded", "failed", "dead", "cancelled", "expired"];
const FINISHED = ["succeeded", "failed", "dead", "cancelled", "expired"];
const CHART_SPAN_MS = 5 * 60 * 1000;

const state = { session: null, timer: null, samples: new Map(), view: 0 };

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
  stopPolling();
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

// -- polling ----------------------------------------------------------------------------

function stopPolling() {
  clearInterval(state.timer);
  state.timer = null;
}

// Refresh now and every few seconds until the page changes; a refresh of a page left
// behind is dropped (state.view).
function poll(refresh) {
  stopPolling();
  const view = ++state.view;
  const tick = async () => {
    if (view !== state.view) return;
    try {
      await refresh();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return;
      toast(err.message);
    }
  };
  tick();
  state.timer = setInterval(tick, POLL_MS);
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

async function renderHome() {
  const s = state.session;
  const parts = [];
  if (s.kind === "operator") parts.push(...(await operatorParts()));
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
      renderHome();
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
  const tasks = () => refreshTasks(app, name, filter.value, paging);
  const again = () => tasks().catch((err) => toast(err.message));
  filter.addEventListener("change", () => {
    Object.assign(paging, { cursors: [], cursor: null, next: null });
    again();
  });
  paging.again = again;
  setMain(
    h("p", {}, h("a", { href: "#/" }, "← Applications")),
    h("h1", {}, `${app} / ${name}`),
    h("div", { id: "pipeline-state", class: "muted" }),
    h("dl", { id: "stats", class: "stats" }),
    h("h2", {}, "Throughput"),
    h("div", { id: "chart" }),
    readOnly ? null : submitForm(base),
    h("h2", {}, "Tasks"),
    taskTools(app, name, base, filter, readOnly),
    h("div", { id: "tasks" }, "Loading…"),
    h("h2", {}, "Schedules"),
    h("div", { id: "schedules" }, "Loading…"),
  );
  poll(async () => {
    await Promise.all([refreshStats(base), tasks(), refreshSchedules(base, readOnly)]);
  });
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

function taskTools(app, name, base, filter, readOnly) {
  const search = h("input", { name: "task-id", type: "search" });
  const find = h("form", { class: "inline", role: "search", "aria-label": "Find a task" },
    field("Status", filter), field("Task id", search), h("button", { type: "submit" }, "Open task"));
  find.addEventListener("submit", (event) => {
    event.preventDefault();
    if (search.value.trim()) location.hash = `#/p/${enc(app)}/${enc(name)}/t/${enc(search.value.trim())}`;
  });
  const requeue = h("button", { type: "button", class: "secondary" }, "Requeue all dead tasks");
  requeue.addEventListener("click", () =>
    act(api("POST", `${base}/tasks:requeue`, {}), (out) => `${out.acted} dead task(s) requeued`));
  return h("div", {}, find, readOnly ? null : requeue);
}

async function refreshStats(base) {
  const [pipeline, stats] = await Promise.all([api("GET", base), api("GET", `${base}/stats`)]);
  document.getElementById("pipeline-state")?.replaceChildren(
    "State ", badge(pipeline.state), ` · deployment ${deployment(pipeline)}`,
    pipeline.reason ? ` · ${pipeline.reason}` : "");
  const cards = [["backlog", stats.backlog], ...STATUSES.map((s) => [s, stats.counts[s] ?? 0])];
  document.getElementById("stats")?.replaceChildren(
    ...cards.map(([label, value]) => h("div", {}, h("dt", {}, label), h("dd", { "data-count": label }, value))));
  const finished = FINISHED.reduce((sum, s) => sum + (stats.counts[s] ?? 0), 0);
  drawChart(base, finished);
}

// Throughput as the page saw it: tasks finished between two polls, per second.
function drawChart(base, finished) {
  const now = Date.now();
  const samples = (state.samples.get(base) || []).filter((s) => now - s.t <= CHART_SPAN_MS);
  samples.push({ t: now, finished });
  state.samples.set(base, samples);
  const rates = samples.slice(1).map((s, i) => Math.max(0, (s.finished - samples[i].finished) / ((s.t - samples[i].t) / 1000)));
  const latest = rates.length ? rates[rates.length - 1] : 0;
  const top = Math.max(1, ...rates);
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
  // One slot per poll over the span, the latest on the right.
  const width = 100 / (CHART_SPAN_MS / POLL_MS);
  rates.forEach((rate, i) => {
    const bar = document.createElementNS(ns, "rect");
    const height = (rate / top) * 38;
    bar.setAttribute("x", String(100 - (rates.length - i) * width));
    bar.setAttribute("y", String(40 - height));
    bar.setAttribute("width", String(Math.max(width - 0.3, 0.2)));
    bar.setAttribute("height", String(height));
    svg.append(bar);
  });
  document.getElementById("chart")?.replaceChildren(svg,
    h("p", { class: "muted" }, rates.length
      ? `${latest.toFixed(1)} tasks/s now, at most ${top.toFixed(1)} in the last ${CHART_SPAN_MS / 60000} minutes (since this page opened)`
      : "Measuring: the first figure comes with the next refresh."));
}

async function refreshTasks(app, name, status, paging) {
  const base = pipelinePath(app, name);
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (status) query.set("status", status);
  if (paging.cursor) query.set("cursor", paging.cursor);
  const { tasks, next_cursor: next } = await api("GET", `${base}/tasks?${query}`);
  paging.next = next;
  const rows = tasks.map((t) => h("tr", {},
    h("td", {}, h("a", { href: `#/p/${enc(app)}/${enc(name)}/t/${enc(t.id)}` }, t.id)),
    h("td", {}, badge(t.status)), h("td", {}, t.attempt), h("td", {}, t.worker ?? "—"),
    h("td", {}, when(t.created_at)), h("td", {}, when(t.finished_at)),
    h("td", { class: "wrap" }, t.error ?? "")));
  document.getElementById("tasks")?.replaceChildren(rows.length
    ? table(["Task", "Status", "Attempt", "Worker", "Created", "Finished", "Error"], rows)
    : h("p", { class: "muted" }, "No tasks" + (status ? ` with status ${status}` : "") + "."),
  pager(paging));
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

async function refreshSchedules(base, readOnly) {
  const { schedules } = await api("GET", `${base}/schedules`);
  const rows = schedules.map((s) => h("tr", {},
    h("td", {}, s.name), h("td", {}, s.cron ?? `every ${s.every}`),
    h("td", {}, s.paused ? "paused" : "active"),
    h("td", { class: "wrap" }, s.next_fire_times.slice(0, 3).map(when).join(", ") || "—"),
    h("td", { class: "wrap" }, s.last_runs.slice(0, 3).map((r) => `${when(r.fire_at)} ${r.status}`).join(", ") || "—"),
    h("td", {}, readOnly ? "" : scheduleButtons(base, s))));
  document.getElementById("schedules")?.replaceChildren(rows.length
    ? table(["Schedule", "When", "State", "Next fire times", "Last runs", "Actions"], rows)
    : h("p", { class: "muted" }, "No schedules."));
}

function scheduleButtons(base, s) {
  const path = `${base}/schedules/${enc(s.name)}`;
  const verb = s.paused ? "resume" : "pause";
  const toggle = h("button", { type: "button", class: "secondary", "aria-label": `${s.paused ? "Resume" : "Pause"} ${s.name}` },
    s.paused ? "Resume" : "Pause");
  toggle.addEventListener("click", () => act(api("POST", `${path}:${verb}`, {}), () => `Schedule ${s.name}: ${verb}d`));
  const trigger = h("button", { type: "button", class: "secondary", "aria-label": `Trigger ${s.name} now` }, "Trigger");
  trigger.addEventListener("click", () => act(api("POST", `${path}:trigger`, {}), () => `Schedule ${s.name} triggered`));
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
  poll(async () => {
    try {
      const task = await api("GET", `${path}?attempts=true`);
      document.getElementById("task")?.replaceChildren(...taskParts(task, path));
    } catch (err) {
      if (err.status !== 404) throw err;
      document.getElementById("task")?.replaceChildren(h("p", {}, err.message));
    }
  });
}

function taskParts(task, path) {
  const readOnly = state.session.kind === "operator";
  const buttons = [];
  if (!readOnly && !FINISHED.includes(task.status)) {
    const cancel = h("button", { type: "button", class: "secondary" }, "Cancel task");
    cancel.addEventListener("click", () => act(api("DELETE", path), () => "Cancelling the task"));
    buttons.push(cancel);
  }
  if (!readOnly && task.status === "dead") {
    const requeue = h("button", { type: "button" }, "Requeue task");
    requeue.addEventListener("click", () => act(api("POST", `${path}/requeue`, {}), () => "Requeueing the task"));
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
  stopPolling();
  state.view++;
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
