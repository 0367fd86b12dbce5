// Bundle the browser contenders into dist/ (esbuild), next to the SQLite WASM files they
// load relative to their own URL.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";

const here = new URL(".", import.meta.url).pathname;
mkdirSync(`${here}dist`, { recursive: true });
const common = { bundle: true, format: "esm", target: "es2022", logLevel: "warning" };
await build({
  ...common,
  entryPoints: { coji: `${here}coji.js`, floor: `${here}floor.js`, "floor-worker": `${here}floor-worker.js` },
  outdir: `${here}dist`,
});
// sqlocal's client starts `new Worker(new URL('./worker', import.meta.url))`: its worker must
// sit next to the bundle as dist/worker (the bench server serves it as JavaScript).
await build({ ...common, entryPoints: [`${here}node_modules/sqlocal/dist/worker.js`], outfile: `${here}dist/worker.js` });
for (const f of ["sqlite3.wasm", "sqlite3-opfs-async-proxy.js"]) {
  copyFileSync(`${here}node_modules/@sqlite.org/sqlite-wasm/dist/${f}`, `${here}dist/${f}`);
}
