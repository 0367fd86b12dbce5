"""Fixtures for the browser tests: the built site, a static server on 127.0.0.1, and
Debian's Chromium driven by pytest-playwright.

The tests use a test build of the site in .cache/test-site (``node scripts/build.mjs
--test-page --out .cache/test-site``, ``npm run build:test``): the production site plus
test.html, the page that takes job modules, options and debug from its URL, which a
production build never ships. It is (re)built here when it is missing or older than any of
its sources, so plain ``python -m pytest`` works after ``npm ci``. ``production_site`` is a
production build (no test page) in a temporary folder, for the tests of what is deployed.

The site's service worker is blocked in every browser context (``browser_context_args``), so
the tests see the network as it is; tests/browser/test_offline.py opens contexts that allow it.
Playwright's own browser download does not work on these machines and is never used: the
tests drive /usr/bin/chromium (Debian's ``chromium`` package).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator
from urllib.parse import urlencode

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / ".cache" / "test-site"
CHROMIUM = os.environ.get("DURABLY_CHROMIUM", "/usr/bin/chromium")
# Cold boots here take ~3-7 s (Pyodide dominates); leave room for a loaded machine.
BOOT_TIMEOUT_MS = 120_000

sys.path.insert(0, str(ROOT / "scripts"))
from serve import make_server  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the browser tests after every other test.

    Playwright's sync API keeps an asyncio loop running in the main thread from the first
    browser test to the end of the session, and every ``asyncio.run()`` after that fails
    with "cannot be called from a running event loop": the core's async tests must go first.
    """
    browser_dir = Path(__file__).parent
    items.sort(key=lambda item: browser_dir in Path(str(item.fspath)).parents)


def _site_sources() -> list[Path]:
    files = [ROOT / "worker.js", ROOT / "index.html", ROOT / "pyproject.toml", ROOT / "package-lock.json"]
    for folder, pattern in (("web", "*"), ("scripts", "*.mjs"), ("py", "*.py")):
        files += [p for p in (ROOT / folder).rglob(pattern) if p.is_file() and "__pycache__" not in p.parts]
    return [p for p in files if p.exists()]


def _site_is_stale() -> bool:
    manifest = SITE / "manifest.json"
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    return any(p.stat().st_mtime > built for p in _site_sources())


def build_site(out: Path, *, test_page: bool = False, job_modules: tuple[Path, ...] = ()) -> Path:
    """Build the site into ``out`` with scripts/build.mjs; fails the test if the build fails."""
    if not (ROOT / "node_modules" / "esbuild").exists():
        pytest.fail("node_modules is missing: run `npm ci` (or `make test`) before the browser tests")
    if shutil.which("node") is None:
        pytest.fail("Node.js is needed to build the site (scripts/build.mjs)")
    command = ["node", "scripts/build.mjs", "--out", str(out)]
    if test_page:
        command.append("--test-page")
    for module in job_modules:
        command += ["--job-module", str(module)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable})
    if result.returncode != 0:
        pytest.fail(f"building the site failed:\n{result.stdout}\n{result.stderr}")
    return out


@pytest.fixture(scope="session")
def built_site() -> Path:
    """The test build (production site + test.html), rebuilt when a source changed."""
    if _site_is_stale():
        build_site(SITE, test_page=True)
    return SITE


@pytest.fixture(scope="session")
def site_builder():
    """``build_site`` for tests that build a site of their own (a second version, ...)."""
    return build_site


