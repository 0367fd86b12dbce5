"""The browser host boots: sqlite-wasm on OPFS, Pyodide, the wheels, and Python's driver."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.browser

PHASES = ["lock", "sqlite", "pool", "open", "snapshot", "install", "import", "start"]


def test_boot_reports_every_phase_with_its_timing(page, site_url, durably):
    timings = durably.open(page, site_url)
    # Python comes from the site's memory snapshot (tests/browser/test_snapshot.py): no
    # "pyodide" phase.
    assert list(timings) == PHASES
    shown = page.inner_text("#phases")
    for phase in PHASES:
        assert f"{phase}: {timings[phase]} ms" in shown
    pong = durably.call(page, "ping")
    assert pong["driver"] == "opfs-sahpool"
    assert pong["python"].startswith("3.")
    # durably is installed as a distribution, and micropip, put on sys.path at boot as the
    # site's own wheel but not imported, imports when a job wants it.
    assert durably.eval(page, "import importlib.metadata as m\nm.version('durably')") == pong["durably"]
    assert durably.eval(page, "import sys\n'micropip' in sys.modules") is False
    assert durably.eval(page, "import micropip, importlib.metadata as m\n[micropip.__version__, m.version('micropip')]") == ["0.11.1", "0.11.1"]


def test_a_row_written_by_python_survives_a_reload(page, site_url, durably):
    durably.open(page, site_url)
    durably.sql(page, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, extra BLOB)")
    written = durably.sql(page, "INSERT INTO notes (body, extra) VALUES (?, NULL)", ["kept across reloads"])
    assert written == {"rows": [], "changes": 1}

    page.reload()
    durably.wait_until_ready(page)

    assert durably.sql(page, "SELECT id, body, extra FROM notes") == {"rows": [[1, "kept across reloads", None]], "changes": 0}
    # The database really is on the OPFS pool, in write-ahead-log mode (docs/browser.md).
    assert durably.sql(page, "PRAGMA journal_mode")["rows"] == [["wal"]]


def test_sql_values_and_errors_cross_the_bridge_as_plain_python(page, site_url, durably):
    durably.open(page, site_url)
    result = durably.sql(page, "SELECT NULL, 1.5, 'text', x'00ff', 9007199254740993 = 9007199254740992 + 1, typeof(?)", [None])
    # NULL is None (not jsnull), the BLOB is bytes, the comparison of two integers beyond
    # 2^53 ran in SQLite, and a Python None binds as SQL NULL.
    assert result["rows"] == [[None, 1.5, "text", {"$bytes": "00ff"}, 1, "null"]]

    error = page.evaluate(
        "window.durably.call('sql', {sql: 'SELECT * FROM missing'}).then(() => null, (e) => ({name: e.name, message: e.message, code: e.code}))"
    )
    assert error == {"name": "StorageError", "message": "no such table: missing", "code": "SQLITE_ERROR"}

    durably.sql(page, "CREATE TABLE u (k TEXT UNIQUE)")
    durably.sql(page, "INSERT INTO u VALUES ('a')")
    error = page.evaluate(
        "window.durably.call('sql', {sql: \"INSERT INTO u VALUES ('a')\"}).then(() => null, (e) => e.code)"
    )
    assert error == "SQLITE_CONSTRAINT_UNIQUE"


def test_boot_needs_nothing_outside_127_0_0_1(context, site_url, durably):
    allowed: list[str] = []
    refused: list[str] = []

    def only_loopback(route):
        url = route.request.url
        if urlparse(url).hostname == "127.0.0.1":
            allowed.append(url)
            route.continue_()
        else:
            refused.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", only_loopback)
    page = context.new_page()
    durably.open(page, site_url)
    durably.sql(page, "CREATE TABLE offline (x)")
    assert refused == []
    # The route really saw the worker's own downloads, so the check above is not vacuous.
    assert any(u.endswith("pyodide.asm.wasm") for u in allowed), allowed
    assert any(u.endswith(".whl") for u in allowed), allowed


def test_a_second_tab_follows_the_first_and_takes_over_when_it_closes(context, site_url, durably):
    first = context.new_page()
    durably.open(first, site_url)
    durably.sql(first, "CREATE TABLE handover (who TEXT)")
    durably.sql(first, "INSERT INTO handover VALUES ('first')")

    second = context.new_page()
    second.goto(durably.test_page(site_url))
    durably.wait_until_ready(second)
    # Usable at once: its calls go to the first tab's worker, which holds the database.
    assert second.get_attribute("#status", "data-role") == "follower"
    assert durably.sql(second, "SELECT who FROM handover")["rows"] == [["first"]]
    durably.sql(second, "INSERT INTO handover VALUES ('second')")

    first.close(run_before_unload=True)
    second.wait_for_function("document.getElementById('status').dataset.role === 'leader'", timeout=durably.boot_timeout)
    assert durably.sql(second, "SELECT who FROM handover ORDER BY who")["rows"] == [["first"], ["second"]]
    assert durably.call(second, "ping")["driver"] == "opfs-sahpool"


def test_a_job_module_that_fails_to_import_is_shown_with_its_traceback(context, site_url, durably):
    broken = b"import durably\nraise RuntimeError('job file is broken')\n"
    context.route("**/jobs/demo_jobs.py", lambda route: route.fulfill(status=200, content_type="text/x-python", body=broken))

    def manifest(route):
        # The worker checks each file against manifest.json: a site built with this module.
        data = route.fetch().json()
        for entry in data["jobModules"]:
            if entry["module"] == "demo_jobs":
                entry["sha256"] = hashlib.sha256(broken).hexdigest()
        route.fulfill(json=data)

    context.route("**/manifest.json", manifest)
    page = context.new_page()
    page.goto(durably.test_page(site_url, ["demo_jobs"]))
    page.wait_for_function("document.getElementById('status').dataset.state === 'error'", timeout=durably.boot_timeout)
    assert page.inner_text("#status") == (
        "Could not start (import): cannot import demo_jobs: RuntimeError: job file is broken"
    )
    assert 'File "/home/pyodide/durably_jobs/demo_jobs.py", line 2' in page.inner_text("#error")
    # connect() rejects with the boot's error, not left hanging.
    error = page.evaluate("window.connectError")
    assert (error["name"], error["phase"]) == ("BootError", "import")
    assert "RuntimeError: job file is broken" in error["detail"]


def test_a_wheel_that_cannot_be_downloaded_fails_the_install_phase_clearly(context, site_url, durably):
    context.route("**/durably-*.whl", lambda route: route.fulfill(status=404, body="gone"))
    page = context.new_page()
    page.goto(durably.test_page(site_url))
    page.wait_for_function("document.getElementById('status').dataset.state === 'error'", timeout=durably.boot_timeout)
    status = page.inner_text("#status")
    assert re.fullmatch(
        r"Could not start \(install\): cannot download wheels/\w+/durably-[^/]+\.whl: HTTP 404\. "
        r"Is the site fully deployed\?",
        status,
    ), status


def test_a_wheel_that_is_not_the_built_one_is_refused(context, site_url, durably):
    context.route("**/durably-*.whl", lambda route: route.fulfill(status=200, content_type="application/zip", body=b"PK not it"))
    page = context.new_page()
    page.goto(durably.test_page(site_url))
    page.wait_for_function("document.getElementById('status').dataset.state === 'error'", timeout=durably.boot_timeout)
    assert re.fullmatch(
        r"Could not start \(install\): wheels/\w+/durably-[^/]+\.whl is not the file this site was built with "
        r"\(SHA-256 \w{12}\.\.\., expected \w{12}\.\.\.\): rebuild and redeploy the whole site/ folder",
        page.inner_text("#status"),
    ), page.inner_text("#status")
