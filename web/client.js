// The page-side client of the durably worker: turns postMessage into promises.
//
//   const client = connect({ onBoot: (msg) => ..., onError: (err) => ... });
//   await client.ready;                       // resolves with the per-phase timings
//   const result = await client.call("ping"); // rejects with an Error of the Python name
//
// Phase 1 of the browser host: boot, and a request/reply channel. The job API (trigger,
// getRuns, events, ...) is built on call() in phase 2 and documented in docs/protocol.md.

export class DurablyWorkerError extends Error {
  constructor({ name, message, ...rest }) {
    super(message);
    this.name = name || "Error";
    Object.assign(this, rest);
  }
}

export function connect({ workerURL = new URL("./worker.js", import.meta.url), onBoot = () => {}, onError = () => {} } = {}) {
  const worker = new Worker(workerURL, { type: "module" });
  const pending = new Map();
  let nextId = 1;
  let failure = null;
  let resolveReady;
  let rejectReady;
  const ready = new Promise((resolve, reject) => {
    resolveReady = resolve;
    rejectReady = reject;
  });
  ready.catch(() => {}); // callers that never await ready still get errors through onError

  function failAll(err) {
    failure = err;
    rejectReady(err);
    for (const { reject } of pending.values()) reject(err);
    pending.clear();
    onError(err);
  }

  worker.onmessage = (event) => {
    const msg = event.data;
    switch (msg?.type) {
      case "boot":
        onBoot(msg);
        break;
      case "ready":
        onBoot(msg);
        resolveReady(msg.timings);
        break;
      case "boot-error":
        onBoot(msg);
        failAll(new DurablyWorkerError(msg));
        break;
      case "reply": {
        const call = pending.get(msg.id);
        if (!call) break;
        pending.delete(msg.id);
        if (msg.error) call.reject(new DurablyWorkerError(msg.error));
        else call.resolve(msg.ok);
        break;
      }
      default:
        break;
    }
  };
  // A worker script that fails to load or crashes reaches us only as an "error" event.
  worker.onerror = (event) => {
    event.preventDefault();
    failAll(
      new DurablyWorkerError({
        name: "WorkerCrashed",
        message: `the durably worker crashed: ${event.message || "it could not be loaded"}. Reload the page to recover.`,
      }),
    );
  };

  function call(method, params = {}) {
    if (failure) return Promise.reject(failure);
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      worker.postMessage({ type: "call", id, method, params });
    });
  }

  function close() {
    // Lets the worker close the database and release the OPFS pool before it is killed,
    // so another tab waiting for the database takes over at once.
    worker.postMessage({ type: "close" });
  }

  return { ready, call, close, worker };
}
