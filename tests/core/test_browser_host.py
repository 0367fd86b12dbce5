"""The browser host's request handling, run on CPython with the sqlite3 driver.

The same ``BrowserHost`` runs inside Pyodide in the browser tests; here its protocol
(methods, parameter checks, error replies, event forwarding) is checked quickly.
"""

from __future__ import annotations

import asyncio
import json

from durably import job
from durably.browser import BrowserHost
from durably.driver import Sqlite3Driver


@job("double")
async def double(step, input):
    """Doubles a number."""
    return await step.run("double", lambda: input["n"] * 2)


@job("hang")
async def hang(step, input):
    await step.run("hang", lambda: asyncio.sleep(30))


def make_host(db_path: str, **kwargs):
    posted: list[dict] = []
    host = BrowserHost(
        post_event=lambda text: posted.append(json.loads(text)),
        jobs=[double, hang],
        driver=Sqlite3Driver(db_path),
        options={"pollingInterval": 0.05, **kwargs.pop("options", {})},
        **kwargs,
    )
    return host, posted


async def call(host: BrowserHost, method, params=None):
    """As worker.js does: handle_now first, handle for the methods that wait."""
    text = json.dumps(params) if params is not None else ""
    reply = host.handle_now(method, text)
    if reply is None:
        reply = await host.handle(method, text)
    return json.loads(reply)


async def test_requests_get_one_reply_each_with_plain_data(db_path):
    host, posted = make_host(db_path)
    info = await host.start()
    assert info["jobs"] == ["double", "hang"] and info["reclaimed"] == 0
    assert (await call(host, "subscribe", {"types": ["run:complete", "step:complete"]}))["ok"]
    run = (await call(host, "trigger", {"job": "double", "input": {"n": 21}, "labels": {"k": "v"}}))["ok"]
    assert run["status"] == "pending" and run["disposition"] == "created" and isinstance(run["created_at"], str)
    done = (await call(host, "waitForRun", {"id": run["id"], "timeout": 5}))["ok"]
    assert done["output"] == 42
    steps = (await call(host, "getSteps", {"id": run["id"]}))["ok"]
    assert [(s["name"], s["status"], s["output"]) for s in steps] == [("double", "completed", 42)]
    runs = (await call(host, "getRuns", {"jobName": "double", "labels": {"k": "v"}}))["ok"]
    assert [r["id"] for r in runs] == [run["id"]]
    assert [e["type"] for e in posted] == ["step:complete", "run:complete"]
    assert posted[-1]["output"] == 42 and posted[-1]["run_id"] == run["id"]
    jobs = (await call(host, "jobs"))["ok"]
    assert jobs[0] == {"name": "double", "doc": "Doubles a number."}
    again = (await call(host, "retrigger", {"id": run["id"]}))["ok"]
    assert again["input"] == {"n": 21}
    await call(host, "waitForRun", {"id": again["id"], "timeout": 5})
    assert (await call(host, "deleteRun", {"id": run["id"]})) == {"ok": None}
    assert (await call(host, "getRun", {"id": run["id"]})) == {"ok": None}
    await host.stop()


