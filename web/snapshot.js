// @ts-check
// Python from a memory snapshot: what the worker boots from, and what the build makes it from.
//
// The site's build (scripts/snapshot.mjs) starts Pyodide in Node, unpacks the site's wheels,
// writes its job modules, imports durably and those modules (preludePython), and saves Pyodide's
// memory with pyodide.makeMemorySnapshot(). The worker restores that memory with
// loadPyodide({_loadSnapshot}) instead of starting Python from nothing: docs/browser.md
// ("Boot") has the figures and why the snapshot is made at build time rather than in the
// browser. Both sides import this module, so the key, the prelude and the fix-ups have one
// source.
//
// Pyodide 314's snapshot API is experimental (underscore options, a private
// makeMemorySnapshot). What this relies on, from reading pyodide.asm.mjs / src/js/snapshot.ts:
//   - A snapshot is a header (magic number, Pyodide's BUILD_ID, a JSON list of the JS objects
//     Python held) followed by a copy of the whole wasm memory. restoreSnapshot() checks the
//     magic number and the BUILD_ID, so a snapshot of another Pyodide build is refused.
//   - Only JS objects Pyodide itself can find again may be referenced from Python when the
//     snapshot is taken: so the prelude registers no JS module (durably_bridge is registered
//     by the worker after the restore) and touches no JS object.
//   - The memory holds the interpreter and every imported module, sys.path, os.environ,
//     random's state and the C library's time zone; it does not hold Emscripten's file system
//     (that lives in JS). So the install phase still unpacks the wheels and writes the job
//     modules (importlib.metadata, tracebacks and later imports read them), and whatever was
//     frozen at build time is redone after the restore (AFTER_RESTORE, restoreTimeZone).
//   - loadPyodide() makes its module through the createPyodideModule option when given one,
//     and that module has run its start (preRun) before the snapshot is copied in: how the
//     worker reads what the copy overwrites (the call trampoline).
//   - A restored Pyodide starts with its compiled-in 30 MiB of memory whatever the snapshot's
//     size (INITIAL_MEMORY is ignored: pyodide/pyodide#6254), so a snapshot of a memory that
//     grew past that cannot be restored; the build refuses to make one (scripts/snapshot.mjs).

/** Bump when what goes into a snapshot changes in a way the key would not see. */
export const SNAPSHOT_FORMAT = 2;
/** Where the job modules live in Pyodide's file system (on sys.path). */
export const JOBS_DIR = "/home/pyodide/durably_jobs";
/** Where micropip's wheel and durably's dependencies ("zip" in the manifest) are written, as
 * they are, each file on sys.path for zipimport. */
export const WHEELS_DIR = "/home/pyodide/wheels";
/** Download and restore must finish within this, or the worker boots without the snapshot. */
export const SNAPSHOT_TIMEOUT_MS = 60_000;
/** Reading this browser's copy of the snapshot must finish within this, or it is downloaded. */
const KEPT_TIMEOUT_MS = 5_000;

/**
 * The Python the build runs before taking the snapshot: everything the boot imports anyway,
 * and what the install phase's calls import the first time (importlib.invalidate_caches()
 * imports importlib.metadata: ~0.4-0.8 s; sysconfig computes its paths once). "" leaves
 * sys.path because loadPyodide() puts it back after a restore.
 * @param {string[]} jobModules
 */
export function preludePython(jobModules) {
  return `
import importlib, importlib.metadata, json, sys, sysconfig, traceback
sysconfig.get_path("purelib")
if ${JSON.stringify(JOBS_DIR)} not in sys.path:
    sys.path.insert(0, ${JSON.stringify(JOBS_DIR)})
for _name in ${JSON.stringify(["durably", "durably.pyodide_driver", "durably.browser", ...jobModules])}:
    importlib.import_module(_name)
del _name
importlib.invalidate_caches()
while "" in sys.path:
    sys.path.remove("")
`;
}

