// @ts-check
// The worker that holds the database: boots (web/boot.js), then answers calls, its own
// page's and those other tabs forward (web/tabs.js), through durably.browser.BrowserHost,
// which checks every request (method, parameters, size) itself. Only exportDatabase and
// importDatabase are answered here: they read and replace the OPFS file, which Python cannot
// reach (the checks of the file's contents are Python's: durably.browser.check_import).

import { DB_FILE, lastLine, PREVIOUS_FILE } from "./boot.js";
import { BootError } from "./errors.js";

// close(): how long the runtime may take to hand back the lease of the run in flight.
const STOP_TIMEOUT_MS = 2_000;
// Scratch files of the pool: an imported file is checked (and migrated) here before it
// replaces the database; an exported copy has its leases handed back here.
const IMPORT_SCRATCH = "/durably-import.db";
const EXPORT_SCRATCH = "/durably-export.db";
// The first 16 bytes of every SQLite database file.
const SQLITE_HEADER = "SQLite format 3\u0000";
// Files the pool must have room for besides the database and its WAL: a scratch file and its
// WAL, and on import the copy of the database it replaces (PREVIOUS_FILE).
const SCRATCH_FILES = 4;
// exportDatabase({move: true}): how long the runs in flight may take to finish their step.
const MOVE_STOP_TIMEOUT_S = 10;

export class Leader {
  /**
   * @param {object} o
   * @param {(msg: object, transfer?: Transferable[]) => void} o.post posts to the page
   * @param {(res: object) => Promise<object>} o.boot boots into `res` (web/boot.js: bootLeader
   *   or takeOver); resolves with what the ready message carries
   * @param {() => void} o.releaseLock releases the database's Web Lock
   */
  constructor({ post, boot, releaseLock }) {
    this.post = post;
    this.res = { releaseLock }; // db, pool, pyodide, host: whatever the boot has opened
    this.crashed = null; // the message of a fatal Pyodide error, once one happened
    this.closed = false;
    this.closing = null;
    // exportDatabase and importDatabase, one at a time: each awaits while it closes, swaps or
    // copies the file, and a second one in between would close the database under the first
    // (a double click on "Import").
    this.fileOps = Promise.resolve();
    this.booted = boot(this.res).then(
      (ready) => {
        if (this.closed) {
          // The page closed while we booted: close() ran before the host existed.
          this.res.host?.stop(0);
          return ready;
        }
        return ready;
      },
      (err) => {
        const e = err instanceof BootError ? err : new BootError({ message: String(err?.message ?? err), detail: err?.stack });
        console.error("[durably] boot failed:", e.message, e.detail ?? "");
        // Keep nothing half-open: another tab may be waiting for the lock.
        this.close();
        throw e;
      },
    );
    this.booted.catch(() => {}); // reported by the caller; calls waiting on it get the error themselves
  }

  /**
   * Answer one call. Resolves with `{body: {ok} | {error: {name, message, ...}}, transfer}`;
   * never rejects. `tab`: the tab a forwarded call comes from (none: this worker's page);
   * `request`: its request id, so a call that changes runs is never run twice
   * (BrowserHost.handle).
   * @param {string} method
   * @param {any} params
   * @param {{tab?: string, request?: string}} [from]
   */
  async answer(method, params, { tab, request } = {}) {
    try {
      await this.booted;
    } catch (err) {
      return fail("BootError", err.message);
    }
    if (this.crashed) return fail("WorkerCrashedError", this.crashedMessage());
    if (this.closed) return fail("ClosedError", "the worker is closed; reload the page");
    if (method === "exportDatabase") return this.oneAtATime(() => this.exportDatabase(params));
    if (method === "importDatabase") return this.oneAtATime(() => this.importDatabase(params));
    let json;
    try {
      json = JSON.stringify(params ?? {}, strictJSON);
    } catch (err) {
      return fail("ValidationError", `${method}: the parameters cannot be sent as JSON: ${err.message}`);
    }
    try {
      const host = this.res.host;
      // Most methods answer at once, inside this call; the ones that wait (waitForRun) go
      // through the async handle(). See BrowserHost.handle_now. (undefined reaches Python as
      // None; null would not.)
      const extra = { tab: tab ?? undefined, request: request ?? undefined };
      let text = host.handle_now.callKwargs(method, json, extra);
      if (text === undefined) text = await host.handle.callKwargs(method, json, extra);
      return { body: JSON.parse(text) };
    } catch (err) {
      if (this.checkFatal(err)) return fail("WorkerCrashedError", this.crashedMessage());
      return fail(err?.name || "Error", String(err?.message ?? err));
    }
  }

