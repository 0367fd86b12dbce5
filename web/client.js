// The page-side client of the durably worker: postMessage turned into promises and events.
//
//   import { connect } from "./client.js";
//   const durably = await connect({ jobs: ["demo_jobs"], onStatus: (msg) => ... });
//   const run = await durably.trigger("crunch", { n: 10 });
//   const off = durably.on("run:progress", (event) => ...);
//   const done = await durably.waitForRun(run.id, { timeout: 60 });
//
// Records are plain objects, exactly Python's Run.to_dict() / StepRecord.to_dict() /
// Event.to_dict() (snake_case keys, ISO-8601 timestamps). Errors from Python are Errors whose
// name is the Python class name (ValidationError, NotFoundError, ...), with its fields.
// Durations (timeout, olderThan, the options) are in seconds, as in Python.
// docs/protocol.md describes the messages underneath.
//
// connect() also registers the site's service worker (sw.js, next to this module), so the
// site works offline after the first visit, and reports new versions to onStatus; the
// client's applyUpdate() switches to one (web/offline.js).

import { BootError, DurablyError, WorkerCrashedError } from "./errors.js";
import { watchServiceWorker } from "./offline.js";
import { PROTOCOL_VERSION } from "./wire.js";

export { BootError, DurablyError, PROTOCOL_VERSION, WorkerCrashedError };

const STORAGE_WARN_RATIO = 0.8;
const STORAGE_CHECK_MS = 30_000;

