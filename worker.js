// The durably Web Worker (a module worker: Pyodide 314 refuses classic workers).
//
// Boot, in this order, each phase timed and reported to the page:
//   lock     wait for the Web Lock "durably-db": the OPFS pool can be open in one worker
//            only, so a second tab waits here (and says so) until the first one closes
//   sqlite   load and initialise sqlite-wasm
//   pool     install the opfs-sahpool VFS (needs no COOP/COEP headers; workers only)
//   open     open the database in the pool and set the pragmas
//   pyodide  load Pyodide from the site's own files
//   micropip load micropip from its local wheel
//   install  install the durably wheel, write the job modules
//   import   wait for the page's init message, then import durably and the job modules it
//            asked for, for real (a failed import is shown with its traceback)
//   start    create durably.browser.BrowserHost, migrate the schema, hand back the leases a
//            closed tab left behind (so its runs resume at once) and start the runtime
// sqlite comes before Pyodide on purpose: initialising the sahpool VFS while loadPyodide()
// runs hung in createSyncAccessHandle in about 1 load in 10 here; this order never did.
//
// The wire protocol (versioned; docs/protocol.md is the contract):
//   page -> worker: {type: "init", protocol, jobs, options, debug}, {type: "call", id, method,
//     params}, {type: "close"}
//   worker -> page: {type: "boot", phase, state: "start"|"done"|"waiting", ms, detail},
//     {type: "ready", protocol, timings, reclaimed, jobs}, {type: "boot-error", phase, name,
//     message, detail}, {type: "reply", id, ok} | {type: "reply", id, error: {name, message,
//     ...}}, {type: "event", event}, {type: "crashed", message}, {type: "closed"}
// A request from a broken page never kills the worker: it gets an error reply, or (when it
// has no id to reply to) a console warning.

import { createBridge } from "./web/bridge.js";

const LOCK_NAME = "durably-db";
const DB_FILE = "/durably.db";
// One worker owns the pool, so exclusive locking costs nothing and lets WAL work without
// shared memory. WAL + synchronous=NORMAL: a commit survives a closed tab or a crashed
// browser (it is in the OS's hands when COMMIT returns); a power cut may lose the last few
// commits but never corrupts the file. Measured here ~840 commits/s against ~95 for
// DELETE journal + FULL sync. docs/browser.md has the numbers and how to change this.
const PRAGMAS = [
  "PRAGMA locking_mode = EXCLUSIVE",
  "PRAGMA journal_mode = WAL",
  "PRAGMA synchronous = NORMAL",
  "PRAGMA foreign_keys = ON",
];
// How long a phase may take before the watchdog calls it hung. Generous: a slow phone on a
// cold cache downloads ~15 MB of Pyodide in the "pyodide" phase.
const PHASE_TIMEOUT_MS = {
  sqlite: 30_000,
  pool: 20_000,
  open: 10_000,
  pyodide: 120_000,
  micropip: 60_000,
  install: 60_000,
  import: 30_000,
  start: 30_000,
};
const POOL_RETRIES = 5;
const PROTOCOL_VERSION = 1;
// BrowserHost.MAX_MESSAGE_BYTES: checked here too, so a huge request never reaches Python.
const MAX_REQUEST_CHARS = 4 * 1024 * 1024;
// The page posts init right after creating the worker; this only catches a page that never does.
const INIT_TIMEOUT_MS = 60_000;
// close(): how long the runtime may take to hand back the lease of the run in flight.
const STOP_TIMEOUT_MS = 2_000;

const siteURL = (rel) => new URL(`./${rel}`, import.meta.url).href;
let resolveInit, rejectInit;
const initReceived = new Promise((resolve, reject) => {
  resolveInit = resolve;
  rejectInit = reject;
});
initReceived.catch(() => {}); // boot() awaits it and reports the error
const post = (msg) => self.postMessage(msg);

class BootError extends Error {
  constructor(phase, message, detail) {
    super(message);
    this.name = "BootError";
    this.phase = phase;
    this.detail = detail;
  }
}

const state = {
  db: null,
  pool: null,
  pyodide: null,
  host: null, // the durably.browser.BrowserHost, a PyProxy
  init: null, // the page's init message, once received
  debug: false,
  crashed: null, // the message of a fatal Pyodide error, once one happened
  releaseLock: null,
  timings: {},
  closed: false,
};

