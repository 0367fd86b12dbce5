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
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-gpu", "--disable-quic",
]

# page -> paths that get COOP/COEP (the page itself and the scripts it starts)
ISOLATED = {"/coji.html", "/dist/coji.js", "/dist/worker", "/dist/worker.js",
            "/dist/sqlite3-opfs-async-proxy.js", "/dist/sqlite3.wasm"}


def available() -> str | None:
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

    def close(self) -> None:
        try:
            self.context.close()
        finally:
            self._pw.stop()
            self.server.shutdown()
            shutil.rmtree(self.profile_dir, ignore_errors=True)