  /**
   * Check a follower's init message as this tab's boot checked its own (job modules in the
   * manifest, options in range: durably.browser.check_init), so a page that would fail to
   * boot as the leader fails as a follower too, at once, not when it takes over.
   * Resolves with `{body: {ok: init} | {error}}`; never rejects.
   */
  async checkInit(init) {
    try {
      await this.booted;
    } catch (err) {
      return fail("BootError", err.message);
    }
    if (this.closed) return fail("ClosedError", "the worker is closed; reload the page");
    let browser;
    try {
      browser = this.res.pyodide.pyimport("durably.browser");
      return { body: { ok: JSON.parse(browser.check_init(JSON.stringify(init ?? {}), this.res.jobModules)) } };
    } catch (err) {
      const last = lastLine(String(err?.message ?? err));
      return fail(/ValidationError: /.test(last) ? "ValidationError" : "Error", last.replace(/^[\w.]*Error: /, ""));
    } finally {
      browser?.destroy();
    }
  }

  /**
   * The database file as bytes, after folding the WAL into it so the copy holds every commit.
   * Taken between two store calls (each is synchronous and no transaction spans an await), so
   * it is consistent while runs go on. In the copy every lease is handed back (a copy is a
   * snapshot, not a shared database: `durably worker` on it resumes those runs at once).
   * `move: true`: the runtime stops first (the runs in flight hand their leases back), and
   * once the copy is taken every unfinished run here is cancelled with the reason "moved: ..."
   * as its error (BrowserHost.move_unfinished), so the two copies never both finish a run.
   */
  async exportDatabase(params) {
    const bad = checkParams("exportDatabase", params, ["move"]);
    if (bad) return bad;
    const move = params?.move ?? false;
    if (typeof move !== "boolean") return fail("ValidationError", `exportDatabase: move must be true or false, got ${JSON.stringify(move)}`);
    const { db, pool, host } = this.res;
    let bytes;
    let moved = 0;
    try {
      await pool.reserveMinimumCapacity(pool.getFileCount() + SCRATCH_FILES);
      // The runs in flight finish their current step (within MOVE_STOP_TIMEOUT_S; a step still
      // running then is cancelled, uncommitted, and runs again in the copy).
      if (move) await host.stop(MOVE_STOP_TIMEOUT_S);
      // No await from here to the end of the move: nothing can change the database between
      // the copy and the marking of the moved runs, and the runs are marked moved only once
      // the copy is whole (its leases handed back): a copy that fails moves nothing.
      db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
      bytes = pool.exportFile(DB_FILE);
      try {
        bytes = this.withScratch(EXPORT_SCRATCH, bytes, (bridge, browser) => browser.hand_back_leases(bridge));
      } catch (err) {
        if (move) await this.restart();
        return fail("StorageError", `cannot hand back the leases in the exported copy: ${err?.message ?? err}; nothing was moved`);
      }
      if (move) moved = host.move_unfinished();
    } catch (err) {
      if (move) await this.restart();
      return fail("StorageError", `cannot export the database: ${err?.message ?? err}`);
    }
    if (move) await this.restart();
    const ok = move ? { bytes, moved } : bytes;
    return { body: { ok }, transfer: [bytes.buffer] };
  }