// Run one boot phase under the watchdog; report its start, end and duration.
async function phase(name, fn) {
  post({ type: "boot", phase: name, state: "start" });
  const t0 = performance.now();
  let timer;
  const limit = PHASE_TIMEOUT_MS[name];
  const watchdog = new Promise((_, reject) => {
    if (!limit) return;
    timer = setTimeout(
      () =>
        reject(
          new BootError(
            name,
            `boot phase "${name}" did not finish within ${limit / 1000} s and was abandoned. ` +
              (name === "pool" || name === "open"
                ? "The browser did not grant the OPFS storage: close other tabs of this site and reload."
                : "Reload the page; if it keeps happening, check the browser console and the network panel."),
          ),
        ),
      limit,
    );
  });
  try {
    const value = await Promise.race([fn(), watchdog]);
    const ms = Math.round(performance.now() - t0);
    state.timings[name] = ms;
    post({ type: "boot", phase: name, state: "done", ms });
    return value;
  } catch (err) {
    if (err instanceof BootError) throw err;
    throw new BootError(name, `boot phase "${name}" failed: ${err?.message ?? err}`, err?.stack);
  } finally {
    clearTimeout(timer);
  }
}

function checkOpfs() {
  if (!self.isSecureContext) {
    throw new BootError(
      "sqlite",
      "This page is not a secure context, so the browser offers no OPFS storage. Serve it over " +
        "https:// or from http://localhost / http://127.0.0.1.",
    );
  }
  if (!navigator.storage?.getDirectory || !self.FileSystemFileHandle?.prototype?.createSyncAccessHandle) {
    throw new BootError(
      "sqlite",
      "This browser has no OPFS with synchronous access handles (private windows of some browsers " +
        "disable it). Use a current Chrome, Edge, Firefox or Safari in a normal window.",
    );
  }
  if (!navigator.locks) {
    throw new BootError("lock", "This browser has no Web Locks API (navigator.locks); use a current browser.");
  }
}

// Take the Web Lock and keep it until close(). If another tab holds it, report that we are
// waiting, then wait: the browser hands the lock over when that tab closes.
function acquireLock() {
  return new Promise((resolve, reject) => {
    const hold = (lock) => {
      resolve(lock);
      return new Promise((release) => (state.releaseLock = release));
    };
    navigator.locks
      .request(LOCK_NAME, { ifAvailable: true }, (lock) => {
        if (lock) return hold(lock);
        post({
          type: "boot",
          phase: "lock",
          state: "waiting",
          detail: "The database is open in another tab of this site. Waiting for it to close...",
        });
        navigator.locks.request(LOCK_NAME, hold).catch(reject);
        return undefined;
      })
      .catch(reject);
  });
}

async function installPool(sqlite3) {
  // The previous owner (a tab that just closed) may still be releasing its sync access
  // handles for a few ms after its lock is gone: retry a failed install briefly.
  let lastError;
  for (let attempt = 0; attempt <= POOL_RETRIES; attempt++) {
    try {
      return await sqlite3.installOpfsSAHPoolVfs({
        // Never delete the user's data because the pool could not be opened this time.
        preserveOnInitFailure: true,
        forceReinitIfPreviouslyFailed: attempt > 0,
      });
    } catch (err) {
      lastError = err;
      await new Promise((r) => setTimeout(r, 50 * 2 ** attempt));
    }
  }
  const busy = lastError?.name === "NoModificationAllowedError" || /NoModificationAllowed/.test(String(lastError));
  throw new Error(
    busy
      ? "the OPFS storage is in use by another tab or window of this site: close it and reload"
      : `cannot open the OPFS storage: ${lastError?.message ?? lastError} (a full disk, or a browser that blocks storage, e.g. some private windows)`,
  );
}

