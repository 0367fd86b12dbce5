"""Browser contenders: pages under ``bench/web/`` driven in Debian's headless Chromium.

A static server on 127.0.0.1 serves ``bench/web/``. Only the @coji/durably page and its own
scripts get COOP/COEP headers: sqlocal uses SQLite's ``opfs`` VFS, which needs
SharedArrayBuffer. The floor page gets none, like durably's own site (opfs-sahpool needs none).

Chromium runs with a persistent profile on disk, so OPFS is real disk storage (an incognito
context keeps OPFS in memory, which would flatter every contender). Each measurement opens a
fresh page on a fresh database file, and the page deletes the file afterwards.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import threading
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
WEB = os.path.join(HERE, "web")
# durably's built static site (npm run build at the root), served under /site/ for workload 4
SITE = os.path.join(os.path.dirname(HERE), "site")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-gpu", "--disable-quic",
]

# page -> paths that get COOP/COEP (the page itself and the scripts it starts)
ISOLATED = {"/coji.html", "/dist/coji.js", "/dist/worker", "/dist/worker.js",
            "/dist/sqlite3-opfs-async-proxy.js", "/dist/sqlite3.wasm"}


def available(page: str | None = None) -> str | None:
    """None when the browser bench can run (``page``: a load-only page it needs)."""
    if page and page.startswith("site/") and not os.path.exists(os.path.join(SITE, "index.html")):
        return "durably's site is not built: npm ci && npm run build (at the repository root)"
    if page == "pyodide.html" and not os.path.exists(os.path.join(SITE, "vendor", "pyodide", "pyodide.mjs")):
        return "site/vendor/pyodide is missing: npm ci && npm run build (at the repository root)"
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing: apt-get install -y chromium"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing: pip install playwright (never `playwright install`)"
    if not os.path.exists(os.path.join(WEB, "node_modules")):
        return "bench/web has no node_modules: (cd bench/web && npm ci --ignore-scripts && npm run build)"
    return None


def build() -> None:
    """Bundle the pages (fast; esbuild) so a run always measures the current sources."""
    subprocess.run(["node", "build.mjs"], cwd=WEB, check=True)


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def translate_path(self, path: str) -> str:
        # sqlocal asks for its worker without an extension
        if path.split("?")[0] == "/dist/worker":
            path = "/dist/worker.js"
        if path.startswith("/site/"):
            web, self.directory = self.directory, SITE
            try:
                return super().translate_path(path[len("/site"):])
            finally:
                self.directory = web
        return super().translate_path(path)

    def end_headers(self) -> None:
        path = self.path.split("?")[0]
        if path in ISOLATED:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def guess_type(self, path: str) -> str:
        if path.endswith(os.sep + "worker") or path.endswith("/dist/worker.js"):
            return "text/javascript"
        return super().guess_type(path)

    def log_message(self, *args: Any) -> None:
        pass


# Marks when durably's page reports ready: page.js assigns window.durably = {ready, ...} once,
# and the hook records the time its ready promise settles (a later evaluate would be late).
HOOK_READY = """
(() => {
  let value;
  Object.defineProperty(window, "durably", {
    configurable: true,
    get() { return value; },
    set(v) {
      value = v;
      if (v && v.ready) v.ready.then(
        () => { window.__readyAt = performance.now(); },
        (e) => { window.__readyError = String(e && e.message || e); });
    },
  });
})();
"""


class BrowserSession:
    """One server and one Chromium for a whole bench run."""

    def __init__(self, profile_dir: str) -> None:
        from playwright.sync_api import sync_playwright

        self.profile_dir = profile_dir
        shutil.rmtree(profile_dir, ignore_errors=True)
        handler = functools.partial(_Handler, directory=WEB)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._pw = sync_playwright().start()
        self.context = self._pw.chromium.launch_persistent_context(
            profile_dir, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        )
        self.versions = {"chromium": self.context.browser.version if self.context.browser else None}

    def measure(self, page_name: str, func: str, params: dict, timeout: float) -> dict:
        page = self.context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{self.base}/{page_name}")
            page.wait_for_function("window.bench && window.bench.ready", timeout=30_000)
            args = [params[k] for k in ("n", "slices") if k in params] or [params["k"]]
            page.set_default_timeout(timeout * 1000)
            return page.evaluate(f"(args) => window.bench.{func}(...args)", args)
        except Exception as exc:  # recorded in the results; the run goes on
            return {"error": f"{type(exc).__name__}: {str(exc)[:500]}" + (f" (page errors: {errors[:3]})" if errors else "")}
        finally:
            page.close()

    def load_time(self, url: str, warm: int = 3, timeout: float = 120) -> dict:
        """Workload 4: navigation start to ready, cold (a fresh profile: empty HTTP cache and
        OPFS) and then warm (reloads in that profile). The page marks ready in
        ``window.__readyAt``; for durably's site an init script hooks ``window.durably.ready``."""
        from playwright.sync_api import sync_playwright  # noqa: F401  (already started)

        profile = self.profile_dir + "-load"
        shutil.rmtree(profile, ignore_errors=True)
        ctx = self._pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        )
        ctx.add_init_script(HOOK_READY)
        try:
            page = ctx.new_page()
            page.set_default_timeout(timeout * 1000)
            samples: list[float] = []
            i = 0
            for i in range(1 + warm):
                if i == 0:
                    page.goto(f"{self.base}/{url}")
                else:
                    page.reload()
                page.wait_for_function("window.__readyAt !== undefined || window.__readyError !== undefined")
                err = page.evaluate("window.__readyError")
                if err:
                    return {"error": f"not ready: {err}"}
                samples.append(page.evaluate("window.__readyAt"))
            return {"cold_ms": samples[0], "warm_ms": samples[1:]}
        except Exception as exc:
            which = "cold load" if i == 0 else f"warm reload {i}"
            shown = ""
            try:  # what the page itself says, e.g. durably's boot status line
                shown = page.evaluate("document.body ? document.body.innerText.slice(0, 300) : ''")
            except Exception:
                pass
            return {"error": f"{which}: {type(exc).__name__}: {str(exc)[:300]}; page shows: {shown!r}; "
                             f"samples so far: {samples}"}
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)

    def close(self) -> None:
        try:
            self.context.close()
        finally:
            self._pw.stop()
            self.server.shutdown()
            shutil.rmtree(self.profile_dir, ignore_errors=True)