async def test_bad_requests_get_clear_errors_and_change_nothing(db_path):
    host, _ = make_host(db_path)
    await host.start()
    cases = [
        (("nope", "{}"), "NotFoundError", "unknown method 'nope'"),
        (("trigger", "{not json"), "ValidationError", "not valid JSON"),
        (("trigger", "[1, 2]"), "ValidationError", "must be an object"),
        (("trigger", json.dumps({"job": "double", "inptu": 1})), "ValidationError", "unknown parameter(s) 'inptu'"),
        (("trigger", json.dumps({"input": 1})), "ValidationError", "'job' is required"),
        (("trigger", json.dumps({"job": "nope"})), "NotFoundError", "unknown job 'nope'"),
        (("trigger", json.dumps({"job": "double", "labels": {"a": 1}})), "ValidationError", "string value"),
        (("cancel", json.dumps({"id": "missing"})), "NotFoundError", "no run with id"),
        (("subscribe", json.dumps({"types": ["run:done"]})), "ValidationError", "unknown event type"),
        (("purgeRuns", json.dumps({"olderThan": "yesterday"})), "ValidationError", "olderThan"),
        (("trigger", "x" * (4 * 1024 * 1024 + 1)), "ValidationError", "the limit is"),
        # The page's JSON keeps "é" as is: fewer characters than the limit, more UTF-8 bytes.
        (("trigger", json.dumps({"job": "double", "input": "\u00e9" * (2 * 1024 * 1024 + 1)}, ensure_ascii=False)),
         "ValidationError", "MAX_MESSAGE_BYTES"),
        ((None, "{}"), "ValidationError", "a call needs a method name (text), got nothing"),
        ((7, "{}"), "ValidationError", "a call needs a method name (text), got 7"),
        (("evalPython", json.dumps({"code": "1"})), "NotFoundError", "unknown method"),
    ]
    for (method, params), name, message in cases:
        # The same answer from the async path and from the immediate one.
        for reply in (json.loads(await host.handle(method, params)), json.loads(host.handle_now(method, params))):
            assert reply["error"]["name"] == name, (method, reply)
            assert message in reply["error"]["message"], (method, reply)
    assert (await call(host, "getRuns"))["ok"] == []
    # Only what has to wait is left to handle(): a finished run is answered at once.
    run = (await call(host, "trigger", {"job": "hang"}))["ok"]
    assert host.handle_now("waitForRun", json.dumps({"id": run["id"]})) is None
    await call(host, "cancel", {"id": run["id"]})
    reply = json.loads(host.handle_now("waitForRun", json.dumps({"id": run["id"]})))
    assert reply["error"]["name"] == "CancelledError"
    reply = json.loads(host.handle_now("waitForRun", json.dumps({"id": run["id"], "timeout": -1})))
    assert reply["error"]["name"] == "ValidationError"
    # A bug in a method is reported with its traceback, and the host keeps serving.
    host._methods["ping"] = lambda params: 1 / 0
    reply = json.loads(host.handle_now("ping", ""))
    assert reply["error"]["name"] == "ZeroDivisionError" and "1 / 0" in reply["error"]["traceback"]
    await host.stop()


async def test_a_reloaded_tab_reclaims_the_runs_its_previous_worker_left_leased(db_path):
    first, _ = make_host(db_path)
    await first.start()
    run = (await call(first, "trigger", {"job": "hang"}))["ok"]
    while (await call(first, "getRun", {"id": run["id"]}))["ok"]["status"] != "leased":
        await asyncio.sleep(0.01)
    # The tab closes: its worker dies without handing anything back.
    first.app._worker._loop_task.cancel()

    second, _ = make_host(db_path)
    info = await second.start()
    assert info["reclaimed"] == 1
    await asyncio.sleep(0.2)
    assert (await call(second, "getRun", {"id": run["id"]}))["ok"]["status"] == "leased"
    assert (await call(second, "cancel", {"id": run["id"]}))["ok"]["status"] == "cancelled"
    await second.stop()


async def test_unknown_options_are_refused(db_path):
    import pytest

    from durably import ValidationError

    with pytest.raises(ValidationError, match="unknown option 'leaseTime'"):
        make_host(db_path, options={"leaseTime": 3})


async def test_debug_eval_runs_python_in_the_worker(db_path):
    host, _ = make_host(db_path, debug=True)
    reply = await call(host, "evalPython", {"code": "import asyncio\nawait asyncio.sleep(0)\nsorted(app.jobs)"})
    assert reply == {"ok": ["double", "hang"]}


async def test_debug_sql_runs_one_statement_and_only_in_debug(db_path):
    host, _ = make_host(db_path, debug=True)
    reply = await call(host, "sql", {"sql": "SELECT ?, x'00ff', NULL", "params": [3]})
    assert reply == {"ok": {"rows": [[3, {"$bytes": "00ff"}, None]], "changes": 0}}
    plain, _ = make_host(db_path)
    assert (await call(plain, "sql", {"sql": "SELECT 1"}))["error"]["name"] == "NotFoundError"


