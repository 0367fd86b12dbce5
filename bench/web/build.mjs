// Bundle the browser contenders into dist/ (esbuild), next to the SQLite WASM files they
// load relative to their own URL.
import { build } from "esbuild";
import { copyFileSync, existsSync, mkdirSync, rmSync } from "node:fs";

const here = new URL(".", import.meta.url).pathname;
rmSync(`${here}dist`, { recursive: true, force: true });
mkdirSync(`${here}dist`, { recursive: true });
const common = { bundle: true, format: "esm", target: "es2022", logLevel: "warning" };
await build({
  ...common,
  entryPoints: { floor: `${here}floor.js`, "floor-worker": `${here}floor-worker.js` },
  outdir: `${here}dist`,
});
// The floor's SQLite WASM (the version durably's site vendors) sits next to floor-worker.js.
for (const f of ["sqlite3.wasm"]) {
  copyFileSync(`${here}node_modules/@sqlite.org/sqlite-wasm/dist/${f}`, `${here}dist/${f}`);
}
// @coji/durably's page goes in dist/coji/ with sqlocal's own copy of SQLite WASM (sqlocal
// pins another version): its JS glue, wasm and OPFS async proxy must match, or the `opfs`
// VFS fails to start and sqlocal silently falls back to an in-memory database. sqlocal's
// client starts `new Worker(new URL('./worker', import.meta.url))`: its worker must sit
// next to the bundle as dist/coji/worker (the bench server serves it as JavaScript).
mkdirSync(`${here}dist/coji`, { recursive: true });
await build({ ...common, entryPoints: { coji: `${here}coji.js` }, outdir: `${here}dist/coji` });
await build({ ...common, entryPoints: [`${here}node_modules/sqlocal/dist/worker.js`], outfile: `${here}dist/coji/worker.js` });
const sqlocalWasm = `${here}node_modules/sqlocal/node_modules/@sqlite.org/sqlite-wasm/dist`;
for (const f of ["sqlite3.wasm", "sqlite3-opfs-async-proxy.js"]) {
  copyFileSync(existsSync(`${sqlocalWasm}/${f}`) ? `${sqlocalWasm}/${f}` : `${here}node_modules/@sqlite.org/sqlite-wasm/dist/${f}`,
               `${here}dist/coji/${f}`);
}
