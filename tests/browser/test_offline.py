"""Offline after the first visit, and new versions taken up safely (web/sw.js, web/offline.js).

The demo page of a production build, served by scripts/serve.py, in browser contexts that
allow the service worker (the other browser tests block it). "No network" means both: the
HTTP server is stopped, and the context is offline.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from playwright.sync_api import Error as PlaywrightError

from serve import make_server

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]

WAIT_MS = 120_000

# A second version of the demo's job module: one job more, which says which version ran it.
NEW_JOB = '''

@job("whats-new")
async def whats_new(step, input) -> dict:
    """Says which version of the site ran it."""
    return await step.run("version", lambda: {"version": 2})
'''


@pytest.fixture(scope="module")
def second_site(tmp_path_factory, site_builder) -> Path:
    """A second build of the site whose job module has one job more: a new deploy."""
    tmp = tmp_path_factory.mktemp("second")
    module = tmp / "demo_jobs.py"
    module.write_text((ROOT / "web" / "demo_jobs.py").read_text() + NEW_JOB)
    return site_builder(tmp / "site", job_modules=(module,))


class Server:
    """scripts/serve.py in a thread; ``deploy`` swaps the folder it serves (same origin)."""

    def __init__(self, site: Path, base: str = "/") -> None:
        self.server = make_server(site, 0, quiet=True, base=base)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{self.server.base}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.running = True

    def deploy(self, site: Path) -> None:
        self.server.directory = site

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def serve() -> Iterator:
    servers: list[Server] = []

    def start(site: Path, base: str = "/") -> Server:
        servers.append(Server(site, base))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def sw_context(browser):
    """A fresh context (its own storage) in which the site's service worker runs."""
    context = browser.new_context(service_workers="allow")
    yield context
    context.close()


# -- what a visitor sees ----------------------------------------------------------------------


def wait_ready(page) -> None:
    page.wait_for_selector('#status[data-state="ready"], #status[data-state="error"]', timeout=WAIT_MS)
    if page.get_attribute("#status", "data-state") != "ready":
        pytest.fail(f"the page did not boot: {page.inner_text('#status')}")
    page.wait_for_selector("#job-select option", state="attached", timeout=WAIT_MS)


def wait_offline_ready(page) -> None:
    page.wait_for_selector('#offline[data-state="ready"]', timeout=WAIT_MS)


def jobs(page) -> list[str]:
    return page.eval_on_selector_all("#job-select option", "options => options.map(o => o.value)")


def served_text(page, path: str) -> str:
    """What this page gets for ``path`` (through its service worker, as its worker would)."""
    return page.evaluate("(path) => fetch(path).then((r) => r.text())", path)


def run_job(page, job: str, input: dict) -> dict:
    """Trigger ``job`` from the form and wait for the run to complete; returns the run."""
    before = page.eval_on_selector_all("#runs tbody tr", "rows => rows.map(r => r.dataset.runId)")
    page.select_option("#job-select", job)
    page.fill("#job-input", json.dumps(input))
    page.click("#trigger-btn")
    run_id = page.wait_for_function(
        """(before) => [...document.querySelectorAll('#runs tbody tr')].map(r => r.dataset.runId).find(id => !before.includes(id))""",
        arg=before,
        timeout=WAIT_MS,
    ).json_value()
    page.wait_for_selector(f'#runs tr[data-run-id="{run_id}"][data-status="completed"]', timeout=WAIT_MS)
    return page.evaluate("(id) => window.durably.getRun(id)", run_id)


CSV = {"csv": "name,email,age\nAda Lovelace,ada@example.com,36\n", "batch_size": 1}


# -- the tests --------------------------------------------------------------------------------


def test_after_one_visit_the_site_boots_and_runs_jobs_with_no_network_even_after_a_browser_restart(
    browser_type, browser_type_launch_args, production_site, serve, tmp_path
):
    # Under a sub-path, as GitHub Pages serves a project site.
    server = serve(production_site, base="/myproject/")
    profile = tmp_path / "profile"
    launch = {**browser_type_launch_args, "service_workers": "allow"}

    context = browser_type.launch_persistent_context(profile, **launch)
    try:
        page = context.pages[0] if context.pages else context.new_page()
        page.goto(server.url)
        wait_ready(page)
        wait_offline_ready(page)
        assert page.inner_text("#offline") == "Works offline: this site's files are saved in your browser."
        scope = page.evaluate("navigator.serviceWorker.getRegistration().then((r) => r.scope)")
        assert scope == server.url
        first = run_job(page, "import-csv", CSV)

        # No network at all: the server is gone and the browser is offline.
        server.stop()
        context.set_offline(True)
        response = page.reload()
        assert response is not None and response.from_service_worker
        wait_ready(page)
        # Python came from the memory snapshot, which the service worker served too.
        assert page.inner_text("#status").endswith("; Python from its memory snapshot).")
        second = run_job(page, "import-csv", CSV)
        assert second["output"] == first["output"]
    finally:
        context.close()

    # A browser restart: a new browser process on the same profile, still offline.
    context = browser_type.launch_persistent_context(profile, **launch, offline=True)
    try:
        page = context.pages[0] if context.pages else context.new_page()
        page.goto(server.url)
        wait_ready(page)
        shown = page.eval_on_selector_all("#runs tbody tr", "rows => rows.map(r => r.dataset.runId)")
        assert set(shown) == {first["id"], second["id"]}
        third = run_job(page, "crunch", {"n": 1000, "chunks": 2})
        assert third["output"]["primes"] == 168
    finally:
        context.close()


