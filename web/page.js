// The demo page: boot the worker (with per-phase timings), trigger jobs, show runs, steps,
// logs and live events. No framework. Every piece of data (inputs, outputs, logs, errors,
// event fields) is rendered with textContent, never as HTML: job data is data.

import { connect, formatBytes } from "./client.js";

// Python comes from the memory snapshot (phase "snapshot") or, without a usable one, from
// Pyodide's files (phase "pyodide"): one step of the count either way.
const PHASES = ["lock", "sqlite", "pool", "open", "python", "install", "import"];
const MAX_EVENTS = 200;
const MAX_RUNS = 50;
// The run panel shows a run's last MAX_LOGS log lines: a run may log thousands, and the
// panel is redrawn on each of its events.
const MAX_LOGS = 200;
// Example inputs for the demo jobs (web/demo_jobs.py); any other job starts from {}.
const EXAMPLES = {
  crunch: { n: 5_000_000, chunks: 25 },
  "import-csv": {
    csv: [
      "name,email,age",
      "Ada Lovelace,ada@example.com,36",
      "Alan Turing,alan@example.org,41",
      "Nobody,not-an-email,30",
      "Grace Hopper,grace@example.com,85",
      ",empty@example.com,20",
      "Edsger Dijkstra,edsger@example.nl,72",
      "Too Old,old@example.com,200",
    ].join("\n"),
    batch_size: 3,
  },
  slow: { steps: 5, seconds: 2 },
  flaky: { steps: 3, fail_at: 2, chance: 0.5, message: "the payment service timed out" },
  approval: { amount: 120, pause: 3, timeout: 600, chance: 0.5 },
};

const $ = (id) => document.getElementById(id);
const statusLine = $("status");
const phaseList = $("phases");
const bootError = $("error");
const started = performance.now();

let durably = null;
let selectedRun = null; // id of the run shown in the detail panel
const liveProgress = new Map(); // run id -> progress from events, ahead of the database
const runningStep = new Map(); // run id -> {step_name, step_index, since} from step:start

// -- small helpers --------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function json(value, indent = 2) {
  return value === undefined ? "" : JSON.stringify(value, null, indent);
}

function clock(iso, millis = true) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const time = d.toLocaleTimeString([], { hour12: false });
  return millis ? `${time}.${String(d.getMilliseconds()).padStart(3, "0")}` : time;
}