// The wheels (status and SHA-256 checked against the manifest, so a half-deployed site says
// so plainly) and the job modules' source, all fetched at once.
async function downloadCode(manifest) {
  const wheels = Promise.all(
    manifest.wheels.map(async (w) => {
      const res = await fetch(siteURL(w.url));
      if (!res.ok) throw new BootError("install", `cannot download ${w.url}: HTTP ${res.status}. Is the site fully deployed?`);
      const bytes = new Uint8Array(await res.arrayBuffer());
      const digest = await sha256Hex(bytes);
      if (digest !== w.sha256) {
        throw new BootError("install", `${w.url} is not the wheel this site was built with (SHA-256 ${digest.slice(0, 12)}...): rebuild and redeploy the whole site/ folder`);
      }
      return { file: w.file, bytes };
    }),
  );
  const modules = Promise.all(manifest.jobModules.map(async (m) => ({ module: m.module, text: await fetchOk(m.url, "text") })));
  return { wheels: await wheels, modules: await modules };
}

async function fetchOk(rel, as) {
  const res = await fetch(siteURL(rel), { cache: "no-cache" });
  if (!res.ok) throw new Error(`GET ${rel}: HTTP ${res.status}`);
  return as === "json" ? res.json() : res.text();
}

// The Python side: the import check, then one durably.browser.BrowserHost made from the
// page's init message (as JSON text, so Python sees plain dicts, not JS proxies).
const PY_CHECK_IMPORTS = `
import importlib, json, traceback
def _durably_check_imports(names):
    failures = []
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException:
            failures.append({"module": name, "traceback": traceback.format_exc()})
    return json.dumps(failures)
_durably_check_imports
`;

const PY_MAKE_HOST = `
import json
from durably.browser import BrowserHost
def _durably_make_host(post_event, init_json):
    init = json.loads(init_json)
    return BrowserHost(
        post_event=post_event,
        job_modules=init["jobs"],
        options=init["options"],
        debug=init["debug"],
    )
_durably_make_host
`;

