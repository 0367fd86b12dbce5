// The browser floor: SQLite WASM on the opfs-sahpool VFS with the settings durably's worker
// uses (locking_mode=EXCLUSIVE, WAL, synchronous=NORMAL), doing only the commits a durable
// runtime cannot avoid, timed inside the worker (no postMessage in the timing). Same shapes
// as bench/contenders/floor.py: steps = one INSERT per commit; runs = 3 commits per run
// (trigger INSERT, claim UPDATE, step INSERT + completion UPDATE); latency = the trigger's
// commit, then the claim's.
import sqlite3InitModule from "@sqlite.org/sqlite-wasm";

const PRAGMAS = ["PRAGMA locking_mode = EXCLUSIVE", "PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL"];
const SCHEMA = `
CREATE TABLE runs (id INTEGER PRIMARY KEY, job TEXT, status TEXT, input TEXT, output TEXT,
                   lease_generation INTEGER NOT NULL DEFAULT 0, created_at TEXT, completed_at TEXT);
CREATE TABLE steps (id INTEGER PRIMARY KEY, run_id INTEGER, idx INTEGER, name TEXT,
                    output TEXT, completed_at TEXT);`;
const STAMP = "2026-01-01T00:00:00.000000Z";
const now = () => performance.now();
let pool;

async function init() {
  if (pool) return;
  const sqlite3 = await sqlite3InitModule();
  pool = await sqlite3.installOpfsSAHPoolVfs({ name: "bench-floor", directory: "/bench-floor" });
}

async function withDb(fn) {
  await init();
  const name = `/floor-${Date.now()}-${Math.random().toString(36).slice(2)}.db`;
  const db = new pool.OpfsSAHPoolDb(name);
  try {
    for (const p of PRAGMAS) db.exec(p);
    const mode = db.selectValue("PRAGMA journal_mode");
    if (mode !== "wal") throw new Error(`journal_mode is ${mode}, not wal`);
    db.exec(SCHEMA);
    return fn(db);
  } finally {
    db.close();
    pool.unlink(name);
  }
}

const trigger = (db) => {
  db.exec({ sql: "INSERT INTO runs (job, status, input, created_at) VALUES ('one', 'pending', '{}', ?)", bind: [STAMP] });
  return db.selectValue("SELECT last_insert_rowid()");
};
const claim = (db, id) =>
  db.exec({ sql: "UPDATE runs SET status = 'leased', lease_generation = lease_generation + 1 WHERE id = ? AND status = 'pending'", bind: [id] });
const finish = (db, id) => {
  db.exec("BEGIN IMMEDIATE");
  db.exec({ sql: "INSERT INTO steps (run_id, idx, name, output, completed_at) VALUES (?, 0, 'only', '0', ?)", bind: [id, STAMP] });
  db.exec({ sql: "UPDATE runs SET status = 'completed', output = '0', completed_at = ? WHERE id = ? AND lease_generation = 1", bind: [STAMP, id] });
  db.exec("COMMIT");
};

const ops = {
  steps: (n, slices) => withDb((db) => {
    slices = Math.max(1, Math.min(slices, n));
    const size = Math.max(1, Math.floor(n / slices));
    const marks = [];
    const stmt = db.prepare("INSERT INTO steps (run_id, idx, name, output, completed_at) VALUES (1, ?, ?, ?, ?)");
    const t0 = now();
    for (let i = 0; i < n; i++) {
      if (i % size === 0 && marks.length < slices) marks.push(now());
      stmt.bind([i, `s${i}`, String(i), STAMP]).stepReset();
    }
    marks.push(now());
    const seconds = (now() - t0) / 1e3;
    stmt.finalize();
    const us = [], ends = [];
    for (let j = 0; j < marks.length - 1; j++) {
      const first = j * size, last = j === marks.length - 2 ? n : (j + 1) * size;
      us.push(((marks[j + 1] - marks[j]) * 1e3) / (last - first));
      ends.push(last);
    }
    return { n, seconds, steps_per_s: n / seconds, slice_us_per_step: us, slice_end: ends, settings: PRAGMAS.join("; ") };
  }),
  runs: (k) => withDb((db) => {
    const t0 = now();
    const ids = Array.from({ length: k }, () => trigger(db));
    for (const id of ids) { claim(db, id); finish(db, id); }
    const seconds = (now() - t0) / 1e3;
    return { k, seconds, runs_per_s: k / seconds, commits_per_run: 3 };
  }),
  trigger_latency: (k) => withDb((db) => {
    const trig = [], start = [];
    for (let i = 0; i < k; i++) {
      const t0 = now();
      const id = trigger(db);
      const t1 = now();
      claim(db, id);
      const t2 = now();
      finish(db, id);
      trig.push(t1 - t0);
      start.push(t2 - t0);
    }
    return { k, trigger_ms: trig, start_ms: start };
  }),
};

self.onmessage = async ({ data: { id, op, args } }) => {
  try {
    self.postMessage({ id, ok: await ops[op](...args) });
  } catch (err) {
    self.postMessage({ id, error: { name: err?.name || "Error", message: String(err?.message ?? err) } });
  }
};
