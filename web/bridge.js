// @ts-check
// The SQLite bridge: the only JS the Python driver (durably.pyodide_driver) calls.
//
// One synchronous entry point, exec(sql, params) -> changes | {rows, changes} | {error} (and
// run(sql, ...values), the same with the values as arguments), because the
// store is synchronous Python and the opfs-sahpool VFS is synchronous too: no promise, no
// message, just a function call inside the worker (a few µs besides the statement itself).
//
// Values crossing to Python are plain: rows are arrays of numbers, strings, Uint8Array (a
// BLOB), BigInt (an integer beyond 2^53) or undefined (SQL NULL). undefined, not null: Pyodide
// turns undefined into None but null into a `jsnull` object the core would not understand.
//
// SQL errors are returned as data, {error: {name, code, message}}, rather than thrown: the
// driver then needs no knowledge of how Pyodide wraps JS exceptions, and a failing statement
// costs no exception unwinding through two runtimes.

/**
 * @param {any} sqlite3 the initialised sqlite3 module (for capi and error names)
 * @param {any} db an oo1 database (here an OpfsSAHPoolDb)
 * @param {{open(name: string): any, remove(name: string): void} | null} [pool] where more
 *   databases come from.
 *   The worker passes one so Python can open a second database file in the same OPFS pool
 *   (the browser tests run the core's suite on its own file, away from the page's runs).
 */
// One scratch buffer for binding strings per SQLite module (a worker has one), shared by
// every bridge on it: binding is synchronous and SQLite copies each string at once, so two
// bridges never need it at the same time. Kept by the module rather than by a bridge, a
// connection closed without its bridge's close() (an import closes the database under its
// bridge, an export's scratch file is closed directly) leaves no buffer behind.
const scratches = new WeakMap();

