// Makes the Python memory snapshot the worker boots from (web/snapshot.js; docs/browser.md, "Boot").
//
// build.mjs calls buildSnapshot() once the wheels and job modules are in site/: it starts
// Pyodide in Node (in a child process: a crash or a stray handle of Pyodide's never touches the
// build), unpacks the site's wheels, writes its job modules, imports them, and saves Pyodide's
// memory gzipped as site/snapshots/<key>.gz. The key hashes everything the snapshot is made
// from (web/snapshot.js: snapshotKey), and the result is kept in .cache/snapshots/ under it, so
// a rebuild with the same wheels, job modules and Pyodide costs a copy, not a Pyodide start.
//
// A snapshot that cannot be made (a job module that fails to import in Node, a memory that
// grew past what a restore can hold) is a warning, not a failed build: the site then boots
// without one, and the page shows an import error as it would have anyway. A job module
// with a syntax error (or not UTF-8) is the exception: it fails the build.

import { spawnSync } from "node:child_process";
import { createHash, webcrypto } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import zlib from "node:zlib";
import { JOBS_DIR, preludePython, snapshotKey, WHEELS_DIR } from "../web/snapshot.js";

// web/snapshot.js hashes with the Web Crypto API, global from Node 19 on.
globalThis.crypto ??= webcrypto;

const here = fileURLToPath(import.meta.url);
// gzip level 6: level 9 saves 0.6% (~40 KB of 6.4 MB) for five times the time.
const GZIP_LEVEL = 6;
// Keep the last few snapshots in .cache/snapshots/ (6 MB each): enough to switch branches.
const KEEP_CACHED = 4;
// Starts the child's explanation of why it made no snapshot.
const HEADLINE = "cannot make the snapshot: ";

/**
 * Make (or take from the cache) the snapshot for this manifest and put it in site/snapshots/.
 * Returns manifest.json's `snapshot` entry, or null (with a warning printed) when none can be made.
 */
export async function buildSnapshot({ root, site, manifest }) {
  const started = Date.now();
  const jobModules = manifest.jobModules.map((m) => m.module);
  const key = await snapshotKey(manifest, jobModules);
  const cacheDir = path.join(root, ".cache", "snapshots");
  const cached = path.join(cacheDir, `${key}.gz`);
  const meta = path.join(cacheDir, `${key}.json`);
  let made = null;
  if (!fs.existsSync(cached) || !fs.existsSync(meta)) {
    fs.mkdirSync(cacheDir, { recursive: true });
    const request = { root, site, manifest, jobModules, key, out: cached, meta };
    const child = spawnSync(process.execPath, [here, JSON.stringify(request)], {
      stdio: ["ignore", "pipe", "pipe"],
      encoding: "utf8",
      // a Pyodide error prints its minified source line: keep the output bounded
      maxBuffer: 64 * 1024 * 1024,
    });
    if (child.status !== 0) {
      // The child's last words: our headline, then the end of a traceback (a Pyodide error
      // also prints its minified source line, which is dropped here).
      const why = (child.stderr || child.stdout || String(child.error ?? "")).trim().split("\n").filter((line) => line.length < 400);
      const headline = why.findIndex((line) => line.startsWith(HEADLINE));
      const reason = (headline >= 0 ? [why[headline], ...why.slice(headline + 1).slice(-6)] : why.slice(-8)).join("\n  ");
      // A job module Python cannot even compile (bad syntax, not UTF-8) fails in the browser
      // too, whatever the page does: that is a failed build, not a site without a snapshot.
      if (why.some((line) => /^\s*(SyntaxError|IndentationError|TabError)\b/.test(line))) {
        console.error(`build failed: a job module is not valid Python, so the site could not import it:\n  ${reason}`);
        process.exit(1);
      }
      console.warn(`warning: no Python snapshot (the site boots without one, ~1 s slower):\n  ${reason}`);
      return null;
    }
    made = JSON.parse(fs.readFileSync(meta, "utf8"));
    prune(cacheDir);
  }
  const info = JSON.parse(fs.readFileSync(meta, "utf8"));
  const rel = `snapshots/${key.slice(0, 16)}.gz`;
  fs.mkdirSync(path.join(site, "snapshots"), { recursive: true });
  fs.copyFileSync(cached, path.join(site, rel));
  const gz = fs.readFileSync(cached);
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  console.log(
    `snapshot ${rel}: ${(info.bytes / 1e6).toFixed(1)} MB, ${(gz.length / 1e6).toFixed(1)} MB gzipped, ` +
      (made ? `made in ${seconds} s (Pyodide start ${(made.loadMs / 1000).toFixed(1)} s)` : "from .cache/snapshots"),
  );
  return {
    url: rel,
    sha256: createHash("sha256").update(gz).digest("hex"),
    key,
    bytes: info.bytes,
    gzipBytes: gz.length,
    jobModules,
  };
}