async function boot() {
  checkOpfs();
  const manifest = await fetchOk("manifest.json", "json").catch((err) => {
    throw new BootError("sqlite", `cannot read the site's manifest.json (${err.message}): is the site built and complete?`);
  });
  if (manifest.format !== 1) throw new BootError("sqlite", `manifest.json has format ${manifest.format}; this worker reads format 1`);

  post({ type: "boot", phase: "lock", state: "start" });
  const t0 = performance.now();
  await acquireLock();
  state.timings.lock = Math.round(performance.now() - t0);
  post({ type: "boot", phase: "lock", state: "done", ms: state.timings.lock });

  const sqlite3 = await phase("sqlite", async () => {
    const { default: sqlite3InitModule } = await import(siteURL("vendor/sqlite-wasm/index.mjs"));
    return sqlite3InitModule({
      print: (...args) => console.log("[sqlite]", ...args),
      printErr: (...args) => console.warn("[sqlite]", ...args),
    });
  });

  state.pool = await phase("pool", () => installPool(sqlite3));

  const bridge = await phase("open", async () => {
    const openDb = (name) => {
      const db = new state.pool.OpfsSAHPoolDb(name);
      // Extended codes ("SQLITE_CONSTRAINT_UNIQUE", not just "SQLITE_CONSTRAINT"), as CPython reports.
      sqlite3.capi.sqlite3_extended_result_codes(db.pointer, 1);
      for (const sql of PRAGMAS) db.exec(sql);
      const mode = db.selectValue("PRAGMA journal_mode");
      if (mode !== "wal") console.warn(`[durably] journal_mode of ${name} is ${mode}, not wal`);
      return db;
    };
    state.db = openDb(DB_FILE);
    const removeDb = (name) => {
      for (const suffix of ["", "-wal", "-journal"]) state.pool.unlink(name + suffix);
    };
    return createBridge(sqlite3, state.db, { open: openDb, remove: removeDb });
  });

  // Download and check the wheels and job modules while Pyodide loads; the install phase
  // only unpacks them. (A failure is reported by the install phase, in its turn.)
  const downloads = downloadCode(manifest);
  downloads.catch(() => {});

  const pyodide = await phase("pyodide", async () => {
    const { loadPyodide } = await import(siteURL("vendor/pyodide/pyodide.mjs"));
    return loadPyodide({
      indexURL: siteURL("vendor/pyodide/"),
      stdout: (line) => console.log("[python]", line),
      stderr: (line) => console.warn("[python]", line),
    });
  });
  state.pyodide = pyodide;
  pyodide.registerJsModule("durably_bridge", bridge);

  await phase("micropip", async () => {
    const errors = [];
    await pyodide.loadPackage(siteURL(manifest.micropip.url), {
      messageCallback: () => {},
      errorCallback: (msg) => errors.push(msg),
    });
    // loadPackage resolves even when a download failed: check that micropip is installed.
    // find_spec finds it without importing it: the import costs ~0.5 s, which only the jobs
    // that use micropip (to install packages from the site at run time) should pay.
    const found = pyodide.runPython('import importlib.util\nimportlib.util.find_spec("micropip") is not None');
    if (!found) throw new Error(`micropip did not load from ${manifest.micropip.url}: ${errors.join("; ") || "not installed"}`);
  });

  await phase("install", async () => {
    // Unpack the wheels downloadCode() fetched and checked into site-packages. Our wheels are
    // pure Python without dependencies: there is nothing for an installer to resolve, and
    // unpacking the checked bytes is ~0.6 s faster than importing micropip to do it.
    const purelib = pyodide.runPython("import sysconfig\nsysconfig.get_path('purelib')");
    const { wheels, modules } = await downloads;
    for (const w of wheels) {
      try {
        pyodide.unpackArchive(w.bytes, "wheel", { extractDir: purelib });
      } catch (err) {
        const text = String(err?.message ?? err);
        throw new BootError("install", `installing ${w.file} failed: ${lastLine(text)}`, text);
      }
    }
    const dir = "/home/pyodide/durably_jobs";
    pyodide.FS.mkdirTree(dir);
    for (const m of modules) pyodide.FS.writeFile(`${dir}/${m.module}.py`, m.text);
    pyodide.runPython(
      `import importlib, sys\nif ${JSON.stringify(dir)} not in sys.path: sys.path.insert(0, ${JSON.stringify(dir)})\nimportlib.invalidate_caches()`,
    );
  });

  const init = await waitForInit(manifest);

  await phase("import", async () => {
    const names = ["durably", "durably.pyodide_driver", "durably.browser", ...init.jobs];
    const check = pyodide.runPython(PY_CHECK_IMPORTS);
    const failures = JSON.parse(check(names));
    check.destroy();
    if (failures.length) {
      throw new BootError(
        "import",
        `cannot import ${failures.map((f) => f.module).join(", ")}: ${lastLine(failures[0].traceback)}`,
        failures.map((f) => f.traceback).join("\n"),
      );
    }
  });

  return phase("start", async () => {
    const makeHost = pyodide.runPython(PY_MAKE_HOST);
    const postEvent = (text) => {
      // An event the page cannot read must not stop the runtime: warn and go on.
      try {
        post({ type: "event", event: JSON.parse(text) });
      } catch (err) {
        console.warn("[durably] dropping an event that could not be posted:", err);
      }
    };
    try {
      state.host = makeHost(postEvent, JSON.stringify(init));
    } catch (err) {
      throw pythonBootError("start", "cannot start durably", err);
    } finally {
      makeHost.destroy();
    }
    let started;
    try {
      const result = await state.host.start();
      started = result.toJs({ dict_converter: Object.fromEntries });
      result.destroy();
    } catch (err) {
      // SchemaError (a database written by a newer durably) lands here, before anything
      // was written: the file is left exactly as it was.
      throw pythonBootError("start", "cannot open the database", err);
    }
    return started;
  });
}

// Wait for the page's {type: "init"} and check it against the manifest.
async function waitForInit(manifest) {
  let timer;
  const init = await Promise.race([
    initReceived,
    new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new BootError("import", `the page sent no init message within ${INIT_TIMEOUT_MS / 1000} s; connect() sends it (web/client.js)`)),
        INIT_TIMEOUT_MS,
      );
    }),
  ]).finally(() => clearTimeout(timer));
  const known = manifest.jobModules.map((m) => m.module);
  const unknown = init.jobs.filter((name) => !known.includes(name));
  if (unknown.length) {
    throw new BootError(
      "import",
      `job module${unknown.length > 1 ? "s" : ""} ${unknown.map((n) => JSON.stringify(n)).join(", ")} ` +
        `${unknown.length > 1 ? "are" : "is"} not in this site's manifest.json; it has: ` +
        `${known.map((n) => JSON.stringify(n)).join(", ") || "none"} (add job files to JOB_MODULES in scripts/build.mjs)`,
    );
  }
  return init;
}

