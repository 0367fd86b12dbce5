"""The page API (web/client.js) against the real worker: Pyodide, BrowserHost, SQLite on OPFS.

The jobs are defined by the tests themselves, in the worker, through ``evalPython`` (the test
page boots in debug mode with no job module), so these tests do not depend on the demo jobs.
"""

from __future__ import annotations

import base64
import json

import pytest

from durably import Durably as CPythonDurably
from durably.browser import PROTOCOL_VERSION

pytestmark = pytest.mark.browser

JOBS = '''
import asyncio, types, sys
from durably import job

@job("double")
async def double(step, input):
    """Doubles a number in two steps."""
    n = await step.run("read", lambda: input["n"])
    step.progress(1, 2, "read")
    out = await step.run("double", lambda: n * 2)
    step.progress(2, 2, "doubled")
    step.log.info("doubled", {"n": n})
    return {"doubled": out}

@job("slow")
async def slow(step, input):
    for i in range(input.get("steps", 100)):
        await step.run(f"tick-{i}", lambda: i)
        await asyncio.sleep(input.get("pause", 0.05))
    return "done"

@job("boom")
async def boom(step, input):
    await step.run("ok", lambda: 1)
    def fail():
        raise ValueError("bad value " + str(input))
    await step.run("explode", fail)

app.register(double, slow, boom)
sorted(app.jobs)
'''


def boot(page, site_url, durably, **kwargs) -> dict:
    timings = durably.open(page, site_url, **kwargs)
    assert durably.eval(page, JOBS) == ["boom", "double", "slow"]
    return timings


def test_trigger_then_wait_for_run_returns_the_run_with_its_steps_and_logs(page, site_url, durably):
    boot(page, site_url, durably)
    result = page.evaluate(
        """async () => {
            const d = window.durably;
            const run = await d.trigger("double", {n: 21}, {labels: {team: "a"}, idempotencyKey: "k1"});
            const again = await d.trigger("double", {n: 21}, {idempotencyKey: "k1"});
            const done = await d.waitForRun(run.id, {timeout: 30});
            return {run, again, done, got: await d.getRun(done.id), missing: await d.getRun("01ARZ3NDEKTSV4RRFFQ69G5FAV"),
                    runs: await d.getRuns({jobName: "double", labels: {team: "a"}}), steps: await d.getSteps(run.id),
                    logs: await d.getLogs(run.id), jobs: await d.jobs()};
        }"""
    )
    assert result["run"]["status"] == "pending" and result["run"]["disposition"] == "created"
    assert result["again"]["id"] == result["run"]["id"] and result["again"]["disposition"] == "idempotent"
    done = result["done"]
    assert (done["status"], done["output"], done["labels"]) == ("completed", {"doubled": 42}, {"team": "a"})
    assert done["progress"] == {"current": 2, "total": 2, "message": "doubled"}
    assert (result["got"]["id"], result["got"]["status"], result["got"]["output"]) == (done["id"], "completed", {"doubled": 42})
    assert result["missing"] is None
    assert [r["id"] for r in result["runs"]] == [done["id"]]
    assert [(s["name"], s["status"], s["output"]) for s in result["steps"]] == [("read", "completed", 21), ("double", "completed", 42)]
    assert [(log["level"], log["message"], log["data"]) for log in result["logs"]] == [("info", "doubled", {"n": 21})]
    assert {"name": "double", "doc": "Doubles a number in two steps."} in result["jobs"]