// Redone after every restore: what the build machine froze into the snapshot.
//   - random: seeded once at import, so every restore would draw the same numbers; and
//     tempfile's name generator (made, and seeded, when the build unpacked the wheels).
//   - LANG: Emscripten sets it from navigator.language when Python starts (Node has none).
//   - sys._emscripten_info.runtime: the user agent, as CPython reads it when it starts (the
//     snapshot says "Node.js v20...").
//   - time.timezone/altzone/daylight/tzname: computed when the time module started, as CPython's
//     init_timezone does (localtime of 1 January and 1 July), after restoreTimeZone() below
//     has reset the C library's zone.
//   - sys.path: loadPyodide() inserts "" again (the prelude took it out); never twice.
const AFTER_RESTORE = `
def _durably_after_restore(lang, user_agent):
    import os, random, sys, time
    random.seed()
    if "tempfile" in sys.modules:
        sys.modules["tempfile"]._name_sequence = None  # made again, with a new seed, when used
    os.environ["LANG"] = lang
    info = sys._emscripten_info
    sys._emscripten_info = type(info)((info.emscripten_version, user_agent, info.pthreads, info.shared_memory))
    year = (365 * 24 + 6) * 3600
    t = int(time.time()) // year * year
    jan, jul = time.localtime(t), time.localtime(t + year // 2)
    janzone, julzone = -jan.tm_gmtoff, -jul.tm_gmtoff
    if janzone < julzone:  # the southern hemisphere's summer time is in January
        time.timezone, time.altzone, time.tzname = julzone, janzone, (jul.tm_zone, jan.tm_zone)
    else:
        time.timezone, time.altzone, time.tzname = janzone, julzone, (jan.tm_zone, jul.tm_zone)
    time.daylight = int(janzone != julzone)
    seen = set()
    sys.path[:] = [p for p in sys.path if not (p in seen or seen.add(p))]
_durably_after_restore
`;

/**
 * The key of a snapshot: a hash of everything it was made from. The build stores it inside the
 * snapshot (as _durably_snapshot_key in __main__); the worker computes it again from
 * manifest.json and boots from the snapshot only when both agree, so a snapshot never outlives
 * the wheels, job modules or Pyodide it was made with.
 * @param {any} manifest the site's manifest.json
 * @param {string[]} jobModules the job modules imported into the snapshot
 */
export async function snapshotKey(manifest, jobModules) {
  const byName = new Map(manifest.jobModules.map((/** @type {any} */ m) => [m.module, m.sha256]));
  const inputs = {
    format: SNAPSHOT_FORMAT,
    pyodide: manifest.versions.pyodide,
    wheels: manifest.wheels.map((/** @type {any} */ w) => w.sha256),
    jobModules: jobModules.map((name) => [name, byName.get(name) ?? null]),
    prelude: preludePython(jobModules),
  };
  return sha256Hex(new TextEncoder().encode(JSON.stringify(inputs)));
}