// A Python exception at boot: its last line on the status line, the traceback in the details.
function pythonBootError(phaseName, what, err) {
  const text = String(err?.message ?? err);
  return new BootError(phaseName, `${what}: ${lastLine(text)}`, text);
}

// Check an init message from the page; returns the normalised init or throws a TypeError.
function parseInit(msg) {
  if (msg.protocol !== undefined && msg.protocol !== PROTOCOL_VERSION) {
    throw new TypeError(`the page speaks protocol ${msg.protocol}; this worker speaks ${PROTOCOL_VERSION}: reload the page`);
  }
  const jobs = msg.jobs ?? [];
  if (!Array.isArray(jobs) || !jobs.every((j) => typeof j === "string" && /^[A-Za-z_][A-Za-z0-9_.]*$/.test(j))) {
    throw new TypeError(`init.jobs must be a list of module names, got ${JSON.stringify(jobs)}`);
  }
  const options = msg.options ?? {};
  if (typeof options !== "object" || Array.isArray(options)) {
    throw new TypeError(`init.options must be an object, got ${JSON.stringify(options)}`);
  }
  return { jobs, options, debug: msg.debug === true };
}

async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function lastLine(text) {
  const lines = text.trim().split("\n");
  return lines[lines.length - 1];
}

// Close for good: stop the runtime (the run in flight hands its lease back, so the next tab
// resumes it at once), close the database, release the pool and the lock. Idempotent.
let closing = null;
function close() {
  closing ??= (async () => {
    state.closed = true;
    if (state.host && !state.crashed) {
      try {
        await withTimeout(state.host.stop(0), STOP_TIMEOUT_MS, "stopping the runtime");
      } catch (err) {
        console.warn("[durably] stopping the runtime:", err);
      }
    }
    try {
      state.db?.close();
    } catch (err) {
      console.warn("[durably] closing the database:", err);
    }
    try {
      // Hands the OPFS files back so the next tab's worker can open the pool at once.
      state.pool?.pauseVfs();
    } catch (err) {
      console.warn("[durably] pausing the pool:", err);
    }
    state.releaseLock?.();
    post({ type: "closed" });
  })();
  return closing;
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms))),
  ]).finally(() => clearTimeout(timer));
}

const booted = boot().then(
  (started) => {
    if (state.closed) {
      // The page closed while we booted: close() ran before the host existed.
      state.host?.stop(0);
      return;
    }
    post({ type: "ready", protocol: PROTOCOL_VERSION, timings: state.timings, ...started });
  },
  (err) => {
    const e = err instanceof BootError ? err : new BootError("unknown", String(err?.message ?? err), err?.stack);
    console.error("[durably] boot failed:", e.message, e.detail ?? "");
    post({ type: "boot-error", phase: e.phase, name: e.name, message: e.message, detail: e.detail ?? null });
    // Keep nothing half-open: another tab may be waiting for the lock.
    close();
    throw e;
  },
);
booted.catch(() => {}); // reported above; calls waiting on it get the error themselves

const reply = (id, body) => post({ type: "reply", id, ...body });
const errorReply = (id, name, message) => reply(id, { error: { name, message } });
const isId = (id) => (typeof id === "number" && Number.isFinite(id)) || (typeof id === "string" && id.length > 0 && id.length <= 200);

// Pyodide cannot go on after a fatal error (a wasm trap, out of memory): say so once, and
// refuse every later call, so the page offers a reload instead of hanging.
function checkFatal(err) {
  const text = String(err?.message ?? err);
  const fatal = state.pyodide?._api?.fatal_error_occurred || /fatally failed|Pyodide has suffered a fatal error|RuntimeError: (memory access out of bounds|unreachable)/.test(text);
  if (!fatal) return false;
  if (!state.crashed) {
    state.crashed = lastLine(text);
    console.error("[durably] Pyodide crashed:", text);
    post({ type: "crashed", message: `Python in the worker crashed (${state.crashed}). Reload the page to recover.` });
    close();
  }
  return true;
}