def test_python_errors_arrive_as_errors_with_the_python_names_and_fields(page, site_url, durably):
    boot(page, site_url, durably)
    errors = page.evaluate(
        """async () => {
            const d = window.durably;
            const catchIt = (p) => p.then((v) => ({ok: v}), (e) => ({...e, name: e.name, message: e.message, isError: e instanceof Error}));
            const failing = await d.trigger("boom", {x: 1});
            const slow = await d.trigger("slow", {steps: 1000, pause: 0.2}, {concurrencyKey: "c"});
            const out = {
                unknownJob: await catchIt(d.trigger("nope", {})),
                badInput: await catchIt(d.trigger("double", {n: 1}, {labels: "not a map"})),
                notFound: await catchIt(d.cancel("01ARZ3NDEKTSV4RRFFQ69G5FAV")),
                queued: await d.trigger("slow", {}, {concurrencyKey: "c"}),  // one may wait behind the leased one
                conflict: await catchIt(d.trigger("slow", {}, {concurrencyKey: "c"})),
                failed: await catchIt(d.waitForRun(failing.id, {timeout: 30})),
                timeout: await catchIt(d.waitForRun(slow.id, {timeout: 0.2})),
            };
            await d.cancel(out.queued.id);
            await d.cancel(slow.id);
            out.cancelled = await catchIt(d.waitForRun(slow.id, {timeout: 30}));
            out.retriggered = await d.retrigger(failing.id);
            await d.waitForRun(out.retriggered.id, {timeout: 30}).catch(() => {});
            await d.deleteRun(out.retriggered.id);
            out.deleted = await d.getRun(out.retriggered.id);
            out.purgeBad = await catchIt(d.purgeRuns({olderThan: "yesterday"}));
            out.purged = await d.purgeRuns({olderThan: 0});
            return out;
        }"""
    )
    assert errors["unknownJob"]["name"] == "NotFoundError" and "'nope'" in errors["unknownJob"]["message"]
    assert errors["unknownJob"]["isError"] is True
    assert errors["badInput"]["name"] == "ValidationError"
    assert errors["notFound"]["name"] == "NotFoundError"
    assert errors["conflict"]["name"] == "ConflictError" and "'c'" in errors["conflict"]["message"]
    failed = errors["failed"]
    assert failed["name"] == "RunFailedError" and "bad value" in failed["message"]
    assert failed["failed_step"] == "explode" and "bad value" in failed["error"]
    assert errors["timeout"]["name"] == "TimeoutError"
    assert errors["cancelled"]["name"] == "CancelledError"
    assert errors["deleted"] is None
    assert errors["purgeBad"]["name"] == "ValidationError" and "ISO-8601" in errors["purgeBad"]["message"]
    assert errors["purged"] >= 1  # the failed and the cancelled run are finished


def test_a_bad_request_gets_an_error_reply_and_the_worker_keeps_serving(page, site_url, durably):
    boot(page, site_url, durably)
    result = page.evaluate(
        """async () => {
            const d = window.durably;
            const w = d.worker;
            const raw = (msg) => new Promise((resolve) => {
                const on = ({data}) => { if (data.type === "reply" && data.id === msg.id) { w.removeEventListener("message", on); resolve(data); } };
                w.addEventListener("message", on);
                w.postMessage(msg);
            });
            const catchIt = (p) => p.then((v) => ({ok: v}), (e) => ({name: e.name, message: e.message}));
            // No reply possible: ignored with a console warning, the worker carries on.
            w.postMessage(null);
            w.postMessage("hello");
            w.postMessage({type: "frobnicate", id: 1});
            w.postMessage({type: "call", method: "ping"});
            w.postMessage({type: "call", id: {}, method: "ping"});
            return {
                unknownMethod: await catchIt(d.call("selfDestruct", {})),
                noMethod: await raw({type: "call", id: "r1"}),
                arrayParams: await raw({type: "call", id: "r2", method: "ping", params: [1, 2]}),
                unknownParam: await catchIt(d.call("getRun", {id: "x", extra: 1})),
                missingParam: await catchIt(d.call("getRun", {})),
                notCloneable: await catchIt(d.trigger("double", {n: () => 1})),
                oversized: await catchIt(d.trigger("double", {n: "x".repeat(5 * 1024 * 1024)})),
                badTypes: await catchIt(d.call("subscribe", {types: ["run:nothing"]})),
                ping: await d.ping(),
            };
        }"""
    )
    assert result["unknownMethod"]["name"] == "NotFoundError" and "trigger" in result["unknownMethod"]["message"]
    assert result["noMethod"]["error"]["name"] == "ValidationError"
    assert result["arrayParams"]["error"]["name"] == "ValidationError"
    assert result["unknownParam"]["name"] == "ValidationError" and "'extra'" in result["unknownParam"]["message"]
    assert result["missingParam"]["name"] == "ValidationError" and "'id'" in result["missingParam"]["message"]
    assert result["notCloneable"]["name"] == "ValidationError"
    assert result["oversized"]["name"] == "ValidationError" and "limit" in result["oversized"]["message"]
    assert result["badTypes"]["name"] == "ValidationError"
    assert result["ping"]["protocol"] == PROTOCOL_VERSION and result["ping"]["driver"] == "opfs-sahpool"
    # No run was created by any of the bad requests.
    assert durably.call(page, "getRuns") == []


