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
//   import   import durably and the job modules for real (see checkImports)
// sqlite comes before Pyodide on purpose: initialising the sahpool VFS while loadPyodide()
// runs hung in createSyncAccessHandle in about 1 load in 10 here; this order never did.
//
// Messages (page -> worker): {type: "call", id, method, params}, {type: "close"}.
// Messages (worker -> page): {type: "boot", phase, state: "start"|"done"|"waiting", ms, detail},
//   {type: "ready", timings}, {type: "boot-error", phase, name, message, detail},
//   {type: "reply", id, ok} | {type: "reply", id, error: {name, message}}, {type: "closed"}.

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
};
const POOL_RETRIES = 5;

const siteURL = (rel) => new URL(`./${rel}`, import.meta.url).href;
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
  handle: null, // the Python request handler, a PyProxy
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

async function fetchOk(rel, as) {
  const res = await fetch(siteURL(rel), { cache: "no-cache" });
  if (!res.ok) throw new Error(`GET ${rel}: HTTP ${res.status}`);
  return as === "json" ? res.json() : res.text();
}

// The Python side of the worker for now: imports checked, and a small request handler.
// (Phase 2 moves the handler into durably.browser, next to the runtime.)
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

const PY_HANDLER = `
import json, sys
from durably.pyodide_driver import PyodideDriver
from durably.errors import DurablyError

_driver = PyodideDriver()

def _plain(value):
    # JSON has no bytes: a BLOB goes to the page as {"$bytes": "<hex>"}.
    return {"$bytes": value.hex()} if isinstance(value, bytes) else value

def _durably_handle(method, params_json):
    params = json.loads(params_json) if params_json else {}
    try:
        if method == "ping":
            result = {"python": sys.version.split()[0], "driver": _driver.name}
        elif method == "sql":
            # Development aid and the browser tests' window into the database: runs one
            # statement through the same driver the store uses.
            rows, changes = _driver.execute(params["sql"], params.get("params") or [])
            result = {"rows": [[_plain(v) for v in r] for r in rows], "changes": changes}
        else:
            return json.dumps({"error": {"name": "NotFoundError", "message": f"unknown method {method!r}"}})
        return json.dumps({"ok": result})
    except DurablyError as exc:
        return json.dumps({"error": {**exc.to_dict(), "code": getattr(exc, "code", None)}})
    except Exception as exc:
        return json.dumps({"error": {"name": type(exc).__name__, "message": str(exc)}})
_durably_handle
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
    state.db = new state.pool.OpfsSAHPoolDb(DB_FILE);
    // Extended codes ("SQLITE_CONSTRAINT_UNIQUE", not just "SQLITE_CONSTRAINT"), as CPython reports.
    sqlite3.capi.sqlite3_extended_result_codes(state.db.pointer, 1);
    for (const sql of PRAGMAS) state.db.exec(sql);
    const mode = state.db.selectValue("PRAGMA journal_mode");
    if (mode !== "wal") console.warn(`[durably] journal_mode is ${mode}, not wal`);
    return createBridge(sqlite3, state.db);
  });

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
    // loadPackage resolves even when a download failed: check that micropip really imports.
    try {
      pyodide.pyimport("micropip");
    } catch (err) {
      throw new Error(`micropip did not load from ${manifest.micropip.url}: ${errors.join("; ") || err.message}`);
    }
  });

  await phase("install", async () => {
    // Download each wheel ourselves and check its status and SHA-256 against the manifest:
    // micropip neither checks the HTTP status (a 404 page becomes "not a zip file") nor the
    // hash, and a half-deployed site must say so plainly. Then install from the in-memory FS.
    const wheelDir = "/tmp/durably-wheels";
    pyodide.FS.mkdirTree(wheelDir);
    const paths = [];
    for (const w of manifest.wheels) {
      const res = await fetch(siteURL(w.url));
      if (!res.ok) throw new BootError("install", `cannot download ${w.url}: HTTP ${res.status}. Is the site fully deployed?`);
      const bytes = new Uint8Array(await res.arrayBuffer());
      const digest = await sha256Hex(bytes);
      if (digest !== w.sha256) {
        throw new BootError("install", `${w.url} is not the wheel this site was built with (SHA-256 ${digest.slice(0, 12)}...): rebuild and redeploy the whole site/ folder`);
      }
      pyodide.FS.writeFile(`${wheelDir}/${w.file}`, bytes);
      paths.push(`emfs:${wheelDir}/${w.file}`);
    }
    const micropip = pyodide.pyimport("micropip");
    try {
      // deps=False: the wheels have no dependencies, and resolving them would go online.
      await micropip.install(paths, { deps: false });
    } catch (err) {
      // err.message is micropip's whole Python traceback: its last line on the status line,
      // all of it in the details.
      const text = String(err?.message ?? err);
      throw new BootError(
        "install",
        `installing ${manifest.wheels.map((w) => w.file).join(", ")} failed: ${lastLine(text)}`,
        text,
      );
    } finally {
      micropip.destroy();
    }
    const dir = "/home/pyodide/durably_jobs";
    pyodide.FS.mkdirTree(dir);
    for (const m of manifest.jobModules) {
      pyodide.FS.writeFile(`${dir}/${m.module}.py`, await fetchOk(m.url, "text"));
    }
    pyodide.runPython(`import sys\nif ${JSON.stringify(dir)} not in sys.path: sys.path.insert(0, ${JSON.stringify(dir)})`);
  });

  await phase("import", async () => {
    const names = ["durably", "durably.pyodide_driver", ...manifest.jobModules.map((m) => m.module)];
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
    state.handle = pyodide.runPython(PY_HANDLER);
  });
}

async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function lastLine(text) {
  const lines = text.trim().split("\n");
  return lines[lines.length - 1];
}

function close() {
  if (state.closed) return;
  state.closed = true;
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
}

const booted = boot().then(
  () => {
    post({ type: "ready", timings: state.timings });
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

self.onmessage = async (event) => {
  const msg = event.data;
  if (msg?.type === "close") {
    close();
    return;
  }
  if (msg?.type !== "call") return;
  try {
    await booted;
  } catch (err) {
    post({ type: "reply", id: msg.id, error: { name: "BootError", message: err.message } });
    return;
  }
  if (state.closed) {
    post({ type: "reply", id: msg.id, error: { name: "ClosedError", message: "the worker is closed; reload the page" } });
    return;
  }
  try {
    const reply = JSON.parse(state.handle(msg.method, JSON.stringify(msg.params ?? {})));
    post({ type: "reply", id: msg.id, ...reply });
  } catch (err) {
    post({ type: "reply", id: msg.id, error: { name: err?.name || "Error", message: String(err?.message ?? err) } });
  }
};