async def test_each_subscribed_event_is_posted_once_and_unheard_events_are_not_built(db_path):
    host, posted = make_host(db_path)
    await host.start()
    assert not host.app._events.wants("step:complete")  # nobody subscribed: nothing is built
    await call(host, "subscribe", {"types": ["run:complete", "*"]})
    run = (await call(host, "trigger", {"job": "double", "input": {"n": 1}}))["ok"]
    await call(host, "waitForRun", {"id": run["id"], "timeout": 5})
    assert [e["type"] for e in posted].count("run:complete") == 1
    await call(host, "unsubscribe", {"types": ["*"]})
    posted.clear()
    run = (await call(host, "trigger", {"job": "double", "input": {"n": 2}}))["ok"]
    await call(host, "waitForRun", {"id": run["id"], "timeout": 5})
    assert [e["type"] for e in posted] == ["run:complete"]
    await host.stop()


def test_the_init_message_is_checked_against_the_sites_job_modules():
    import pytest

    from durably import ValidationError
    from durably.browser import parse_init

    known = ["demo_jobs", "more_jobs"]
    assert parse_init('{"jobs": ["demo_jobs"], "options": {"maxConcurrentRuns": 2}, "debug": true}', known) == {
        "jobs": ["demo_jobs"], "options": {"maxConcurrentRuns": 2}, "debug": True,
    }
    # No jobs: every job module of the site; an empty list: none.
    assert parse_init("{}", known) == {"jobs": known, "options": {}, "debug": False}
    assert parse_init('{"jobs": []}', known)["jobs"] == []
    with pytest.raises(ValidationError, match='job module "no_such" is not in this site\'s manifest.json; it has: "demo_jobs", "more_jobs"'):
        parse_init('{"jobs": ["no_such"]}', known)
    with pytest.raises(ValidationError, match="init.jobs must be a list of module names"):
        parse_init('{"jobs": ["../etc"]}', known)
    with pytest.raises(ValidationError, match="init.options must be an object"):
        parse_init('{"options": [1]}', known)
    with pytest.raises(ValidationError, match="not JSON"):
        parse_init("{", known)
    with pytest.raises(ValidationError, match="not JSON"):
        parse_init('{"options": {"maxConcurrentRuns": ' + "1" * 5000 + "}}", known)


def test_job_modules_that_fail_to_import_are_reported_with_their_tracebacks():
    from durably.browser import import_job_modules

    assert json.loads(import_job_modules(["json"])) == []
    (failure,) = json.loads(import_job_modules(["json", "durably_no_such_module"]))
    assert failure["module"] == "durably_no_such_module"
    assert "ModuleNotFoundError: No module named 'durably_no_such_module'" in failure["traceback"]


async def test_a_deeply_nested_trigger_is_refused_and_leaves_nothing_that_breaks_get_runs(db_path):
    """Guards defect 1: through handle_now, an input ~980 levels deep got a RecursionError
    reply, yet the run was committed, and every getRuns failed from then on."""
    host, _ = make_host(db_path)
    for depth in (65, 980, 100_000):
        reply = json.loads(host.handle_now("trigger", '{"job": "double", "input": ' + "[" * depth + "]" * depth + "}"))
        assert reply["error"]["name"] == "ValidationError", reply
        assert "MAX_DEPTH" in reply["error"]["message"] and "traceback" not in reply["error"]
    assert json.loads(host.handle_now("getRuns", "{}")) == {"ok": []}
    # A run stored deeper than the limit (by an older durably, or a hand edit) is listed
    # with a marker instead of breaking the list for every caller.
    run = (await call(host, "trigger", {"job": "double", "input": {"n": 1}}))["ok"]
    host.app.driver.execute("UPDATE durably_runs SET input = ? WHERE id = ?", ("[" * 980 + "]" * 980, run["id"]))
    listed = json.loads(host.handle_now("getRuns", "{}"))["ok"]
    assert [(r["id"], r["input"]) for r in listed] == [(run["id"], None)]
    assert listed[0]["decode_error"].startswith("the stored input (")