/** A byte count for people: "12.3 MB" (the demo page's storage line uses it too). */
export function formatBytes(n) {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

/**
 * Start the durably worker and resolve once it is ready.
 *
 * @param {object} [options]
 * @param {string[]|string} [options.jobs] job modules to import (from the site's manifest.json;
 *   default: every one it lists)
 * @param {object} [options.options] Durably options (over the site's defaults, [tool.durably.site]
 *   options): pollingInterval, leaseDuration,
 *   leaseRenewInterval (seconds), maxConcurrentRuns, preserveSteps, retainRuns (an age as
 *   text: "30d", "12h", "15m")
 * @param {boolean} [options.debug] enable evalPython and sql (tests and development)
 * @param {(msg: object) => void} [options.onStatus] every boot message, ready, role changes
 *   ({type: "role", role, ...}), storage reports ({type: "storage", usage, quota, persisted,
 *   warning}), warnings ({type: "status", level, message}), crashes, and the service
 *   worker's offline and update messages
 * @param {(err: Error) => void} [options.onCrash] the worker crashed after it was ready
 * @param {boolean} [options.persistStorage] ask the browser to keep the site's storage
 *   (navigator.storage.persist()) when the page first triggers a job (default true)
 * @param {URL|string} [options.workerURL] where worker.js is (default: next to this module)
 * @param {boolean} [options.offline] register the site's service worker (default true):
 *   offline after the first visit, updates reported and applied safely
 * @param {URL|string} [options.serviceWorkerURL] where sw.js is (default: next to this module)
 * @returns {Promise<object>} the client; rejects with a BootError
 */
export async function connect(settings = {}) {
  const { offline = true, serviceWorkerURL = new URL("./sw.js", import.meta.url), onStatus = () => {} } = settings;
  if (!offline) return startWorker(settings).connected;
  let client = null;
  const sw = watchServiceWorker({
    url: serviceWorkerURL,
    status: (msg) => reportStatus(onStatus, msg),
    close: () => client?.close() ?? Promise.resolve(),
  });
  // A new version waits and this is the only tab: switch before starting anything.
  if (await sw.atLoad()) return new Promise(() => {}); // the page reloads
  const started = startWorker(settings);
  client = started.client;
  client.applyUpdate = sw.applyUpdate;
  client.checkForUpdate = sw.checkForUpdate;
  sw.register(started.connected);
  return started.connected;
}

function reportStatus(onStatus, msg) {
  try {
    onStatus(msg);
  } catch (err) {
    console.error("[durably] onStatus threw:", err);
  }
}

// The worker and its client; `connected` resolves with the client once the worker is ready.
function startWorker({
  jobs,
  options = {},
  debug = false,
  onStatus = () => {},
  onCrash = () => {},
  persistStorage = true,
  workerURL = new URL("./worker.js", import.meta.url),
} = {}) {
  const worker = new Worker(workerURL, { type: "module" });
  const pending = new Map();
  const listeners = new Map(); // event type or "*" -> Set of callbacks
  let nextId = 1;
  let failure = null; // once set, every call rejects with it
  let ready = false;
  let resolveConnect;
  let rejectConnect;
  const connected = new Promise((resolve, reject) => {
    resolveConnect = resolve;
    rejectConnect = reject;
  });

  const status = (msg) => reportStatus(onStatus, msg);

  function fail(err) {
    if (failure) return;
    failure = err;
    for (const { reject } of pending.values()) reject(err);
    pending.clear();
    if (!ready) rejectConnect(err);
  }

  function crash(message) {
    if (failure) return;
    const err = new WorkerCrashedError(message);
    fail(err);
    clearInterval(storageTimer);
    worker.terminate();
    status({ type: "crashed", message: err.message });
    try {
      onCrash(err);
    } catch (e) {
      console.error("[durably] onCrash threw:", e);
    }
  }

  function dispatch(event) {
    for (const key of [event.type, "*"]) {
      for (const cb of listeners.get(key) ?? []) {
        try {
          cb(event);
        } catch (err) {
          console.error(`[durably] a listener of ${key} threw:`, err);
        }
      }
    }
  }

  worker.onmessage = ({ data: msg }) => {
    switch (msg?.type) {
      case "boot":
        status(msg);
        break;
      case "ready":
        ready = true;
        client.timings = msg.timings;
        client.reclaimed = msg.reclaimed ?? 0;
        client.role = msg.role ?? "leader";
        client.standby = msg.standby === true;
        status(msg);
        resolveConnect(client);
        storage().catch(() => {});
        storageTimer = setInterval(() => storage().catch(() => {}), STORAGE_CHECK_MS);
        break;
      case "role":
        // This tab took over from a leader that went, or follows another one now.
        client.role = msg.role;
        client.standby = msg.standby === true;
        if (msg.role === "leader" && msg.reclaimed !== undefined) client.reclaimed = msg.reclaimed;
        status(msg);
        break;
      case "status":
        status(msg);
        break;
      case "boot-error": {
        status(msg);
        // After ready: a follower that could not take over from a leader that went.
        if (ready) crash(`${msg.message} Reload the page to recover.`);
        else fail(new BootError(msg));
        break;
      }
      case "reply": {
        const call = pending.get(msg.id);
        if (!call) break;
        pending.delete(msg.id);
        if (msg.error) call.reject(new DurablyError(msg.error));
        else call.resolve(msg.ok);
        break;
      }
      case "event":
        dispatch(msg.event);
        break;
      case "crashed":
        crash(msg.message);
        break;
      default:
        break;
    }
  };
  // A worker script that fails to load, or an error nobody caught inside it, arrives here.
  worker.onerror = (event) => {
    event.preventDefault();
    const what = event.message || "it could not be loaded";
    if (!ready) {
      fail(new BootError({ phase: "worker", message: `the durably worker failed: ${what}. Reload the page to retry.` }));
      status({ type: "boot-error", phase: "worker", name: "BootError", message: failure.message, detail: null });
    } else {
      crash(`the durably worker crashed: ${what}. Reload the page to recover.`);
    }
  };
  worker.onmessageerror = () => console.warn("[durably] a message from the worker could not be read");

  /** Send one request; resolves with its `ok` value, rejects with a DurablyError. */
  function call(method, params = {}) {
    if (failure) return Promise.reject(failure);
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      try {
        worker.postMessage({ type: "call", id, method, params });
      } catch (err) {
        // Not cloneable (a function, a DOM node, ...): the worker never saw it.
        pending.delete(id);
        reject(new DurablyError({ name: "ValidationError", message: `${method}: the parameters cannot be sent to the worker: ${err.message}` }));
      }
    });
  }

  const defined = (obj) => Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined));

  // Persistent storage: asked for once, when the page first triggers a job (browsers grant
  // it on interaction); the usage and quota reported to onStatus, with a warning past 80%.
  let persistAsked = !persistStorage;
  let storageTimer = null;
  let warned = false;
  function askPersist() {
    if (persistAsked) return;
    persistAsked = true;
    const ask = globalThis.navigator?.storage?.persist;
    if (typeof ask !== "function") return;
    navigator.storage.persist().then(
      () => storage().catch(() => {}),
      (err) => console.warn("[durably] navigator.storage.persist() failed:", err),
    );
  }
  async function storage() {
    const manager = globalThis.navigator?.storage;
    if (typeof manager?.estimate !== "function") return null;
    const { usage = 0, quota = 0 } = await manager.estimate();
    const persisted = typeof manager.persisted === "function" ? await manager.persisted() : false;
    const ratio = quota > 0 ? usage / quota : 0;
    let warning = null;
    if (ratio > STORAGE_WARN_RATIO) {
      warning =
        `This site's storage is ${Math.round(ratio * 100)}% full (${formatBytes(usage)} of ${formatBytes(quota)}): ` +
        "delete old runs (purgeRuns) or free disk space, or new steps may fail to be stored.";
    }
    const report = { type: "storage", usage, quota, persisted, warning };
    client.lastStorage = report;
    if (warning && !warned) console.warn(`[durably] ${warning}`);
    warned = warning !== null;
    status(report);
    return report;
  }

  const client = {
    protocol: PROTOCOL_VERSION,
    /** Per-phase boot times in ms, once ready. */
    timings: null,
    /** How many runs' leases a closed tab left behind and this worker took back. */
    reclaimed: 0,
    /**
     * "leader": this tab's worker holds the database and runs the jobs; "follower": its
     * calls go to the tab that does, and it takes over if that tab closes. Changes are
     * reported to onStatus as {type: "role", role, standby, ...}.
     */
    role: null,
    /** A follower that keeps Python loaded, first in line to take over. */
    standby: false,
    /** The last storage report ({type: "storage", usage, quota, persisted, warning}). */
    lastStorage: null,
    worker,
    call,
    ping: () => call("ping"),
    jobs: () => call("jobs"),
    trigger: (job, input, { idempotencyKey, concurrencyKey, coalesce, labels } = {}) => {
      askPersist();
      return call("trigger", defined({ job, input, idempotencyKey, concurrencyKey, coalesce, labels }));
    },
    triggerMany: (job, inputs, { labels } = {}) => {
      askPersist();
      return call("triggerMany", defined({ job, inputs, labels }));
    },
    /**
     * This site's storage: {usage, quota, persisted, warning} in bytes (warning: a text when
     * usage passes 80% of quota, else null); also reported to onStatus. Checked every 30 s.
     */
    storage,
    getRun: (id) => call("getRun", { id }),
    getRuns: (filter = {}) => call("getRuns", defined(filter)),
    getSteps: (id) => call("getSteps", { id }),
    /** The run's log lines in order; `last: n` gives the last n, `afterId`/`limit` page forwards. */
    getLogs: (id, { afterId, limit, last } = {}) => call("getLogs", defined({ id, afterId, limit, last })),
    getStatus: () => call("getStatus"),
    cancel: (id) => call("cancel", { id }),
    retrigger: (id) => call("retrigger", { id }),
    deleteRun: (id) => call("deleteRun", { id }),
    /** Send the signal `name` to a run (its step.wait_for_signal(name) returns `payload`). */
    signal: (id, name, payload, { signalId } = {}) => call("signal", defined({ id, name, payload, signalId })),
    purgeRuns: ({ olderThan, limit } = {}) => call("purgeRuns", defined({ olderThan, limit })),
    waitForRun: (id, { timeout } = {}) => call("waitForRun", defined({ id, timeout })),
    /**
     * The database file (WAL folded in) as a Uint8Array: it opens with CPython's durably, and
     * its runs' leases are handed back in it, so `durably worker` on it resumes them at once.
     * `{move: true}`: the unfinished runs move to the copy: resolves with {bytes, moved}, and
     * here they are cancelled with the error "moved: ..." so only the copy finishes them.
     */
    exportDatabase: ({ move } = {}) => call("exportDatabase", defined({ move })),
    /**
     * Replace this site's database with an exported one (a Uint8Array or ArrayBuffer, from
     * exportDatabase or CPython). Checked before anything is replaced; a bad file changes
     * nothing and the error says what is wrong. Refused (ConflictError) while runs are in
     * progress, unless `{replace: true}`. Resolves with {runs, schemaVersion, reclaimed}.
     */
    importDatabase: (bytes, { replace } = {}) => call("importDatabase", defined({ bytes, replace })),
    /**
     * Switch to a new version of the site that is ready ({type: "update", state: "ready"}):
     * closes this worker (its run hands its lease back), lets the new version take over, and
     * reloads every tab of the site. Resolves false when no new version waits.
     */
    applyUpdate: async () => false,
    /** Ask the server for a new version now; true when one is downloading or ready. */
    checkForUpdate: async () => false,
    /** Debug only (connect({debug: true})): run Python in the worker; the last expression's value. */
    evalPython: (code) => call("evalPython", { code }),
    /**
     * Listen to events of one type ("run:progress", ...) or "*"; returns off(). The first
     * listener of a type subscribes in the worker, the last one to leave unsubscribes.
     * Events sent after on() returns reach the callback, in the order they happened.
     */
    on(type, cb) {
      if (typeof cb !== "function") throw new TypeError("on(type, callback): the callback must be a function");
      let set = listeners.get(type);
      if (!set) {
        set = new Set();
        listeners.set(type, set);
        // Posted now, so it reaches the worker before any later call (e.g. a trigger).
        call("subscribe", { types: [type] }).catch((err) => {
          listeners.delete(type);
          console.error(`[durably] cannot subscribe to ${type}:`, err);
        });
      }
      const entry = (event) => cb(event);
      set.add(entry);
      let on = true;
      return () => {
        if (!on) return;
        on = false;
        set.delete(entry);
        if (set.size === 0 && listeners.get(type) === set) {
          listeners.delete(type);
          call("unsubscribe", { types: [type] }).catch(() => {});
        }
      };
    },
    /**
     * Stop the worker: the run in flight hands its lease back (the next page resumes it), the
     * database and the OPFS pool are released, and another tab waiting for them takes over.
     * Pending and later calls reject. Resolves once the worker has closed (at most ~3 s).
     */
    close() {
      clearInterval(storageTimer);
      if (failure) {
        worker.terminate();
        return Promise.resolve();
      }
      const closed = new Promise((resolve) => {
        const timer = setTimeout(finish, 3000);
        function finish() {
          clearTimeout(timer);
          worker.terminate();
          resolve();
        }
        worker.addEventListener("message", ({ data }) => data?.type === "closed" && finish());
      });
      worker.postMessage({ type: "close" });
      fail(new DurablyError({ name: "ClosedError", message: "the durably client is closed; reload the page or connect() again" }));
      return closed;
    },
  };

  worker.postMessage({
    type: "init",
    protocol: PROTOCOL_VERSION,
    jobs: typeof jobs === "string" ? [jobs] : jobs, // undefined: every job module of the site
    options,
    debug: debug === true,
  });
  return { client, connected };
}