// Self-contained (it refers to nothing outside its body): it also runs as the source of the
// worker that downloads the snapshot (DOWNLOADER below).
function snapshotTools() {
  // This browser's unzipped copy of the snapshot: a file of the origin's OPFS (beside, never
  // inside, the database's pool), named by the snapshot's key, so a new deploy never reads
  // the copy of an old one (and removes it when it keeps its own).
  const KEPT_DIR = "durably-snapshot";
  const keptName = (/** @type {any} */ entry) => `${entry.key}.bin`;

  /** @param {Uint8Array<ArrayBuffer>} bytes */
  async function sha256Hex(bytes) {
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** @param {Uint8Array<ArrayBuffer>} bytes */
  async function gunzip(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  /** The kept copy's bytes, or null (none, another size, no OPFS). @param {any} entry */
  async function readKept(entry) {
    try {
      const root = await navigator.storage.getDirectory();
      const dir = await root.getDirectoryHandle(KEPT_DIR);
      const file = await (await dir.getFileHandle(keptName(entry))).getFile();
      if (file.size !== entry.bytes) return null;
      return new Uint8Array(await file.arrayBuffer());
    } catch {
      return null;
    }
  }

  /**
   * The snapshot's bytes, downloaded, unzipped and checked against its manifest entry.
   * @param {string} url @param {any} entry @param {AbortSignal} [signal]
   */
  async function download(url, entry, signal) {
    const res = await fetch(url, { signal });
    if (!res.ok) throw new Error(`GET ${entry.url}: HTTP ${res.status}`);
    let bytes = new Uint8Array(await res.arrayBuffer());
    if (bytes[0] === 0x1f && bytes[1] === 0x8b) {
      const digest = await sha256Hex(bytes);
      if (digest !== entry.sha256) {
        throw new Error(`${entry.url} is not the snapshot this site was built with (SHA-256 ${digest.slice(0, 12)}...)`);
      }
      bytes = await gunzip(bytes);
    }
    // else: a server that sends .gz files with "Content-Encoding: gzip" had the browser unzip
    // it already; its size is checked here and its key after the restore.
    if (bytes.length !== entry.bytes) {
      throw new Error(`${entry.url} unzips to ${bytes.length} bytes, not the ${entry.bytes} it was built with`);
    }
    return bytes;
  }

  /**
   * Keep `bytes` (a snapshot) as this browser's copy, in place of any other, once `restored`
   * resolves to true (the copy is written meanwhile, and given its name only then: a snapshot
   * that did not restore is never kept). `bytes === null`: only remove the copy (it did not
   * restore). Never throws; true once kept.
   * @param {any} entry @param {Uint8Array | null} bytes @param {Promise<boolean>} [restored]
   * @returns {Promise<boolean>}
   */
  async function keep(entry, bytes, restored = Promise.resolve(true)) {
    try {
      const root = await navigator.storage.getDirectory();
      const dir = await root.getDirectoryHandle(KEPT_DIR, { create: true }).catch(async (err) => {
        // A file where the copy's folder goes (not one of ours): it is replaced by the folder.
        if (err?.name !== "TypeMismatchError") throw err;
        await root.removeEntry(KEPT_DIR);
        return root.getDirectoryHandle(KEPT_DIR, { create: true });
      });
      /** @type {string[]} */
      const names = [];
      for await (const name of /** @type {any} */ (dir).keys()) names.push(name);
      for (const name of names) {
        if (bytes === null ? name === keptName(entry) : name !== keptName(entry)) await dir.removeEntry(name).catch(() => {});
      }
      if (bytes === null) return false;
      // Written under another name and then renamed, where the browser can (FileSystemHandle's
      // move()): a tab closed half-way through leaves a part file (removed by the next keep),
      // never a copy of the right name that is not whole. (readKept also checks the size.)
      const part = await dir.getFileHandle(`${keptName(entry)}.part`, { create: true });
      await writeWhole(part, bytes);
      if (!(await restored)) {
        await dir.removeEntry(`${keptName(entry)}.part`).catch(() => {});
        return false;
      }
      const anyPart = /** @type {any} */ (part);
      if (typeof anyPart.move === "function") await anyPart.move(keptName(entry));
      else {
        await writeWhole(await dir.getFileHandle(keptName(entry), { create: true }), bytes);
        await dir.removeEntry(`${keptName(entry)}.part`);
      }
      return true;
    } catch (err) {
      // A full quota, a browser without OPFS writes: the next boot downloads the snapshot again.
      console.warn("[durably] could not keep a copy of the Python snapshot:", err);
      return false;
    }
  }

  /**
   * Write `bytes` as the whole content of an OPFS file: with a writable stream, or (a browser
   * whose workers have none) a sync access handle, as the database's pool uses.
   * @param {FileSystemFileHandle} handle @param {Uint8Array} bytes
   */
  async function writeWhole(handle, bytes) {
    const anyHandle = /** @type {any} */ (handle);
    if (typeof anyHandle.createWritable === "function") {
      const writable = await anyHandle.createWritable();
      try {
        await writable.write(bytes);
        await writable.close();
      } catch (err) {
        await writable.abort().catch(() => {});
        throw err;
      }
      return;
    }
    const access = await anyHandle.createSyncAccessHandle();
    try {
      access.truncate(0);
      if (access.write(bytes, { at: 0 }) !== bytes.length) throw new Error("the copy was written short");
      access.flush();
    } finally {
      access.close();
    }
  }

  return { sha256Hex, download, readKept, keep, KEPT_DIR };
}

// One set of the tools for this worker (the download worker builds its own from the source).
const tools = snapshotTools();
export const { sha256Hex, KEPT_DIR } = tools;

/** Keep `bytes` as this browser's copy of the snapshot (`null`: remove it), and say so. */
export async function keepSnapshot(/** @type {any} */ entry, /** @type {Uint8Array | null} */ bytes) {
  const size = bytes?.length ?? 0;
  if (await tools.keep(entry, bytes)) logKept(size);
}

const DISCARDED = "[durably] no copy of the Python snapshot is kept: the downloaded snapshot";

function logKept(/** @type {number} */ size) {
  console.info(`[durably] kept a copy of the Python snapshot (${(size / 1e6).toFixed(1)} MB) in this browser's storage for the next boots`);
}

// A worker of its own downloads, checks and unzips the snapshot (~0.2 s of work, most of it
// the unzip), on another core while this worker starts sqlite and opens the pool: nothing
// runs on this worker's thread beside the pool's install (see "sqlite comes before Pyodide"
// in boot.js). From a blob: URL, so the site needs no extra file.
const DOWNLOADER = `const { download, keep } = (${snapshotTools})();
let verdict;
const restored = new Promise((resolve) => { verdict = resolve; });
onmessage = async ({ data }) => {
  if ("restored" in data) {
    verdict(data.restored);
    return;
  }
  const { url, entry } = data;
  let bytes;
  try {
    bytes = await download(url, entry);
  } catch (err) {
    postMessage({ error: String(err?.message ?? err) });
    return;
  }
  // A copy of its own is written (see keepSnapshot) on this thread while the boot worker
  // restores, and kept once the boot worker says it restored ({restored: true}).
  const copy = bytes.slice();
  postMessage({ bytes }, [bytes.buffer]);
  const kept = await keep(entry, copy, restored);
  postMessage({ kept, size: copy.length, discarded: !(await restored) });
};`;

/** @typedef {{bytes?: Uint8Array, kept?: boolean, keeping?: boolean, error?: Error, restored?: boolean,
 *   verdict?: (restored: boolean) => void}} Fetched */

/**
 * Start downloading the snapshot manifest.json names, so it is ready when Python starts.
 * Resolves to {bytes, kept} (the snapshot, unzipped and checked; kept: read from this
 * browser's copy) or {error}; never rejects.
 * Null when the site has no snapshot.
 * @param {any} manifest
 * @param {(rel: string) => string} siteURL
 * @returns {Promise<Fetched> | null}
 */
export function prefetchSnapshot(manifest, siteURL) {
  const entry = manifest.snapshot;
  if (!entry) return null;
  // This browser's copy, when it has one, is read here: reading it is I/O, not work for
  // this worker's thread, and there is nothing to unzip. A storage that does not answer
  // within KEPT_TIMEOUT_MS counts as none.
  const none = new Promise((resolve) => setTimeout(() => resolve(null), KEPT_TIMEOUT_MS));
  return Promise.race([tools.readKept(entry), none]).then((bytes) =>
    bytes ? { bytes, kept: true } : downloadSnapshot(entry, siteURL(entry.url)),
  );
}

/**
 * Download, check and unzip the snapshot in a worker of its own.
 * @param {any} entry @param {string} url
 * @returns {Promise<Fetched>}
 */
function downloadSnapshot(entry, url) {
  return new Promise((resolve) => {
    /** @type {Worker | null} */
    let worker = null;
    let source = "";
    const controller = new AbortController();
    const settle = (/** @type {Fetched} */ result) => {
      clearTimeout(timer);
      if (!result.keeping) {
        worker?.terminate();
        if (source) URL.revokeObjectURL(source);
      }
      resolve(result);
    };
    const timer = setTimeout(() => {
      controller.abort();
      settle({ error: new Error(`downloading ${entry.url} took over ${SNAPSHOT_TIMEOUT_MS / 1000} s`) });
    }, SNAPSHOT_TIMEOUT_MS);
    // Without a worker of its own (a browser without nested workers, a page whose CSP refuses
    // blob: workers) or after it failed, this worker does the same itself.
    const here = () =>
      tools
        .download(url, entry, controller.signal)
        .then(
          (bytes) => settle({ bytes, kept: false }),
          (err) => settle({ error: err }),
        );
    try {
      source = URL.createObjectURL(new Blob([DOWNLOADER], { type: "text/javascript" }));
      worker = new Worker(source);
    } catch {
      here();
      return;
    }
    // A failure there is tried again here before it counts: a nested worker may not be under
    // the page's service worker (so offline it cannot download what this worker can).
    worker.onmessage = ({ data }) => {
      if ("kept" in data) {
        // Its copy is written (or could not be, or was not kept): the worker's work is over.
        if (data.kept) logKept(data.size);
        else if (data.discarded) console.info(`${DISCARDED} did not restore`);
        worker?.terminate();
        URL.revokeObjectURL(source);
        return;
      }
      if (!data.error) {
        const verdict = (/** @type {boolean} */ restored) => worker?.postMessage({ restored });
        settle({ bytes: data.bytes, kept: false, keeping: true, verdict });
        return;
      }
      worker?.terminate();
      worker = null;
      here();
    };
    worker.onerror = (event) => {
      event.preventDefault();
      worker?.terminate();
      worker = null;
      here();
    };
    worker.postMessage({ url, entry });
  });
}

/**
 * Start compiling pyodide.asm.wasm now, on the browser's compiler threads, so that the restore
 * only instantiates it (about 100 ms of the snapshot phase otherwise, after the snapshot's
 * bytes are in). Never rejects: resolves to null when it cannot compile here (the restore
 * then lets Pyodide fetch and compile it as usual).
 * @param {string} url
 * @returns {Promise<WebAssembly.Module | null>}
 */
export function precompileWasm(url) {
  if (typeof WebAssembly.compileStreaming !== "function") return Promise.resolve(null);
  return WebAssembly.compileStreaming(fetch(url)).catch(() => null);
}

/**
 * Pyodide's instantiateWasm (settings.instantiateWasm), made to instantiate `compiled` instead
 * of compiling the response it fetched. Pyodide's own function adds its imports and then calls
 * WebAssembly.instantiateStreaming(response, imports); for that one call (recognised by its
 * imports object: sqlite-wasm may instantiate its own module meanwhile) the module compiled
 * ahead is used, and the response is dropped unread.
 * @param {Function} instantiateWasm Pyodide's
 * @param {Promise<WebAssembly.Module | null>} compiled
 */
function withCompiledWasm(instantiateWasm, compiled) {
  return (/** @type {any} */ imports, /** @type {Function} */ callback) => {
    const real = WebAssembly.instantiateStreaming;
    const ours = async (/** @type {any} */ source, /** @type {any} */ theirImports) => {
      if (theirImports !== imports) return real.call(WebAssembly, source, theirImports);
      WebAssembly.instantiateStreaming = real;
      const module = await compiled;
      if (!module) return real.call(WebAssembly, source, theirImports);
      Promise.resolve(source).then((res) => res.body?.cancel(), () => {});
      return { module, instance: await WebAssembly.instantiate(module, theirImports) };
    };
    WebAssembly.instantiateStreaming = ours;
    return instantiateWasm(imports, (/** @type {any} */ instance, /** @type {any} */ module) => {
      if (WebAssembly.instantiateStreaming === ours) WebAssembly.instantiateStreaming = real;
      callback(instance, module);
    });
  };
}

/**
 * Restore Python from the snapshot bytes and check it is this site's; redo what the build froze.
 * @param {{load: (extra: object) => Promise<any>, moduleFactory: () => Promise<Function>, bytes: Promise<Uint8Array>,
 *   manifest: any, wasm: Promise<WebAssembly.Module | null> | null}} args
 */
async function restore({ load, moduleFactory, bytes, manifest, wasm }) {
  const entry = manifest.snapshot;
  // Pyodide's module, made by the factory of pyodide.asm.mjs (loadPyodide's experimental
  // createPyodideModule option), is ready before the snapshot is copied into its memory: the
  // moment to read what this browser's start put there and the copy overwrites. The factory
  // is also where the module compiled ahead (precompileWasm) is handed to Pyodide.
  const factory = await moduleFactory();
  /** @type {number | undefined} */
  let trampoline;
  const createPyodideModule = async (/** @type {any} */ settings) => {
    if (wasm && settings.instantiateWasm) settings.instantiateWasm = withCompiledWasm(settings.instantiateWasm, wasm);
    const module = await factory(settings);
    trampoline = module.HEAP32[trampolineSlot(module)];
    return module;
  };
  const pyodide = await load({ _loadSnapshot: bytes, createPyodideModule });
  const expected = await snapshotKey(manifest, entry.jobModules);
  const found = pyodide.globals.get("_durably_snapshot_key");
  if (found !== expected) {
    throw new Error(
      `it was made from other wheels, job modules or Pyodide than this site lists (key ${String(found).slice(0, 12)}..., ` +
        `expected ${expected.slice(0, 12)}...): rebuild and redeploy the whole site/ folder`,
    );
  }
  if (trampoline === undefined) throw new Error("Pyodide did not make its module through createPyodideModule");
  pyodide._module.HEAP32[trampolineSlot(pyodide._module)] = trampoline;
  restoreTimeZone(pyodide._module);
  const after = pyodide.runPython(AFTER_RESTORE);
  try {
    after(emscriptenLang(), globalThis.navigator?.userAgent ?? "UNKNOWN");
  } finally {
    after.destroy();
  }
  return pyodide;
}

// CPython calls a C function through a trampoline when its signature may differ from the
// caller's; the trampoline's function pointer lives in _PyRuntime. Pyodide's start (a preRun
// of pyodide.asm.mjs) picks one for this engine: a small wasm module where wasm GC is
// available, else a call through JS (pointer 0). The snapshot holds the build machine's pick:
// Node 20 has no wasm GC, so the JS one, whose JS frames use up the browser's JS stack in
// deep C recursion (json.dumps of 5,000 nested lists crashed Pyodide instead of finishing).
// So the restore puts back the pointer this browser's start chose. Returns the index of that
// pointer in HEAP32.
/** @param {any} m Emscripten's Module */
function trampolineSlot(m) {
  for (const name of ["HEAP32", "__PyRuntime", "__PyEM_EMSCRIPTEN_TRAMPOLINE_OFFSET"]) {
    if (m[name] === undefined) throw new Error(`this Pyodide has no Module.${name} to set CPython's call trampoline with`);
  }
  return (m.__PyRuntime + m.HEAP32[m.__PyEM_EMSCRIPTEN_TRAMPOLINE_OFFSET >>> 2]) >>> 2;
}

// The C library's time zone (tzset() ran once, on the build machine, and never runs again):
// set it as Emscripten's _tzset_js does, from this browser's Date. strftime("%Z") and
// localtime()'s tm_zone read these.
/** @param {any} m Emscripten's Module (pyodide._module) */
function restoreTimeZone(m) {
  for (const name of ["_timezone", "_daylight", "_tzname", "HEAPU32", "HEAP32", "stringToUTF8"]) {
    if (m[name] === undefined) throw new Error(`this Pyodide has no Module.${name} to reset the time zone with`);
  }
  const year = new Date().getFullYear();
  const winter = new Date(year, 0, 1).getTimezoneOffset();
  const summer = new Date(year, 6, 1).getTimezoneOffset();
  const zone = (/** @type {number} */ offset) => {
    const abs = Math.abs(offset);
    return `UTC${offset >= 0 ? "-" : "+"}${String(Math.floor(abs / 60)).padStart(2, "0")}${String(abs % 60).padStart(2, "0")}`;
  };
  m.HEAPU32[m._timezone >>> 2] = Math.max(winter, summer) * 60;
  m.HEAP32[m._daylight >>> 2] = Number(winter !== summer);
  const [std, dst] = summer < winter ? [zone(winter), zone(summer)] : [zone(summer), zone(winter)];
  m.stringToUTF8(std, m.HEAPU32[m._tzname >>> 2], 17);
  m.stringToUTF8(dst, m.HEAPU32[(m._tzname >>> 2) + 1], 17);
}

/** LANG as Emscripten computes it when Python starts. */
function emscriptenLang() {
  return `${(globalThis.navigator?.language ?? "C").replace("-", "_")}.UTF-8`;
}

/**
 * Start Python: from the snapshot when the site has one and it restores, else (or after it
 * failed, which the "snapshot" phase reports with state "fallback" and why) from scratch in the
 * "pyodide" phase.
 * @param {{
 *   boot: {phase: (name: string, fn: () => Promise<any>) => Promise<any>, post: (msg: object) => void, timings: Record<string, number>},
 *   manifest: any,
 *   snapshot: ReturnType<typeof prefetchSnapshot>,
 *   load: (extra: object) => Promise<any>,
 *   moduleFactory: () => Promise<Function>,
 *   wasm?: Promise<WebAssembly.Module | null> | null,
 * }} args
 */
export async function startPython({ boot, manifest, snapshot, load, moduleFactory, wasm = null }) {
  if (snapshot) {
    boot.post({ type: "boot", phase: "snapshot", state: "start" });
    const t0 = performance.now();
    const done = (/** @type {string} */ state, /** @type {string} */ detail) => {
      const ms = Math.round(performance.now() - t0);
      boot.timings.snapshot = ms;
      boot.post({ type: "boot", phase: "snapshot", state, ms, detail });
    };
    /** @type {any} */
    let timer;
    /** @type {Fetched} */
    let got = {};
    // loadPyodide() is called at once, with the snapshot's bytes still to come: its first
    // stages (Pyodide's lock file, the standard library's download) run while they do.
    const bytes = snapshot.then((fetched) => {
      got = fetched;
      if (fetched.error) throw fetched.error;
      return /** @type {Uint8Array} */ (fetched.bytes);
    });
    try {
      const pyodide = await Promise.race([
        restore({ load, moduleFactory, bytes, manifest, wasm }),
        bytes.then(
          () =>
            new Promise((_, reject) => {
              timer = setTimeout(() => reject(new Error(`restoring it took over ${SNAPSHOT_TIMEOUT_MS / 1000} s`)), SNAPSHOT_TIMEOUT_MS);
            }),
        ),
      ]);
      got.restored = true;
      got.verdict?.(true);
      // A downloaded snapshot that restored is kept as this browser's copy, in the background
      // (the write is the browser's I/O): later boots read it instead of downloading and
      // unzipping it again (~30 ms instead of 200-300). The download worker keeps its own copy
      // on its thread while this one restores; without it, it is written from here, now
      // rather than after ready, so that a reload right after ready finds it whole.
      const restored = got.bytes;
      got.bytes = undefined;
      if (restored && !got.kept && !got.keeping) keepSnapshot(manifest.snapshot, restored);
      done(
        "done",
        got.kept
          ? `Python restored from this browser's copy of ${manifest.snapshot.url} (${(manifest.snapshot.bytes / 1e6).toFixed(1)} MB)`
          : `Python restored from ${manifest.snapshot.url} (${(manifest.snapshot.gzipBytes / 1e6).toFixed(1)} MB)`,
      );
      return pyodide;
    } catch (err) {
      // A kept copy that does not restore is removed: the next boot downloads the snapshot.
      got = await snapshot;
      got.verdict?.(false); // the download worker's copy is not kept
      if (got.kept) keepSnapshot(manifest.snapshot, null);
      const reason = String(/** @type {any} */ (err)?.message ?? err).trim().split("\n")[0];
      const detail = `The memory snapshot could not be used (${reason}); starting Python without it.`;
      console.warn(`[durably] ${detail}`, err);
      done("fallback", detail);
    } finally {
      clearTimeout(timer);
    }
  }
  return boot.phase("pyodide", () => load({}));
}
