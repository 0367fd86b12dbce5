"""The demo page, driven as a visitor drives it: choose a job, type its input, click, read.

Each test then checks the database through the page's own client (``window.durably``).
Every test gets a fresh browser context, so a fresh OPFS database.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest

pytestmark = pytest.mark.browser

# Long enough for a loaded 2-core machine; every wait below ends as soon as the page shows it.
RUN_TIMEOUT_MS = 60_000


# -- what a visitor does -------------------------------------------------------------------


def open_demo(page, site_url, durably) -> None:
    page.goto(site_url)
    wait_for_demo(page, durably)


def wait_for_demo(page, durably) -> None:
    durably.wait_until_ready(page)
    page.wait_for_selector("#app:not([hidden])")
    page.wait_for_selector("#job-select option", state="attached")


def shown_run_ids(page) -> list[str]:
    return page.eval_on_selector_all("#runs tbody tr", "rows => rows.map(r => r.dataset.runId)")


def trigger(page, job: str, input) -> str:
    """Fill in the form, click Trigger, and return the id of the run that appears."""
    before = shown_run_ids(page)
    page.select_option("#job-select", job)
    page.fill("#job-input", input if isinstance(input, str) else json.dumps(input))
    page.click("#trigger-btn")
    handle = page.wait_for_function(
        """(before) => {
            const ids = [...document.querySelectorAll('#runs tbody tr')].map(r => r.dataset.runId);
            return ids.find(id => !before.includes(id));
        }""",
        arg=before,
        timeout=RUN_TIMEOUT_MS,
    )
    return handle.json_value()


def row(run_id: str) -> str:
    return f'#runs tr[data-run-id="{run_id}"]'


def wait_for_status(page, run_id: str, status: str) -> None:
    page.wait_for_selector(f'{row(run_id)}[data-status="{status}"]', timeout=RUN_TIMEOUT_MS)


def select(page, run_id: str) -> None:
    page.click(f"{row(run_id)} td:nth-child(3)")
    page.wait_for_selector(f'#run-detail[data-run-id="{run_id}"] #detail-body:not([hidden])')


def api(page, expression: str, *args):
    """Evaluate `expression` (a function of the args) with the page's client as `durably`."""
    return page.evaluate(f"async (args) => {{ const durably = window.durably; return await ({expression})(...args); }}", list(args))


def step_rows(page) -> list[tuple[str, str]]:
    rows = page.eval_on_selector_all("#steps tbody tr", "rows => rows.map(r => [r.dataset.step, r.dataset.status])")
    return [tuple(r) for r in rows]


# -- the tests -----------------------------------------------------------------------------


def test_the_page_shows_each_boot_phase_and_that_python_came_from_the_snapshot(page, site_url, durably):
    open_demo(page, site_url, durably)
    timings = page.evaluate("window.durably.timings")
    assert list(timings) == ["lock", "sqlite", "pool", "open", "snapshot", "install", "import", "start"]
    phases = page.inner_text("#phases")
    for name, ms in timings.items():
        assert f"{name}: {ms} ms" in phases
    snapshot = page.locator('#phases li[data-phase="snapshot"]')
    assert snapshot.get_attribute("title").startswith("Python restored from snapshots/")
    status = page.inner_text("#status")
    assert status.startswith("Ready in ") and status.endswith("; Python from its memory snapshot)."), status


def test_a_triggered_job_shows_its_progress_moving_and_its_output(page, site_url, durably):
    open_demo(page, site_url, durably)
    # Record every value the progress bars show, as a person watching would see them.
    page.evaluate(
        """() => {
            window.__bars = [];
            new MutationObserver(() => {
                for (const bar of document.querySelectorAll('#runs progress[value]')) {
                    const id = bar.closest('tr').dataset.runId;
                    window.__bars.push([id, Number(bar.getAttribute('value')), Number(bar.getAttribute('max'))]);
                }
            }).observe(document.querySelector('#runs'), {subtree: true, childList: true, attributes: true});
        }"""
    )
    assert "primes" in page.inner_text("#job-doc")

    run_id = trigger(page, "crunch", {"n": 3_000_000, "chunks": 30})
    wait_for_status(page, run_id, "completed")

    assert page.inner_text(f"{row(run_id)} [data-testid=run-row-status]") == "completed"
    seen = [(value, top) for rid, value, top in page.evaluate("window.__bars") if rid == run_id]
    assert any(0 < value < top for value, top in seen), seen  # it moved through the middle
    assert seen[-1] == (30, 30)
    assert page.inner_text(f"{row(run_id)} .progress-cell span") == "30/30"
    # The detail panel shows the triggered run: its output, its 30 steps.
    page.wait_for_selector('#run-status[data-status="completed"]')
    assert json.loads(page.inner_text("#run-output")) == {"n": 3_000_000, "primes": 216_816, "largest": 2_999_999}
    assert [name for name, _ in step_rows(page)] == [f"chunk-{i}" for i in range(1, 31)]
    assert page.locator('#events li[data-type="run:complete"]').count() >= 1

    run = api(page, "(id) => durably.getRun(id)", run_id)
    assert run["status"] == "completed"
    assert run["output"]["primes"] == 216_816
    assert run["progress"]["current"] == 30
    steps = api(page, "(id) => durably.getSteps(id)", run_id)
    assert [s["status"] for s in steps] == ["completed"] * 30
    assert sum(s["output"]["count"] for s in steps) == 216_816


