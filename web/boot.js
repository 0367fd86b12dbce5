// The worker's boot: each phase timed, watched and reported to the page as it happens.
//
//   lock     the Web Lock "durably-db": the OPFS pool can be open in one worker only; the
//            tab that gets it leads (web/tabs.js), the others follow and boot no further
//   sqlite   load and initialise sqlite-wasm
//   snapshot, pyodide, install
//            loadPython(), side by side with sqlite: a Python in which durably and the job
//            modules can be imported. snapshot: restore it from the site's memory snapshot
//            (or this browser's copy of it), durably and the job modules already imported
//            (web/snapshot.js); if that snapshot cannot be used, the phase ends in state
//            "fallback" saying why, and pyodide loads Pyodide from the site's own files
//            (only then). install places durably's and micropip's wheels, unpacks the
//            site's requirements and writes the job modules.
//   pool     install the opfs-sahpool VFS (needs no COOP/COEP headers; workers only)
//   open     open the database in the pool and set the pragmas
//   import   wait for the page's init message, then import durably and the job modules it
//            asked for, for real (a failed import is shown with its traceback)
//   start    create durably.browser.BrowserHost, migrate the schema, hand back the leases a
//            closed tab left behind (so its runs resume at once) and start the runtime
// The pool is installed only once Python is up, on purpose: initialising the sahpool VFS
// while loadPyodide() ran hung in createSyncAccessHandle in about 1 load in 10 (headless
// Chromium, 2 cores); installing it before Python never did. Only sqlite-wasm's load, which
// opens no file, runs beside Python's start. The timings list the phases in the order of
// PHASES below (docs/browser.md, "Boot"), whichever of them ends first.
//
// A standby follower (web/tabs.js) boots in two halves: warmUp() runs sqlite, loadPython()
// and import while another tab leads, with no database; takeOver() runs pool, open and
// start once the leader has gone and the lock is this tab's.

import { createBridge } from "./bridge.js";
import { BootError } from "./errors.js";
import {
  JOBS_DIR,
  precompileWasm,
  prefetchSnapshot,
  sha256Hex,
  startPython,
  WHEELS_DIR,
} from "./snapshot.js";

export const LOCK_NAME = "durably-db";
export const DB_FILE = "/durably.db";
// While importDatabase swaps files (web/leader.js), the database it replaces is kept here
// until the imported one is open: a reload in between finds it at boot (recoverImport).
export const PREVIOUS_FILE = "/durably-previous.db";
// One worker owns the pool, so exclusive locking costs nothing and lets WAL work without
// shared memory. WAL + synchronous=NORMAL: a commit survives a closed tab or a crashed
// browser (it is in the OS's hands when COMMIT returns); a power cut may lose the last few
// commits but never corrupts the file. docs/browser.md has the numbers and how to change this.
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
  install: 60_000,
  import: 30_000,
  start: 30_000,
};
const POOL_RETRIES = 5;
// The phases in the order the timings list them (docs/browser.md, "Boot").
const PHASES = ["lock", "sqlite", "pool", "open", "snapshot", "pyodide", "install", "import", "start"];
// The page posts init right after creating the worker; this only catches a page that never does.
const INIT_TIMEOUT_MS = 60_000;

/** A URL of the site, relative to its root (the bundled worker.js sits there). */
export const siteURL = (rel) => new URL(`./${rel}`, import.meta.url).href;

/**
 * Boot the leader from nothing, every phase after the lock in order (the caller holds the
 * lock). `res` receives what is opened (db, pool, pyodide, host) as soon as it is, so
 * close() can release it even after a failure.
 *
 * @param {object} o
 * @param {(msg: object) => void} o.post posts a message to the page
 * @param {Promise<object>} o.initReceived the page's init message
 * @param {object} o.res filled in as things are opened
 * @param {(text: string) => void} o.onEvent receives each event as JSON text
 * @param {object} o.timings ms per phase so far (the lock's)
 * @returns {Promise<object>} what the ready message carries: {timings, reclaimed, jobs, worker_id}
 */
