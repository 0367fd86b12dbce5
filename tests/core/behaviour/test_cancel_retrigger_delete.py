"""Operations on runs: cancel (here and from another process), retrigger, delete.

Part of the core's behavioural suite (see helpers.py): host-independent, run on
CPython here and inside Pyodide by tests/browser/test_core_in_pyodide.py.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from durably import CancelledError, ConflictError, NotFoundError, job

from .helpers import next_event, record


async def test_cancel_a_pending_run(make_app):
    @job("j")
    async def j(step, input):
        return 1

    app = make_app([j])
    run = app.trigger(j, None)
    events = record(app)
    cancelled = app.cancel(run.id)
    assert cancelled.status == "cancelled" and cancelled.completed_at is not None
    assert [e.type for e in events] == ["run:cancel"]
    assert await app.process_one() is False
    with pytest.raises(CancelledError):
        await app.wait_for_run(run.id, timeout=1)


async def test_cancel_interrupts_the_running_step_and_never_stores_its_result(make_app):
    after_cancel = []

    @job("slow")
    async def slow(step, input):
        await step.run("first", lambda: 1)

        async def forever():
            try:
                await asyncio.sleep(30)
            finally:
                after_cancel.append("interrupted")
            return "never stored"

        await step.run("hang", forever)
        await step.run("later", lambda: after_cancel.append("later ran"))

    app = make_app([slow])
    events = record(app)
    await app.start()
    run = app.trigger(slow, None)
    await next_event(app, "step:start", step_name="hang")
    assert app.cancel(run.id).status == "cancelled"
    with pytest.raises(CancelledError):
        await app.wait_for_run(run.id, timeout=5)
    await next_event(app, "step:cancel") if not any(e.type == "step:cancel" for e in events) else None
    await app.stop()
    assert after_cancel == ["interrupted"]
    assert app.get_run(run.id).status == "cancelled"
    steps = app.get_steps(run.id)
    assert [(s.name, s.status, s.output) for s in steps] == [("first", "completed", 1), ("hang", "cancelled", None)]
    types = [e.type for e in events]
    assert "step:cancel" in types and "run:cancel" in types and "run:complete" not in types


async def test_a_run_of_quick_synchronous_steps_leaves_room_to_cancel_it(make_app):
    # Steps that never suspend must not hold the event loop for the whole run: the worker
    # gives it a turn every few dozen milliseconds, so other tasks (here the test; in the
    # browser, the page's requests) get through while the run executes.
    total = 20000

    @job("j")
    async def j(step, input):
        for i in range(total):
            await step.run(f"s{i}", lambda: i)

    app = make_app([j])
    run = app.trigger(j, None)
    await app.start()
    while not app.get_steps(run.id):
        await asyncio.sleep(0.01)
    app.cancel(run.id)
    with pytest.raises(CancelledError):
        await app.wait_for_run(run.id, timeout=30)
    await app.stop()
    assert 0 < app.get_run(run.id).completed_steps < total


async def test_cancel_during_a_synchronous_step_discards_its_result(make_app):
    app_box = []

    @job("selfcancel")
    async def selfcancel(step, input):
        await step.run("cancel-myself", lambda: app_box[0].cancel(step.run_id) and "result")
        await step.run("never", lambda: 1)

    app = make_app([selfcancel])
    app_box.append(app)
    run = app.trigger(selfcancel, None)
    await app.process_one()
    assert app.get_run(run.id).status == "cancelled"
    assert [(s.name, s.status) for s in app.get_steps(run.id)] == [("cancel-myself", "cancelled")]


async def test_a_cancel_from_another_process_is_noticed_at_the_next_step_boundary(make_app):
    gate = asyncio.Event()
    ran = []

    @job("j")
    async def j(step, input):
        await step.run("wait", gate.wait)
        await step.run("after", lambda: ran.append("after"))

    worker = make_app([j])
    elsewhere = make_app()  # another process, sharing the file, no jobs: it only triggers/cancels
    run = elsewhere.trigger("j", None)
    task = asyncio.ensure_future(worker.process_one())
    await next_event(worker, "step:start", step_name="wait")
    events = record(worker)
    elsewhere.cancel(run.id)
    gate.set()
    await task
    assert ran == []
    assert [(s.name, s.status) for s in worker.get_steps(run.id)] == [("wait", "cancelled")]
    assert [e.type for e in events] == ["step:cancel", "run:cancel"]


async def test_a_cancel_from_another_process_is_noticed_at_lease_renewal(make_app):
    @job("j")
    async def j(step, input):
        await step.run("hang", lambda: asyncio.sleep(30))

    worker = make_app([j], lease_renew_interval=0.02)
    elsewhere = make_app()
    run = elsewhere.trigger("j", None)
    task = asyncio.ensure_future(worker.process_one())
    await next_event(worker, "step:start")
    elsewhere.cancel(run.id)
    await asyncio.wait_for(task, 5)  # interrupted, long before the 30 s sleep ends
    assert [(s.name, s.status) for s in worker.get_steps(run.id)] == [("hang", "cancelled")]


async def test_finished_and_unknown_runs_are_refused_clearly(make_app):
    gate = asyncio.Event()

    @job("j")
    async def j(step, input):
        await step.run("wait", gate.wait)

    app = make_app([j])
    pending = app.trigger(j, None)
    with pytest.raises(ConflictError, match="pending"):
        app.retrigger(pending.id)
    with pytest.raises(ConflictError, match="pending"):
        app.delete_run(pending.id)
    task = asyncio.ensure_future(app.process_one())
    await next_event(app, "step:start")
    with pytest.raises(ConflictError, match="leased"):
        app.delete_run(pending.id)
    with pytest.raises(ConflictError, match="leased"):
        app.retrigger(pending.id)
    gate.set()
    await task
    with pytest.raises(ConflictError, match="completed"):
        app.cancel(pending.id)
    for call in (app.cancel, app.retrigger, app.delete_run, app.get_steps, app.get_logs):
        with pytest.raises(NotFoundError):
            call("no-such-run")
    with pytest.raises(NotFoundError):
        await app.wait_for_run("no-such-run", timeout=1)
    assert app.get_run("no-such-run") is None


async def test_retrigger_copies_input_labels_and_concurrency_key_but_not_idempotency_key(make_app):
    @job("j")
    async def j(step, input):
        return input["n"]

    app = make_app([j])
    first = app.trigger(j, {"n": 1}, idempotency_key="once", concurrency_key="ck", labels={"team": "a"})
    await app.process_until_idle()
    again = app.retrigger(first.id)
    assert again.id != first.id and again.status == "pending"
    assert again.input == {"n": 1} and again.labels == {"team": "a"}
    assert again.concurrency_key == "ck" and again.idempotency_key is None
    assert again.retrigger_of == first.id
    await app.process_until_idle()
    assert app.get_run(again.id).output == 1


async def test_delete_run_removes_it_with_its_steps_and_logs(make_app):
    @job("j")
    async def j(step, input):
        await step.run("s", lambda: 1)
        step.log.warn("w")

    app = make_app([j])
    run = app.trigger(j, None, labels={"x": "y"})
    await app.process_one()
    events = record(app)
    app.delete_run(run.id)
    assert app.get_run(run.id) is None
    assert app.get_runs(labels={"x": "y"}) == []
    assert [e.type for e in events] == ["run:delete"]
    assert app.driver.execute("SELECT COUNT(*) FROM durably_steps")[0][0][0] == 0
    assert app.driver.execute("SELECT COUNT(*) FROM durably_logs")[0][0][0] == 0


async def test_a_call_answered_once_per_request_id_runs_once_and_a_failed_one_records_nothing(make_app):
    @job("j")
    async def j(step, input):
        return 1

    app = make_app([j])
    calls = []

    def trigger():
        calls.append(1)
        return app.trigger(j, len(calls)).id

    first = app.answer_once("tab-1:1", "trigger", trigger)
    # Sent again (its first reply was lost): the recorded reply, and no second run.
    assert app.answer_once("tab-1:1", "trigger", trigger) == first
    assert calls == [1] and [r.id for r in app.get_runs()] == [first]

    def refused():
        app.trigger(j, "x")  # committed only with its record, which never comes
        raise ConflictError("refused after the change")

    with pytest.raises(ConflictError):
        app.answer_once("tab-1:2", "trigger", refused)
    # Rolled back with the call: no run, and the id is free to run for real.
    assert [r.id for r in app.get_runs()] == [first]
    second = app.answer_once("tab-1:2", "trigger", trigger)
    assert second != first and len(app.get_runs()) == 2
    assert app.forget_answers(timedelta(0)) == 2
    assert app.answer_once("tab-1:1", "trigger", trigger) not in (first, second)