  /**
   * Replace the database with `bytes` (an exported durably database, from this page or from
   * CPython). The file is checked on a scratch copy in the pool first (SQLite header,
   * PRAGMA integrity_check, durably's tables, a schema this durably knows; an older one is
   * migrated there): a bad file leaves the database untouched and the error says what is
   * wrong. Refused while runs are leased unless `replace: true`. Then the runtime stops (its
   * runs hand their leases back), the file is swapped in the pool, and the runtime starts on
   * it (start hands back the leases in the imported file, so its runs resume at once).
   */
  async importDatabase(params) {
    const bad = checkParams("importDatabase", params, ["bytes", "replace"], ["bytes"]);
    if (bad) return bad;
    let { bytes, replace = false } = params;
    if (bytes instanceof ArrayBuffer) bytes = new Uint8Array(bytes);
    if (!(bytes instanceof Uint8Array)) {
      return fail("ValidationError", `importDatabase: bytes must be a Uint8Array or an ArrayBuffer (the file's contents), got ${typeName(bytes)}`);
    }
    if (typeof replace !== "boolean") return fail("ValidationError", `importDatabase: replace must be true or false, got ${JSON.stringify(replace)}`);
    const header = new TextDecoder("latin1").decode(bytes.subarray(0, 16));
    if (bytes.length < 512 || header !== SQLITE_HEADER || bytes.length % 512 !== 0) {
      return fail(
        "ValidationError",
        `importDatabase: the file is not an SQLite database (${bytes.length < 16 || header !== SQLITE_HEADER ? "its first bytes are not \"SQLite format 3\"" : `its size, ${bytes.length} bytes, is not a whole number of pages`}); nothing was changed`,
      );
    }
    const { db, pool, host } = this.res;
    const inProgress = () => {
      const leased = host.leased_runs();
      if (leased === 0 || replace) return null;
      return fail(
        "ConflictError",
        `importDatabase: ${leased} run${leased === 1 ? " is" : "s are"} in progress in this database; importing would replace ` +
          "it and stop them. Wait for them, export them first, or pass {replace: true} to replace the database anyway",
      );
    };
    const busy = inProgress();
    if (busy) return busy;
    let checked;
    try {
      await pool.reserveMinimumCapacity(pool.getFileCount() + SCRATCH_FILES);
      let info;
      const migrated = this.withScratch(IMPORT_SCRATCH, bytes, (bridge, browser) => {
        info = JSON.parse(browser.check_import(bridge));
      });
      checked = { migrated, info };
    } catch (err) {
      const text = String(err?.message ?? err);
      const name = /SchemaError/.test(text) ? "SchemaError" : "ValidationError";
      return fail(name, `importDatabase: ${lastLine(text).replace(/^[\w.]*Error: /, "")}; nothing was changed`);
    }
    // Again, with no await before the stop: a run may have started while the file was
    // checked, and the stop would hand it back only to have the import replace it.
    const startedMeanwhile = inProgress();
    if (startedMeanwhile) return startedMeanwhile;
    // The swap. The current file is kept in memory until the imported one runs, and put back
    // if anything fails on the way.
    await host.stop(0);
    db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    const backup = pool.exportFile(DB_FILE);
    // Kept in the pool too until the imported file is open, so a reload in the middle of the
    // swap boots on the previous database or the imported one, never on none (recoverImport).
    try {
      this.res.removeDb(PREVIOUS_FILE);
      pool.importDb(PREVIOUS_FILE, backup);
    } catch (err) {
      await this.restart();
      return fail("StorageError", `importDatabase: cannot keep a copy of the current database while swapping (${err?.message ?? err}); nothing was changed`);
    }
    try {
      const started = await this.swapIn(checked.migrated);
      this.res.removeDb(PREVIOUS_FILE);
      return { body: { ok: { runs: checked.info.runs, schemaVersion: checked.info.version, reclaimed: started.reclaimed } } };
    } catch (err) {
      try {
        await this.swapIn(backup);
        this.res.removeDb(PREVIOUS_FILE);
      } catch (again) {
        this.checkFatal(again);
        return fail("StorageError", `importDatabase: swapping the file in failed (${err?.message ?? err}), and putting the previous one back failed too (${again?.message ?? again}); reload the page`);
      }
      return fail("StorageError", `importDatabase: swapping the file in failed (${err?.message ?? err}); the previous database was put back`);
    }
  }

  // Run fn once the export or import before it has finished (see fileOps).
  oneAtATime(fn) {
    const run = this.fileOps.then(() => {
      if (this.crashed) return fail("WorkerCrashedError", this.crashedMessage());
      if (this.closed) return fail("ClosedError", "the worker is closed; reload the page");
      return fn();
    });
    this.fileOps = run.catch(() => {});
    return run;
  }

  // Close the database, put `bytes` in its place in the pool, open it and start the host on it.
  async swapIn(bytes) {
    const res = this.res;
    try {
      res.db.close();
    } catch {
      // closed already (a failed first attempt)
    }
    res.removeDb(DB_FILE);
    res.pool.importDb(DB_FILE, bytes);
    res.db = res.openDb(DB_FILE);
    const bridge = res.makeBridge(res.db);
    res.pyodide.registerJsModule("durably_bridge", bridge);
    const result = await res.host.swap_database(bridge);
    const started = result.toJs({ dict_converter: Object.fromEntries });
    result.destroy();
    return started;
  }

  // Start the runtime again after a move (it was stopped for it).
  async restart() {
    try {
      await this.res.host.app.start();
    } catch (err) {
      console.error("[durably] restarting the runtime after an export:", err);
    }
  }