def test_a_reload_during_a_slow_job_resumes_at_the_next_step_without_rerunning_finished_ones(page, site_url, durably):
    open_demo(page, site_url, durably)
    run_id = trigger(page, "slow", {"steps": 4, "seconds": 1.5})
    page.wait_for_selector('#steps tr[data-step="step-2"][data-status="completed"]', timeout=RUN_TIMEOUT_MS)
    before = {s["name"]: s for s in api(page, "(id) => durably.getSteps(id)", run_id)}
    assert {"step-1", "step-2"} <= set(before)
    assert api(page, "(id) => durably.getRun(id)", run_id)["status"] == "leased"
    reloaded_at = page.evaluate("new Date().toISOString()")

    page.reload()
    wait_for_demo(page, durably)
    wait_for_status(page, run_id, "completed")
    select(page, run_id)

    # The steps table shows each step once; the finished ones kept their first completion.
    assert step_rows(page) == [(f"step-{i}", "completed") for i in range(1, 5)]
    steps = api(page, "(id) => durably.getSteps(id)", run_id)
    assert [s["name"] for s in steps] == ["step-1", "step-2", "step-3", "step-4"]
    for s in steps:
        if s["name"] in before:
            assert s["completed_at"] == before[s["name"]]["completed_at"], s
    # The last step really ran in the reloaded page's worker.
    assert datetime.fromisoformat(steps[-1]["started_at"]) > datetime.fromisoformat(reloaded_at)
    # The job logs one line each time a step body executes: finished steps never ran twice.
    logs = [log["message"] for log in api(page, "(id) => durably.getLogs(id)", run_id)]
    assert logs.count("step-1 executing") == 1
    assert logs.count("step-2 executing") == 1
    assert logs.count("step-4 executing") == 1
    shown_logs = page.inner_text("#logs tbody")
    assert shown_logs.count("step-1 executing") == 1
    assert shown_logs.count("step-2 executing") == 1


def test_cancelling_a_running_job_stores_the_interrupted_step_as_cancelled_and_starts_no_other(page, site_url, durably):
    open_demo(page, site_url, durably)
    run_id = trigger(page, "slow", {"steps": 5, "seconds": 2})
    page.wait_for_selector('#steps tr[data-step="step-2"][data-status="running"]', timeout=RUN_TIMEOUT_MS)

    page.click(f"{row(run_id)} button[data-action=cancel]")
    wait_for_status(page, run_id, "cancelled")
    page.wait_for_selector('#steps tr[data-step="step-2"][data-status="cancelled"]', timeout=RUN_TIMEOUT_MS)
    assert page.inner_text("#run-status") == "cancelled"
    assert page.is_disabled(f"{row(run_id)} button[data-action=cancel]")
    assert page.is_enabled(f"{row(run_id)} button[data-action=retrigger]")

    # One worker runs one run at a time: once a later run completes, the cancelled one is
    # certainly not going on in the background.
    later = trigger(page, "crunch", {"n": 1000, "chunks": 2})
    wait_for_status(page, later, "completed")
    steps = api(page, "(id) => durably.getSteps(id)", run_id)
    assert [(s["name"], s["status"]) for s in steps] == [("step-1", "completed"), ("step-2", "cancelled")]
    logs = [log["message"] for log in api(page, "(id) => durably.getLogs(id)", run_id)]
    assert "step-3 executing" not in logs
    assert api(page, "(id) => durably.getRun(id)", run_id)["status"] == "cancelled"