def test_events_arrive_in_order_and_off_unsubscribes(page, site_url, durably):
    boot(page, site_url, durably)
    result = page.evaluate(
        """async () => {
            const d = window.durably;
            const all = [], progress = [];
            const offAll = d.on("*", (e) => all.push(e));
            const offProgress = d.on("run:progress", (e) => progress.push(e));
            const run = await d.trigger("double", {n: 2});
            await d.waitForRun(run.id, {timeout: 30});
            await d.ping();  // events posted before this reply have arrived
            offAll(); offProgress();
            await d.ping();
            const before = all.length;
            const second = await d.trigger("double", {n: 3});
            await d.waitForRun(second.id, {timeout: 30});
            await d.ping();
            return {all, progress, after: all.length - before, runId: run.id};
        }"""
    )
    events = [e for e in result["all"] if e["run_id"] == result["runId"]]
    types = [e["type"] for e in events]
    assert types[0] == "run:trigger" and types[-1] == "run:complete", types
    assert types.index("run:leased") < types.index("step:complete") < types.index("run:complete")
    sequences = [e["sequence"] for e in result["all"]]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    assert [(p["progress"]["current"], p["progress"]["total"]) for p in result["progress"]] == [(1, 2), (2, 2)]
    assert all(isinstance(e["timestamp"], str) for e in events)
    assert result["after"] == 0


def test_the_exported_database_opens_with_cpython_durably_with_the_same_runs_and_steps(page, site_url, durably, tmp_path):
    boot(page, site_url, durably)
    shown = page.evaluate(
        """async () => {
            const d = window.durably;
            const a = await d.trigger("double", {n: 5}, {labels: {src: "browser"}});
            const b = await d.trigger("boom", {x: 2});
            await d.waitForRun(a.id, {timeout: 30});
            await d.waitForRun(b.id, {timeout: 30}).catch(() => {});
            const bytes = await d.exportDatabase();
            let bin = "";
            for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
            return {runs: await d.getRuns(), steps: {[a.id]: await d.getSteps(a.id), [b.id]: await d.getSteps(b.id)},
                    isBytes: bytes instanceof Uint8Array, b64: btoa(bin)};
        }"""
    )
    assert shown["isBytes"]
    path = tmp_path / "exported.db"
    path.write_bytes(base64.b64decode(shown["b64"]))
    app = CPythonDurably(str(path))
    try:
        runs = [r.to_dict() for r in app.get_runs()]
        assert json.loads(json.dumps(runs)) == shown["runs"]
        assert len(runs) == 2 and {r["status"] for r in runs} == {"completed", "failed"}
        for run_id, steps in shown["steps"].items():
            assert json.loads(json.dumps([s.to_dict() for s in app.get_steps(run_id)])) == steps
    finally:
        app.close()


def test_a_worker_crash_rejects_pending_calls_and_later_ones_at_once(page, site_url, durably):
    boot(page, site_url, durably)
    page.evaluate(
        """async () => {
            const d = window.durably;
            const run = await d.trigger("slow", {steps: 1000, pause: 0.1});
            window.pending = d.waitForRun(run.id).then(() => null, (e) => ({name: e.name, message: e.message}));
        }"""
    )
    # An error nobody catches inside the worker reaches the page as the Worker's "error" event.
    # The crash may come before or after this call's own reply: either is fine.
    page.evaluate(
        """(code) => window.durably.evalPython(code).catch(() => null)""",
        "import js\njs.setTimeout(js.Function.new(\"throw new Error('simulated crash')\"), 0)\nNone",
    )
    pending = page.evaluate("window.pending")
    assert pending["name"] == "WorkerCrashedError"
    assert "simulated crash" in pending["message"] and "Reload the page" in pending["message"]
    later = page.evaluate("window.durably.ping().then(() => null, (e) => e.name)")
    assert later == "WorkerCrashedError"
    page.wait_for_function("document.getElementById('status').dataset.state === 'crashed'")


def test_a_job_module_that_is_not_in_the_manifest_is_a_boot_error_naming_the_ones_that_are(page, site_url, durably):
    page.goto(durably.test_page(site_url, ["no_such_jobs"]))
    page.wait_for_function("window.connectError", timeout=durably.boot_timeout)
    error = page.evaluate("window.connectError")
    assert (error["name"], error["phase"]) == ("BootError", "import")
    assert error["message"] == (
        'job module "no_such_jobs" is not in this site\'s manifest.json; it has: "demo_jobs" '
        "(add it to jobs in [tool.durably.site] and build the site again: docs/site.md)"
    )


def test_a_database_from_a_newer_durably_is_a_clear_boot_error_and_is_left_untouched(context, site_url, durably):
    page = context.new_page()
    boot(page, site_url, durably)
    durably.sql(page, "INSERT INTO durably_migrations (version, applied_at) VALUES (999, 'later')")
    page.close(run_before_unload=True)

    page = context.new_page()
    page.goto(durably.test_page(site_url))
    page.wait_for_function("window.connectError", timeout=durably.boot_timeout)
    error = page.evaluate("window.connectError")
    assert (error["name"], error["phase"]) == ("BootError", "start")
    assert "SchemaError" in error["message"] and "newer durably (schema version 999" in error["message"]
    assert "not modified" in error["message"]
