// Page side of the browser floor: one request, one reply, to the floor worker.
const worker = new Worker(new URL("./floor-worker.js", import.meta.url), { type: "module" });
let next = 0;
const pending = new Map();
worker.onmessage = ({ data }) => {
  const p = pending.get(data.id);
  pending.delete(data.id);
  if (data.error) p.reject(new Error(`${data.error.name}: ${data.error.message}`));
  else p.resolve(data.ok);
};
const call = (op, ...args) => new Promise((resolve, reject) => {
  const id = ++next;
  pending.set(id, { resolve, reject });
  worker.postMessage({ id, op, args });
});
window.bench = {
  steps: (n, slices) => call("steps", n, slices),
  runs: (k) => call("runs", k),
  trigger_latency: (k) => call("trigger_latency", k),
  ready: true,
  crossOriginIsolated: self.crossOriginIsolated,
};