@pytest.fixture(scope="session")
def production_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A production build (``npm run build``), as deployed: no test page."""
    return build_site(tmp_path_factory.mktemp("production") / "site")


@pytest.fixture(scope="session")
def site_url(built_site: Path) -> Iterator[str]:
    server = make_server(built_site, 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, name="site-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    # The site's service worker would serve later loads of a test from its cache; only the
    # tests of offline use and updates (test_offline.py) want it, in contexts of their own.
    return {**browser_context_args, "service_workers": "block"}


@pytest.fixture(scope="session")
def chaos_site_url(built_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private copy of the site with the chaos job module ``chaos_jobs`` added
    (bench/chaos/browser_jobs.py: multi-step jobs that write a ledger of every step body),
    served on its own port: a job every tab imports, so a tab that takes over runs it."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.chaos.browser import site_copy

    site = site_copy(tmp_path_factory.mktemp("chaos-site") / "site", built_site)
    server = make_server(site, 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, name="chaos-site-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium); "
            "`playwright install` cannot download browsers here"
        )
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "headless": True,
        # Without the background-networking flags Chromium keeps dialling Google, which this
        # machine's closed network refuses.
        "args": [
            "--no-sandbox",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


class Durably:
    """What a test does to a page of the site: open the test page, wait for the boot, call
    the client, run SQL in the worker.

    ``test.html`` of the test build (web/test_page.*) boots the worker through ``web/client.js`` with the
    job modules, options and debug flag of its query string and sets ``window.durably`` to
    the connected client. The demo page (index.html) sets ``window.durably`` the same way, so
    ``call``/``sql``/``wait_until_ready`` work on both (``sql`` and ``eval`` need debug).
    """

    boot_timeout = BOOT_TIMEOUT_MS

    @staticmethod
    def test_page(site_url: str, jobs: list[str] | tuple[str, ...] = (), debug: bool = True, options: dict | None = None) -> str:
        """The URL of the test page booting with these job modules, debug flag and options."""
        query = {"jobs": ",".join(jobs), "debug": "1" if debug else "0"}
        if options:
            query["options"] = json.dumps(options)
        return f"{site_url}test.html?{urlencode(query)}"

    @classmethod
    def open(cls, page, site_url: str, jobs=(), debug: bool = True, options: dict | None = None) -> dict:
        """Open the test page and wait until the worker is ready; returns the boot timings."""
        page.goto(cls.test_page(site_url, jobs, debug, options))
        return cls.wait_until_ready(page)

    @staticmethod
    def wait_until_ready(page, timeout: int = BOOT_TIMEOUT_MS) -> dict:
        """Wait for the worker to boot; fail with what the page shows if it could not."""
        page.wait_for_function(
            "['ready', 'error'].includes(document.getElementById('status').dataset.state)", timeout=timeout
        )
        status = page.inner_text("#status")
        if page.get_attribute("#status", "data-state") != "ready":
            detail = page.inner_text("#error") if page.is_visible("#error") else ""
            pytest.fail(f"the worker did not boot: {status}\n{detail}")
        page.wait_for_function("window.durably && window.durably.timings", timeout=timeout)
        return page.evaluate("window.durably.timings")

    @staticmethod
    def call(page, method: str, params: dict | None = None):
        """One request through the page's client; a Python error fails the test with its name."""
        return page.evaluate("([m, p]) => window.durably.call(m, p)", [method, params or {}])

    @staticmethod
    def error_of(page, method: str, params: dict | None = None) -> dict | None:
        """The error a request is rejected with, as {name, message, ...fields}; None if it succeeds."""
        return page.evaluate(
            "([m, p]) => window.durably.call(m, p).then(() => null, (e) => ({...e, name: e.name, message: e.message}))",
            [method, params or {}],
        )

    @staticmethod
    def sql(page, statement: str, params: list | None = None) -> dict:
        """Run one statement in the page's worker, through Python's PyodideDriver (debug only)."""
        return page.evaluate("([sql, params]) => window.durably.call('sql', {sql, params})", [statement, params or []])

    @staticmethod
    def eval(page, code: str):
        """Run Python in the worker (debug only); the last expression's value, as JSON data."""
        return page.evaluate("(code) => window.durably.evalPython(code)", code)


@pytest.fixture(scope="session")
def durably() -> type[Durably]:
    return Durably
