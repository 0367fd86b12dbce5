// Builds site/: one self-contained static folder (no CDN, no server code, no special
// headers) that can be uploaded as is to GitHub Pages, Netlify or any static host.
//
// Users run it through `durably site build` (py/durably/site.py, docs/site.md), which reads
// [tool.durably.site], resolves the requirements' wheels with pip and passes this script a
// plan (--plan FILE). Run directly, it builds the demo (web/demo_jobs.py, the demo page).
//
//   durably site build                            (npm run build): the site of [tool.durably.site]
//   durably site build --test-page --out DIR      (npm run build:test): adds the tests' page
//   options: --plan FILE        the build plan durably site build writes (JSON): jobs
//                               [{module, file, package}] (a package is a zip of its folder),
//                               wheels [{file}] (the requirements' wheels), requirements,
//                               page ("demo" or an HTML file), assets, options, and
//                               durablyWheel (the worker's durably wheel, when the kit is
//                               an installed package's and has no py/ to build it from)
//            --out DIR          write the site there instead of site/
//            --test-page        add test.html, the browser tests' page; it takes job
//                               modules, options and debug from its URL, so it is never part
//                               of a production build (a crafted link could purge runs)
//            --job-module FILE  ship this job module instead of the demo's (repeatable)
//
// Layout of the output, all relative so the site works under any base path:
//   index.html, page.js, worker.js     our code (esbuild, ESM); index.html is the user's page
//                                      when the plan names one (then no page.js)
//   client.js                          the page API (web/client.js) for a user's own page:
//                                      import { connect } from "./client.js"
//   <assets>                           the user's page's files and folders, as they are
//   sw.js                              the service worker (web/sw.js) with the precache list:
//                                      every file below with its revision and SRI hash
//   test.html, test_page.js            only with --test-page (web/test_page.*)
//   manifest.json                      what the worker installs, with SHA-256s, and the versions
//   vendor/pyodide/...                 Pyodide's runtime, copied from node_modules
//   vendor/sqlite-wasm/...             sqlite-wasm's dist files, copied from node_modules
//   wheels/<hash>/<name>.whl           micropip, durably and its dependencies; the hash in the folder name
//                                      changes with the content, so no browser or CDN cache
//                                      ever serves an old wheel under the same URL
//   jobs/<module>.py, jobs/<pkg>.zip   the job modules the worker imports (demo_jobs); a job
//                                      package is a zip of its folder, unpacked on sys.path
//   snapshots/<key>.gz                 Python's memory with durably and the job modules
//                                      imported, which the worker boots from (snapshot.mjs)

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as esbuild from "esbuild";
import { injectManifest } from "workbox-build";
import { buildSnapshot } from "./snapshot.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const cache = path.join(root, ".cache", "wheels");
const python = process.env.PYTHON || "python3";

const MICROPIP = "micropip-0.11.1-py3-none-any.whl";
// The SHA-256 of that wheel on PyPI: pip refuses any other download, and a cached copy that
// does not match is downloaded again. Change both together.
const MICROPIP_SHA256 = "768de165adb8e66906039d8fec4127a57f522dfdf8e6fbff877a4616941ecfd3";
// Pure-Python wheels durably needs in the worker, pinned the same way (pip checks the hash):
// cronsim reads schedules' cron expressions (durably.schedules, imported only by a job with a
// schedule); tzdata gives zoneinfo its time zones, as Pyodide has no system database. The
// worker puts them on sys.path as they are (zip files) instead of unpacking them: tzdata is
// ~600 small files, and unpacking it cost ~0.5 s at every boot; placing it costs ~2 ms.
const DEPENDENCIES = [
  { requirement: "cronsim==2.8", file: "cronsim-2.8-py3-none-any.whl", sha256: "62115cabaa121953ac4bbf2e66808b5229ca6e47372a74e752b42fcdf28324a5" },
  { requirement: "tzdata==2026.6", file: "tzdata-2026.6-py2.py3-none-any.whl", sha256: "0a10eec6e13ef16b627fabed9a5f2ba61a62b1c67f327305f4e7e412a70b4aec" },
];
// Python job modules shipped with the site; the worker imports each one after installing
// durably. Plain modules rather than a wheel: a user adds a job file without packaging it.
const JOB_MODULES = ["web/demo_jobs.py"];
// The largest file the service worker may cache. Workbox's default (2 MiB) would leave
// Pyodide's runtime (pyodide.asm.wasm, ~10 MB) and stdlib (~2.5 MB) out, and the site would
// not boot offline; the build fails instead if a file is over this.
const MAX_PRECACHE_FILE_BYTES = 32 * 1024 * 1024;