async def test_options_from_the_page_are_bounded_like_pythons(db_path):
    """Guards defect 4: connect({options: {leaseDuration: 1e300}}) reached Durably unchecked."""
    import math

    import pytest

    from durably import ValidationError

    for options in ({"leaseDuration": math.inf}, {"leaseDuration": 1e300}, {"pollingInterval": 1e300},
                    {"leaseRenewInterval": math.nan}, {"maxConcurrentRuns": 2**70}, {"retainRuns": "9999999999d"}):
        with pytest.raises(ValidationError, match="durably.limits.MAX_"):
            make_host(db_path, options=options)


async def test_bad_numbers_in_requests_get_validation_errors(db_path):
    """Guards defect 9: purgeRuns({olderThan: 1e300}) answered OverflowError with a traceback."""
    host, _ = make_host(db_path)
    run = (await call(host, "trigger", {"job": "double", "input": {"n": 1}}))["ok"]
    for method, params in [
        ("purgeRuns", '{"olderThan": 1e300}'), ("purgeRuns", '{"olderThan": NaN}'),
        ("purgeRuns", '{"olderThan": -Infinity}'), ("purgeRuns", '{"olderThan": "0001-01-01T00:00:00+05:00"}'),
        ("purgeRuns", '{"olderThan": 1, "limit": 1e300}'), ("getRuns", '{"limit": 1180591620717411303424}'),
        ("getRun", '{"id": "a\\ud800"}'), ("getLogs", json.dumps({"id": run["id"], "last": 5, "afterId": 1})),
        ("getLogs", json.dumps({"id": run["id"], "limit": 2**70})), ("waitForRun", json.dumps({"id": run["id"], "timeout": 1e300})),
        # More digits than Python reads into an int (4300): a ValueError, reported as a bug.
        ("getRuns", '{"limit": ' + "9" * 5000 + "}"), ("trigger", '{"job": "double", "input": -' + "1" * 5000 + "}"),
    ]:
        reply = json.loads(host.handle_now(method, params) or await host.handle(method, params))
        assert reply["error"]["name"] == "ValidationError", (method, params, reply)
    assert [r["id"] for r in (await call(host, "getRuns"))["ok"]] == [run["id"]]


async def test_get_logs_pages_and_get_status_answer_the_page(db_path):
    host, _ = make_host(db_path)
    info = await host.start()
    assert (await call(host, "ping"))["ok"]["limits"]["max_depth"] == 64
    status = (await call(host, "getStatus"))["ok"]
    assert [(w["worker_id"], w["host"], w["pid"], w["jobs"]) for w in status["workers"]] == [
        (info["worker_id"], "browser", None, ["double", "hang"])]
    assert status["healthy"] is True and status["runs"]["pending"] == 0
    run = (await call(host, "trigger", {"job": "double", "input": {"n": 2}}))["ok"]
    await call(host, "waitForRun", {"id": run["id"], "timeout": 5})
    host.app.driver.execute(
        "INSERT INTO durably_logs (run_id, step_name, level, message, created_at) "
        "SELECT ?, NULL, 'info', 'line ' || value, '2026-01-01T00:00:00.000000Z' FROM json_each(?)",
        (run["id"], json.dumps(list(range(12)))),
    )
    page = (await call(host, "getLogs", {"id": run["id"], "limit": 5}))["ok"]
    rest = (await call(host, "getLogs", {"id": run["id"], "afterId": page[-1]["id"]}))["ok"]
    tail = (await call(host, "getLogs", {"id": run["id"], "last": 2}))["ok"]
    assert [entry["message"] for entry in page + rest] == [f"line {i}" for i in range(12)]
    assert [entry["message"] for entry in tail] == ["line 10", "line 11"]
    reply = await call(host, "getStatus", {"verbose": True})
    assert reply["error"]["name"] == "ValidationError"
    await host.stop()
    assert (await call(host, "getStatus"))["ok"]["workers"] == []


async def test_a_reloaded_tab_forgets_the_workers_of_closed_tabs(db_path):
    first, _ = make_host(db_path)
    await first.start()
    first.app._worker._loop_task.cancel()  # the tab closes: its worker never says goodbye
    if first.app._worker._heartbeat_handle is not None:
        first.app._worker._heartbeat_handle.cancel()
    second, _ = make_host(db_path)
    info = await second.start()
    status = (await call(second, "getStatus"))["ok"]
    assert [w["worker_id"] for w in status["workers"] + status["stale_workers"]] == [info["worker_id"]]
    await second.stop()