def test_a_failed_run_shows_its_error_and_a_retrigger_runs_it_again(page, site_url, durably):
    open_demo(page, site_url, durably)
    first = trigger(page, "flaky", {"steps": 3, "fail_at": 2, "chance": 1.0, "message": "the card was declined"})
    wait_for_status(page, first, "failed")
    page.wait_for_selector('#run-status[data-status="failed"]')
    assert "the card was declined" in page.inner_text("#run-error")
    assert page.inner_text("#run-failed-step") == "(at step step-2)"
    assert step_rows(page) == [("step-1", "completed"), ("step-2", "failed")]
    assert page.is_disabled(f"{row(first)} button[data-action=cancel]")

    page.click(f"{row(first)} button[data-action=retrigger]")
    again = page.wait_for_function(
        "(first) => [...document.querySelectorAll('#runs tbody tr')].map(r => r.dataset.runId).find(id => id !== first)",
        arg=first,
        timeout=RUN_TIMEOUT_MS,
    ).json_value()
    wait_for_status(page, again, "failed")  # the same input fails at the same step: as designed
    page.wait_for_selector(f'#run-detail[data-run-id="{again}"] #run-status[data-status="failed"]')
    assert page.inner_text("#run-retrigger-of") == first
    assert "the card was declined" in page.inner_text("#run-error")

    old, new = api(page, "(a, b) => Promise.all([durably.getRun(a), durably.getRun(b)])", first, again)
    assert new["retrigger_of"] == first
    assert new["input"] == old["input"]
    assert (new["status"], new["failed_step"]) == ("failed", "step-2")
    assert "the card was declined" in new["error"]

    # The same job with no chance of failure completes.
    ok = trigger(page, "flaky", {"chance": 0})
    wait_for_status(page, ok, "completed")
    assert api(page, "(id) => durably.getRun(id)", ok)["output"] == {"steps": 3, "message": "all steps passed"}


def test_bad_input_shows_a_clear_error_and_creates_no_run(page, site_url, durably):
    open_demo(page, site_url, durably)
    error = page.locator("#api-error")

    page.select_option("#job-select", "crunch")
    page.fill("#job-input", '{"n": 100,')
    page.click("#trigger-btn")
    error.wait_for()
    assert error.inner_text().startswith("SyntaxError: the input is not valid JSON:")

    page.fill("#job-input", "{}")
    page.click("#trigger-btn")
    page.wait_for_selector('#api-error[data-name="ValidationError"]')
    assert page.inner_text("#api-error-text") == (
        "ValidationError: the input of job 'crunch' is missing the required field 'n' (Crunch)"
    )

    page.fill("#job-input", '{"n": "lots"}')
    page.click("#trigger-btn")
    page.wait_for_function("document.getElementById('api-error-text').textContent.includes('must be int, got str')")

    page.fill("#job-input", '{"n": 1}')
    page.click("#trigger-btn")
    page.wait_for_function("document.getElementById('api-error-text').textContent.includes('n must be between 2')")

    # A job the worker does not know (a stale page, a hand-edited form).
    page.evaluate("document.getElementById('job-select').add(new Option('no-such-job', 'no-such-job'))")
    page.select_option("#job-select", "no-such-job")
    page.fill("#job-input", "{}")
    page.click("#trigger-btn")
    page.wait_for_selector('#api-error[data-name="NotFoundError"]')
    assert page.inner_text("#api-error-text").startswith("NotFoundError: unknown job 'no-such-job'; registered jobs: ")

    assert api(page, "() => durably.getRuns()") == []
    assert shown_run_ids(page) == []
    assert page.is_visible("#runs-empty")

    # A good trigger clears the error.
    page.select_option("#job-select", "crunch")
    run_id = trigger(page, "crunch", {"n": 100})
    assert page.is_hidden("#api-error"), page.inner_text("#api-error-text")
    wait_for_status(page, run_id, "completed")


def test_html_in_inputs_outputs_logs_and_errors_is_shown_as_text(page, site_url, durably):
    open_demo(page, site_url, durably)
    payload = "<img src=x onerror='window.__pwned = 1'><b>bold</b>"
    failing = trigger(page, "flaky", {"steps": 1, "fail_at": 1, "chance": 1, "message": payload})
    wait_for_status(page, failing, "failed")
    page.wait_for_selector('#run-status[data-status="failed"]')
    assert payload in page.inner_text("#run-error")
    assert payload in page.inner_text("#run-input")

    csv = f"name,email,age\n{payload},x@example.com,30\n<script>window.__pwned = 2</script>,bad,1\n"
    imported = trigger(page, "import-csv", {"csv": csv, "batch_size": 5})
    wait_for_status(page, imported, "completed")
    page.wait_for_selector(f'#run-detail[data-run-id="{imported}"] #run-status[data-status="completed"]')
    page.wait_for_selector("#logs tbody tr")
    assert payload in page.inner_text("#run-output")
    assert "<script>window.__pwned = 2</script>" in page.inner_text("#logs tbody")
    assert payload in page.inner_text("#events")

    # Nothing was parsed as markup: no element came out of the data, no handler ran.
    assert page.evaluate("document.querySelectorAll('#app img, #app b, #app script').length") == 0
    assert page.evaluate("window.__pwned") is None
    assert api(page, "(id) => durably.getRun(id)", imported)["output"]["names"] == [payload]


