"""What a deployed site exposes, and to whom.

- A production build has no test page, and no page of it takes options or debug from its URL
  (a crafted link to the tests' page could purge a visitor's runs).
- The worker checks every file it installs against manifest.json, and the build pins
  micropip's hash; the service worker's precache list covers every file with its hash.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import threading
from pathlib import Path
from typing import Iterator

import pytest

from serve import make_server

ROOT = Path(__file__).resolve().parents[2]


# -- helpers ----------------------------------------------------------------------------------


class Served:
    def __init__(self, server) -> None:
        self.server = server
        self.port = server.server_address[1]

    def get(self, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            res = conn.getresponse()
            return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
        finally:
            conn.close()


def serving(directory: Path, base: str = "/") -> Iterator[Served]:
    server = make_server(directory, 0, quiet=True, base=base)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(server)
    finally:
        server.shutdown()
        server.server_close()


# -- the production build -------------------------------------------------------------------

# The pages of the site and the worker they start (the vendored runtimes read no options;
# the service worker reads the URLs it is asked for, to find them in its cache).
OWN_FILES = ("index.html", "page.js", "worker.js")


def test_the_production_build_ships_no_test_page(production_site, built_site):
    assert not (production_site / "test.html").exists()
    assert not (production_site / "test_page.js").exists()
    for served in serving(production_site):
        assert served.get("/test.html")[0] == 404
    # The tests' build has it (so this test would notice the two being the same).
    assert (built_site / "test.html").is_file()


def test_no_page_of_the_production_build_reads_its_url(production_site, built_site):
    reads_url = re.compile(r"location\.search|location\.hash|URLSearchParams|document\.URL")
    for name in OWN_FILES:
        text = (production_site / name).read_text()
        assert not reads_url.search(text), f"{name} reads its URL: {reads_url.search(text).group(0)}"
    # The check sees a page that does: the tests' page.
    assert reads_url.search((built_site / "test_page.js").read_text())


@pytest.mark.browser
def test_the_demo_ignores_options_and_debug_given_in_its_url(browser, production_site, durably):
    for served in serving(production_site):
        context = browser.new_context(service_workers="block")
        try:
            page = context.new_page()
            query = "?options=%7B%22retainRuns%22%3A%221m%22%7D&debug=1&jobs=demo_jobs"
            page.goto(f"http://127.0.0.1:{served.port}/{query}")
            durably.wait_until_ready(page)
            error = durably.error_of(page, "evalPython", {"code": "1 + 1"})
            assert error is not None, "debug was turned on from the URL"
            assert (error["name"], error["message"].split(";")[0]) == ("NotFoundError", "unknown method 'evalPython'"), error
        finally:
            context.close()


# -- every download checked -----------------------------------------------------------------


def precache_entries(site: Path) -> list[dict]:
    match = re.search(r"addToCacheList\((\[.*?\])\)", (site / "sw.js").read_text())
    assert match, "sw.js has no precache list"
    return json.loads(match.group(1))


def test_the_service_worker_precaches_every_file_of_the_site_with_its_hash(production_site):
    entries = precache_entries(production_site)
    files = {
        p.relative_to(production_site).as_posix()
        for p in production_site.rglob("*")
        if p.is_file() and p.name != "sw.js" and p.suffix != ".map"
    }
    assert {e["url"] for e in entries} == files
    assert "vendor/pyodide/pyodide.asm.wasm" in files  # over Workbox's default size limit
    for e in entries:
        data = (production_site / e["url"]).read_bytes()
        assert e["integrity"] == "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode(), e["url"]
        # Wheels carry their hash in their URL; every other file gets a revision.
        assert (e["revision"] is None) == e["url"].startswith("wheels/"), e


def test_the_vendored_pyodide_loader_names_no_cdn(production_site):
    """Pyodide's loader falls back to a public host for packages; the site serves everything
    itself, so the shipped loader names no address outside the site (with or without a scheme)."""
    loader = (production_site / "vendor" / "pyodide" / "pyodide.mjs").read_text()
    assert not re.search(r"https?://", loader)
    assert not re.search(r"(?:https?:)?//[\w-]+(?:\.[\w-]+)+/", loader)


def test_the_build_ships_the_micropip_wheel_whose_hash_it_pins(production_site):
    pinned = re.search(r'const MICROPIP_SHA256 = "([0-9a-f]{64})"', (ROOT / "scripts" / "build.mjs").read_text())
    assert pinned
    manifest = json.loads((production_site / "manifest.json").read_text())
    shipped = production_site / manifest["micropip"]["url"]
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == manifest["micropip"]["sha256"] == pinned.group(1)


def test_the_wheel_the_site_serves_leaves_out_postgresqls_modules_and_nothing_else(production_site):
    """The browser never opens PostgreSQL: its three modules stay out of the site's wheel
    (scripts/build.mjs), and every other module of the package is in it. The browser tests
    that boot the site prove that nothing there imports them."""
    import zipfile

    manifest = json.loads((production_site / "manifest.json").read_text())
    (durably_wheel,) = [w for w in manifest["wheels"] if "durably-" in w["file"]]
    with zipfile.ZipFile(production_site / durably_wheel["url"]) as wheel:
        shipped = {Path(n).name for n in wheel.namelist() if n.startswith("durably/") and n.endswith(".py")}
    package = {p.name for p in (ROOT / "py" / "durably").glob("*.py")}
    server_only = {"pg_driver.py", "pg_sql.py", "migrations_postgres.py"}
    assert server_only <= package
    assert shipped == package - server_only


ALTERED = [
    ("**/jobs/demo_jobs.py", "install", r"jobs/demo_jobs\.py"),
    ("**/micropip-*.whl", "install", r"wheels/\w{12}/micropip-0\.11\.1-py3-none-any\.whl"),
]


@pytest.mark.browser
@pytest.mark.parametrize("pattern, phase, url", ALTERED, ids=["job-module", "micropip"])
def test_a_file_altered_after_the_build_stops_the_boot_naming_the_file(context, site_url, durably, pattern, phase, url):
    def altered(route):
        response = route.fetch()
        route.fulfill(response=response, body=response.body() + b"\n# altered after the build\n")

    context.route(pattern, altered)
    page = context.new_page()
    page.goto(durably.test_page(site_url, ["demo_jobs"]))
    page.wait_for_function("document.getElementById('status').dataset.state === 'error'", timeout=durably.boot_timeout)
    status = page.inner_text("#status")
    assert re.fullmatch(
        rf"Could not start \({phase}\): {url} is not the file this site was built with "
        r"\(SHA-256 \w{12}\.\.\., expected \w{12}\.\.\.\): rebuild and redeploy the whole site/ folder",
        status,
    ), status