// Keep the KEEP_CACHED most recent snapshots.
function prune(cacheDir) {
  const entries = fs
    .readdirSync(cacheDir)
    .filter((f) => f.endsWith(".gz"))
    .map((f) => ({ f, t: fs.statSync(path.join(cacheDir, f)).mtimeMs }))
    .sort((a, b) => b.t - a.t);
  for (const { f } of entries.slice(KEEP_CACHED)) {
    fs.rmSync(path.join(cacheDir, f), { force: true });
    fs.rmSync(path.join(cacheDir, f.replace(/\.gz$/, ".json")), { force: true });
  }
}

// The child: start Pyodide with _makeSnapshot, set it up as the worker would, save its memory.
async function make({ root, site, manifest, jobModules, key, out, meta }) {
  const pyodideDir = path.join(root, "node_modules", "pyodide");
  const { loadPyodide } = await import(pathToFileURL(path.join(pyodideDir, "pyodide.mjs")).href);
  const t0 = performance.now();
  const pyodide = await loadPyodide({
    indexURL: pyodideDir + path.sep,
    _makeSnapshot: true,
    // What a browser worker gets (Emscripten's default), not the path of this script.
    _sysExecutable: "./this.program",
    stdout: (line) => console.log("[python]", line),
    stderr: (line) => console.error("[python]", line),
  });
  const loadMs = performance.now() - t0;
  const initialHeap = pyodide._module.HEAP8.length;

  const purelib = pyodide.runPython("import sysconfig\nsysconfig.get_path('purelib')");
  for (const w of manifest.wheels) {
    const bytes = new Uint8Array(fs.readFileSync(path.join(site, w.url)));
    if (w.zip) {
      // As the worker's install phase does: the zip itself on sys.path, so that a module the
      // snapshot imports from it (cronsim, for a job with a schedule) has the path it will
      // have in the browser.
      const file = `${WHEELS_DIR}/${w.file}`;
      pyodide.FS.mkdirTree(WHEELS_DIR);
      pyodide.FS.writeFile(file, bytes);
      pyodide.runPython(`import sys\nif ${JSON.stringify(file)} not in sys.path: sys.path.append(${JSON.stringify(file)})`);
    } else {
      pyodide.unpackArchive(bytes, "wheel", { extractDir: purelib });
    }
  }
  pyodide.FS.mkdirTree(JOBS_DIR);
  for (const m of manifest.jobModules.filter((m) => jobModules.includes(m.module))) {
    const bytes = new Uint8Array(fs.readFileSync(path.join(site, m.url)));
    // As the worker's install phase does (web/boot.js writeJobModule): a package is a zip.
    if (m.package) pyodide.unpackArchive(bytes, "zip", { extractDir: JOBS_DIR });
    else pyodide.FS.writeFile(`${JOBS_DIR}/${m.module}.py`, bytes);
  }
  try {
    pyodide.runPython(preludePython(jobModules));
  } catch (err) {
    throw new Error(`${HEADLINE}importing durably and the job modules (${jobModules.join(", ")}) in Node failed:\n${err.message}`);
  }
  pyodide.globals.set("_durably_snapshot_key", key);

  const heap = pyodide._module.HEAP8.length;
  if (heap > initialHeap) {
    throw new Error(
      `${HEADLINE}Python's memory grew to ${(heap / 2 ** 20).toFixed(0)} MiB; a restored Pyodide starts with ` +
        `${(initialHeap / 2 ** 20).toFixed(0)} MiB and cannot hold it (pyodide/pyodide#6254)`,
    );
  }
  const snapshot = pyodide.makeMemorySnapshot();
  fs.writeFileSync(out, zlib.gzipSync(snapshot, { level: GZIP_LEVEL }));
  fs.writeFileSync(meta, JSON.stringify({ bytes: snapshot.length, loadMs: Math.round(loadMs) }));
}

if (process.argv[1] === here && process.argv[2]) {
  make(JSON.parse(process.argv[2])).then(
    () => process.exit(0),
    (err) => {
      console.error(String(err?.message ?? err));
      process.exit(1);
    },
  );
}