async def test_purge_runs_reads_a_date_without_a_zone_as_utc(db_path):
    """purgeRuns({olderThan: "2030-01-01"}) answered "older_than must be timezone-aware
    (e.g. datetime.now(timezone.utc))": Python's advice, to a page that passed a plain
    ISO-8601 date as the protocol allows. Stored timestamps without a zone are UTC too."""
    host, _ = make_host(db_path)
    run = (await call(host, "trigger", {"job": "double", "input": {"n": 1}}))["ok"]
    await call(host, "cancel", {"id": run["id"]})
    assert await call(host, "purgeRuns", {"olderThan": "2000-01-01"}) == {"ok": 0}
    assert await call(host, "purgeRuns", {"olderThan": "9999-01-01T00:00:00"}) == {"ok": 1}
    assert (await call(host, "getRuns"))["ok"] == []


async def test_a_call_repeated_with_its_request_id_gets_the_first_reply_and_changes_nothing(db_path):
    host, _ = make_host(db_path)
    await host.start()
    trigger = json.dumps({"job": "hang", "input": {"n": 1}})
    first = host.handle_now("trigger", trigger, "tab-a", "tab-a:1")
    # The leader that answered closed before its reply arrived: the next one gets the call again.
    again = host.handle_now("trigger", trigger, "tab-a", "tab-a:1")
    assert again == first and json.loads(first)["ok"]["disposition"] == "created"
    run_id = json.loads(first)["ok"]["id"]
    assert [r["id"] for r in (await call(host, "getRuns"))["ok"]] == [run_id]
    # Another request id is another call: another run.
    other = json.loads(await host.handle("trigger", trigger, "tab-a", "tab-a:2"))["ok"]
    assert other["id"] != run_id

    cancel = json.dumps({"id": run_id})
    cancelled = host.handle_now("cancel", cancel, "tab-b", "tab-b:7")
    assert json.loads(cancelled)["ok"]["status"] == "cancelled"
    # Without the record, a repeat would fail: "already cancelled".
    assert host.handle_now("cancel", cancel, "tab-b", "tab-b:7") == cancelled
    assert json.loads(host.handle_now("cancel", cancel, "tab-b", "tab-b:8"))["error"]["name"] == "ConflictError"

    # A refused call records nothing: its repeat is checked (and refused) again.
    bad = json.dumps({"job": "nope"})
    assert json.loads(host.handle_now("trigger", bad, "tab-a", "tab-a:3"))["error"]["name"] == "NotFoundError"
    assert json.loads(host.handle_now("trigger", bad, "tab-a", "tab-a:3"))["error"]["name"] == "NotFoundError"
    # A request id must be short text.
    reply = json.loads(host.handle_now("trigger", trigger, "tab-a", "x" * 201))
    assert reply["error"]["name"] == "ValidationError" and "request id" in reply["error"]["message"]
    assert len((await call(host, "getRuns"))["ok"]) == 2
    await host.stop()


async def test_a_recorded_reply_commits_with_its_run_or_not_at_all(db_path):
    from durably import StorageError

    host, _ = make_host(db_path)
    await host.start()
    store = host.app._store
    real = store.record_request

    def failing(*args, **kwargs):
        raise StorageError("disk I/O error", code="SQLITE_IOERR")

    store.record_request = failing
    trigger = json.dumps({"job": "double", "input": {"n": 1}})
    reply = json.loads(host.handle_now("trigger", trigger, "tab-a", "tab-a:1"))
    assert reply["error"]["name"] == "StorageError"
    # The run was rolled back with the record: a retry makes the one run.
    assert (await call(host, "getRuns"))["ok"] == []
    store.record_request = real
    run = json.loads(host.handle_now("trigger", trigger, "tab-a", "tab-a:1"))["ok"]
    assert [r["id"] for r in (await call(host, "getRuns"))["ok"]] == [run["id"]]
    await host.stop()


