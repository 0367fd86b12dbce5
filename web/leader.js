// The worker that holds the database: boots (web/boot.js), then answers calls through
// durably.browser.BrowserHost, which checks every request (method, parameters, size) itself.
// Only exportDatabase is answered here: it reads the OPFS file, which Python cannot reach.

import { bootLeader, DB_FILE, lastLine } from "./boot.js";
import { BootError } from "./errors.js";

// close(): how long the runtime may take to hand back the lease of the run in flight.
const STOP_TIMEOUT_MS = 2_000;

export class Leader {
  /**
   * @param {(msg: object, transfer?: Transferable[]) => void} post posts to the page
   * @param {Promise<object>} initReceived the page's init message
   */
  constructor(post, initReceived) {
    this.post = post;
    this.res = {}; // db, pool, pyodide, host, releaseLock: whatever the boot has opened
    this.crashed = null; // the message of a fatal Pyodide error, once one happened
    this.closed = false;
    this.closing = null;
    this.booted = bootLeader({ post, initReceived, res: this.res }).then(
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
   * never rejects.
   */
  async answer(method, params) {
    try {
      await this.booted;
    } catch (err) {
      return fail("BootError", err.message);
    }
    if (this.crashed) return fail("WorkerCrashedError", this.crashedMessage());
    if (this.closed) return fail("ClosedError", "the worker is closed; reload the page");
    if (method === "exportDatabase") return this.exportDatabase(params);
    let json;
    try {
      json = JSON.stringify(params ?? {});
    } catch (err) {
      return fail("ValidationError", `params cannot be sent as JSON: ${err.message}`);
    }
    try {
      const host = this.res.host;
      // Most methods answer at once, inside this call; the ones that wait (waitForRun) go
      // through the async handle(). See BrowserHost.handle_now.
      let text = host.handle_now(method, json);
      if (text === undefined) text = await host.handle(method, json);
      return { body: JSON.parse(text) };
    } catch (err) {
      if (this.checkFatal(err)) return fail("WorkerCrashedError", this.crashedMessage());
      return fail(err?.name || "Error", String(err?.message ?? err));
    }
  }

  // The database file as bytes, after folding the WAL into it so the copy holds every commit.
  // Safe between two store calls: each is synchronous and no transaction spans an await.
  exportDatabase(params) {
    const keys = params && typeof params === "object" && !Array.isArray(params) ? Object.keys(params) : null;
    if (params != null && (keys === null || keys.length)) {
      return fail("ValidationError", `exportDatabase: takes no parameters, got ${keys ? keys.join(", ") : JSON.stringify(params)}`);
    }
    try {
      this.res.db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
      const bytes = this.res.pool.exportFile(DB_FILE);
      return { body: { ok: bytes }, transfer: [bytes.buffer] };
    } catch (err) {
      return fail("StorageError", `cannot export the database: ${err?.message ?? err}`);
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

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms))),
  ]).finally(() => clearTimeout(timer));
}
