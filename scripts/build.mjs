// Builds site/: one self-contained static folder (no CDN, no server code, no special
// headers) that can be uploaded as is to GitHub Pages, Netlify or any static host.
//
//   node scripts/build.mjs            (npm run build)
//
// Layout of the output, all relative so the site works under any base path:
//   index.html, page.js, worker.js     our code (esbuild, ESM)
//   test.html, test_page.js            the browser tests' page (web/test_page.*)
//   manifest.json                      what the worker installs, and the versions
//   vendor/pyodide/...                 Pyodide's runtime, copied from node_modules
//   vendor/sqlite-wasm/...             sqlite-wasm's dist files, copied from node_modules
//   wheels/<hash>/<name>.whl           micropip and durably; the hash in the folder name
//                                      changes with the content, so no browser or CDN cache
//                                      ever serves an old wheel under the same URL
//   jobs/<module>.py                   the job modules the worker imports (demo_jobs)

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const site = path.join(root, "site");
const cache = path.join(root, ".cache", "wheels");
const python = process.env.PYTHON || "python3";

const MICROPIP = "micropip-0.11.1-py3-none-any.whl";
// Python job modules shipped with the site; the worker imports each one after installing
// durably. Plain modules rather than a wheel: a user adds a job file without packaging it.
const JOB_MODULES = ["web/demo_jobs.py"];

function fail(message) {
  console.error(`build failed: ${message}`);
  process.exit(1);
}

function run(cmd, args, options = {}) {
  const result = spawnSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"], encoding: "utf8", ...options });
  if (result.error) fail(`cannot run ${cmd}: ${result.error.message}`);
  if (result.status !== 0) {
    fail(`${cmd} ${args.join(" ")} exited with ${result.status}\n${result.stdout}\n${result.stderr}`);
  }
  return result.stdout;
}

function copy(from, to) {
  if (!fs.existsSync(from)) fail(`missing ${path.relative(root, from)}: run "npm ci" first`);
  fs.mkdirSync(path.dirname(to), { recursive: true });
  fs.copyFileSync(from, to);
}

