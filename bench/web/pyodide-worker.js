import { loadPyodide } from "/site/vendor/pyodide/pyodide.mjs";
try {
  await loadPyodide({ indexURL: "/site/vendor/pyodide/" });
  self.postMessage({ ready: true });
} catch (err) {
  self.postMessage({ error: String(err?.message ?? err) });
}
