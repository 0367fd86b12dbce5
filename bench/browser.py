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
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
WEB = os.path.join(HERE, "web")
# durably's test build of the site (npm run build:test at the root: the production site plus
# its test page), served under /site/ for workload 4; the same site without its Python memory
# snapshot under /site-nosnap/ (durably-browser-nosnap)
SITE = os.path.join(os.path.dirname(HERE), ".cache", "test-site")
SITE_PREFIXES = ("/site/", "/site-nosnap/")
# Another build of the site to measure beside this one (`python -m bench --base-site DIR`):
# the contender durably-browser-base, its pages named "base:..." and served from a second
# origin, so its OPFS database (and schema version) is its own.
BASE_SITE_ENV = "DURABLY_BENCH_BASE_SITE"


def base_site() -> str | None:
    """The other site build given with --base-site, or None."""
    return os.environ.get(BASE_SITE_ENV) or None
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-gpu", "--disable-quic",
]

# page -> paths that get COOP/COEP (the page itself and the scripts it starts)
ISOLATED = {"/coji.html", "/dist/coji/coji.js", "/dist/coji/worker", "/dist/coji/worker.js",
            "/dist/coji/sqlite3-opfs-async-proxy.js", "/dist/coji/sqlite3.wasm"}


def available(page: str | None = None) -> str | None:
    """None when the browser bench can run (``page``: a load-only page it needs)."""
    if page and page.startswith("base:"):
        base = base_site()
        if base is None:
            return "no other build to compare with: pass --base-site DIR (a built test site, e.g. another checkout's .cache/test-site)"
        if not os.path.exists(os.path.join(base, "test.html")):
            return f"--base-site {base} is not a built test site (no test.html): run `make test-site` in that checkout"
        page = page[len("base:"):]
    if page and page.startswith("site") and not os.path.exists(os.path.join(SITE, "index.html")):
        return "durably's test site is not built: npm ci && npm run build:test (at the repository root)"
    if page == "pyodide.html" and not os.path.exists(os.path.join(SITE, "vendor", "pyodide", "pyodide.mjs")):
        return ".cache/test-site/vendor/pyodide is missing: npm ci && npm run build:test (at the repository root)"
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