export async function bootLeader({ post, initReceived, res, onEvent, timings }) {
  const boot = new Boot(post, timings);
  const manifest = await readManifest();
  const python = startLoads(manifest);
  // sqlite and Python start side by side: the snapshot's restore runs while sqlite-wasm
  // loads. The pool and the database come after both (see "sqlite comes before Pyodide").
  const sqlite = boot.phase("sqlite", loadSqlite);
  const pyodide = loadPython(boot, manifest, python.downloads, python.snapshot, python.wasm);
  pyodide.then((p) => (res.pyodide = p), () => {}); // for close(), even if sqlite failed
  const sqlite3 = await sqlite;
  res.pyodide = await pyodide;
  const bridge = await openDatabase(boot, sqlite3, res);
  res.jobModules = manifest.jobModules.map((m) => m.module); // for the followers' init checks
  provideBridge(res.pyodide, bridge);

  const pageInit = await waitForInit(initReceived);
  const init = await boot.phase("import", () => importJobs(res.pyodide, pageInit, manifest));
  const started = await boot.phase("start", () => startHost(res, init, onEvent));
  return { timings: boot.ordered(), ...started };
}

/**
 * Everything the Python phases need from the network, started at once: the snapshot (or this
 * browser's copy of it) by a worker of its own, pyodide.asm.wasm compiled on the browser's
 * compiler threads, Pyodide's JS fetched and compiled (loadPython()'s imports then find it
 * loaded), and micropip, the wheels and the job modules downloaded and checked (the install
 * phase only unpacks them, and reports a failure).
 */
function startLoads(manifest) {
  const snapshot = prefetchSnapshot(manifest, siteURL);
  const wasm = snapshot ? precompileWasm(siteURL("vendor/pyodide/pyodide.asm.wasm")) : null;
  for (const file of ["pyodide.mjs", "pyodide.asm.mjs"]) import(siteURL(`vendor/pyodide/${file}`)).catch(() => {});
  return { snapshot, wasm, downloads: downloadCode(manifest) };
}

/**
 * The first half of a standby's boot, while another tab leads: sqlite-wasm loaded, Python
 * with durably and the page's job modules imported, and nothing opened. Reports nothing to
 * the page (it is busy being a follower); the phases keep their watchdogs and timings.
 *
 * @returns {Promise<{manifest, sqlite3, pyodide, init, timings}>}
 */
export async function warmUp({ initReceived }) {
  const boot = new Boot(() => {});
  const manifest = await readManifest();
  const python = startLoads(manifest);
  const sqlite = boot.phase("sqlite", loadSqlite);
  const loading = loadPython(boot, manifest, python.downloads, python.snapshot, python.wasm);
  loading.catch(() => {});
  const sqlite3 = await sqlite;
  const pyodide = await loading;
  const pageInit = await waitForInit(initReceived);
  const init = await boot.phase("import", () => importJobs(pyodide, pageInit, manifest));
  return { manifest, sqlite3, pyodide, init, timings: boot.ordered() };
}

/**
 * The second half of a standby's boot, once the lock is this tab's: the pool, the database
 * and the runtime, on the Python warmUp() prepared. Resumes the runs the old leader held
 * at once (start reclaims every lease). Reports nothing to the page; returns what the role
 * message carries.
 */
export async function takeOver({ warm, res, onEvent }) {
  const boot = new Boot(() => {});
  res.pyodide = warm.pyodide;
  res.jobModules = warm.manifest.jobModules.map((m) => m.module);
  const bridge = await openDatabase(boot, warm.sqlite3, res);
  provideBridge(res.pyodide, bridge);
  const started = await boot.phase("start", () => startHost(res, warm.init, onEvent));
  return { timings: boot.ordered(), ...started };
}

/**
 * Make the bridge importable as durably_bridge (PyodideDriver imports it). Also put straight
 * into sys.modules: Pyodide's finder of JS modules comes after the path finder, so the first
 * `import durably_bridge` looked through every sys.path entry before (30-70 ms of the start
 * phase).
 */
function provideBridge(pyodide, bridge) {
  pyodide.registerJsModule("durably_bridge", bridge);
  const sys = pyodide.pyimport("sys");
  try {
    sys.modules.set("durably_bridge", bridge);
  } finally {
    sys.destroy();
  }
}

/** Runs phases: reports each one's start, end and duration, under a watchdog. */
class Boot {
  constructor(post, timings = {}) {
    this.post = post;
    this.timings = { ...timings };
  }

  /** The timings in the order of the phases (some run side by side and end in any order). */
  ordered() {
    const known = PHASES.filter((name) => name in this.timings);
    const rest = Object.keys(this.timings).filter((name) => !PHASES.includes(name));
    return Object.fromEntries([...known, ...rest].map((name) => [name, this.timings[name]]));
  }

