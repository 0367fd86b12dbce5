"""Sites built by ``durably site build`` from projects of their own (docs/site.md): the to-do
example (examples/todo: its own page, job package and a PyPI dependency) and a temporary
project, each booted in Chromium and running a job that imports the dependency; the example
offline, from its service worker's cache.

The dependency (humanize) is downloaded from PyPI once, into .cache/requirements/, and taken
from there by every later build (the cache is resolved offline first)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from serve import make_server

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
WAIT_MS = 120_000


def site_build(config: Path, out: Path, *extra: str) -> Path:
    """``durably site build`` (this checkout's durably) as a user runs it, in the config's folder."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "py")}
    command = [sys.executable, "-m", "durably", "site", "build", "--config", str(config), "--out", str(out), *extra]
    result = subprocess.run(command, cwd=config.parent, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        pytest.fail(f"durably site build failed:\n{result.stdout}\n{result.stderr}")
    return out


class Server:
    def __init__(self, site: Path) -> None:
        self.server = make_server(site, 0, quiet=True)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture(scope="module")
def todo_site(tmp_path_factory) -> Path:
    return site_build(ROOT / "examples" / "todo" / "pyproject.toml", tmp_path_factory.mktemp("todo") / "site")


def todo_ready(page) -> None:
    page.wait_for_selector('#status[data-state="ready"], #status[data-state="error"]', timeout=WAIT_MS)
    assert page.get_attribute("#status", "data-state") == "ready", page.inner_text("#status")


def test_the_todo_example_boots_offline_and_runs_its_jobs_with_humanize(browser, todo_site):
    manifest = json.loads((todo_site / "manifest.json").read_text())
    (humanize,) = [w for w in manifest["wheels"] if w.get("requirement")]
    assert humanize["file"] == "humanize-4.17.0-py3-none-any.whl"
    assert humanize["url"].startswith(f"wheels/{humanize['sha256'][:12]}/")
    assert manifest["requirements"] == ["humanize==4.17.0"]
    assert manifest["jobModules"][0] | {"sha256": None} == {
        "module": "todo_jobs", "url": "jobs/todo_jobs.zip", "sha256": None, "package": True,
    }
    assert manifest["options"] == {"pollingInterval": 0.5}
    # The worker's durably wheel does not carry the site kit (the package's wheel does).
    durably_wheel = todo_site / manifest["wheels"][0]["url"]
    assert not [n for n in zipfile.ZipFile(durably_wheel).namelist() if "site_kit" in n]
    # The snapshot was made with the job package (and so humanize) imported.
    assert manifest["snapshot"] and manifest["snapshot"]["jobModules"] == ["todo_jobs"]
    assert sorted(p.name for p in todo_site.iterdir() if p.suffix in (".js", ".html")) == [
        "app.js", "client.js", "index.html", "sw.js", "worker.js",
    ]

    server = Server(todo_site)
    context = browser.new_context(service_workers="allow")
    try:
        page = context.new_page()
        page.goto(server.url)
        todo_ready(page)
        # connect() with no jobs imported every job module of the site.
        assert sorted(j["name"] for j in page.evaluate("window.durably.jobs()")) == ["plan", "summary"]
        page.evaluate("navigator.serviceWorker.ready.then(() => true)")

        server.stop()
        context.set_offline(True)
        response = page.reload()
        assert response is not None and response.from_service_worker
        todo_ready(page)
        page.fill("#title", "Groceries")
        page.fill("#tasks", "milk, bread, eggs")
        page.click("#add button")
        page.wait_for_selector('#lists li[data-status="completed"]', timeout=WAIT_MS)
        assert page.inner_text("#lists li").startswith("Groceries: three done in ")
        page.wait_for_function("document.getElementById('summary').textContent !== ''", timeout=WAIT_MS)
        assert page.inner_text("#summary") == "zero things left"
        run = page.evaluate("window.durably.getRuns({jobName: 'plan'})")[0]
        assert run["output"]["done"] == ["milk", "bread", "eggs"]
    finally:
        context.close()
        server.stop()


SHOP_INIT = "from .jobs import price\n"
SHOP_JOBS = '''
import humanize
from durably import job


@job("price")
async def price(step, input: dict) -> str:
    """Formats a price with humanize."""
    cents = await step.run("cents", lambda: int(input["cents"]))
    return f"{humanize.intcomma(cents // 100)} euros"
'''


def test_a_temporary_project_with_its_own_package_and_a_pypi_dependency_builds_and_runs(
    browser, durably, tmp_path
):
    (tmp_path / "shop_jobs").mkdir()
    (tmp_path / "shop_jobs" / "__init__.py").write_text(SHOP_INIT)
    (tmp_path / "shop_jobs" / "jobs.py").write_text(SHOP_JOBS)
    config = tmp_path / "pyproject.toml"
    config.write_text(
        '[tool.durably.site]\njobs = ["shop_jobs"]\nrequirements = ["humanize==4.17.0"]\n'
        "options = { leaseDuration = 20, leaseRenewInterval = 2 }\n"
    )
    # The test page (debug) on top of the demo page; out defaults to site/ next to the config.
    site_build(config, tmp_path / "site", "--test-page")
    server = Server(tmp_path / "site")
    context = browser.new_context()
    try:
        page = context.new_page()
        durably.open(page, server.url, jobs=["shop_jobs"])
        run = page.evaluate(
            "async () => { const r = await window.durably.trigger('price', {cents: 123456789});"
            " return window.durably.waitForRun(r.id, {timeout: 60}); }"
        )
        assert run["status"] == "completed" and run["output"] == "1,234,567 euros"
        # humanize was installed from the site's own wheel.
        assert "site-packages" in durably.eval(page, "import humanize; humanize.__file__")
        assert json.loads((tmp_path / "site" / "manifest.json").read_text())["options"] == {
            "leaseDuration": 20, "leaseRenewInterval": 2,
        }
        # The demo page of this site imports the project's jobs, not the demo's.
        page.goto(server.url)
        page.wait_for_selector("#job-select option", state="attached", timeout=WAIT_MS)
        assert page.eval_on_selector_all("#job-select option", "o => o.map(x => x.value)") == ["price"]
    finally:
        context.close()
        server.stop()
    shutil.rmtree(tmp_path / "site")