async function handleCall(msg) {
  const { id } = msg;
  try {
    await booted;
  } catch (err) {
    errorReply(id, "BootError", err.message);
    return;
  }
  if (state.crashed) {
    errorReply(id, "WorkerCrashedError", `Python in the worker crashed (${state.crashed}). Reload the page to recover.`);
    return;
  }
  if (state.closed) {
    errorReply(id, "ClosedError", "the worker is closed; reload the page");
    return;
  }
  if (typeof msg.method !== "string") {
    errorReply(id, "ValidationError", `a call needs a method name, got ${JSON.stringify(msg.method) ?? "nothing"}`);
    return;
  }
  const params = msg.params ?? {};
  if (typeof params !== "object" || Array.isArray(params)) {
    errorReply(id, "ValidationError", `params must be an object, got ${Array.isArray(params) ? "an array" : typeof params}`);
    return;
  }
  if (msg.method === "exportDatabase") {
    exportDatabase(id, params);
    return;
  }
  let json;
  try {
    json = JSON.stringify(params);
  } catch (err) {
    errorReply(id, "ValidationError", `params cannot be sent as JSON: ${err.message}`);
    return;
  }
  if (json.length > MAX_REQUEST_CHARS) {
    errorReply(
      id,
      "ValidationError",
      `the request is ${json.length} characters; the limit is ${MAX_REQUEST_CHARS}. Keep job inputs small: store large data elsewhere and pass a reference`,
    );
    return;
  }
  try {
    // Most methods answer at once, inside this call; the ones that wait (waitForRun) go
    // through the async handle(). See BrowserHost.handle_now.
    let text = state.host.handle_now(msg.method, json);
    if (text === undefined) text = await state.host.handle(msg.method, json);
    reply(id, JSON.parse(text));
  } catch (err) {
    if (checkFatal(err)) {
      errorReply(id, "WorkerCrashedError", `Python in the worker crashed (${state.crashed}). Reload the page to recover.`);
    } else {
      errorReply(id, err?.name || "Error", String(err?.message ?? err));
    }
  }
}

// The database file as bytes, after folding the WAL into it so the copy holds every commit.
// Safe between two store calls: each is synchronous and no transaction spans an await.
function exportDatabase(id, params) {
  if (Object.keys(params).length) {
    errorReply(id, "ValidationError", `exportDatabase: takes no parameters, got ${Object.keys(params).join(", ")}`);
    return;
  }
  try {
    state.db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    const bytes = state.pool.exportFile(DB_FILE);
    self.postMessage({ type: "reply", id, ok: bytes }, [bytes.buffer]);
  } catch (err) {
    errorReply(id, "StorageError", `cannot export the database: ${err?.message ?? err}`);
  }
}

self.onmessage = (event) => {
  const msg = event.data;
  if (msg === null || typeof msg !== "object") {
    console.warn("[durably] ignoring a message that is not an object:", msg);
    return;
  }
  switch (msg.type) {
    case "init": {
      if (state.init) {
        console.warn("[durably] ignoring a second init message");
        return;
      }
      try {
        state.init = parseInit(msg);
      } catch (err) {
        state.init = { error: err };
        rejectInit(new BootError("import", err.message));
        return;
      }
      state.debug = state.init.debug;
      resolveInit(state.init);
      return;
    }
    case "call":
      if (!isId(msg.id)) {
        console.warn("[durably] ignoring a call without a usable id (a number or a short string):", msg);
        return;
      }
      handleCall(msg).catch((err) => {
        // handleCall answers every path itself; this is a last resort so an id is never left hanging.
        console.error("[durably] call failed:", err);
        errorReply(msg.id, "Error", String(err?.message ?? err));
      });
      return;
    case "close":
      close();
      return;
    default:
      // Something that carries an id expects an answer: say what is wrong with it.
      if (isId(msg.id)) {
        errorReply(
          msg.id,
          "ValidationError",
          `unknown message type ${JSON.stringify(msg.type)}; requests are {type: "call", id, method, params}`,
        );
        return;
      }
      console.warn("[durably] ignoring a message of unknown type:", msg.type);
  }
};