  // Write `bytes` to a scratch file of the pool, call fn(bridge, durably.browser) on it, and
  // return the file's bytes afterwards; the scratch file is removed whatever happens.
  withScratch(name, bytes, fn) {
    const { pool, removeDb, openDb, makeBridge, pyodide } = this.res;
    removeDb(name);
    let scratch = null;
    const browser = pyodide.pyimport("durably.browser");
    try {
      pool.importDb(name, bytes);
      scratch = openDb(name);
      fn(makeBridge(scratch), browser);
      scratch.exec("PRAGMA wal_checkpoint(TRUNCATE)");
      scratch.close();
      scratch = null;
      return pool.exportFile(name);
    } finally {
      browser.destroy();
      try {
        scratch?.close();
      } catch {
        // already closed
      }
      removeDb(name);
    }
  }

  /** A tab has gone: drop its subscriptions. */
  async forgetTab(tab) {
    try {
      await this.booted;
      if (!this.closed) this.res.host.forget_tab(tab);
    } catch {
      // Not booted, or closed: there is nothing to forget.
    }
  }

  crashedMessage() {
    return `Python in the worker crashed (${this.crashed}). Reload the page to recover.`;
  }

  // Pyodide cannot go on after a fatal error (a wasm trap, out of memory): say so once, and
  // refuse every later call, so the page offers a reload instead of hanging.
  checkFatal(err) {
    const text = String(err?.message ?? err);
    const fatal =
      this.res.pyodide?._api?.fatal_error_occurred ||
      /fatally failed|Pyodide has suffered a fatal error|RuntimeError: (memory access out of bounds|unreachable)/.test(text);
    if (!fatal) return false;
    if (!this.crashed) {
      this.crashed = lastLine(text);
      console.error("[durably] Pyodide crashed:", text);
      this.post({ type: "crashed", message: this.crashedMessage() });
      this.close();
    }
    return true;
  }

  // Close for good: stop the runtime (the run in flight hands its lease back, so the next tab
  // resumes it at once), close the database, release the pool and the lock. Idempotent.
  close() {
    this.closing ??= (async () => {
      this.closed = true;
      const { host, db, pool, releaseLock } = this.res;
      if (host && !this.crashed) {
        try {
          await withTimeout(host.stop(0), STOP_TIMEOUT_MS, "stopping the runtime");
        } catch (err) {
          console.warn("[durably] stopping the runtime:", err);
        }
      }
      try {
        db?.close();
      } catch (err) {
        console.warn("[durably] closing the database:", err);
      }
      try {
        // Hands the OPFS files back so the next tab's worker can open the pool at once.
        pool?.pauseVfs();
      } catch (err) {
        console.warn("[durably] pausing the pool:", err);
      }
      releaseLock?.();
    })();
    return this.closing;
  }
}

const fail = (name, message) => ({ body: { error: { name, message } } });

// JSON.stringify's replacer: refuse what it would silently change (NaN and the infinities
// to null, a Map, Set or typed array to an object of other keys), as CPython refuses them,
// rather than store something the page did not send. A Date arrives as its toJSON() text.
function strictJSON(key, value) {
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new Error(`${value}${at(key)} is not JSON data: JSON has no NaN or Infinity`);
  } else if (typeof value === "object" && value !== null && !Array.isArray(value)) {
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null && !(value instanceof Number || value instanceof String || value instanceof Boolean)) {
      throw new Error(
        `a ${value.constructor?.name ?? "value"}${at(key)} is not JSON data: send plain objects, arrays, text, numbers, true, false or null`,
      );
    }
  }
  return value;
}
const at = (key) => (key === "" ? "" : ` (at ${JSON.stringify(key)})`);

const typeName = (v) => (v === null ? "null" : Array.isArray(v) ? "an array" : v?.constructor?.name ?? typeof v);

// A method's params: an object with only `allowed` keys and every `required` one; the failure
// reply, or null when they are fine.
function checkParams(method, params, allowed, required = []) {
  if (params == null && !required.length) return null;
  if (params === null || typeof params !== "object" || Array.isArray(params)) {
    return fail("ValidationError", `${method}: params must be an object, got ${typeName(params)}`);
  }
  const unknown = Object.keys(params).filter((k) => !allowed.includes(k));
  if (unknown.length) return fail("ValidationError", `${method}: unknown parameter(s) ${unknown.join(", ")}; it takes: ${allowed.join(", ")}`);
  const missing = required.filter((k) => params[k] === undefined);
  if (missing.length) return fail("ValidationError", `${method}: ${missing.join(", ")} is required`);
  return null;
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms))),
  ]).finally(() => clearTimeout(timer));
}