  async phase(name, fn) {
    this.post({ type: "boot", phase: name, state: "start" });
    const t0 = performance.now();
    let timer;
    const limit = PHASE_TIMEOUT_MS[name];
    const watchdog = new Promise((_, reject) => {
      if (!limit) return;
      timer = setTimeout(
        () =>
          reject(
            new BootError({
              phase: name,
              message:
                `boot phase "${name}" did not finish within ${limit / 1000} s and was abandoned. ` +
                (name === "pool" || name === "open"
                  ? "The browser did not grant the OPFS storage: close other tabs of this site and reload."
                  : "Reload the page; if it keeps happening, check the browser console and the network panel."),
            }),
          ),
        limit,
      );
    });
    try {
      const value = await Promise.race([fn(), watchdog]);
      const ms = Math.round(performance.now() - t0);
      this.timings[name] = ms;
      this.post({ type: "boot", phase: name, state: "done", ms });
      return value;
    } catch (err) {
      if (err instanceof BootError) throw err;
      throw new BootError({ phase: name, message: `boot phase "${name}" failed: ${err?.message ?? err}`, detail: err?.stack });
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Secure context, OPFS with sync access handles, Web Locks: say which one is missing. */
export function checkBrowser() {
  if (!self.isSecureContext) {
    throw new BootError({
      phase: "sqlite",
      message:
        "This page is not a secure context, so the browser offers no OPFS storage. Serve it over " +
        "https:// or from http://localhost / http://127.0.0.1.",
    });
  }
  if (!navigator.storage?.getDirectory || !self.FileSystemFileHandle?.prototype?.createSyncAccessHandle) {
    throw new BootError({
      phase: "sqlite",
      message:
        "This browser has no OPFS with synchronous access handles (private windows of some browsers " +
        "disable it). Use a current Chrome, Edge, Firefox or Safari in a normal window.",
    });
  }
  if (!navigator.locks) {
    throw new BootError({ phase: "lock", message: "This browser has no Web Locks API (navigator.locks); use a current browser." });
  }
}

export async function readManifest() {
  const manifest = await fetchOk("manifest.json", "json").catch((err) => {
    throw new BootError({ phase: "sqlite", message: `cannot read the site's manifest.json (${err.message}): is the site built and complete?` });
  });
  if (manifest.format !== 1) {
    throw new BootError({ phase: "sqlite", message: `manifest.json has format ${manifest.format}; this worker reads format 1` });
  }
  return manifest;
}

async function loadSqlite() {
  try {
    const { default: sqlite3InitModule } = await import(siteURL("vendor/sqlite-wasm/index.mjs"));
    return await sqlite3InitModule({
      print: (...args) => console.log("[sqlite]", ...args),
      printErr: (...args) => console.warn("[sqlite]", ...args),
    });
  } catch (err) {
    // Offline, or a file missing or altered (Emscripten's abort says only what failed, and
    // to build "with -sASSERTIONS"): say what to do.
    const why = String(err?.message ?? err).replace(/\.?\s*Build with -sASSERTIONS for more info\.?$/, "").replace(/\.$/, "");
    throw new BootError({
      phase: "sqlite",
      message:
        `cannot load SQLite (vendor/sqlite-wasm/): ${why}. Check the network and reload; ` +
        "if it keeps failing, the site may be half deployed: redeploy the whole site/ folder.",
      detail: err?.stack,
    });
  }
}

// The pool and open phases: the database file in the OPFS pool, and the bridge Python calls.
async function openDatabase(boot, sqlite3, res) {
  res.pool = await boot.phase("pool", () => installPool(sqlite3));
  return boot.phase("open", async () => {
    const openDb = (name) => {
      const db = new res.pool.OpfsSAHPoolDb(name);
      // Extended codes ("SQLITE_CONSTRAINT_UNIQUE", not just "SQLITE_CONSTRAINT"), as CPython reports.
      sqlite3.capi.sqlite3_extended_result_codes(db.pointer, 1);
      for (const sql of PRAGMAS) db.exec(sql);
      const mode = db.selectValue("PRAGMA journal_mode");
      if (mode !== "wal") console.warn(`[durably] journal_mode of ${name} is ${mode}, not wal`);
      return db;
    };
    // The -wal and -journal first: a file cut off half-way through this still has its
    // database, never a log that outlived it.
    const removeDb = (name) => {
      for (const suffix of ["-wal", "-journal", ""]) res.pool.unlink(name + suffix);
    };
    recoverImport(res.pool, removeDb);
    res.db = openDb(DB_FILE);
    // For importDatabase and exportDatabase (web/leader.js): other files of the pool.
    res.openDb = openDb;
    res.removeDb = removeDb;
    res.makeBridge = (db) => createBridge(sqlite3, db, { open: openDb, remove: removeDb });
    return res.makeBridge(res.db);
  });
}

// An import cut off by a reload or a closed tab (web/leader.js importDatabase) leaves the
// database it was replacing in PREVIOUS_FILE. If the imported file never made it into the
// pool (the pool names a file only once all its bytes are written), put the previous one
// back; else the import got as far as the new file, which is whole: keep it. Either way the
// tab boots on one whole database, never an empty one.
export function recoverImport(pool, removeDb) {
  const names = pool.getFileNames();
  if (!names.includes(PREVIOUS_FILE)) return;
  if (!names.includes(DB_FILE)) {
    console.warn("[durably] an import was interrupted: the database it was replacing is put back");
    pool.importDb(DB_FILE, pool.exportFile(PREVIOUS_FILE));
  }
  removeDb(PREVIOUS_FILE);
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

// Every file the worker installs (micropip, the wheels, the job modules), downloaded at once
// and each checked against its SHA-256 in manifest.json, so a half-deployed or altered site
// says which file is wrong instead of running code it was not built with. Each phase awaits
// (and reports the failure of) its own part.
function downloadCode(manifest) {
  const micropip = fetchChecked(manifest.micropip, "install");
  const wheels = Promise.all(manifest.wheels.map((w) => fetchChecked(w, "install")));
  const modules = Promise.all(manifest.jobModules.map((m) => fetchChecked(m, "install")));
  for (const p of [micropip, wheels, modules]) p.catch(() => {});
  return { micropip, wheels, modules };
}

// One manifest entry ({url, sha256, file?, module?}): its bytes, once they match the hash.
async function fetchChecked(entry, phase) {
  let res;
  try {
    // no-cache: a host that lets browsers keep files for a while (GitHub Pages: 10 min) must
    // not hand back a job module older than the manifest just read.
    res = await fetch(siteURL(entry.url), { cache: "no-cache" });
  } catch (err) {
    throw new BootError({ phase, message: `cannot download ${entry.url}: ${err?.message ?? err}. Check the network and reload.` });
  }
  if (!res.ok) throw new BootError({ phase, message: `cannot download ${entry.url}: HTTP ${res.status}. Is the site fully deployed?` });
  const bytes = new Uint8Array(await res.arrayBuffer());
  const digest = await sha256Hex(bytes);
  if (digest !== entry.sha256) {
    throw new BootError({
      phase,
      message:
        `${entry.url} is not the file this site was built with (SHA-256 ${digest.slice(0, 12)}..., ` +
        `expected ${String(entry.sha256).slice(0, 12)}...): rebuild and redeploy the whole site/ folder`,
    });
  }
  return { ...entry, bytes };
}

// Unpack a checked wheel into site-packages: our wheels are pure Python without
// dependencies, so there is nothing for an installer to resolve.
function unpackWheel(pyodide, wheel, phase) {
  const purelib = pyodide.runPython("import sysconfig\nsysconfig.get_path('purelib')");
  try {
    pyodide.unpackArchive(wheel.bytes, "wheel", { extractDir: purelib });
  } catch (err) {
    const text = String(err?.message ?? err);
    throw new BootError({ phase, message: `installing ${wheel.file} failed: ${lastLine(text)}`, detail: text });
  }
}

// Pyodide 314 only logs "wasm instantiation failed!" when pyodide.asm.wasm cannot be
// fetched, and loadPyodide() never settles: the boot would hang. Ask the server for it
// alongside (HEAD: no body) and reject when it is not there; anything else (a host that
// refuses HEAD, no network but a service worker that has the file) leaves it to Pyodide.
function wasmMissing() {
  const rel = "vendor/pyodide/pyodide.asm.wasm";
  const never = new Promise(() => {});
  return fetch(siteURL(rel), { method: "HEAD", cache: "no-cache" }).then(
    (res) => {
      if (res.status === 404 || res.status === 410) {
        throw new BootError({ phase: "pyodide", message: `cannot download ${rel}: HTTP ${res.status}. Is the site fully deployed?` });
      }
      return never;
    },
    () => never,
  );
}

/**
 * Put a checked job module where Python imports it from: a .py file, or a job package (a zip
 * of its folder, "package" in the manifest) unpacked into the jobs folder.
 * @param {any} pyodide @param {{module: string, bytes: Uint8Array, package?: boolean}} m
 */
export function writeJobModule(pyodide, m) {
  if (m.package) pyodide.unpackArchive(m.bytes, "zip", { extractDir: JOBS_DIR });
  else pyodide.FS.writeFile(`${JOBS_DIR}/${m.module}.py`, m.bytes);
}

// What importlib.invalidate_caches() does, except for the zip archives on sys.path: the
// folders just written are listed again, but each zipimporter keeps the directory it read of
// its archive (the standard library's, cronsim's and tzdata's, read when the snapshot was made
// and the same files now: their bytes are in the snapshot's key). invalidate_caches() drops
// those, and the next import that looks through every sys.path entry (the first one of
// durably_bridge, in the start phase) read them all again: 70-110 ms of the boot.
const INVALIDATE_CACHES = `
from importlib.machinery import FileFinder
from importlib.metadata import MetadataPathFinder
_name = _finder = None
for _name, _finder in list(sys.path_importer_cache.items()):
    if _finder is None or not _name.startswith("/"):
        del sys.path_importer_cache[_name]
    elif isinstance(_finder, FileFinder):
        _finder.invalidate_caches()
MetadataPathFinder.invalidate_caches()
del _name, _finder
`;

// Write a checked pure-Python wheel, as the zip file it is, where it goes on sys.path.
function writeZipWheel(pyodide, wheel) {
  const file = `${WHEELS_DIR}/${wheel.file}`;
  pyodide.FS.mkdirTree(WHEELS_DIR);
  pyodide.FS.writeFile(file, wheel.bytes);
  return file;
}

/**
 * The phases snapshot, pyodide and install: start Python from the site's memory snapshot (or,
 * without a usable one, load Pyodide from the site's own files) and put durably and the job
 * modules where Python imports them from. Returns the Pyodide instance. Everything about how
 * Python is obtained lives inside this function (and web/snapshot.js).
 *
 * @param {Boot} boot runs and reports the phases
 * @param {object} manifest the site's manifest.json
 * @param {{micropip, wheels, modules}} downloads promises of the checked micropip wheel, wheels
 *   and job modules ({...manifest entry, bytes})
 * @param {ReturnType<typeof prefetchSnapshot>} snapshot the snapshot's download, when the site has one
 * @param {Promise<WebAssembly.Module | null> | null} [wasm] pyodide.asm.wasm compiled ahead, for the restore
 */
export async function loadPython(boot, manifest, downloads, snapshot, wasm = null) {
  const pyodide = await startPython({
    boot,
    manifest,
    snapshot,
    wasm,
    load: async (extra) => {
      const { loadPyodide } = await import(siteURL("vendor/pyodide/pyodide.mjs"));
      return Promise.race([
        loadPyodide({
          indexURL: siteURL("vendor/pyodide/"),
          // Packages from the site's own files, never Pyodide's CDN fallback.
          packageBaseUrl: siteURL("vendor/pyodide/"),
          stdout: (line) => console.log("[python]", line),
          stderr: (line) => console.warn("[python]", line),
          ...extra,
        }),
        wasmMissing(),
      ]);
    },
    moduleFactory: async () => (await import(siteURL("vendor/pyodide/pyodide.asm.mjs"))).default,
  });

  await boot.phase("install", async () => {
    // Place the wheels downloadCode() fetched and checked: placing the checked bytes is ~0.6 s
    // faster than importing micropip to install them. After a snapshot restore durably is
    // imported already, but its files are not there (the snapshot holds memory, not files):
    // importlib.metadata, tracebacks and later imports read them. Wheels marked "zip" (durably
    // and its dependencies: pure Python) are written as they are and put on sys.path, as
    // micropip below (tzdata's ~600 files took ~0.5 s to unpack, durably's ~35 60-90 ms); the
    // site's requirements are unpacked into site-packages (they may hold data files or
    // compiled modules, which zipimport cannot load).
    const zips = [];
    for (const w of await downloads.wheels) {
      if (w.zip) zips.push(writeZipWheel(pyodide, w));
      else unpackWheel(pyodide, w, "install");
    }
    // micropip is neither imported at boot (its import costs ~0.5 s, which only the jobs that
    // use it to install packages at run time should pay) nor unpacked (50-200 ms for its 45
    // files): its checked wheel goes on sys.path as it is. It is pure Python and reads no data
    // files, so zipimport imports it, and importlib.metadata finds it, from the zip.
    const zipped = writeZipWheel(pyodide, await downloads.micropip);
    zips.push(zipped);
    const modules = await downloads.modules;
    pyodide.FS.mkdirTree(JOBS_DIR);
    for (const m of modules) writeJobModule(pyodide, m);
    pyodide.runPython(
      `import sys\nif ${JSON.stringify(JOBS_DIR)} not in sys.path: sys.path.insert(0, ${JSON.stringify(JOBS_DIR)})\n` +
        `for _zip in ${JSON.stringify(zips)}:\n    if _zip not in sys.path: sys.path.append(_zip)\n` +
        INVALIDATE_CACHES,
    );
  });
  return pyodide;
}

// The import phase: have durably.browser check the page's init message against the
// manifest, and import the job modules it names. Returns the checked init.
async function importJobs(pyodide, init, manifest) {
  let browser;
  try {
    browser = pyodide.pyimport("durably.browser");
  } catch (err) {
    throw pythonBootError("import", "cannot import durably.browser", err);
  }
  try {
    let checked;
    try {
      // The site's default options ([tool.durably.site] options) under the page's own.
      const merged = { ...init, options: { ...(manifest.options ?? {}), ...(init.options ?? {}) } };
      const proxy = browser.parse_init(
        JSON.stringify(merged),
        manifest.jobModules.map((m) => m.module),
      );
      checked = proxy.toJs({ dict_converter: Object.fromEntries });
      proxy.destroy();
    } catch (err) {
      throw pythonBootError("import", "the page's init message was refused", err, true);
    }
    const failures = JSON.parse(browser.import_job_modules(checked.jobs));
    if (failures.length) {
      throw new BootError({
        phase: "import",
        message: `cannot import ${failures.map((f) => f.module).join(", ")}: ${lastLine(failures[0].traceback)}`,
        detail: failures.map((f) => f.traceback).join("\n"),
      });
    }
    return checked;
  } finally {
    browser.destroy();
  }
}

async function waitForInit(initReceived) {
  let timer;
  return Promise.race([
    initReceived,
    new Promise((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new BootError({ phase: "import", message: `the page sent no init message within ${INIT_TIMEOUT_MS / 1000} s; connect() sends it (web/client.js)` }),
          ),
        INIT_TIMEOUT_MS,
      );
    }),
  ]).finally(() => clearTimeout(timer));
}

// The start phase: the BrowserHost, the schema, the leases, the runtime.
async function startHost(res, init, onEvent) {
  const browser = res.pyodide.pyimport("durably.browser");
  const postEvent = (text) => {
    // An event the page cannot read must not stop the runtime: warn and go on.
    try {
      onEvent(text);
    } catch (err) {
      console.warn("[durably] dropping an event that could not be posted:", err);
    }
  };
  try {
    res.host = browser.make_host(postEvent, JSON.stringify(init));
  } catch (err) {
    throw pythonBootError("start", "cannot start durably", err);
  } finally {
    browser.destroy();
  }
  try {
    const result = await res.host.start();
    const started = result.toJs({ dict_converter: Object.fromEntries });
    result.destroy();
    return started;
  } catch (err) {
    // SchemaError (a database written by a newer durably) lands here, before anything
    // was written: the file is left exactly as it was.
    throw pythonBootError("start", "cannot open the database", err);
  }
}

// A Python exception at boot: its last line on the status line, the traceback in the details.
// `bare`: the message is the error's own (a ValidationError that says what to do).
function pythonBootError(phase, what, err, bare = false) {
  const text = String(err?.message ?? err);
  const last = lastLine(text);
  const message = bare ? last.replace(/^[\w.]*Error: /, "") : `${what}: ${last}`;
  return new BootError({ phase, message, detail: text });
}

async function fetchOk(rel, as) {
  const res = await fetch(siteURL(rel), { cache: "no-cache" });
  if (!res.ok) throw new Error(`GET ${rel}: HTTP ${res.status}`);
  return as === "json" ? res.json() : res.text();
}


export function lastLine(text) {
  const lines = String(text).trim().split("\n");
  return lines[lines.length - 1];
}