def private_site(dest: str, snapshot: bool = True, source: str | None = None) -> str:
    """Copy the built site to ``dest`` and add the bench-only job module to the copy (file and
    manifest entry), so a rebuild of ``site/`` while the bench runs cannot break it, and the
    site itself never ships bench code. ``snapshot=False``: without the Python memory
    snapshot (its file and manifest entry), so the worker starts Python from Pyodide's files
    as a site built without one does. ``source``: another build than ``SITE``."""
    shutil.copytree(source or SITE, dest)
    src = os.path.join(WEB, "bench_jobs.py")
    shutil.copy(src, os.path.join(dest, "jobs", "bench_jobs.py"))
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    path = os.path.join(dest, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    manifest["jobModules"].append({"module": "bench_jobs", "url": "jobs/bench_jobs.py", "sha256": digest})
    if not snapshot:
        manifest.pop("snapshot", None)
        shutil.rmtree(os.path.join(dest, "snapshots"), ignore_errors=True)
    with open(path, "w") as f:
        json.dump(manifest, f, indent=2)
    return dest


# durably's browser contender: the site's test page with the bench job module and the
# defaults a browser user gets (no options), debug on for evalPython and sql.
DURABLY_PAGE = "site/test.html?jobs=bench_jobs&debug=1"


class _Handler(http.server.SimpleHTTPRequestHandler):
    sites = {"/site/": SITE}  # URL prefix -> folder
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def translate_path(self, path: str) -> str:
        # sqlocal asks for its worker without an extension
        if path.split("?")[0] == "/dist/coji/worker":
            path = "/dist/coji/worker.js"
        for prefix, folder in self.sites.items():
            if path.startswith(prefix):
                web, self.directory = self.directory, folder
                try:
                    return super().translate_path(path[len(prefix) - 1:])
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
        if path.endswith(os.sep + "worker") or path.endswith("/dist/coji/worker.js"):
            return "text/javascript"
        return super().guess_type(path)

    def log_message(self, *args: Any) -> None:
        pass


# Marks when durably's page reports ready: page.js assigns window.durably once, the client,
# when connect() has resolved; the hook records that moment (a later evaluate would be late).
# (An older page assigned {ready: Promise, ...}: that shape is still understood.)
HOOK_READY = """
(() => {
  let value;
  Object.defineProperty(window, "durably", {
    configurable: true,
    get() { return value; },
    set(v) {
      value = v;
      if (v && !(v.ready && v.ready.then)) window.__readyAt = performance.now();
      else if (v) v.ready.then(
        () => { window.__readyAt = performance.now(); },
        (e) => { window.__readyError = String(e && e.message || e); });
    },
  });
})();
"""


def _serve(sites: dict[str, str]) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``bench/web`` and ``sites`` (URL prefix -> folder) on a free 127.0.0.1 port, in a
    thread; returns the server and its base URL."""
    handler = functools.partial(type("Handler", (_Handler,), {"sites": sites}), directory=WEB)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class BrowserSession:
    """One server and one Chromium for a whole bench run."""

    def __init__(self, profile_dir: str) -> None:
        from playwright.sync_api import sync_playwright

        self.profile_dir = profile_dir
        shutil.rmtree(profile_dir, ignore_errors=True)
        os.makedirs(os.path.dirname(profile_dir), exist_ok=True)  # a browser-only run made none yet
        self.site_dir = tempfile.mkdtemp(prefix="site-", dir=os.path.dirname(profile_dir))
        if os.path.exists(SITE):
            sites = {"/site/": private_site(os.path.join(self.site_dir, "site")),
                     "/site-nosnap/": private_site(os.path.join(self.site_dir, "site-nosnap"), snapshot=False)}
        else:
            sites = {prefix: SITE for prefix in SITE_PREFIXES}
        self.server, self.base = _serve(sites)
        self.other_server, self.other_base = None, None
        if base_site():
            self.other_server, self.other_base = _serve(
                {"/site/": private_site(os.path.join(self.site_dir, "site-base"), source=base_site())})
        self._pw = sync_playwright().start()
        self.context = self._pw.chromium.launch_persistent_context(
            profile_dir, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        )
        self.versions = {"chromium": self.context.browser.version if self.context.browser else None}

    def url(self, page_name: str) -> str:
        """The address of a bench page: "base:..." pages come from the --base-site server."""
        if page_name.startswith("base:"):
            if self.other_base is None:
                raise RuntimeError("a base: page without --base-site")
            return f"{self.other_base}/{page_name[len('base:'):]}"
        return f"{self.base}/{page_name}"

    def measure(self, page_name: str, func: str, params: dict, timeout: float) -> dict:
        page = self.context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(self.url(page_name))
            if _is_durably(page_name):
                self._durably_ready(page)
                page.add_script_tag(path=os.path.join(WEB, "durably-bench.js"))
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
        # The service worker blocked: warm means the HTTP cache, as before the site had one
        # (python -m bench.offline measures reloads served by it, and offline).
        ctx = self._pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, service_workers="block",
        )
        ctx.add_init_script(HOOK_READY)
        try:
            page = ctx.new_page()
            page.set_default_timeout(timeout * 1000)
            samples: list[float] = []
            i = 0
            for i in range(1 + warm):
                if i == 0:
                    page.goto(self.url(url))
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

    @staticmethod
    def _durably_ready(page: Any, timeout: float = 120) -> None:
        page.wait_for_function("window.durably !== undefined || window.connectError !== undefined",
                               timeout=timeout * 1000)
        err = page.evaluate("window.connectError")
        if err:
            raise RuntimeError(f"durably did not boot: {err}")

    def resume(self, page_name: str, reloads: int, timeout: float, steps: int = 10_000,
               step_ms: int = 200) -> dict:
        """Workload 5: reload the page half-way through a step of a slow run; time from the
        reload to the next step body starting (``reload_ms``), and from the host being ready
        again to it (``ready_ms``). The page's ``window.bench`` gives ``resume_begin``,
        ``resume_attach`` (after each load: start the host if the page does not by itself;
        returns the ready time), ``starts_after(t)`` (the first step body started at or
        after ``t``) and ``resume_end``. All times are wall clocks in ms on this machine: the
        bench's ``time.time()`` at the reload, the page's ``Date.now()`` (Pyodide's
        ``time.time()`` is Date.now too)."""
        page = self.context.new_page()
        page.set_default_timeout(timeout * 1000)
        durably = _is_durably(page_name)
        if durably:  # test_page.js assigns window.durably once, when connect() resolves: ready
            page.add_init_script("""(() => { let v; Object.defineProperty(window, "durably", {
                configurable: true, get() { return v; },
                set(x) { v = x; window.__readyWall = Date.now(); } }); })();""")

        def boot() -> float:
            if durably:
                self._durably_ready(page)
                page.add_script_tag(path=os.path.join(WEB, "durably-bench.js"))
            page.wait_for_function("window.bench && window.bench.ready")
            return page.evaluate("window.bench.resume_attach()")

        reload_ms: list[float] = []
        ready_ms: list[float] = []
        try:
            page.goto(self.url(page_name))
            boot()
            run = page.evaluate("([s, ms]) => window.bench.resume_begin(s, ms)", [steps, step_ms])
            run_id = run["id"]
            since = 0.0
            for _ in range(reloads):
                # in the middle of a step: one has started on this page load, then half a step
                # (wait_for_function does not wait for a promise: poll the async check here)
                until = time.monotonic() + min(timeout, 120)
                while page.evaluate("(t) => window.bench.starts_after(t)", since) is None:
                    if time.monotonic() > until:
                        raise TimeoutError(f"no step started within {timeout:.0f} s before the reload")
                    time.sleep(0.05)
                time.sleep(step_ms / 2000)
                since = t_reload = time.time() * 1000
                page.reload(wait_until="commit")
                ready = boot()
                deadline = time.monotonic() + min(timeout, 120)  # coji's lease is 30 s
                while not (got := page.evaluate("(t) => window.bench.starts_after(t)", t_reload)):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no step started within {timeout:.0f} s of the reload")
                    time.sleep(0.005 if durably else 0.05)
                if got[0] != run_id:
                    raise RuntimeError(f"a step of another run started: {got[0]}")
                reload_ms.append(got[2] - t_reload)
                ready_ms.append(got[2] - ready)
            page.evaluate("window.bench.resume_end()")
            return {"reloads": reloads, "reload_ms": reload_ms, "ready_ms": ready_ms, "step_ms": step_ms}
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {str(exc)[:500]}; samples so far: {reload_ms}, {ready_ms}"}
        finally:
            page.close()

    def close(self) -> None:
        try:
            self.context.close()
        finally:
            self._pw.stop()
            self.server.shutdown()
            if self.other_server is not None:
                self.other_server.shutdown()
            shutil.rmtree(self.profile_dir, ignore_errors=True)
            shutil.rmtree(self.site_dir, ignore_errors=True)


def _is_durably(page_name: str) -> bool:
    """A page of durably's own site (this build or the --base-site one)."""
    name = page_name[len("base:"):] if page_name.startswith("base:") else page_name
    return name.startswith(("site/", "site-nosnap/"))
