// @ts-check
// The worker that holds the database: boots (web/boot.js), then answers calls, its own
// page's and those other tabs forward (web/tabs.js), through durably.browser.BrowserHost,
// which checks every request (method, parameters, size) itself. Only exportDatabase is
// answered here: it reads the OPFS file, which Python cannot reach.

import { DB_FILE, lastLine } from "./boot.js";
import { BootError } from "./errors.js";

// close(): how long the runtime may take to hand back the lease of the run in flight.
const STOP_TIMEOUT_MS = 2_000;

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

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms))),
  ]).finally(() => clearTimeout(timer));
}