def test_a_new_deploy_is_reported_kept_away_from_the_running_page_and_used_at_the_next_load(
    sw_context, production_site, second_site, serve
):
    server = serve(production_site)
    page = sw_context.new_page()
    page.goto(server.url)
    wait_ready(page)
    wait_offline_ready(page)
    assert "whats-new" not in jobs(page)
    old_module = served_text(page, "jobs/demo_jobs.py")
    old_wheel = json.loads(served_text(page, "manifest.json"))["wheels"][0]["url"]

    server.deploy(second_site)
    # The browser looks for a new version at each load; the page says when it is ready.
    page.reload()
    wait_ready(page)
    page.wait_for_selector("#update:not([hidden])", timeout=WAIT_MS)
    assert page.inner_text("#update-text").startswith("A new version of this site is ready.")
    # The running page still gets its own version's files, even one that the new version
    # does not have (its wheel, as a lazy load would ask for it): nothing is swapped under it.
    assert jobs(page) == ["crunch", "import-csv", "slow", "flaky", "approval"]
    assert served_text(page, "jobs/demo_jobs.py") == old_module
    assert page.evaluate("(url) => fetch(url).then((r) => r.status)", old_wheel) == 200
    assert run_job(page, "import-csv", CSV)["status"] == "completed"

    # The next load, this being the only tab, is the new version.
    page.reload()
    wait_ready(page)
    assert "whats-new" in jobs(page)
    assert page.is_hidden("#update")
    assert run_job(page, "whats-new", {})["output"] == {"version": 2}
    # Its runs from before the update are all there.
    assert len(page.eval_on_selector_all("#runs tbody tr", "rows => rows")) == 2


def test_with_two_tabs_open_a_new_version_waits_until_applied_then_every_tab_reloads_into_it(
    sw_context, production_site, second_site, serve
):
    server = serve(production_site)
    page = sw_context.new_page()
    page.goto(server.url)
    wait_ready(page)
    wait_offline_ready(page)
    server.deploy(second_site)
    assert page.evaluate("window.durably.checkForUpdate()") is True
    page.wait_for_selector("#update:not([hidden])", timeout=WAIT_MS)

    other = sw_context.new_page()
    other.goto(server.url)
    # Every tab is live: the second one follows the first (docs/browser.md, "Tabs").
    other.wait_for_selector('#role[data-role="follower"]', timeout=WAIT_MS)
    other.wait_for_selector("#update:not([hidden])", timeout=WAIT_MS)

    # A reload does not switch while another tab of the site is open: both still get the
    # old version's files.
    page.reload()
    page.wait_for_selector("#update:not([hidden])", timeout=WAIT_MS)
    for tab in (page, other):
        assert "whats-new" not in served_text(tab, "jobs/demo_jobs.py")

    # Applying it switches every tab: each reloads into the new version, the one holding the
    # database runs it, the other follows it (none keeps running the old one).
    for tab in (page, other):
        tab.evaluate("window.oldDocument = true")
    page.click("#update-btn")
    def state(tab) -> str:
        try:
            return tab.evaluate(
            """() => window.oldDocument ? 'old' : document.getElementById('status').dataset.state
                + (document.querySelector('#job-select option[value="whats-new"]') ? '+new' : '')"""
            )
        except PlaywrightError:  # the tab is between two documents
            return "navigating"

    deadline = time.monotonic() + WAIT_MS / 1000
    while sorted(states := [state(page), state(other)]) != ["ready+new", "ready+new"]:
        assert time.monotonic() < deadline, f"the tabs did not switch: {states}"
        time.sleep(0.2)
    for tab in (page, other):
        assert "whats-new" in served_text(tab, "jobs/demo_jobs.py")


def test_a_new_version_that_cannot_be_cached_whole_is_reported_and_the_running_one_stays(
    sw_context, production_site, second_site, serve, tmp_path
):
    # A deploy whose job module does not match its service worker's list (an upload still
    # going on, a file changed by hand): the browser checks each file's hash and refuses it.
    broken = tmp_path / "broken"
    shutil.copytree(second_site, broken)
    with open(broken / "jobs" / "demo_jobs.py", "a") as f:
        f.write("\n# changed after the build\n")

    server = serve(production_site)
    page = sw_context.new_page()
    page.goto(server.url)
    wait_ready(page)
    wait_offline_ready(page)

    server.deploy(broken)
    page.reload()
    wait_ready(page)
    page.wait_for_selector('#update[data-state="failed"]:not([hidden])', timeout=WAIT_MS)
    text = page.inner_text("#update-text")
    assert text.startswith("A new version could not be saved (this version of the site could not be cached (/jobs/demo_jobs.py:"), text
    assert page.is_hidden("#update-btn")

    # The version in use stays whole: it still boots with no network.
    server.stop()
    sw_context.set_offline(True)
    page.reload()
    wait_ready(page)
    assert "whats-new" not in jobs(page)