const args = parseArgs({
  options: {
    out: { type: "string", default: path.join(root, "site") },
    "test-page": { type: "boolean", default: false },
    "job-module": { type: "string", multiple: true },
    plan: { type: "string" },
  },
}).values;
const site = path.resolve(args.out);
const plan = args.plan ? JSON.parse(fs.readFileSync(args.plan, "utf8")) : {};
const jobSources = plan.jobs ?? (args["job-module"] ?? JOB_MODULES.map((rel) => path.join(root, rel))).map((f) => ({ file: path.resolve(f) }));
const userPage = plan.page && plan.page !== "demo" ? path.resolve(plan.page) : null;

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

// A wheel from PyPI whose SHA-256 is pinned here: downloaded once into .cache/wheels (pip
// refuses any other file), and a cached copy that does not match is downloaded again.
function pinnedWheel({ requirement, file: name, sha256: pinned }) {
  const file = path.join(cache, name);
  if (fs.existsSync(file) && sha256(file) !== pinned) {
    console.log(`${path.relative(root, file)} is not the pinned ${name} (SHA-256 ${pinned}): downloading it again`);
    fs.rmSync(file);
  }
  if (!fs.existsSync(file)) {
    fs.mkdirSync(cache, { recursive: true });
    console.log(`downloading ${name} (once; cached in .cache/wheels)`);
    // pip checks the pinned hash itself (--require-hashes): it refuses any other file.
    const requirements = path.join(cache, `${name}.requirements.txt`);
    fs.writeFileSync(requirements, `${requirement} --hash=sha256:${pinned}\n`);
    run(python, [
      "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.14",
      "--require-hashes", "-r", requirements, "-d", cache,
    ]);
  }
  if (!fs.existsSync(file)) fail(`pip did not produce ${name} in ${cache}`);
  const digest = sha256(file);
  if (digest !== pinned) fail(`${name} has SHA-256 ${digest}, not the pinned ${pinned}`);
  return file;
}

// PostgreSQL's modules: the browser never opens PostgreSQL (durably imports them only for a
// postgresql:// URL or a PostgreSQL driver), so the wheel the site serves leaves them out.
const SERVER_ONLY = new Set(["pg_driver.py", "pg_sql.py", "migrations_postgres.py"]);

function micropipWheel() {
  return pinnedWheel({ requirement: "micropip==0.11.1", file: MICROPIP, sha256: MICROPIP_SHA256 });
}

