// @ts-check
// The errors the page API rejects with, shared by the client (web/client.js) and the worker.

/** An error that came from the worker: `name` is the Python (or worker) error's class name. */
export class DurablyError extends Error {
  /** @param {{name?: string, message?: string, [field: string]: any}} [error] the reply's error */
  constructor({ name, message, ...fields } = {}) {
    super(message ?? "unknown error");
    this.name = name || "Error";
    Object.assign(this, fields);
  }
}

/** The worker could not start: `phase` says where, `detail` holds a traceback or stack. */
export class BootError extends Error {
  /** @param {{phase?: string, message?: string, detail?: string | null}} [failure] */
  constructor({ phase = "unknown", message, detail = null } = {}) {
    super(message);
    this.name = "BootError";
    this.phase = phase;
    this.detail = detail;
  }
}

/** The worker died (or was closed): nothing more can be asked of it until the page reloads. */
export class WorkerCrashedError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "WorkerCrashedError";
  }
}