def test_a_run_with_many_log_lines_shows_its_last_200_and_says_earlier_ones_are_left_out(page, site_url, durably):
    open_demo(page, site_url, durably)
    # 250 rows with a bad email: one warning log line each, all in one step.
    rows = "".join(f"Person {n},not-an-email-{n},30\n" for n in range(1, 251))
    run_id = trigger(page, "import-csv", {"csv": "name,email,age\n" + rows, "batch_size": 1000})
    wait_for_status(page, run_id, "completed")
    select(page, run_id)
    page.wait_for_selector('#run-status[data-status="completed"]')
    page.wait_for_selector("#logs-note:not([hidden])")
    assert page.inner_text("#logs-note") == "Only the last 200 lines are shown; earlier lines are left out."
    shown = page.eval_on_selector_all("#logs tbody tr td:nth-child(4)", "cells => cells.map(c => c.textContent)")
    # The last 200, in order: lines 52 to 251 of the CSV (line 1 is its header).
    assert shown == [f"line {n} skipped: 'not-an-email-{n - 1}' is not an email address" for n in range(52, 252)]
    assert len(api(page, "(id) => durably.getLogs(id)", run_id)) == 250

    # A run with few lines shows them all, with no note.
    few = trigger(page, "import-csv", {"csv": "name,email,age\nAda,bad,30\n"})
    wait_for_status(page, few, "completed")
    select(page, few)
    page.wait_for_selector(f'#run-detail[data-run-id="{few}"] #run-status[data-status="completed"]')
    page.wait_for_selector("#logs tbody tr")
    assert page.is_hidden("#logs-note")
    assert page.eval_on_selector_all("#logs tbody tr", "rows => rows.length") == 1


def test_a_run_that_waits_shows_what_it_waits_for_and_takes_a_signal_from_its_panel(page, site_url, durably):
    open_demo(page, site_url, durably)
    run_id = trigger(page, "approval", {"amount": 7, "pause": 0.2, "timeout": 600, "chance": 0})
    wait_for_status(page, run_id, "waiting")
    select(page, run_id)
    page.wait_for_selector('#signal-form:not([hidden])', timeout=RUN_TIMEOUT_MS)
    assert page.inner_text("#run-status") == "waiting"
    assert page.inner_text("#run-wait").startswith("the signal decision until ")  # its timeout
    assert ("decision", "waiting") in step_rows(page)
    stored = api(page, "(id) => durably.getRun(id)", run_id)
    assert (stored["waiting_for"], stored["wait_step"]) == ("signal", "decision") and stored["wake_at"]
    page.fill("#signal-payload", '{"approved": false}')
    page.click("[data-testid=signal-btn]")
    wait_for_status(page, run_id, "completed")
    done = api(page, "(id) => durably.getRun(id)", run_id)
    assert done["output"]["approved"] is False and done["output"]["decision"] == {"approved": False}
    page.wait_for_selector('#signal-form[hidden]', state="attached")
    assert step_rows(page) == [("draft", "completed"), ("notify", "completed"), ("pause", "completed"),
                               ("decision", "completed")]
    events = page.eval_on_selector_all("#events li", "items => items.map(li => li.dataset.type)")
    assert "run:wait" in events and "run:signal" in events


def test_the_move_and_import_buttons_move_runs_out_and_load_a_file_back(page, site_url, durably, tmp_path):
    open_demo(page, site_url, durably)
    moved = trigger(page, "slow", {"steps": 20, "seconds": 0.5})
    wait_for_status(page, moved, "leased")
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_download() as download:
        page.click("#move-btn")
    path = tmp_path / "moved.db"
    download.value.save_as(path)
    wait_for_status(page, moved, "cancelled")
    assert page.evaluate("(id) => window.durably.getRun(id)", moved)["error"].startswith("moved: ")

    # A file that is not a database: the page says so and keeps its runs.
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    with page.expect_file_chooser() as chooser:
        page.click("#import-btn")
    chooser.value.set_files(junk)
    page.wait_for_selector("#api-error:not([hidden])")
    assert page.inner_text("#api-error-text").startswith("ValidationError: importDatabase: the file is not an SQLite database")
    assert shown_run_ids(page) == [moved]

    # The moved file back: its run is pending there (the move happened after the copy), and
    # it resumes in this page.
    with page.expect_file_chooser() as chooser:
        page.click("#import-btn")
    chooser.value.set_files(path)
    wait_for_status(page, moved, "completed")
    assert page.is_hidden("#api-error")
