"""Two ways the browser can refuse the storage, each shown with a clear message, losing
nothing already committed: a page that is not a secure context (the browser offers no OPFS
at all), and a storage quota that runs out while the worker is writing."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.browser

INSECURE_HOST = "durably.test"
# What the sahpool VFS's bare SQLITE_IOERR becomes (web/bridge.js): the cause and what to do.
FULL_MESSAGE = (
    "disk I/O error: the browser's storage (OPFS) refused the write; most often this site's storage quota "
    "is used up or the disk is full. Free some space (delete old runs, or other sites' data) and retry"
)

JOBS = '''
from durably import job

@job("note")
async def note(step, input):
    text = await step.run("write", lambda: f"note {input['n']}")
    return {"text": text}

@job("hoard")
async def hoard(step, input):
    return await step.run("hoard", lambda: "x" * input["chars"])

app.register(note, hoard)
sorted(app.jobs)
'''


def test_a_page_that_is_not_a_secure_context_says_to_serve_it_over_https_or_localhost(
    browser_type, browser_type_launch_args, site_url, durably
):
    # 127.0.0.1 counts as a secure context, so the same server is reached under a name that
    # does not: Chromium resolves it to 127.0.0.1 itself, and no request leaves the machine.
    port = site_url.rstrip("/").rsplit(":", 1)[1]
    args = [*browser_type_launch_args.get("args", []), f"--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1"]
    browser = browser_type.launch(**{**browser_type_launch_args, "args": args})
    try:
        context = browser.new_context()
        # A database written at the secure origin first, to show the failed boot elsewhere
        # touches nothing.
        secure = context.new_page()
        durably.open(secure, site_url)
        durably.sql(secure, "CREATE TABLE kept (body TEXT)")
        durably.sql(secure, "INSERT INTO kept VALUES ('written before')")

        page = context.new_page()
        page.goto(durably.test_page(f"http://{INSECURE_HOST}:{port}/"))
        assert page.evaluate("window.isSecureContext") is False
        # checkOpfs() runs before anything is downloaded or locked: the answer is immediate,
        # not a watchdog's timeout.
        page.wait_for_function("window.connectError !== undefined", timeout=20_000)
        message = (
            "This page is not a secure context, so the browser offers no OPFS storage. Serve it over "
            "https:// or from http://localhost / http://127.0.0.1."
        )
        error = page.evaluate("window.connectError")
        assert (error["name"], error["phase"], error["message"]) == ("BootError", "sqlite", message)
        assert page.get_attribute("#status", "data-state") == "error"
        assert page.inner_text("#status") == f"Could not start (sqlite): {message}"
        # The boot stopped before the lock phase: no phase ran, nothing was opened.
        assert [m["type"] for m in page.evaluate("window.bootMessages")] == ["boot-error"]

        secure.reload()
        durably.wait_until_ready(secure)
        assert durably.sql(secure, "SELECT body FROM kept")["rows"] == [["written before"]]
    finally:
        browser.close()


def _runs_and_steps(page) -> dict:
    return page.evaluate(
        """async () => {
            const runs = await window.durably.getRuns({jobName: "note"});
            const steps = {};
            for (const r of runs) steps[r.id] = await window.durably.getSteps(r.id);
            return {runs, steps};
        }"""
    )


def test_a_full_storage_quota_fails_the_write_clearly_and_keeps_every_committed_run(page, site_url, durably):
    durably.open(page, site_url)
    assert durably.eval(page, JOBS) == ["hoard", "note"]
    ids = page.evaluate(
        """async () => {
            const ids = [];
            for (let n = 1; n <= 3; n++) {
                const run = await window.durably.trigger("note", {n});
                await window.durably.waitForRun(run.id, {timeout: 30});
                ids.push(run.id);
            }
            return ids;
        }"""
    )
    before = _runs_and_steps(page)
    assert sorted(r["id"] for r in before["runs"]) == sorted(ids)
    assert {r["status"] for r in before["runs"]} == {"completed"}

    origin = site_url.rstrip("/")
    cdp = page.context.new_cdp_session(page)
    usage = page.evaluate("navigator.storage.estimate().then((e) => e.usage)")
    # Room for about 300 kB more than is stored now; the writes below want more (an input
    # just under durably's 1 MiB limit, a step result of 2 MB).
    cdp.send("Storage.overrideQuotaForOrigin", {"origin": origin, "quotaSize": usage + 300_000})
    try:
        # 1. A call whose write does not fit is refused with a StorageError that says why.
        error = durably.error_of(page, "trigger", {"job": "note", "input": {"n": 4, "pad": "y" * 1_000_000}})
        print("trigger error:", error)
        assert error is not None and error["name"] == "StorageError"
        assert error["code"].startswith("SQLITE_IOERR") or error["code"] == "SQLITE_FULL", error
        assert error["message"] == FULL_MESSAGE, error
        # Nothing of it was stored: the transaction rolled back.
        assert sorted(r["id"] for r in page.evaluate("window.durably.getRuns({})")) == sorted(ids)

        # 2. A run whose step result does not fit fails with that error, instead of
        # retrying forever.
        run = durably.call(page, "trigger", {"job": "hoard", "input": {"chars": 2_000_000}})
        failure = page.evaluate(
            "(id) => window.durably.waitForRun(id, {timeout: 60}).then(() => null, (e) => ({...e, name: e.name, message: e.message}))",
            run["id"],
        )
        print("waitForRun:", failure)
        assert failure["name"] == "RunFailedError", failure
        done = durably.call(page, "getRun", {"id": run["id"]})
        assert done["status"] == "failed", done
        assert failure["error"] == done["error"]
        assert done["error"].startswith(f"StorageError: {FULL_MESSAGE} (the database refused this run's writes"), done["error"]
        assert done["failed_step"] == "hoard"
        assert durably.call(page, "getSteps", {"id": run["id"]}) == []

        # 3. The worker keeps serving, and every run committed before is intact.
        assert durably.call(page, "ping")["driver"] == "opfs-sahpool"
        assert _runs_and_steps(page) == before
    finally:
        cdp.send("Storage.overrideQuotaForOrigin", {"origin": origin})

    # Once there is room again, the same worker writes again.
    again = page.evaluate(
        "async () => { const r = await window.durably.trigger('note', {n: 5}); return window.durably.waitForRun(r.id, {timeout: 30}); }"
    )
    assert (again["status"], again["output"]) == ("completed", {"text": "note 5"})


def test_the_demo_shows_a_full_storage_quota_in_its_error_area_and_keeps_the_runs_it_lists(page, site_url, durably):
    page.goto(site_url)
    durably.wait_until_ready(page)
    page.wait_for_selector("#job-select option", state="attached")
    page.select_option("#job-select", "import-csv")
    page.fill("#job-input", json.dumps({"csv": "name,email,age\nAda,ada@example.com,36\n"}))
    page.click("#trigger-btn")
    page.wait_for_selector('#runs tbody tr[data-status="completed"]', timeout=60_000)
    shown = page.eval_on_selector_all("#runs tbody tr", "rows => rows.map(r => r.dataset.runId)")
    assert len(shown) == 1

    origin = site_url.rstrip("/")
    cdp = page.context.new_cdp_session(page)
    usage = page.evaluate("navigator.storage.estimate().then((e) => e.usage)")
    cdp.send("Storage.overrideQuotaForOrigin", {"origin": origin, "quotaSize": usage + 300_000})
    try:
        # A visitor pastes a CSV bigger than the room left (and under durably's 1 MiB input
        # limit): the input alone cannot be stored.
        big = "name,email,age\n" + "Ada,ada@example.com,36\n" * 40_000
        page.fill("#job-input", json.dumps({"csv": big}))
        page.click("#trigger-btn")
        page.wait_for_selector('#api-error[data-name="StorageError"]', timeout=30_000)
        assert page.inner_text("#api-error-text") == f"StorageError: {FULL_MESSAGE}"
        # The page still answers, and still lists the one run it had, intact.
        assert durably.call(page, "ping")["driver"] == "opfs-sahpool"
        runs = durably.call(page, "getRuns")
        assert [(r["id"], r["status"]) for r in runs] == [(shown[0], "completed")]
        assert page.eval_on_selector_all("#runs tbody tr", "rows => rows.map(r => r.dataset.runId)") == shown
    finally:
        cdp.send("Storage.overrideQuotaForOrigin", {"origin": origin})