// Build the durably wheel from a snapshot of the sources in a temporary folder: setuptools
// writes build/ and *.egg-info next to the sources, and others edit this tree while we build.
function durablyWheel() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "durably-wheel-"));
  try {
    const src = path.join(tmp, "src");
    fs.cpSync(path.join(root, "py"), path.join(src, "py"), {
      recursive: true,
      filter: (p) => !p.includes("__pycache__") && !p.endsWith(".egg-info") && !SERVER_ONLY.has(path.basename(p)),
    });
    fs.copyFileSync(path.join(root, "pyproject.toml"), path.join(src, "pyproject.toml"));
    const readme = path.join(root, "README.md");
    // pyproject.toml names README.md as the long description; setuptools refuses a missing one.
    fs.writeFileSync(path.join(src, "README.md"), fs.existsSync(readme) ? fs.readFileSync(readme) : "durably\n");
    const out = path.join(tmp, "out");
    // A fixed date for the files in the wheel (1980, the earliest a zip can store): the same
    // sources give the same bytes, so the wheel's URL and the snapshot made from it (whose key
    // hashes the wheel) change only when the code does.
    const env = { ...process.env, SOURCE_DATE_EPOCH: process.env.SOURCE_DATE_EPOCH ?? "315532800" };
    run(python, ["-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, src], { env });
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
  if (!userPage) await esbuild.build({ ...common, entryPoints: [path.join(root, "web", "page.js")], outfile: path.join(site, "page.js") });
  // The page API on its own, for the user's page (import { connect } from "./client.js"):
  // next to worker.js and sw.js, which it finds relative to itself.
  await esbuild.build({ ...common, entryPoints: [path.join(root, "web", "client.js")], outfile: path.join(site, "client.js") });
  if (args["test-page"]) {
    await esbuild.build({ ...common, entryPoints: [path.join(root, "web", "test_page.js")], outfile: path.join(site, "test_page.js") });
  }
  // A classic script (module service workers are not in every browser yet); the precache
  // list is injected after every other file is written (serviceWorker()).
  await esbuild.build({
    ...common,
    format: "iife",
    sourcemap: false,
    minifySyntax: true, // drops Workbox's development-only logging
    define: { "process.env.NODE_ENV": '"production"' },
    entryPoints: [path.join(root, "web", "sw.js")],
    outfile: path.join(site, "sw.js"),
  });
}

// Fill sw.js's precache list: every file of the site (but sw.js itself and the source maps,
// which only developer tools fetch) with a revision (a hash of its content; none for the
// wheels, whose URL has their hash in it already) and an SRI hash the browser checks.
async function serviceWorker() {
  const sw = path.join(site, "sw.js");
  const { count, size, warnings } = await injectManifest({
    swSrc: sw,
    swDest: sw,
    globDirectory: site,
    globPatterns: ["**/*"],
    globIgnores: ["sw.js", "**/*.map"],
    dontCacheBustURLsMatching: /^wheels\/[0-9a-f]{12}\//,
    maximumFileSizeToCacheInBytes: MAX_PRECACHE_FILE_BYTES,
    manifestTransforms: [
      (entries) => ({
        manifest: entries.map((entry) => ({
          ...entry,
          integrity: `sha384-${createHash("sha384").update(fs.readFileSync(path.join(site, entry.url))).digest("base64")}`,
        })),
      }),
    ],
  });
  // Workbox leaves out a file it will not cache and only warns: a site that cannot boot
  // offline. Refuse to build one.
  if (warnings.length) fail(`the service worker's precache list is incomplete:\n${warnings.join("\n")}`);
  return { count, size };
}

function vendor() {
  const pyodide = path.join(root, "node_modules", "pyodide");
  for (const f of ["pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json"]) {
    copy(path.join(pyodide, f), path.join(site, "vendor", "pyodide", f));
  }
  withoutCdn(path.join(site, "vendor", "pyodide", "pyodide.mjs"));
  // index.mjs finds sqlite3.wasm next to itself (import.meta.url); the async proxy is only
  // used by the "opfs" VFS, which we do not install, but index.mjs names it, so ship it.
  const sqlite = path.join(root, "node_modules", "@sqlite.org", "sqlite-wasm", "dist");
  for (const f of ["index.mjs", "sqlite3.wasm", "sqlite3-opfs-async-proxy.js"]) {
    copy(path.join(sqlite, f), path.join(site, "vendor", "sqlite-wasm", f));
  }
}

// pyodide.mjs falls back to a public CDN for packages when loadPyodide() gets no packageBaseUrl.
// The worker always passes the site's own copy (web/boot.js), so the fallback is never used;
// the shipped file names no CDN at all, and a Pyodide whose loader changed fails the build
// here rather than reaching for the network from a visitor's browser.
function withoutCdn(file) {
  const text = fs.readFileSync(file, "utf8");
  const local = text.replace(/`https:\/\/[\w.-]+\/pyodide\/v\$\{\w+\}\/full\/`/g, '"./"');
  if (/https?:\/\//.test(local)) {
    fail(`${path.relative(site, file)} still names a URL outside the site; update withoutCdn in scripts/build.mjs for this Pyodide`);
  }
  fs.writeFileSync(file, local);
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
  copy(userPage ?? path.join(root, "index.html"), path.join(site, "index.html"));
  for (const asset of plan.assets ?? []) {
    const to = path.join(site, path.basename(asset));
    if (fs.existsSync(to)) fail(`the asset ${asset} would replace the site's own ${path.basename(asset)}: rename it`);
    // dereference: a symlinked asset is copied as its target under its own name (a static host
    // serves files, not links).
    fs.cpSync(asset, to, { recursive: true, dereference: true });
  }
  if (args["test-page"]) copy(path.join(root, "web", "test_page.html"), path.join(site, "test.html"));

  const micropip = placeWheel(micropipWheel());
  // An installed durably's kit has no py/: durably site build then passes the wheel it built
  // from the installed package.
  const durably = placeWheel(plan.durablyWheel ?? durablyWheel());
  const modules = jobSources.map(({ file, module, package: isPackage }) => {
    if (isPackage) {
      // A job package: the zip of its folder (durably site build made it), unpacked on sys.path.
      const rel = `jobs/${module}.zip`;
      copy(file, path.join(site, rel));
      return { module, url: rel, sha256: sha256(file), package: true };
    }
    const name = path.basename(file);
    if (!/^[A-Za-z_][A-Za-z0-9_]*\.py$/.test(name)) fail(`job module ${file}: the file name must be a Python module name ending in .py`);
    copy(file, path.join(site, "jobs", name));
    return { module: name.replace(/\.py$/, ""), url: `jobs/${name}`, sha256: sha256(file) };
  });
  // The requirements' wheels (durably site build resolved them with pip for this Pyodide):
  // unpacked into site-packages at boot, after durably's own, each checked against its SHA-256.
  const requirementWheels = (plan.wheels ?? []).map((w) => ({ ...placeWheel(w.file), requirement: true }));

  const manifest = {
    // The worker refuses a manifest whose format it does not know.
    format: 1,
    builtAt: new Date().toISOString(),
    protocol: facts.protocol,
    versions: { pyodide: versionOf("pyodide"), sqliteWasm: versionOf("@sqlite.org/sqlite-wasm") },
    micropip,
    // durably first; it and its dependencies go on sys.path as zip files ("zip": true):
    // unpacking durably's ~35 files cost 60-90 ms of every boot, placing its zip ~1 ms.
    wheels: [{ ...durably, zip: true }, ...DEPENDENCIES.map((d) => ({ ...placeWheel(pinnedWheel(d)), zip: true })), ...requirementWheels],
    // What [tool.durably.site] asked for (the wheels above are what pip resolved it to).
    requirements: plan.requirements ?? [],
    jobModules: modules,
    // The page's default options ([tool.durably.site] options); connect()'s own win.
    options: plan.options ?? {},
  };
  manifest.snapshot = await buildSnapshot({ root, site, manifest });
  fs.writeFileSync(path.join(site, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
  const precache = await serviceWorker();
  console.log(
    `built ${path.relative(process.cwd(), site) || "."}/ in ${((Date.now() - started) / 1000).toFixed(1)} s: ` +
      `${manifest.wheels.map((w) => w.file).join(", ")}; precache ${precache.count} files, ` +
      `${(precache.size / 1e6).toFixed(1)} MB${args["test-page"] ? "; with the test page" : ""}`,
  );
}

main().catch((err) => fail(err.stack || String(err)));