async def test_recorded_replies_older_than_an_hour_are_deleted_when_the_host_starts(db_path):
    from datetime import datetime, timedelta, timezone

    host, _ = make_host(db_path)
    await host.start()
    host.handle_now("trigger", json.dumps({"job": "double", "input": {"n": 1}}), "t", "t:1")
    old = (datetime.now(timezone.utc) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    host.app.driver.execute("UPDATE durably_requests SET created_at = ?", [old])
    host.handle_now("trigger", json.dumps({"job": "double", "input": {"n": 2}}), "t", "t:2")
    await host.stop()
    host.app.close()
    second, _ = make_host(db_path)
    await second.start()
    rows, _ = second.app.driver.execute("SELECT id FROM durably_requests", [])
    assert rows == [("t:2",)]
    await second.stop()


async def test_subscriptions_are_kept_per_tab_and_each_event_is_posted_once(db_path):
    host, posted = make_host(db_path)
    await host.start()
    assert (await call(host, "subscribe", {"types": ["run:complete"]}))["ok"] == ["run:complete"]
    reply = json.loads(host.handle_now("subscribe", json.dumps({"types": ["run:complete", "step:complete"]}), "tab-a"))
    assert reply["ok"] == ["run:complete", "step:complete"]
    run = (await call(host, "trigger", {"job": "double", "input": {"n": 1}}))["ok"]
    await call(host, "waitForRun", {"id": run["id"], "timeout": 5})
    assert [e["type"] for e in posted] == ["step:complete", "run:complete"]
    # The page unsubscribing does not take the type away from the other tab.
    assert (await call(host, "unsubscribe", {"types": ["run:complete"]}))["ok"] == []
    posted.clear()
    run = (await call(host, "trigger", {"job": "double", "input": {"n": 2}}))["ok"]
    await call(host, "waitForRun", {"id": run["id"], "timeout": 5})
    assert [e["type"] for e in posted] == ["step:complete", "run:complete"]
    # The tab goes away: nothing is subscribed, nothing is built.
    host.forget_tab("tab-a")
    posted.clear()
    run = (await call(host, "trigger", {"job": "double", "input": {"n": 3}}))["ok"]
    await call(host, "waitForRun", {"id": run["id"], "timeout": 5})
    assert posted == [] and not host.app._events.wants("run:complete")
    await host.stop()


@job("ask")
async def ask(step, input):
    return await step.wait_for_signal("answer")


async def test_the_page_signals_a_waiting_run_and_sees_what_it_waits_for(db_path):
    posted: list[dict] = []
    host = BrowserHost(
        post_event=lambda text: posted.append(json.loads(text)), jobs=[ask], driver=Sqlite3Driver(db_path),
        options={"pollingInterval": 0.05},
    )
    await host.start()
    await call(host, "subscribe", {"types": ["run:wait", "run:signal"]})
    run = (await call(host, "trigger", {"job": "ask"}))["ok"]
    while posted == []:
        await asyncio.sleep(0.01)
    waiting = (await call(host, "getRun", {"id": run["id"]}))["ok"]
    assert (waiting["status"], waiting["waiting_for"], waiting["wait_step"], waiting["wake_at"]) == (
        "waiting", "signal", "answer", None)
    steps = (await call(host, "getSteps", {"id": run["id"]}))["ok"]
    assert [(s["name"], s["status"], s["attempts"]) for s in steps] == [("answer", "waiting", [])]
    sent = (await call(host, "signal", {"id": run["id"], "name": "answer", "payload": [1, 2], "signalId": "p-1"}))
    assert sent["ok"]["disposition"] == "delivered" and sent["ok"]["payload"] == [1, 2]
    done = (await call(host, "waitForRun", {"id": run["id"], "timeout": 5}))["ok"]
    assert done["output"] == [1, 2]
    again = await call(host, "signal", {"id": run["id"], "name": "answer", "payload": 3})
    assert again["error"]["name"] == "ConflictError"
    bad = await call(host, "signal", {"id": run["id"], "name": "answer", "signal_id": "x"})
    assert bad["error"]["name"] == "ValidationError" and "signal_id" in bad["error"]["message"]
    assert [e["type"] for e in posted] == ["run:wait", "run:signal"]
    await host.stop()