export function createBridge(sqlite3, db, pool = null) {
  const capi = sqlite3.capi;

  // Prepared statements, kept by their SQL text. The store sends the same few statements
  // over and over (a step's INSERT, a claim, BEGIN, COMMIT): preparing the step's statement
  // costs about as much as running it, so each is prepared once. Only SQL without a ';' is
  // cached, which makes it exactly one statement; anything else (a migration's trigger,
  // several statements from the debug console) goes through db.exec. Bounded, because
  // some SQL is built per call (filters, IN lists of varying length): the oldest entry is
  // finalized when the cache is full.
  const CACHE_SIZE = 64;
  const cache = new Map();

  function cachedStatement(sql) {
    let stmt = cache.get(sql);
    if (stmt !== undefined) {
      // Most recently used last, so the oldest is first in the Map's order.
      cache.delete(sql);
      cache.set(sql, stmt);
      return stmt;
    }
    stmt = db.prepare(sql);
    cache.set(sql, stmt);
    if (cache.size > CACHE_SIZE) {
      const [oldSql, oldStmt] = cache.entries().next().value;
      cache.delete(oldSql);
      oldStmt.finalize();
    }
    return stmt;
  }

  // Binding, written against SQLite's own C entry points for the common values. oo1's
  // Stmt.bind() copies every string into a fresh allocation through several checking
  // wrappers, which cost more than the INSERT of a step itself (a step binds five strings).
  // Here a string is encoded into one reused scratch buffer and bound SQLITE_TRANSIENT:
  // SQLite takes its own copy at once, so the buffer is free again for the next value.
  // Numbers, NULL and strings take this path; anything else (a BigInt, a BLOB) goes through
  // oo1's bind for that one value.
  const wasm = sqlite3.wasm;
  const raw = wasm.exports;
  const direct = wasm.ptr?.size === 4 && typeof raw.sqlite3_bind_text === "function";
  const SQLITE_TRANSIENT = -1;
  // The scratch buffer reserves 3 bytes per UTF-16 unit (UTF-8's worst case) and is kept for
  // the next call (for the worker's life), so it serves strings up to this size only (about 5.5 million characters,
  // which covers the largest step result). A longer string is encoded to its exact size in an
  // allocation of its own that SQLite takes over (SQLITE_WASM_DEALLOC: no second copy), as
  // oo1 does: a huge value then needs no 3x reservation, and no huge buffer stays behind.
  const SCRATCH_MAX = 16 * 1024 * 1024;
  const encoder = new TextEncoder();
  let scratch = scratches.get(wasm);
  if (scratch === undefined) {
    scratch = { at: 0, size: 0 };
    scratches.set(wasm, scratch);
  }

  function scratchFor(bytes) {
    if (bytes > scratch.size) {
      if (scratch.at) wasm.dealloc(scratch.at);
      scratch.at = 0;
      scratch.size = 0;
      const size = Math.max(bytes, 4096);
      scratch.at = wasm.alloc(size);
      scratch.size = size;
    }
    return scratch.at;
  }

  function bindValues(stmt, values) {
    if (!direct || values.length > stmt.parameterCount) {
      // oo1 says what is wrong (too many values, a type it cannot bind).
      stmt.bind(values);
      return;
    }
    const p = stmt.pointer;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      let rc;
      if (v === null) {
        rc = raw.sqlite3_bind_null(p, i + 1);
      } else if (typeof v === "string") {
        // UTF-8 needs at most 3 bytes per UTF-16 unit; +1 so an empty string has a buffer.
        const max = v.length * 3 + 1;
        if (max > SCRATCH_MAX) {
          const bytes = encoder.encode(v);
          const at = wasm.alloc(bytes.length || 1);
          wasm.heap8u().set(bytes, at);
          // SQLite frees `at` when done with it, or at once if the bind fails.
          rc = raw.sqlite3_bind_text(p, i + 1, at, bytes.length, capi.SQLITE_WASM_DEALLOC);
        } else {
          const at = scratchFor(max);
          const { written } = encoder.encodeInto(v, wasm.heap8u().subarray(at, at + max));
          rc = raw.sqlite3_bind_text(p, i + 1, at, written, SQLITE_TRANSIENT);
        }
      } else if (typeof v === "number") {
        // JS has one number type: an integer within 2^53 binds as an INTEGER (Python's
        // larger ints arrive as BigInt), anything else as a REAL. (oo1 bound every whole
        // number as a 64-bit integer, so a float such as 1e300 was stored as 0.)
        if ((v | 0) === v) rc = raw.sqlite3_bind_int(p, i + 1, v);
        else if (!Number.isSafeInteger(v)) rc = raw.sqlite3_bind_double(p, i + 1, v);
        else if (wasm.bigIntEnabled) rc = raw.sqlite3_bind_int64(p, i + 1, BigInt(v));
        else {
          stmt.bind(i + 1, v);
          continue;
        }
      } else {
        stmt.bind(i + 1, v);
        continue;
      }
      if (rc) sqlite3.oo1.DB.checkRc(db.pointer, rc);
    }
  }

  function runCached(sql, bind, rows) {
    const stmt = cachedStatement(sql);
    try {
      if (bind.length) bindValues(stmt, bind);
      while (stmt.step()) {
        const row = stmt.get([]);
        for (let i = 0; i < row.length; i++) if (row[i] === null) row[i] = undefined;
        rows.push(row);
      }
    } finally {
      // Always reset (ends the statement's read or write) and drop the bindings, so a
      // failed statement leaves nothing behind for its next use; the error, if any, was
      // already thrown by step() or bind().
      stmt.resetNoThrow(true);
    }
  }

  function clearCache() {
    for (const stmt of cache.values()) {
      try {
        stmt.finalize();
      } catch {
        // Finalizing a statement of a closed database: nothing left to free.
      }
    }
    cache.clear();
  }

  function copyParams(params) {
    if (params == null) return [];
    // A Python list reaches JS as a borrowed PyProxy that is destroyed when the call
    // returns: copy it into a JS array before doing anything else.
    let values = params;
    if (typeof params.toJs === "function") values = params.toJs({ create_pyproxies: false });
    return Array.from(values, (v) => {
      if (v === undefined) return null; // Python None: SQL NULL
      if (v instanceof Uint8Array) return v.slice(); // own the bytes; the source may be a view
      return v;
    });
  }

  function exec(sql, params) {
    let bind;
    try {
      bind = copyParams(params);
    } catch (err) {
      return { error: { name: "TypeError", code: null, message: `cannot pass the parameters to SQLite: ${err.message}` } };
    }
    return execBound(sql, bind);
  }

  // exec() with the values as arguments: run(sql, a, b, ...). Pyodide converts each
  // argument on the call (str, int, float, None), so the driver builds no JS array and JS
  // copies no proxy: the driver's path for every statement whose values are all of those.
  function run(sql, ...values) {
    for (let i = 0; i < values.length; i++) if (values[i] === undefined) values[i] = null;
    return execBound(sql, values);
  }

  function execBound(sql, bind) {
    const rows = [];
    const before = capi.sqlite3_total_changes(db.pointer);
    try {
      if (sql.indexOf(";") === -1) {
        runCached(sql, bind, rows);
      } else {
        // exec() runs every statement in `sql`; `bind` applies to the first statement
        // that has parameters, as the store only ever sends one such.
        db.exec({
          sql,
          bind: bind.length ? bind : undefined,
          rowMode: "array",
          callback: (row) => {
            for (let i = 0; i < row.length; i++) if (row[i] === null) row[i] = undefined;
            rows.push(row);
          },
        });
      }
    } catch (err) {
      return { error: errorToData(err) };
    }
    // sqlite3_changes() keeps the count of the last INSERT/UPDATE/DELETE, even after a
    // SELECT or a CREATE; only trust it when this call changed something.
    const changed = capi.sqlite3_total_changes(db.pointer) !== before;
    const changes = changed ? capi.sqlite3_changes(db.pointer) : 0;
    // A statement without rows (every write: a step, a claim without RETURNING rows, BEGIN,
    // COMMIT) returns its change count as a bare number, which reaches Python as an int:
    // no object to convert on the way back.
    return rows.length ? { rows, changes } : changes;
  }

  function errorToData(err) {
    const rc = typeof err?.resultCode === "number" ? err.resultCode : null;
    let code = null;
    if (rc !== null) code = capi.sqlite3_js_rc_str(rc) || null;
    // SQLite3Error messages read "SQLITE_ERROR: sqlite3 result code 1: no such table: x": keep
    // only SQLite's own words, so messages read like CPython's sqlite3 ones.
    let message = String(err?.message ?? err)
      .replace(/^SQLITE_[A-Z0-9_]+: /, "")
      .replace(/^sqlite3 result code \d+: /, "");
    // The sahpool VFS turns every failed OPFS read or write, a QuotaExceededError included,
    // into a bare SQLITE_IOERR ("disk I/O error"), and its own error never reaches us: say
    // what nearly always causes it and what to do.
    if (code === "SQLITE_FULL" || code?.startsWith("SQLITE_IOERR")) {
      message +=
        ": the browser's storage (OPFS) refused the write; most often this site's storage quota " +
        "is used up or the disk is full. Free some space (delete old runs, or other sites' data) and retry";
    }
    return { name: err?.name || "Error", code, message };
  }

  // Only the databases this bridge opened are closed by close(); the worker closes its own.
  let closed = false;

  return {
    exec,
    run,
    /**
     * Open (creating if needed) another database file in the same pool, with the same
     * pragmas, and return its bridge. Several can be open; each is one connection.
     */
    open(name) {
      if (!pool) throw new Error("this bridge cannot open other databases");
      name = String(name);
      if (!name.startsWith("/") || name === db.filename) {
        throw new Error(`open(${JSON.stringify(name)}): give an absolute name other than ${db.filename}`);
      }
      return createBridge(sqlite3, pool.open(name), pool);
    },
    /** Delete a database file (and its -wal/-journal) from the pool; it must not be open. */
    remove(name) {
      if (!pool) throw new Error("this bridge cannot remove databases");
      name = String(name);
      if (name === db.filename) throw new Error(`remove(${JSON.stringify(name)}): that database is open here`);
      return pool.remove(name);
    },
    /** Close this connection. Harmless twice. */
    close() {
      if (closed) return;
      closed = true;
      clearCache();
      db.close();
    },
    /** The VFS name, for messages and benchmarks. */
    vfs: "opfs-sahpool",
    /** The database file name inside the pool. */
    filename: db.filename,
  };
}
