"""Storage faults in the browser host: the same handling as on CPython (tests/chaos/
test_faults.py), inside Pyodide, seen from the page.

The worker's driver is wrapped, through ``evalPython``, by a driver that fails chosen step
commits the way a full OPFS quota or a failed OPFS write does (``SQLITE_FULL``,
``SQLITE_IOERR``). The page sees a ``worker:error`` event, the run is handed back and
retried, only the step whose commit failed runs again, and nothing half-written is ever
stored."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

MODULE = '''
from durably import job
from durably.errors import StorageError

EXECUTED = {}

@job("three")
async def three(step, input):
    out = []
    for i in range(3):
        async def body(name=f"s{i}"):
            EXECUTED[name] = EXECUTED.get(name, 0) + 1
            return name
        out.append(await step.run(f"s{i}", body))
    return out

class FailingStepCommits:
    """Fails the step commits numbered in ``fail`` (1-based), with SQLite's error code."""

    def __init__(self, inner, fail, code, message):
        self.inner, self.name = inner, inner.name
        self.fail, self.code, self.message = set(fail), code, message
        self.seen = 0

    def execute(self, sql, params=()):
        if sql.startswith("INSERT INTO durably_steps (run_id"):
            self.seen += 1
            if self.seen in self.fail:
                raise StorageError(self.message + " (injected)", code=self.code)
        return self.inner.execute(sql, params)

    def close(self):
        self.inner.close()
'''

# Each evalPython call has its own namespace: keep the jobs and the wrapper in a module.
SETUP = f"""
import sys, types
module = types.ModuleType("storage_faults")
exec({MODULE!r}, module.__dict__)
sys.modules["storage_faults"] = module
app.register(module.three)
"""

RUN = """async ([faultsCode]) => {
    const d = window.durably;
    const errors = [];
    const off = d.on("worker:error", (e) => errors.push(e));
    await d.ping();  // the subscription is in place
    await d.evalPython(faultsCode);
    const run = await d.trigger("three", {});
    const done = await d.waitForRun(run.id, {timeout: 60});
    off();
    const steps = await d.getSteps(run.id);
    const executed = await d.evalPython("import storage_faults\\napp._store.driver = app._store.driver.inner\\nstorage_faults.EXECUTED");
    return {done, steps, errors, executed};
}"""


@pytest.mark.parametrize(
    ("code", "message"),
    [("SQLITE_FULL", "database or disk is full"), ("SQLITE_IOERR", "disk I/O error")],
)
def test_a_failed_step_commit_is_reported_retried_and_never_half_written(page, site_url, durably, code, message):
    durably.open(page, site_url)
    durably.eval(page, SETUP)
    faults = f"import storage_faults as f\napp._store.driver = f.FailingStepCommits(app._store.driver, [2], {code!r}, {message!r})"
    result = page.evaluate(RUN, [faults])
    done = result["done"]
    assert (done["status"], done["output"], done["completed_steps"]) == ("completed", ["s0", "s1", "s2"], 3)
    assert [(s["name"], s["status"]) for s in result["steps"]] == [("s0", "completed"), ("s1", "completed"), ("s2", "completed")]
    # The page heard about it, with the run and the error's words.
    assert len(result["errors"]) == 1
    error = result["errors"][0]
    assert error["run_id"] == done["id"] and f"StorageError: {message} (injected)" == error["error"]
    assert "handed back" in error["context"]
    # Only the step whose commit failed ran twice; the committed one never again.
    assert result["executed"] == {"s0": 1, "s1": 2, "s2": 1}


def test_a_step_commit_that_keeps_failing_fails_the_run_with_the_error_and_the_worker_goes_on(page, site_url, durably):
    durably.open(page, site_url)
    durably.eval(page, SETUP)
    faults = ("import storage_faults as f\napp._store.driver = f.FailingStepCommits(app._store.driver, range(2, 100), "
              "'SQLITE_FULL', 'database or disk is full')")
    result = page.evaluate(
        """async ([faultsCode]) => {
            const d = window.durably;
            await d.evalPython(faultsCode);
            const run = await d.trigger("three", {});
            const failed = await d.waitForRun(run.id, {timeout: 60}).then(() => null, (e) => ({name: e.name, message: e.message}));
            await d.evalPython("app._store.driver = app._store.driver.inner");
            const after = await d.trigger("three", {});
            return {failed, run: await d.getRun(run.id), steps: await d.getSteps(run.id),
                    after: await d.waitForRun(after.id, {timeout: 60})};
        }""",
        [faults],
    )
    assert result["failed"]["name"] == "RunFailedError"
    assert "database or disk is full (injected)" in result["failed"]["message"]
    assert result["run"]["status"] == "failed" and "refused this run's writes" in result["run"]["error"]
    # What committed before the disk filled up is still there.
    assert [(s["name"], s["status"]) for s in result["steps"]][:1] == [("s0", "completed")]
    assert result["after"]["status"] == "completed"