function between(from, to) {
  if (!from || !to) return "";
  const ms = new Date(to) - new Date(from);
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function statusBadge(status, extra = {}) {
  return el("span", { class: "status", text: status, dataset: { status, ...extra } });
}

// Coalesce bursts of events into one refresh, at most one in flight at a time.
function throttled(fn, wait = 120) {
  let timer = null;
  let running = null;
  let again = false;
  const fire = async () => {
    timer = null;
    if (running) {
      again = true;
      return;
    }
    running = fn().catch(showError);
    await running;
    running = null;
    if (again) {
      again = false;
      schedule();
    }
  };
  const schedule = () => {
    if (!timer) timer = setTimeout(fire, wait);
  };
  schedule.now = () => {
    clearTimeout(timer);
    return fire();
  };
  return schedule;
}

// -- boot -----------------------------------------------------------------------------------

// What the snapshot phase said, for the ready line: restored, or why not.
let snapshotNote = "";

function phaseRow(phase) {
  let li = phaseList.querySelector(`[data-phase="${CSS.escape(phase)}"]`);
  if (!li) {
    li = el("li", { dataset: { phase } });
    phaseList.append(li);
  }
  return li;
}

// Which role this tab has: the leader runs the jobs; a follower forwards its calls to it.
function showRole(role, standby) {
  const line = $("role");
  line.hidden = false;
  line.dataset.role = role;
  line.textContent =
    role === "leader"
      ? "This tab runs the jobs (leader). Other tabs of this site use it."
      : `Jobs run in another tab of this site (this tab follows it)${standby ? "; this tab is ready to take over if it closes" : "; this tab takes over if it closes"}.`;
}

function showStorage(msg) {
  const line = $("storage");
  line.hidden = false;
  line.textContent = `Storage: ${formatBytes(msg.usage)} used of ${formatBytes(msg.quota)}${msg.persisted ? " (persistent)" : ""}.`;
  line.dataset.persisted = String(msg.persisted);
  showNotice("storage", msg.warning);
}

// One notice line for warnings; each source clears only its own.
function showNotice(source, text) {
  const notice = $("notice");
  if (text) {
    notice.hidden = false;
    notice.dataset.source = source;
    notice.textContent = text;
  } else if (notice.dataset.source === source) {
    notice.hidden = true;
    notice.textContent = "";
  }
}

function onStatus(msg) {
  if (msg.type === "role") {
    showRole(msg.role, msg.standby);
    // A follower took over: the runs table comes from this tab's worker now.
    if (durably) refreshRuns();
    return;
  }
  if (msg.type === "storage") {
    showStorage(msg);
    return;
  }
  if (msg.type === "status") {
    showNotice("status", msg.message);
    return;
  }
  if (msg.type === "boot") {
    const li = phaseRow(msg.phase);
    li.dataset.state = msg.state;
    if (msg.state === "start") li.textContent = `${msg.phase}: ...`;
    else if (msg.state === "done") li.textContent = `${msg.phase}: ${msg.ms} ms`;
    else if (msg.state === "waiting") li.textContent = `${msg.phase}: waiting`;
    else if (msg.state === "fallback") li.textContent = `${msg.phase}: not used (${msg.ms} ms)`;
    if (msg.detail) li.title = msg.detail;
    if (msg.phase === "snapshot" && msg.state !== "start") snapshotNote = msg.state === "done" ? "Python from its memory snapshot" : msg.detail;
    statusLine.dataset.state = msg.state === "waiting" ? "waiting" : "booting";
    const n = PHASES.indexOf(["snapshot", "pyodide"].includes(msg.phase) ? "python" : msg.phase) + 1;
    statusLine.textContent = msg.detail || `Starting: ${msg.phase}${n ? ` (${n}/${PHASES.length})` : ""}...`;
  } else if (msg.type === "ready") {
    statusLine.textContent = "Started; loading the jobs...";
  } else if (msg.type === "crashed") {
    statusLine.dataset.state = "error";
    statusLine.textContent = `The worker stopped: ${msg.message}`;
  } else if (msg.type === "offline" || msg.type === "update") {
    showOfflineStatus(msg);
  }
}

// -- offline and updates (the service worker; web/offline.js) ------------------------------

let applyUpdate = null; // from the "update ready" message: works before the client is ready

function showOfflineStatus(msg) {
  const note = $("offline");
  const banner = $("update");
  if (msg.type === "offline") {
    note.dataset.state = msg.state;
    note.textContent =
      msg.state === "ready"
        ? "Works offline: this site's files are saved in your browser."
        : msg.state === "installing"
          ? "Saving this site's files for offline use..."
          : `Online only: ${msg.message}`;
  } else if (msg.state === "ready") {
    applyUpdate = msg.applyUpdate;
    banner.dataset.state = "ready";
    $("update-text").textContent =
      "A new version of this site is ready. It starts at the next load when this is the only tab of the site open, or now:";
    $("update-btn").hidden = false;
    banner.hidden = false;
  } else if (msg.state === "failed") {
    banner.dataset.state = "failed";
    $("update-text").textContent = `A new version could not be saved (${msg.message}); this one keeps running.`;
    $("update-btn").hidden = true;
    banner.hidden = false;
  } else if (msg.state === "activating") {
    banner.hidden = true;
    statusLine.dataset.state = "booting";
    statusLine.textContent = "Switching to the new version of this site...";
  }
}

async function onApplyUpdate() {
  $("update-btn").disabled = true;
  const switching = await act(() => applyUpdate());
  if (!switching) $("update-btn").disabled = false;
}

function showBootError(err) {
  statusLine.dataset.state = "error";
  statusLine.textContent = err.phase ? `Could not start (${err.phase}): ${err.message}` : `Could not start: ${err.name}: ${err.message}`;
  const detail = err.detail || err.traceback || "";
  bootError.hidden = !detail;
  bootError.textContent = detail;
}

// -- errors from API calls ------------------------------------------------------------------

function showError(err) {
  const name = err?.name || "Error";
  $("api-error-text").textContent = `${name}: ${err?.message ?? err}`;
  $("api-error").dataset.name = name;
  $("api-error").hidden = false;
  if (name === "WorkerCrashedError") {
    statusLine.dataset.state = "error";
    statusLine.textContent = `The worker stopped: ${err.message}`;
  }
}

function clearError() {
  $("api-error").hidden = true;
  $("api-error-text").textContent = "";
  delete $("api-error").dataset.name;
}

// Run an API call on behalf of a user action: errors go to the error area.
async function act(fn) {
  clearError();
  try {
    return await fn();
  } catch (err) {
    showError(err);
    return undefined;
  }
}

// -- trigger form ---------------------------------------------------------------------------

let jobDocs = {};

function fillExample() {
  const job = $("job-select").value;
  $("job-input").value = json(EXAMPLES[job] ?? {});
  $("job-doc").textContent = jobDocs[job] ?? "";
}

async function loadJobs() {
  const jobs = await durably.jobs();
  jobDocs = Object.fromEntries(jobs.map((j) => [j.name, (j.doc || "").split("\n")[0]]));
  // The demo's own order: the example jobs first, in the order a visitor tries them.
  const order = Object.keys(EXAMPLES);
  const rank = (name) => (order.includes(name) ? order.indexOf(name) : order.length);
  jobs.sort((a, b) => rank(a.name) - rank(b.name) || a.name.localeCompare(b.name));
  $("job-select").replaceChildren(...jobs.map((j) => el("option", { value: j.name, text: j.name })));
  fillExample();
}

async function onTrigger(event) {
  event.preventDefault();
  const job = $("job-select").value;
  const text = $("job-input").value;
  let input;
  clearError();
  try {
    input = text.trim() === "" ? null : JSON.parse(text);
  } catch (err) {
    showError({ name: "SyntaxError", message: `the input is not valid JSON: ${err.message}` });
    return;
  }
  const button = $("trigger-btn");
  button.disabled = true;
  try {
    const run = await act(() => durably.trigger(job, input));
    if (run) {
      selectedRun = run.id;
      await refreshRuns.now();
      await refreshDetail.now();
    }
  } finally {
    button.disabled = false;
  }
}

async function onExport() {
  const bytes = await act(() => durably.exportDatabase());
  if (bytes) download(bytes);
}

// The unfinished runs go to the file: here they are cancelled as "moved" (docs/site.md).
async function onMove() {
  const confirmed = window.confirm(
    "Download the database and stop its unfinished runs in this browser? They go on wherever the file is opened (durably worker); here they show as cancelled, moved.",
  );
  if (!confirmed) return;
  const moved = await act(() => durably.exportDatabase({ move: true }));
  if (!moved) return;
  download(moved.bytes);
  await refreshRuns.now();
}

async function onImportFile() {
  const input = $("import-file");
  const file = input.files?.[0];
  input.value = "";
  if (!file) return;
  const bytes = new Uint8Array(await file.arrayBuffer());
  let result = await act(() => durably.importDatabase(bytes));
  if (result === undefined && $("api-error").dataset.name === "ConflictError") {
    const replace = window.confirm(`${$("api-error-text").textContent}\n\nReplace the database anyway?`);
    if (replace) result = await act(() => durably.importDatabase(bytes, { replace: true }));
  }
  if (!result) return;
  selectedRun = null;
  await refreshRuns.now();
}

function download(bytes) {
  const url = URL.createObjectURL(new Blob([bytes], { type: "application/vnd.sqlite3" }));
  const link = el("a", { href: url, download: "durably.db" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// -- runs table -----------------------------------------------------------------------------

function progressOf(run) {
  const stored = run.progress;
  const live = run.status === "leased" || run.status === "pending" ? liveProgress.get(run.id) : null;
  if (live && (!stored || live.current >= stored.current)) return live;
  return stored;
}

function progressCell(run) {
  const p = progressOf(run);
  const bar = el("progress", { dataset: { testid: "progress" } });
  const label = el("span");
  if (p?.total) {
    bar.setAttribute("max", String(p.total));
    bar.setAttribute("value", String(Math.min(p.current, p.total)));
    label.textContent = `${p.current}/${p.total}`;
  } else if (p) {
    label.textContent = String(p.current);
  } else if (run.status === "completed") {
    bar.setAttribute("max", "1");
    bar.setAttribute("value", "1");
  } else if (run.status !== "leased") {
    bar.setAttribute("max", "1");
    bar.setAttribute("value", "0");
  }
  // An indeterminate bar (no value) while a run without reported progress is running.
  if (p?.message) bar.title = p.message;
  return el("td", {}, el("div", { class: "progress-cell" }, bar, label));
}

function runRow(run) {
  const finished = ["completed", "failed", "cancelled"].includes(run.status);
  const tr = el("tr", { dataset: { runId: run.id, status: run.status, job: run.job_name }, "aria-selected": String(run.id === selectedRun) });
  const button = (action, label, enabled) =>
    el("button", { type: "button", text: label, disabled: !enabled, dataset: { action, testid: `${action}-btn` } });
  tr.append(
    el("td", {}, statusBadge(run.status, { testid: "run-row-status" })),
    progressCell(run),
    el("td", { text: run.job_name, title: `run ${run.id}` }),
    el("td", { text: clock(run.created_at, false), title: run.created_at }),
    el(
      "td",
      { class: "actions" },
      button("cancel", "Cancel", !finished),
      " ",
      button("retrigger", "Retrigger", finished),
      " ",
      button("delete", "Delete", finished),
    ),
  );
  return tr;
}

const refreshRuns = throttled(async () => {
  const runs = await durably.getRuns({ limit: MAX_RUNS });
  $("runs").tBodies[0].replaceChildren(...runs.map(runRow));
  $("runs-empty").hidden = runs.length > 0;
  $("runs-count").textContent = runs.length ? `(${runs.length}${runs.length === MAX_RUNS ? ", newest" : ""})` : "";
});

async function onRunsClick(event) {
  const tr = event.target.closest("tr[data-run-id]");
  if (!tr) return;
  const id = tr.dataset.runId;
  const action = event.target.closest("button[data-action]")?.dataset.action;
  if (action === "cancel") await act(() => durably.cancel(id));
  else if (action === "retrigger") {
    const run = await act(() => durably.retrigger(id));
    if (run) selectedRun = run.id;
  } else if (action === "delete") {
    const done = await act(async () => {
      await durably.deleteRun(id);
      return true;
    });
    if (done && selectedRun === id) selectedRun = null;
  } else selectedRun = id;
  await refreshRuns.now();
  await refreshDetail.now();
}

// -- run detail -----------------------------------------------------------------------------

function outputCell(value) {
  return el("td", { class: "out" }, value === null || value === undefined ? "" : el("pre", { text: json(value, 0) }));
}

const refreshDetail = throttled(async () => {
  const id = selectedRun;
  if (!id) {
    $("detail-body").hidden = true;
    $("detail-empty").hidden = false;
    return;
  }
  const [run, steps, { logs, more }] = await Promise.all([durably.getRun(id), durably.getSteps(id), lastLogs(id)]);
  if (id !== selectedRun) return; // another run was selected meanwhile
  if (!run) {
    selectedRun = null;
    $("detail-body").hidden = true;
    $("detail-empty").hidden = false;
    return;
  }
  $("detail-empty").hidden = true;
  $("detail-body").hidden = false;
  $("run-detail").dataset.runId = run.id;
  $("run-id").textContent = run.id;
  $("run-job").textContent = run.job_name;
  $("run-status").textContent = run.status;
  $("run-status").dataset.status = run.status;
  const p = progressOf(run);
  $("run-progress").textContent = p ? `${p.current}${p.total ? `/${p.total}` : ""}${p.message ? ` - ${p.message}` : ""}` : "";
  $("run-created").textContent = run.created_at ?? "";
  $("run-duration").textContent = between(run.started_at, run.completed_at);
  $("run-retrigger-of").textContent = run.retrigger_of ?? "";
  $("run-retrigger-of").hidden = $("run-retrigger-of-label").hidden = !run.retrigger_of;
  $("run-input").textContent = json(run.input);
  $("run-output-box").hidden = run.output === null || run.output === undefined;
  $("run-output").textContent = json(run.output);
  $("run-error-box").hidden = !run.error;
  $("run-error").textContent = run.error ?? "";
  $("run-failed-step").textContent = run.failed_step ? `(at step ${run.failed_step})` : "";
  showWait(run);

  const rows = steps.map((s) =>
    el(
      "tr",
      { dataset: { step: s.name, status: s.status } },
      el("td", { text: String(s.index) }),
      el("td", { class: "mono", text: s.name }, attemptsNote(s.attempts)),
      el("td", {}, statusBadge(s.status)),
      s.error ? el("td", { class: "out" }, el("pre", { text: s.error })) : outputCell(s.output),
      s.status === "waiting"
        ? el("td", { class: "muted", text: s.wake_at ? `until ${clock(s.wake_at)}` : "until a signal", title: s.wake_at ?? "" })
        : el("td", { text: between(s.started_at, s.completed_at), title: s.completed_at ?? "" }),
    ),
  );
  const current = runningStep.get(id);
  if (current && run.status === "leased" && !steps.some((s) => s.name === current.step_name)) {
    rows.push(
      el(
        "tr",
        { dataset: { step: current.step_name, status: "running" } },
        el("td", { text: String(current.step_index) }),
        el("td", { class: "mono", text: current.step_name }),
        el("td", {}, statusBadge("running")),
        el("td"),
        el("td", { class: "muted", text: `since ${clock(current.since)}` }),
      ),
    );
  }
  $("steps").tBodies[0].replaceChildren(...rows);

  $("logs-note").hidden = !more;
  $("logs-note").textContent = more ? `Only the last ${MAX_LOGS} lines are shown; earlier lines are left out.` : "";
  $("logs").tBodies[0].replaceChildren(
    ...logs.map((log) =>
      el(
        "tr",
        { dataset: { level: log.level } },
        el("td", { class: "muted", text: clock(log.created_at), title: log.created_at }),
        el("td", { class: `level-${log.level}`, text: log.level }),
        el("td", { class: "mono", text: log.step_name ?? "" }),
        el("td", { text: log.message }),
        outputCell(log.data),
      ),
    ),
  );
});

// A waiting run: what it waits for, until when; for a signal, a form to send it.
function showWait(run) {
  const waiting = run.status === "waiting";
  const until = run.wake_at ? ` until ${clock(run.wake_at)}` : "";
  const what = { retry: `a retry of ${run.wait_step ?? "the job"}`, sleep: `the end of ${run.wait_step}`, signal: `the signal ${run.wait_step}` };
  const attempt = run.attempt > 1 ? ` (run attempt ${run.attempt})` : "";
  $("run-wait").textContent = waiting ? `${what[run.waiting_for] ?? run.waiting_for}${until}${attempt}` : "";
  $("run-wait").title = run.wake_at ?? "";
  $("run-wait").hidden = $("run-wait-label").hidden = !waiting;
  $("signal-form").hidden = !(waiting && run.waiting_for === "signal");
  $("signal-form").dataset.runId = run.id;
  $("signal-name").textContent = run.wait_step ?? "";
}

async function onSignal(event) {
  event.preventDefault();
  const form = $("signal-form");
  const text = $("signal-payload").value.trim();
  let payload;
  clearError();
  try {
    payload = text ? JSON.parse(text) : null;
  } catch (err) {
    showError({ name: "SyntaxError", message: `the payload is not valid JSON: ${err.message}` });
    return;
  }
  await act(() => durably.signal(form.dataset.runId, $("signal-name").textContent, payload));
  await refreshDetail.now();
}

// A step's failed attempts, in a note beside its name; their errors in its title.
function attemptsNote(attempts) {
  if (!attempts?.length) return null;
  const n = attempts.length;
  return el("span", {
    class: "muted",
    text: ` (${n} failed attempt${n > 1 ? "s" : ""})`,
    title: attempts.map((a) => `attempt ${a.attempt}: ${a.error}`).join("\n"),
    dataset: { testid: "step-attempts" },
  });
}

// The run's last MAX_LOGS log lines, and whether it has more.
async function lastLogs(id) {
  const logs = await durably.getLogs(id, { last: MAX_LOGS + 1 });
  const more = logs.length > MAX_LOGS;
  return { logs: more ? logs.slice(-MAX_LOGS) : logs, more };
}

// -- events ---------------------------------------------------------------------------------

const COMMON = new Set(["type", "timestamp", "sequence", "run_id", "job_name", "labels"]);

function eventLine(ev) {
  const fields = Object.fromEntries(
    Object.entries(ev)
      .filter(([k]) => !COMMON.has(k))
      .map(([k, v]) => [k, k === "duration" && typeof v === "number" ? Number(v.toFixed(3)) : v]),
  );
  let rest = Object.keys(fields).length ? JSON.stringify(fields) : "";
  if (rest.length > 300) rest = `${rest.slice(0, 300)}...`;
  return el(
    "li",
    { dataset: { type: ev.type, runId: ev.run_id ?? "", sequence: String(ev.sequence) } },
    el("span", { class: "muted", text: `${clock(ev.timestamp)} ` }),
    el("span", { class: "etype", text: ev.type }),
    el("span", { text: ` ${ev.job_name ?? ""} ${ev.run_id ? ev.run_id.slice(-8) : ""} ${rest}` }),
  );
}

function onEvent(ev) {
  const list = $("events");
  list.prepend(eventLine(ev));
  while (list.childElementCount > MAX_EVENTS) list.lastElementChild.remove();

  const id = ev.run_id;
  if (ev.type === "run:progress") {
    liveProgress.set(id, ev.progress);
    // Move the bar at once; the table refresh below catches up with the database.
    const row = $("runs").querySelector(`tr[data-run-id="${CSS.escape(id)}"]`);
    if (row) row.children[1].replaceWith(progressCell({ id, status: row.dataset.status, progress: null }));
  } else if (ev.type === "step:start") {
    runningStep.set(id, { step_name: ev.step_name, step_index: ev.step_index, since: ev.timestamp });
  } else if (ev.type.startsWith("step:")) {
    runningStep.delete(id);
  } else if (["run:complete", "run:fail", "run:cancel", "run:delete", "run:wait"].includes(ev.type)) {
    runningStep.delete(id);
    liveProgress.delete(id);
  }
  if (ev.type.startsWith("run:") && ev.type !== "run:lease-renewed") refreshRuns();
  if (id && id === selectedRun) refreshDetail();
}

// -- start ----------------------------------------------------------------------------------

async function main() {
  $("api-error-close").addEventListener("click", clearError);
  $("signal-form").addEventListener("submit", onSignal);
  $("update-btn").addEventListener("click", onApplyUpdate);
  try {
    // Every job module of the site (manifest.json), with the site's options: the page of any
    // site built with page = "demo", not only this repository's.
    durably = await connect({ debug: false, onStatus });
  } catch (err) {
    showBootError(err);
    return;
  }
  // The browser tests (and curious visitors in the console) use the same client as the page.
  window.durably = durably;
  addEventListener("pagehide", () => durably.close());
  durably.on("*", onEvent);
  try {
    await loadJobs();
    await refreshRuns.now();
  } catch (err) {
    showBootError(err);
    return;
  }
  $("job-select").addEventListener("change", fillExample);
  $("example-btn").addEventListener("click", fillExample);
  $("trigger-form").addEventListener("submit", onTrigger);
  $("export-btn").addEventListener("click", onExport);
  $("move-btn").addEventListener("click", onMove);
  $("import-btn").addEventListener("click", () => $("import-file").click());
  $("import-file").addEventListener("change", onImportFile);
  $("runs").addEventListener("click", onRunsClick);
  $("app").hidden = false;

  const timings = durably.timings || {};
  const total = Object.values(timings).reduce((a, b) => a + b, 0);
  statusLine.dataset.state = "ready";
  statusLine.textContent =
    `Ready in ${Math.round(performance.now() - started)} ms (worker boot ${total} ms` + (snapshotNote ? `; ${snapshotNote}` : "") + ").";
  showRole(durably.role, durably.standby);
}

main();