function sha256(file) {
  return createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

// Put a wheel under wheels/<first 12 hex of its sha256>/ and return its site-relative URL.
function placeWheel(file) {
  const hash = sha256(file);
  const rel = `wheels/${hash.slice(0, 12)}/${path.basename(file)}`;
  copy(file, path.join(site, rel));
  return { file: path.basename(file), url: rel, sha256: hash };
}

function micropipWheel() {
  const file = path.join(cache, MICROPIP);
  if (!fs.existsSync(file)) {
    fs.mkdirSync(cache, { recursive: true });
    console.log(`downloading ${MICROPIP} (once; cached in .cache/wheels)`);
    run(python, [
      "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.14",
      "micropip==0.11.1", "-d", cache,
    ]);
  }
  if (!fs.existsSync(file)) fail(`pip did not produce ${MICROPIP} in ${cache}`);
  return file;
}

// Build the durably wheel from a snapshot of the sources in a temporary folder: setuptools
// writes build/ and *.egg-info next to the sources, and others edit this tree while we build.
function durablyWheel() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "durably-wheel-"));
  try {
    const src = path.join(tmp, "src");
    fs.cpSync(path.join(root, "py"), path.join(src, "py"), {
      recursive: true,
      filter: (p) => !p.includes("__pycache__") && !p.endsWith(".egg-info"),
    });
    fs.copyFileSync(path.join(root, "pyproject.toml"), path.join(src, "pyproject.toml"));
    const readme = path.join(root, "README.md");
    // pyproject.toml names README.md as the long description; setuptools refuses a missing one.
    fs.writeFileSync(path.join(src, "README.md"), fs.existsSync(readme) ? fs.readFileSync(readme) : "durably\n");
    const out = path.join(tmp, "out");
    run(python, ["-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, src]);
    const wheels = fs.readdirSync(out).filter((f) => f.startsWith("durably-") && f.endsWith(".whl"));
    if (wheels.length !== 1) fail(`expected one durably wheel, got ${JSON.stringify(wheels)}`);
    const kept = path.join(cache, "built", wheels[0]);
    fs.mkdirSync(path.dirname(kept), { recursive: true });
    fs.copyFileSync(path.join(out, wheels[0]), kept);
    return kept;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

// The protocol facts the JS needs, read from their one source, Python's durably.browser
// (web/wire.js): the page, the worker and the Python host of one build always agree.
function protocolFacts() {
  const code = "import json, sys; sys.path.insert(0, 'py'); from durably import browser; " +
    "print(json.dumps({'protocol': browser.PROTOCOL_VERSION}))";
  return JSON.parse(run(python, ["-c", code], { cwd: root }));
}

async function bundle(facts) {
  const common = {
    bundle: true,
    format: "esm",
    target: "es2022",
    sourcemap: true,
    logLevel: "warning",
    define: { __DURABLY_PROTOCOL_VERSION__: JSON.stringify(facts.protocol) },
  };
  await esbuild.build({ ...common, entryPoints: [path.join(root, "worker.js")], outfile: path.join(site, "worker.js") });
  await esbuild.build({ ...common, entryPoints: [path.join(root, "web", "page.js")], outfile: path.join(site, "page.js") });
  // The browser tests' page (test.html): small, unlinked, harmless to deploy.
  await esbuild.build({ ...common, entryPoints: [path.join(root, "web", "test_page.js")], outfile: path.join(site, "test_page.js") });
}

function vendor() {
  const pyodide = path.join(root, "node_modules", "pyodide");
  for (const f of ["pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json"]) {
    copy(path.join(pyodide, f), path.join(site, "vendor", "pyodide", f));
  }
  // index.mjs finds sqlite3.wasm next to itself (import.meta.url); the async proxy is only
  // used by the "opfs" VFS, which we do not install, but index.mjs names it, so ship it.
  const sqlite = path.join(root, "node_modules", "@sqlite.org", "sqlite-wasm", "dist");
  for (const f of ["index.mjs", "sqlite3.wasm", "sqlite3-opfs-async-proxy.js"]) {
    copy(path.join(sqlite, f), path.join(site, "vendor", "sqlite-wasm", f));
  }
}

function versionOf(pkg) {
  return JSON.parse(fs.readFileSync(path.join(root, "node_modules", pkg, "package.json"), "utf8")).version;
}

async function main() {
  const started = Date.now();
  fs.rmSync(site, { recursive: true, force: true });
  fs.mkdirSync(site, { recursive: true });

  const facts = protocolFacts();
  await bundle(facts);
  vendor();
  copy(path.join(root, "index.html"), path.join(site, "index.html"));
  copy(path.join(root, "web", "test_page.html"), path.join(site, "test.html"));

  const micropip = placeWheel(micropipWheel());
  const durably = placeWheel(durablyWheel());
  const modules = JOB_MODULES.map((rel) => {
    const name = path.basename(rel);
    copy(path.join(root, rel), path.join(site, "jobs", name));
    return { module: name.replace(/\.py$/, ""), url: `jobs/${name}`, sha256: sha256(path.join(root, rel)) };
  });

  const manifest = {
    // The worker refuses a manifest whose format it does not know.
    format: 1,
    builtAt: new Date().toISOString(),
    protocol: facts.protocol,
    versions: { pyodide: versionOf("pyodide"), sqliteWasm: versionOf("@sqlite.org/sqlite-wasm") },
    micropip,
    wheels: [durably],
    jobModules: modules,
  };
  fs.writeFileSync(path.join(site, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
  console.log(`built site/ in ${((Date.now() - started) / 1000).toFixed(1)} s: ${manifest.wheels.map((w) => w.file).join(", ")}`);
}

main().catch((err) => fail(err.stack || String(err)));
