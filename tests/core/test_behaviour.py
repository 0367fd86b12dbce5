"""The core's behavioural suite: what a user of durably can observe.

Host-independent on purpose: it uses only ``make_app``, ``clock`` and ``pytest.raises``,
so the browser tests run this same file inside Pyodide on SQLite WASM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import warnings
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import pytest

import durably
from durably import (
    CancelledError,
    ConflictError,
    Durably,
    NotFoundError,
    RunFailedError,
    ValidationError,
    job,
)
from durably import limits
from durably.events import EVENT_FIELDS


def record(app: Durably, event_type: str = "*") -> list:
    events: list = []
    app.on(event_type, events.append)
    return events


def next_event(app: Durably, event_type: str, **match: Any) -> asyncio.Future:
    """A future that resolves with the next ``event_type`` event whose data match."""
    fut = asyncio.get_running_loop().create_future()

    def listener(event: Any) -> None:
        if not fut.done() and all(event.get(k, getattr(event, k, None)) == v for k, v in match.items()):
            fut.set_result(event)

    app.on(event_type, listener)
    return fut


# -- the basics ---------------------------------------------------------------------------


async def test_a_job_runs_its_steps_and_stores_output_steps_logs_and_progress(make_app):
    @job("sync-users")
    async def sync_users(step, input):
        users = await step.run("fetch", lambda: [{"id": 1}, {"id": 2}])
        for i, user in enumerate(users):
            await step.run(f"save-{user['id']}", lambda: user["id"] * 10)
            step.progress(i + 1, len(users), "saving")
        step.log.info("done", {"count": len(users)})
        return {"count": len(users), "org": input["org"]}

    app = make_app([sync_users])
    await app.start()
    run = app.trigger("sync-users", {"org": "a"})
    assert run.status == "pending" and run.disposition == "created"
    done = await app.wait_for_run(run.id, timeout=10)
    await app.stop()

    assert done.status == "completed"
    assert done.output == {"count": 2, "org": "a"}
    assert done.progress == {"current": 2, "total": 2, "message": "saving"}
    assert done.started_at is not None and done.completed_at >= done.started_at
    steps = app.get_steps(run.id)
    assert [(s.name, s.index, s.status, s.output) for s in steps] == [
        ("fetch", 0, "completed", [{"id": 1}, {"id": 2}]),
        ("save-1", 1, "completed", 10),
        ("save-2", 2, "completed", 20),
    ]
    assert all(s.completed_at >= s.started_at for s in steps)
    logs = app.get_logs(run.id)
    assert [(log.level, log.message, log.data) for log in logs] == [("info", "done", {"count": 2})]


async def test_job_object_trigger_bare_decorator_and_sync_async_step_functions(make_app):
    async def fetch():
        await asyncio.sleep(0)
        return "async"

    @job
    async def mixed(step, input):
        a = await step.run("sync", lambda: "sync")
        b = await step.run("coroutine-function", fetch)
        c = await step.run("lambda-returning-awaitable", lambda: fetch())
        d = await step.run("tuple", lambda: (1, 2))
        return [a, b, c, d]

    assert mixed.name == "mixed"
    app = make_app([mixed])
    run = app.trigger(mixed, None)
    assert await app.process_until_idle() == 1
    assert app.get_run(run.id).output == ["sync", "async", "async", [1, 2]]


async def test_pending_runs_are_claimed_oldest_first(make_app):
    order = []

    @job("j")
    async def j(step, input):
        order.append(input)

    app = make_app([j])
    for i in range(5):
        app.trigger(j, i)
    assert await app.process_until_idle() == 5
    assert order == [0, 1, 2, 3, 4]


async def test_process_until_idle_respects_max_runs(make_app):
    @job("j")
    async def j(step, input):
        return input

    app = make_app([j])
    app.trigger_many(j, [1, 2, 3])
    assert await app.process_until_idle(max_runs=2) == 2
    assert await app.process_one() is True
    assert await app.process_one() is False


# -- steps ----------------------------------------------------------------------------------


async def test_a_completed_step_is_never_executed_again_after_a_takeover(make_app, clock):
    calls = {"a": 0, "b": 0, "c": 0}
    release_first_worker = asyncio.Event()
    first_attempt = {"blocked": True}

    @job("three")
    async def three(step, input):
        async def b():
            calls["b"] += 1
            if first_attempt["blocked"]:
                first_attempt["blocked"] = False
                await release_first_worker.wait()
            return "b"

        await step.run("a", lambda: calls.__setitem__("a", calls["a"] + 1) or "a")
        await step.run("b", b)
        await step.run("c", lambda: calls.__setitem__("c", calls["c"] + 1) or "c")
        return "done"

    first = make_app([three], clock=clock, lease_duration=30, lease_renew_interval=10)
    second = make_app([three], clock=clock, lease_duration=30, lease_renew_interval=10)
    errors = record(first, "worker:error")
    run = first.trigger(three, None)
    b_started = next_event(first, "step:start", step_name="b")
    stuck = asyncio.ensure_future(first.process_one())
    await b_started

    # The first worker hangs in step b past its lease; the second takes the run over.
    assert await second.process_one() is False  # lease still live: nothing to claim
    clock.advance(31)
    assert await second.process_one() is True
    done = second.get_run(run.id)
    assert done.status == "completed" and done.output == "done"
    assert calls == {"a": 1, "b": 2, "c": 1}

    # The first worker wakes up: its late step result is refused, nothing is written.
    release_first_worker.set()
    await stuck
    assert [e["error"].split(":")[0] for e in errors] == ["LeaseLostError"]
    assert second.get_run(run.id).output == "done"
    assert [s.name for s in second.get_steps(run.id)] == ["a", "b", "c"]
    assert calls["c"] == 1


async def test_resumed_run_returns_stored_results_in_order(make_app, clock):
    seen = []

    @job("acc")
    async def acc(step, input):
        x = await step.run("x", lambda: {"v": 1})
        seen.append(x)
        if len(seen) == 1:
            raise KeyboardInterrupt  # a crash: never caught by durably's failure handling
        return x["v"] + 1

    app = make_app([acc], clock=clock)
    run = app.trigger(acc, None)
    with pytest.raises(KeyboardInterrupt):
        await app.process_one()
    clock.advance(31)  # the crashed worker's lease expires
    other = make_app([acc], clock=clock)
    assert await other.process_one() is True
    assert other.get_run(run.id).output == 2
    assert seen == [{"v": 1}, {"v": 1}]
    assert [s.index for s in other.get_steps(run.id)] == [0]


async def test_the_same_step_name_twice_fails_the_run_naming_the_step(make_app):
    @job("dup")
    async def dup(step, input):
        for _ in range(2):
            await step.run("save", lambda: 1)

    app = make_app([dup])
    run = app.trigger(dup, None)
    await app.process_one()
    failed = app.get_run(run.id)
    assert failed.status == "failed"
    assert failed.failed_step == "save"
    assert "'save'" in failed.error and "twice" in failed.error


async def test_a_result_that_is_not_json_fails_the_run_naming_the_step(make_app):
    @job("bad")
    async def bad(step, input):
        await step.run("ok", lambda: 1)
        await step.run("returns-a-set", lambda: {1, 2})
        await step.run("never", lambda: 3)

    app = make_app([bad])
    events = record(app)
    run = app.trigger(bad, None)
    await app.process_one()
    failed = app.get_run(run.id)
    assert failed.status == "failed" and failed.failed_step == "returns-a-set"
    assert "returns-a-set" in failed.error and "JSON" in failed.error
    steps = app.get_steps(run.id)
    assert [(s.name, s.status) for s in steps] == [("ok", "completed"), ("returns-a-set", "failed")]
    assert "never" not in [e.get("step_name") for e in events]


async def test_a_result_with_keys_that_are_not_strings_fails_the_run_instead_of_losing_a_value(make_app):
    @job("keys")
    async def keys(step, input):
        await step.run("mixed-keys", lambda: {"rows": [{1: "a", "1": "b"}]})

    app = make_app([keys])
    run = app.trigger(keys, None)
    await app.process_one()
    failed = app.get_run(run.id)
    assert failed.status == "failed" and failed.failed_step == "mixed-keys"
    assert "object keys must be strings" in failed.error and "1 (int)" in failed.error
    assert [(s.name, s.status) for s in app.get_steps(run.id)] == [("mixed-keys", "failed")]


async def test_a_failing_step_fails_the_run_with_its_error_and_step(make_app):
    @job("boom")
    async def boom(step, input):
        await step.run("first", lambda: 1)
        await step.run("explode", lambda: 1 / 0)

    app = make_app([boom])
    events = record(app)
    run = app.trigger(boom, None)
    with pytest.raises(RunFailedError) as caught:
        await app.process_one()
        await app.wait_for_run(run.id, timeout=1)
    assert caught.value.failed_step == "explode"
    assert caught.value.error.startswith("ZeroDivisionError")
    steps = app.get_steps(run.id)
    assert steps[-1].status == "failed" and steps[-1].error.startswith("ZeroDivisionError")
    assert [e.type for e in events if e.type in ("step:fail", "run:fail")] == ["step:fail", "run:fail"]
    assert events[-1]["failed_step"] == "explode"


async def test_a_job_that_raises_outside_a_step_fails_without_a_failed_step(make_app):
    @job("outside")
    async def outside(step, input):
        await step.run("fine", lambda: 1)
        raise RuntimeError("after the steps")

    app = make_app([outside])
    run = app.trigger(outside, None)
    await app.process_one()
    failed = app.get_run(run.id)
    assert failed.status == "failed" and failed.failed_step is None
    assert failed.error == "RuntimeError: after the steps"


async def test_a_step_failure_the_job_catches_does_not_fail_the_run(make_app):
    @job("careful")
    async def careful(step, input):
        try:
            await step.run("flaky", lambda: 1 / 0)
        except ZeroDivisionError:
            return await step.run("fallback", lambda: "ok")

    app = make_app([careful])
    run = app.trigger(careful, None)
    await app.process_one()
    assert app.get_run(run.id).output == "ok"


# -- leases and fencing --------------------------------------------------------------------


async def test_leases_are_renewed_while_a_run_executes(make_app, clock):
    gate = asyncio.Event()

    @job("long")
    async def long(step, input):
        await step.run("wait", gate.wait)

    worker = make_app([long], clock=clock, lease_duration=30, lease_renew_interval=0.02)
    other = make_app([long], clock=clock, lease_duration=30)
    run = worker.trigger(long, None)
    renewed = next_event(worker, "run:lease-renewed")
    task = asyncio.ensure_future(worker.process_one())
    await next_event(worker, "step:start")
    clock.advance(20)
    event = await renewed
    clock.advance(20)  # 40 s after the claim, but only 20 s after the renewal
    assert await other.process_one() is False
    assert event["lease_generation"] == 1 and event["worker_id"] == worker.worker_id
    gate.set()
    await task
    assert worker.get_run(run.id).status == "completed"


async def test_every_claim_bumps_the_generation_and_fences_the_previous_holder(make_app, clock):
    @job("j")
    async def j(step, input):
        return 1

    app = make_app([j], clock=clock)
    run = app.trigger(j, None)
    store = app._store
    first = app._runtime.claim()
    assert first.generation == 1
    clock.advance(31)
    second = app._runtime.claim()
    assert second.generation == 2
    now = app._now()
    assert not store.complete_step(run_id=run.id, generation=1, index=0, name="s", output_json="1",
                                   started_at=now, now=now)
    assert not store.finish_run(run_id=run.id, generation=1, status="completed", now=now, output_json="1")
    assert not store.renew(run_id=run.id, generation=1, now=now, lease_until=now, pending=None)
    assert not store.release(run_id=run.id, generation=1, now=now, pending=None)
    assert app.get_run(run.id).status == "leased"
    assert app.get_steps(run.id) == []
    assert store.finish_run(run_id=run.id, generation=2, status="completed", now=now, output_json="1")


# -- idempotency and concurrency keys ------------------------------------------------------


async def test_idempotency_key_returns_the_same_run_and_emits_nothing(make_app):
    @job("j")
    async def j(step, input):
        return input

    app = make_app([j])
    first = app.trigger(j, {"n": 1}, idempotency_key="order-7")
    events = record(app)
    again = app.trigger(j, {"n": 2}, idempotency_key="order-7")
    assert again.id == first.id and again.disposition == "idempotent"
    assert again.input == {"n": 1}
    assert events == []
    assert len(app.get_runs()) == 1
    await app.process_until_idle()
    assert app.trigger(j, {"n": 3}, idempotency_key="order-7").status == "completed"


async def test_one_pending_run_per_job_and_concurrency_key(make_app):
    @job("j")
    async def j(step, input):
        return input

    @job("k")
    async def k(step, input):
        return input

    app = make_app([j, k])
    events = record(app)
    first = app.trigger(j, 1, concurrency_key="user-1")
    with pytest.raises(ConflictError, match="user-1"):
        app.trigger(j, 2, concurrency_key="user-1")
    skipped = app.trigger(j, 3, concurrency_key="user-1", coalesce="skip")
    assert skipped.id == first.id and skipped.disposition == "coalesced"
    assert [e.type for e in events] == ["run:trigger", "run:coalesced"]
    assert events[1]["input"] == 3
    other_job = app.trigger(k, 4, concurrency_key="user-1")  # another job may queue behind it
    assert other_job.disposition == "created"
    assert len(app.get_runs(status="pending")) == 2


async def test_runs_with_the_same_concurrency_key_never_overlap(make_app):
    spans: dict[str, list] = {}

    def make(name: str):
        @job(name)
        async def body(step, input):
            async def work():
                spans.setdefault(input, []).append(("start", asyncio.get_running_loop().time()))
                await asyncio.sleep(0.05)
                spans[input].append(("end", asyncio.get_running_loop().time()))
            await step.run("work", work)
        return body

    a, b = make("a"), make("b")
    app = make_app([a, b], max_concurrent_runs=4)
    runs = [app.trigger(a, "a1", concurrency_key="k"), app.trigger(b, "b1", concurrency_key="k"),
            app.trigger(a, "free1"), app.trigger(b, "free2")]
    await app.start()
    for run in runs:
        await app.wait_for_run(run.id, timeout=10)
    await app.stop()
    a1 = [t for _, t in spans["a1"]]
    b1 = [t for _, t in spans["b1"]]
    assert a1[1] <= b1[0] or b1[1] <= a1[0]
    # Runs without a key did overlap with something: concurrency really was 4.
    free = [t for _, t in spans["free1"]]
    assert free[0] < a1[1]


async def test_a_run_cancelled_by_another_process_holds_its_key_until_its_worker_stops_it(make_app):
    # Process A executes run X (key k); process B cancels X and wants to run Y (key k). X's
    # step is still executing in A until A notices the cancel (at its next lease renewal):
    # B must not start Y before that.
    gate = asyncio.Event()
    log = []

    @job("x")
    async def x(step, input):
        async def body():
            log.append("x-start")
            await gate.wait()
            log.append("x-end")
        await step.run("work", body)

    @job("y")
    async def y(step, input):
        await step.run("work", lambda: log.append("y"))

    a = make_app([x], lease_renew_interval=0.2, lease_duration=5)
    b = make_app([y])
    run_x = a.trigger(x, None, concurrency_key="k")
    run_y = b.trigger(y, None, concurrency_key="k")
    await a.start()
    while log != ["x-start"]:
        await asyncio.sleep(0.01)
    b.cancel(run_x.id)
    assert await b.process_one() is False  # X's worker has not stopped it yet
    assert b.get_run(run_y.id).status == "pending"
    # A notices at its next renewal, interrupts the step and hands the key back.
    for _ in range(200):
        if a.get_steps(run_x.id):
            break
        await asyncio.sleep(0.01)
    assert [s.status for s in a.get_steps(run_x.id)] == ["cancelled"]
    assert await b.process_one() is True
    assert log == ["x-start", "y"]
    await a.stop()


async def test_a_key_held_by_an_expired_lease_is_not_given_to_another_run(make_app, clock):
    # X's worker stopped renewing (frozen or only slow): X is taken over, not skipped; a
    # pending run of the same key, even an older one, waits for X to finish.
    @job("x")
    async def x(step, input):
        return "x"

    @job("y")
    async def y(step, input):
        return "y"

    frozen = make_app([x], clock=clock)
    other = make_app([x, y], clock=clock)
    run_y = other.trigger(y, None, concurrency_key="k")  # older than X
    run_x = other.trigger(x, None, concurrency_key="k")
    claimed = frozen._runtime.claim()  # only X's job is registered there
    assert claimed.run.id == run_x.id
    clock.advance(31)  # past X's lease
    taken = other._runtime.claim()
    assert taken.run.id == run_x.id and taken.generation == 2
    assert other._runtime.claim() is None  # Y waits while X is leased again
    await other._runtime.execute(taken)
    assert await other.process_one() is True
    assert other.get_run(run_y.id).status == "completed"


# -- cancel, retrigger, delete --------------------------------------------------------------


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
    assert app._store.driver.execute("SELECT COUNT(*) FROM durably_steps")[0][0][0] == 0
    assert app._store.driver.execute("SELECT COUNT(*) FROM durably_logs")[0][0][0] == 0


# -- stopping -------------------------------------------------------------------------------


async def test_stop_lets_the_current_step_finish_then_hands_the_lease_back(make_app):
    gate = asyncio.Event()
    calls = []

    @job("j")
    async def j(step, input):
        async def first():
            calls.append("first")
            await gate.wait()
            return 1
        await step.run("first", first)
        await step.run("second", lambda: calls.append("second") or 2)
        return "done"

    app = make_app([j], lease_duration=300, lease_renew_interval=100)
    await app.start()
    run = app.trigger(j, None)
    await next_event(app, "step:start", step_name="first")
    stopping = asyncio.ensure_future(app.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()  # it waits for the step in flight
    gate.set()
    await stopping
    after = app.get_run(run.id)
    assert after.status == "pending"
    assert [s.name for s in app.get_steps(run.id)] == ["first"]
    assert calls == ["first"]

    # The next worker resumes at once (no 300 s lease wait) at the next step.
    nxt = make_app([j], lease_duration=300, lease_renew_interval=100)
    assert await nxt.process_one() is True
    assert calls == ["first", "second"]
    assert nxt.get_run(run.id).output == "done"


async def test_stop_with_a_timeout_cancels_the_step_in_flight_and_hands_the_lease_back(make_app):
    @job("j")
    async def j(step, input):
        await step.run("done-before", lambda: 1)
        await step.run("hang", lambda: asyncio.sleep(30))

    app = make_app([j], lease_duration=300, lease_renew_interval=100)
    await app.start()
    run = app.trigger(j, None)
    await next_event(app, "step:start", step_name="hang")
    await app.stop(timeout=0.05)
    after = app.get_run(run.id)
    assert after.status == "pending"
    assert [s.name for s in app.get_steps(run.id)] == ["done-before"]
    # The instance stays usable and can be started again.
    await app.start()
    assert app.running
    await app.stop(timeout=0.05)


async def test_stop_starts_no_new_run(make_app):
    @job("j")
    async def j(step, input):
        return 1

    app = make_app([j])
    await app.start()
    await app.stop()
    run = app.trigger(j, None)
    await asyncio.sleep(0.2)
    assert app.get_run(run.id).status == "pending"


# -- waking and polling --------------------------------------------------------------------


async def test_a_trigger_in_the_same_process_wakes_the_worker_at_once(make_app):
    @job("j")
    async def j(step, input):
        return 1

    app = make_app([j], polling_interval=60)
    await app.start()
    await asyncio.sleep(0.05)  # the loop is asleep for 60 s now
    run = app.trigger(j, None)
    done = await app.wait_for_run(run.id, timeout=5)
    await app.stop()
    assert done.status == "completed"


async def test_polling_finds_runs_other_processes_inserted(make_app):
    @job("j")
    async def j(step, input):
        return input

    worker = make_app([j], polling_interval=0.05)
    producer = make_app()  # trigger-only: no jobs, no start()
    await worker.start()
    run = producer.trigger("j", 42)
    done = await producer.wait_for_run(run.id, timeout=5)
    await worker.stop()
    assert done.output == 42


async def test_wait_for_run_errors(make_app):
    @job("fails")
    async def fails(step, input):
        raise ValueError("nope")

    @job("slow")
    async def slow(step, input):
        return 1

    app = make_app([fails, slow])
    failing = app.trigger(fails, None)
    await app.process_one()
    with pytest.raises(RunFailedError) as caught:
        await app.wait_for_run(failing.id)
    assert caught.value.error == "ValueError: nope" and "nope" in str(caught.value)
    assert caught.value.run_id == failing.id
    waiting = app.trigger(slow, None)
    with pytest.raises(TimeoutError):
        await app.wait_for_run(waiting.id, timeout=0.1)
    assert not issubclass(CancelledError, asyncio.CancelledError)


async def test_trigger_and_wait(make_app):
    @job("j")
    async def j(step, input):
        return input * 2

    app = make_app([j])
    await app.start()
    run = await app.trigger_and_wait(j, 21, timeout=5, labels={"a": "b"})
    await app.stop()
    assert run.output == 42 and run.labels == {"a": "b"}


# -- events ---------------------------------------------------------------------------------


async def test_events_have_one_shape_each_and_rising_sequence(make_app):
    @job("j")
    async def j(step, input):
        await step.run("s", lambda: 1)
        step.progress(1, 2)
        step.log.error("bad thing", {"k": 1})
        await step.run("t", lambda: 1 / 0)

    app = make_app([j], lease_renew_interval=0.01)
    events = record(app)
    run = app.trigger(j, {"x": 1}, labels={"team": "t"})
    app.trigger(j, None, concurrency_key="c")
    app.trigger(j, None, concurrency_key="c", coalesce="skip")
    await app.process_one()
    other = app.trigger(j, None)
    app.cancel(other.id)
    app.delete_run(other.id)

    types = {e.type for e in events}
    assert {"run:trigger", "run:coalesced", "run:leased", "run:progress", "step:start", "step:complete",
            "step:fail", "run:fail", "log:write", "run:cancel", "run:delete"} <= types
    assert [e.sequence for e in events] == sorted(e.sequence for e in events)
    assert len({e.sequence for e in events}) == len(events)
    for event in events:
        assert set(event.data) == set(EVENT_FIELDS[event.type]), event.type
        assert event.timestamp.tzinfo is not None
        if event.run_id == run.id:
            assert event.job_name == "j" and event.labels == {"team": "t"}
        flat = event.to_dict()
        assert flat["type"] == event.type and isinstance(flat["timestamp"], str)


async def test_a_failing_listener_becomes_a_worker_error_after_its_event_and_the_worker_goes_on(make_app):
    @job("j")
    async def j(step, input):
        await step.run("s", lambda: 1)
        return "ok"

    app = make_app([j])
    seen = []
    app.on("*", lambda e: seen.append((e.type, e.sequence)))

    def broken(event):
        raise RuntimeError("listener bug")

    app.on("step:complete", broken)
    run = app.trigger(j, None)
    await app.process_one()
    assert app.get_run(run.id).output == "ok"
    types = [t for t, _ in seen]
    i = types.index("step:complete")
    assert types[i + 1] == "worker:error"
    assert types[-1] == "run:complete"
    errors = [e for e in seen if e[0] == "worker:error"]
    assert len(errors) == 1


async def test_listeners_see_events_in_order_even_when_a_listener_triggers(make_app):
    @job("j")
    async def j(step, input):
        return input

    app = make_app([j])
    first_listener, second_listener = [], []

    def chain(event):
        first_listener.append(event.sequence)
        if event.type == "run:trigger" and event.get("input") == 1:
            app.trigger(j, 2)  # emits while we are emitting

    app.on("*", chain)
    app.on("*", lambda e: second_listener.append(e.sequence))
    app.trigger(j, 1)
    assert first_listener == sorted(first_listener) == second_listener


async def test_unsubscribe_and_unknown_event_types(make_app):
    app = make_app()
    seen = []
    off = app.on("run:trigger", seen.append)
    app.trigger("anything", None)
    off()
    app.trigger("anything", None)
    assert len(seen) == 1
    with pytest.raises(ValidationError, match="unknown event type"):
        app.on("run:finished", print)
    for not_a_type in (["run:trigger"], {"run:trigger": 1}, None):  # a TypeError (unhashable) before
        with pytest.raises(ValidationError, match="unknown event type"):
            app.on(not_a_type, print)


async def test_jobs_that_are_not_a_list_of_jobs_get_a_clear_error(make_app):
    """Durably(db, jobs=my_job) or jobs=5 raised "register() argument after * must be an
    iterable", which does not say what to pass; jobs=None means no jobs."""
    @job("j")
    async def j(step, input):
        return input

    with pytest.raises(ValidationError, match=r"jobs must be a list of jobs made with @job, e.g. jobs=\[j\]"):
        make_app(j)
    with pytest.raises(ValidationError, match="jobs must be a list of jobs made with @job"):
        make_app(5)
    assert make_app(None).jobs == {} and list(make_app((j,)).jobs) == ["j"]


# -- input and output schemas ---------------------------------------------------------------


@dataclasses.dataclass
class Address:
    city: str
    zip: Optional[str] = None


@dataclasses.dataclass
class Signup:
    email: str
    age: int
    tags: list[str]
    address: Address
    score: float = 0.0


@dataclasses.dataclass
class Result:
    ok: bool
    city: str


async def test_dataclass_input_is_checked_field_by_field_and_the_job_receives_an_instance(make_app):
    received = []

    @job("signup", input=Signup, output=Result)
    async def signup(step, input: Signup):
        received.append(input)
        return Result(ok=True, city=input.address.city)

    app = make_app([signup])
    good = {"email": "a@b.c", "age": 3, "tags": ["x"], "address": {"city": "Oslo"}}
    run = app.trigger(signup, good)
    await app.process_one()
    assert isinstance(received[0], Signup) and isinstance(received[0].address, Address)
    assert app.get_run(run.id).output == {"ok": True, "city": "Oslo"}
    instance = app.trigger(signup, Signup("e@f.g", 1, [], Address("Rome")))
    assert instance.input["address"] == {"city": "Rome", "zip": None}

    cases = [
        ({"age": 3, "tags": [], "address": {"city": "x"}}, "missing the required field 'email'"),
        ({**good, "extra": 1}, "unknown field(s) 'extra'"),
        ({**good, "age": "3"}, "age must be int, got str"),
        ({**good, "age": True}, "age must be int, got bool"),
        ({**good, "tags": ["a", 2]}, "tags[1] must be str"),
        ({**good, "address": {"city": 5}}, "address.city must be str"),
        ("not an object", "must be an object"),
    ]
    before = len(app.get_runs())
    for bad, message in cases:
        with pytest.raises(ValidationError) as caught:
            app.trigger(signup, bad)
        assert message in str(caught.value), (message, str(caught.value))
    assert len(app.get_runs()) == before


async def test_a_callable_validator_checks_the_input(make_app):
    def positive(value):
        if not isinstance(value, int) or value <= 0:
            raise ValueError("must be a positive integer")
        return value

    @job("count", input=positive)
    async def count(step, input):
        return input

    app = make_app([count])
    with pytest.raises(ValidationError, match="positive integer"):
        app.trigger(count, -1)
    app.trigger(count, 3)
    assert await app.process_until_idle() == 1


async def test_a_pydantic_model_checks_the_input_and_the_job_receives_an_instance(make_app):
    # pydantic is optional: the site does not ship it to the browser, so this one is
    # skipped there (and on a CPython without pydantic).
    pydantic = pytest.importorskip("pydantic")
    app = make_app()

    class Item(pydantic.BaseModel):
        name: str
        qty: int

    @job("item", input=Item)
    async def item(step, input):
        assert isinstance(input, Item)
        return input.qty

    app.register(item)
    with pytest.raises(ValidationError, match="qty"):
        app.trigger(item, {"name": "x", "qty": "many"})
    run = app.trigger(item, {"name": "x", "qty": 2})
    await app.process_one()
    assert app.get_run(run.id).output == 2


async def test_an_output_that_does_not_match_fails_the_run(make_app):
    @job("out", output=Result)
    async def out(step, input):
        return {"ok": "yes", "city": "x"}

    app = make_app([out])
    run = app.trigger(out, None)
    await app.process_one()
    failed = app.get_run(run.id)
    assert failed.status == "failed" and "ok must be bool" in failed.error


async def test_bad_trigger_input_creates_no_run(make_app):
    @job("j")
    async def j(step, input):
        return 1

    app = make_app([j])
    bad_calls = [
        (lambda: app.trigger("nope", None), NotFoundError, "unknown job 'nope'"),
        (lambda: app.trigger(j, {"x": {1, 2}}), ValidationError, "JSON"),
        (lambda: app.trigger(j, float("nan")), ValidationError, "JSON"),
        (lambda: app.trigger(j, None, labels={"a": 1}), ValidationError, "string value"),
        (lambda: app.trigger(j, None, labels=["a"]), ValidationError, "labels"),
        (lambda: app.trigger(j, None, idempotency_key=""), ValidationError, "idempotency_key"),
        (lambda: app.trigger(j, None, concurrency_key=5), ValidationError, "concurrency_key"),
        (lambda: app.trigger(j, None, coalesce="merge"), ValidationError, "coalesce"),
        (lambda: app.trigger(j, None, coalesce="skip"), ValidationError, "concurrency_key"),
        (lambda: app.trigger_many(j, [1, {2}]), ValidationError, "JSON"),
    ]
    for call, error, message in bad_calls:
        with pytest.raises(error, match=message):
            call()
    assert app.get_runs() == []


async def test_trigger_many_is_all_or_nothing(make_app):
    @job("j")
    async def j(step, input):
        return input

    app = make_app([j])
    app.trigger(j, 0, concurrency_key="taken")
    runs = app.trigger_many(j, [1, 2, 3], labels={"batch": "b1"})
    assert [r.input for r in runs] == [1, 2, 3]
    assert len(app.get_runs(labels={"batch": "b1"})) == 3
    app.cancel(runs[0].id)
    assert len(app.get_runs()) == 4


# -- reading runs ---------------------------------------------------------------------------


async def test_get_runs_filters_newest_first(make_app):
    @job("a")
    async def a(step, input):
        return 1

    @job("b")
    async def b(step, input):
        raise ValueError("x")

    app = make_app([a, b])
    r1 = app.trigger(a, 1, labels={"env": "prod", "team": "x"})
    r2 = app.trigger(b, 2, labels={"env": "prod"})
    r3 = app.trigger(a, 3, labels={"env": "dev"})
    await app.process_until_idle(max_runs=2)
    assert [r.id for r in app.get_runs()] == [r3.id, r2.id, r1.id]
    assert [r.id for r in app.get_runs(status="completed")] == [r1.id]
    assert [r.id for r in app.get_runs(status=["failed", "pending"])] == [r3.id, r2.id]
    assert [r.id for r in app.get_runs(job_name="a")] == [r3.id, r1.id]
    assert [r.id for r in app.get_runs(job_name=["a", "b"], limit=2)] == [r3.id, r2.id]
    assert [r.id for r in app.get_runs(limit=2, offset=1)] == [r2.id, r1.id]
    assert [r.id for r in app.get_runs(labels={"env": "prod"})] == [r2.id, r1.id]
    assert [r.id for r in app.get_runs(labels={"env": "prod", "team": "x"})] == [r1.id]
    assert app.get_runs(labels={"env": "none"}) == []
    with pytest.raises(ValidationError, match="unknown status"):
        app.get_runs(status="done")
    with pytest.raises(ValidationError, match="limit"):
        app.get_runs(limit=-1)


# -- retention ------------------------------------------------------------------------------


async def test_purge_runs_deletes_only_finished_runs_older_than_the_age(make_app, clock):
    @job("j")
    async def j(step, input):
        await step.run("s", lambda: 1)

    app = make_app([j], clock=clock)
    old = app.trigger(j, 1)
    await app.process_one()
    clock.advance(3600 * 48)
    recent = app.trigger(j, 2)
    await app.process_one()
    pending = app.trigger(j, 3)
    clock.advance(3600 * 48)
    assert app.purge_runs(timedelta(days=3)) == 1
    assert app.get_run(old.id) is None and app.get_run(recent.id) is not None
    assert app.purge_runs(clock() - timedelta(hours=1)) == 1
    assert app.get_run(pending.id).status == "pending"
    assert app.purge_runs(timedelta(0)) == 0
    with pytest.raises(ValidationError):
        app.purge_runs("30d")
    with pytest.raises(ValidationError):
        app.purge_runs(timedelta(days=1), limit=0)


async def test_retain_runs_purges_old_runs_during_idle_maintenance(make_app, clock):
    @job("j")
    async def j(step, input):
        return 1

    app = make_app([j], clock=clock, retain_runs="15m")
    old = app.trigger(j, None)
    await app.process_one()
    clock.advance(16 * 60)
    fresh = app.trigger(j, None)
    await app.process_one()
    deleted = next_event(app, "run:delete")
    await app.start()
    assert (await asyncio.wait_for(deleted, 5)).run_id == old.id
    await app.stop()
    assert app.get_run(old.id) is None and app.get_run(fresh.id) is not None


async def test_preserve_steps_false_deletes_a_finished_runs_steps_and_logs(make_app):
    @job("j")
    async def j(step, input):
        await step.run("s", lambda: 1)
        step.log.info("x")
        return "out"

    app = make_app([j], preserve_steps=False)
    run = app.trigger(j, None)
    await app.process_one()
    assert app.get_run(run.id).output == "out"
    assert app.get_steps(run.id) == [] and app.get_logs(run.id) == []
    assert app.get_run(run.id).completed_steps == 1  # counted when it finished


async def test_completed_steps_counts_while_a_run_executes_and_after_a_cancel(make_app):
    seen = []

    @job("j")
    async def j(step, input):
        await step.run("a", lambda: 1)
        await step.run("b", lambda: 2)
        seen.append(app.get_run(step.run_id).completed_steps)
        app.cancel(step.run_id)
        await step.run("c", lambda: 3)

    app = make_app([j])
    run = app.trigger(j, None)
    assert app.get_run(run.id).completed_steps == 0
    await app.process_one()
    assert seen == [2]
    after = app.get_run(run.id)
    assert after.status == "cancelled" and after.completed_steps == 2


# -- options and schema ----------------------------------------------------------------------


async def test_bad_options_are_refused(make_app):
    bad = [
        {"polling_interval": 0},
        {"lease_duration": -1},
        {"lease_duration": 5, "lease_renew_interval": 5},
        {"max_concurrent_runs": 0},
        {"max_concurrent_runs": 1.5},
        {"preserve_steps": "no"},
        {"retain_runs": "30"},
        {"retain_runs": "2w"},
        {"retain_runs": "0d"},
        {"retain_runs": 30},
    ]
    for options in bad:
        with pytest.raises(ValidationError):
            make_app(**options)
    for good in ("30d", "12h", "15m"):
        assert make_app(retain_runs=good).retain_runs is not None
    with pytest.raises(ValidationError, match="coroutine"):
        job(lambda step, input: None)
    with pytest.raises(ValidationError, match="job name"):
        job("")


async def test_progress_and_logs_reject_bad_values_clearly(make_app):
    problems = []

    @job("j")
    async def j(step, input):
        for call in (lambda: step.progress("half"), lambda: step.progress(1, "x"),
                     lambda: step.log.info(5), lambda: step.log.info("m", {1, 2})):
            try:
                call()
            except ValidationError as exc:
                problems.append(str(exc))
        with pytest.raises(ValidationError):
            await step.run("", lambda: 1)
        return len(problems)

    app = make_app([j])
    run = app.trigger(j, None)
    await app.process_one()
    assert app.get_run(run.id).output == 4


async def test_the_schema_is_created_by_the_first_call_of_a_trigger_only_process(make_app):
    app = make_app()
    assert app._store.schema_version() == 0
    run = app.trigger("somejob", {"a": 1})
    assert app._store.schema_version() == durably.schema.LATEST_VERSION
    assert app.get_run(run.id).input == {"a": 1}


async def test_a_worker_never_holds_more_runs_than_max_concurrent_runs(make_app):
    gate = asyncio.Event()

    @job("j")
    async def j(step, input):
        await step.run("wait", gate.wait)

    app = make_app([j], max_concurrent_runs=2)
    runs = app.trigger_many(j, [1, 2, 3, 4])
    await app.start()
    await asyncio.sleep(0.2)  # several polls: a greedy worker would have claimed them all
    assert sorted(r.status for r in app.get_runs()) == ["leased", "leased", "pending", "pending"]
    gate.set()
    for run in runs:
        await app.wait_for_run(run.id, timeout=5)
    await app.stop()


async def test_a_busy_worker_claims_the_next_run_as_soon_as_one_finishes(make_app):
    @job("j")
    async def j(step, input):
        return await step.run("s", lambda: input)

    app = make_app([j], polling_interval=60, max_concurrent_runs=1)
    await app.start()
    runs = app.trigger_many(j, [1, 2, 3])
    for run in runs:  # one polling interval between runs would be 60 s each
        await app.wait_for_run(run.id, timeout=5)
    await app.stop()


async def test_events_read_their_common_fields_by_name_too(make_app):
    app = make_app()
    events = record(app)
    run = app.trigger("x", 1, labels={"a": "b"})
    event = events[0]
    assert event["run_id"] == run.id and event["labels"] == {"a": "b"} and event["input"] == 1
    assert event.get("nope") is None
    with pytest.raises(KeyError, match="run:trigger has no field 'nope'"):
        event["nope"]


async def test_trigger_many_checks_the_job_even_with_no_inputs(make_app):
    app = make_app()
    with pytest.raises(ValidationError, match="job name"):
        app.trigger_many(False, [])
    assert app.trigger_many("anything", []) == []


# -- limits: nothing one bad input can break (issue 9) -----------------------------------------


def nested(depth: int, leaf: Any = 1) -> Any:
    """``depth`` lists inside one another around ``leaf``: ``nested(2) == [[1]]``."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def table_rows(app: Durably, table: str) -> int:
    return app._store.driver.execute(f"SELECT COUNT(*) FROM {table}")[0][0][0]


async def test_data_nested_deeper_than_the_limit_is_refused_before_anything_is_written(make_app):
    """Guards defect 1: an input nested ~980 deep was committed and then broke every
    get_runs; ~1000 deep raised RecursionError instead of ValidationError."""
    @job("echo")
    async def echo(step, input):
        await step.run("same", lambda: input)
        return input

    @job("deep-step")
    async def deep_step(step, input):
        await step.run("deep", lambda: nested(limits.MAX_DEPTH + 1))

    @job("deep-output")
    async def deep_output(step, input):
        return {"a": nested(limits.MAX_DEPTH)}  # the object adds a level: one too many

    app = make_app([echo, deep_step, deep_output])
    deepest = nested(limits.MAX_DEPTH)
    for bad in (nested(limits.MAX_DEPTH + 1), nested(1000), nested(5000), {"k": nested(limits.MAX_DEPTH)}):
        with pytest.raises(ValidationError, match="nested more than 64 levels") as caught:
            app.trigger(echo, bad)
        assert "MAX_DEPTH" in str(caught.value)
        with pytest.raises(ValidationError, match="MAX_DEPTH"):
            app.trigger_many(echo, [1, bad])
    cyclic: list = [1]
    cyclic.append(cyclic)
    with pytest.raises(ValidationError, match="contains itself"):
        app.trigger(echo, cyclic)
    assert app.get_runs() == [] and table_rows(app, "durably_run_labels") == 0

    ok = app.trigger(echo, deepest)
    assert ok.input == deepest
    failing = [app.trigger(deep_step), app.trigger(deep_output)]
    assert await app.process_until_idle() == 3
    assert app.get_run(ok.id).output == deepest
    assert app.get_steps(ok.id)[0].output == deepest
    step_failed, output_failed = (app.get_run(r.id) for r in failing)
    assert step_failed.status == "failed" and step_failed.failed_step == "deep"
    assert "MAX_DEPTH" in step_failed.error
    assert output_failed.status == "failed" and "MAX_DEPTH" in output_failed.error
    assert [r.id for r in app.get_runs()] == [failing[1].id, failing[0].id, ok.id]


async def test_trigger_many_takes_a_bounded_number_of_inputs(make_app):
    """One triggerMany of 1.3 million inputs (a 2.6 MB request, under the message limit)
    held the worker for over a minute, then built a reply of 580 MB: in the browser, more
    memory than the worker has."""
    @job("j")
    async def j(step, input):
        return input

    app = make_app([j])
    with pytest.raises(ValidationError, match="MAX_TRIGGER_MANY") as caught:
        app.trigger_many(j, [1] * (limits.MAX_TRIGGER_MANY + 1))
    assert f"at most {limits.MAX_TRIGGER_MANY:,} inputs" in str(caught.value)
    assert app.get_runs() == []
    assert [r.input for r in app.trigger_many(j, [1, 2])] == [1, 2]


async def test_sizes_are_counted_in_bytes_of_the_stored_json_and_checked_before_the_write(make_app):
    """Guards defect 1: inputs, outputs and step results had no size limit at all."""
    @job("big-result")
    async def big_result(step, input):
        await step.run("fill", lambda: "x" * limits.MAX_STEP_RESULT_BYTES)

    @job("big-output")
    async def big_output(step, input):
        return ["x" * limits.MAX_OUTPUT_BYTES]

    app = make_app([big_result, big_output])
    at_limit = "a" * (limits.MAX_INPUT_BYTES - 2)  # two quotes make it exactly the limit
    run = app.trigger("big-result", at_limit)
    assert app.get_run(run.id).input == at_limit
    app.delete_run(app.cancel(run.id).id)
    for bad in ("a" * (limits.MAX_INPUT_BYTES - 1),
                # fewer characters than the limit, but each is a 6-byte escape in the stored JSON
                "\u00e9" * (limits.MAX_INPUT_BYTES // 6 + 1)):
        with pytest.raises(ValidationError, match="MAX_INPUT_BYTES") as caught:
            app.trigger("big-result", bad)
        assert f"the limit is {limits.MAX_INPUT_BYTES:,}" in str(caught.value)
    assert app.get_runs() == []

    runs = [app.trigger(big_result), app.trigger(big_output)]
    await app.process_until_idle()
    step_failed, output_failed = (app.get_run(r.id) for r in runs)
    assert step_failed.status == "failed" and step_failed.failed_step == "fill"
    assert "MAX_STEP_RESULT_BYTES" in step_failed.error
    assert output_failed.status == "failed" and "MAX_OUTPUT_BYTES" in output_failed.error
    assert table_rows(app, "durably_steps") == 1  # the failed step's record, without a result


async def test_a_stored_run_that_cannot_be_read_fails_alone_and_is_listed_with_a_marker(make_app):
    """Guards defect 1: a run stored by an older durably (or a hand edit) that cannot be
    decoded broke get_runs for every caller, and a worker claiming it stopped claiming."""
    @job("j")
    async def j(step, input):
        return await step.run("s", lambda: input)

    app = make_app([j])
    deep, broken, good = app.trigger(j, 1), app.trigger(j, 2), app.trigger(j, 3)
    driver = app._store.driver
    driver.execute("UPDATE durably_runs SET input = ? WHERE id = ?",
                   ("[" * 200 + "]" * 200, deep.id))  # valid JSON, deeper than the limit
    driver.execute("UPDATE durably_runs SET input = '{not json', labels = 'x' WHERE id = ?", (broken.id,))

    listed = {r.id: r for r in app.get_runs()}
    assert listed[good.id].decode_error is None and listed[good.id].input == 3
    assert listed[deep.id].input is None and "input" in listed[deep.id].decode_error
    assert "MAX_DEPTH" in listed[deep.id].decode_error
    assert listed[broken.id].labels == {} and listed[broken.id].input is None
    assert "input" in listed[broken.id].decode_error and "labels" in listed[broken.id].decode_error
    assert app.get_run(broken.id).to_dict()["decode_error"] == listed[broken.id].decode_error
    with pytest.raises(ConflictError, match="cannot be read"):
        app.retrigger(app.cancel(broken.id).id)

    errors = record(app, "worker:error")
    await app.start()
    await app.wait_for_run(good.id, timeout=10)
    with pytest.raises(RunFailedError, match="cannot be executed") as caught:
        await app.wait_for_run(deep.id, timeout=10)
    assert "MAX_DEPTH" in caught.value.error
    assert app.running
    await app.stop()
    assert errors == []
    assert app.get_run(deep.id).status == "failed" and app.get_steps(deep.id) == []


async def test_stored_numbers_that_strict_json_cannot_give_back_are_read_as_unreadable(make_app):
    """A hand edit or another writer can store NaN, Infinity or 1e999, which Python's json
    reads as floats that strict JSON cannot encode again: one such run broke the browser's
    getRuns (and getRun, getSteps, getLogs) for every caller, and `durably runs --json`
    printed invalid JSON. They are read like any value that cannot be read."""
    @job("j")
    async def j(step, input):
        step.log.info("line", {"n": 1})
        step.progress(1)
        return await step.run("s", lambda: 1.5)

    app = make_app([j])
    done = app.trigger(j, 0)
    await app.process_one()
    texts = ("NaN", "[Infinity]", '{"x": -Infinity}', "1e999", "-1" + "0" * 400 + ".5")
    bad = {text: app.trigger(j, 1) for text in texts}
    driver = app._store.driver
    for text, run in bad.items():
        driver.execute("UPDATE durably_runs SET input = ? WHERE id = ?", (text, run.id))
    driver.execute("UPDATE durably_runs SET output = '1e400', progress = '{\"current\": NaN}' WHERE id = ?",
                   (done.id,))
    driver.execute("UPDATE durably_steps SET output = 'Infinity' WHERE run_id = ?", (done.id,))
    driver.execute("UPDATE durably_logs SET data = '[1E+999]' WHERE run_id = ?", (done.id,))

    listed = {r.id: r for r in app.get_runs()}
    for run in listed.values():
        json.dumps(run.to_dict(), allow_nan=False)  # what the browser host sends: strict JSON
    for text, run in bad.items():
        assert listed[run.id].input is None and "input" in (listed[run.id].decode_error or ""), text
    finished = listed[done.id]
    assert finished.output is None and finished.progress is None
    assert "output" in finished.decode_error and "progress" in finished.decode_error
    (step,) = app.get_steps(done.id)
    assert step.output is None and "output" in step.decode_error
    (log,) = app.get_logs(done.id)
    assert log.data is None and "data" in log.decode_error and log.message == "line"
    json.dumps([step.to_dict(), log.to_dict()], allow_nan=False)

    assert await app.process_until_idle() == len(texts)
    for run in bad.values():
        failed = app.get_run(run.id)
        assert failed.status == "failed" and "cannot be executed" in failed.error


async def test_stored_timestamps_without_a_zone_or_unreadable_break_no_reader(make_app, clock):
    """SQLite's own datetime('now') writes UTC without a zone ('2026-01-01 12:00:00'): such a
    hand-edited timestamp made Run.to_dict raise, so get_runs in the browser (and `durably
    runs`) failed for every caller. An unreadable timestamp in a step, a log line or a
    worker row broke get_steps, get_logs and status (the health check) the same way."""
    @job("j")
    async def j(step, input):
        step.log.info("line")
        return await step.run("s", lambda: 1)

    app = make_app([j], clock=clock)
    run = app.trigger(j, None)
    await app.process_one()
    driver = app._store.driver
    driver.execute("UPDATE durably_runs SET created_at = '2026-01-01 12:00:00', "
                   "started_at = '2026-01-01T12:00:01+02:00' WHERE id = ?", (run.id,))
    driver.execute("UPDATE durably_steps SET started_at = 'soon' WHERE run_id = ?", (run.id,))
    driver.execute("UPDATE durably_logs SET created_at = 'yesterday' WHERE run_id = ?", (run.id,))
    for worker_id, heartbeat in (("naive", "2026-01-01 12:00:00"), ("garbage", "a while ago")):
        driver.execute(
            "INSERT INTO durably_workers (worker_id, host, pid, jobs, version, concurrency, started_at, "
            "heartbeat_at) VALUES (?, 'h', 1, '[\"j\"]', '0', 1, ?, ?)", (worker_id, heartbeat, heartbeat))

    (listed,) = app.get_runs()
    assert listed.created_at == datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    assert listed.to_dict()["created_at"] == "2026-01-01T12:00:00.000000Z"
    assert listed.to_dict()["started_at"] == "2026-01-01T10:00:01.000000Z"
    (step,) = app.get_steps(run.id)
    assert step.started_at is None and step.output == 1 and "started_at" in step.decode_error
    (log,) = app.get_logs(run.id)
    assert log.created_at is None and log.message == "line" and "created_at" in log.decode_error
    status = app.status()
    assert status.workers == [] and sorted(w.worker_id for w in status.stale_workers) == ["garbage", "naive"]
    assert {w.worker_id: w.to_dict()["heartbeat_at"] for w in status.stale_workers} == {
        "naive": "2026-01-01T12:00:00.000000Z", "garbage": None}
    json.dumps([listed.to_dict(), step.to_dict(), log.to_dict(), status.to_dict()], allow_nan=False)


async def test_a_run_row_without_an_id_does_not_block_the_claims_of_its_job(make_app):
    """SQLite lets a TEXT primary key be NULL. A hand edit that cleared a run's id made
    that row the first claim candidate of its job (NULL sorts first), and a claim of
    `id = NULL` matches nothing: no run of the job was ever claimed again."""
    @job("j")
    async def j(step, input):
        return input

    app = make_app([j])
    orphan, good = app.trigger(j, 1), app.trigger(j, 2)
    app._store.driver.execute("UPDATE durably_runs SET id = NULL WHERE id = ?", (orphan.id,))
    assert await app.process_until_idle() == 1
    assert app.get_run(good.id).output == 2
    assert sorted((r.id or "", r.status) for r in app.get_runs()) == [("", "pending"), (good.id, "completed")]


async def test_a_stored_step_result_that_cannot_be_read_fails_the_resumed_run_naming_the_step(make_app, clock):
    """Guards defect 1: a resumed run decoded its stored step results unguarded."""
    gate = asyncio.Event()

    @job("j")
    async def j(step, input):
        await step.run("first", lambda: [1])
        await step.run("second", gate.wait)

    worker = make_app([j], clock=clock)
    run = worker.trigger(j, None)
    stuck = asyncio.ensure_future(worker.process_one())
    await next_event(worker, "step:start", step_name="second")
    worker._store.driver.execute("UPDATE durably_steps SET output = ? WHERE run_id = ? AND name = 'first'",
                                 ("[" * 100 + "]" * 100, run.id))
    assert "MAX_DEPTH" in worker.get_steps(run.id)[0].decode_error
    clock.advance(31)
    other = make_app([j], clock=clock)
    assert await other.process_one() is True
    failed = other.get_run(run.id)
    assert failed.status == "failed" and failed.failed_step == "first"
    assert "stored result of step 'first' cannot be read" in failed.error
    gate.set()
    await stuck


async def test_the_worker_loop_survives_any_exception_from_claiming_or_executing_one_run(make_app):
    """Guards defect 1: an exception other than StorageError while claiming ended the
    worker loop silently; one raised while executing left the run leased, to be claimed
    and raise again once its lease expired."""
    @job("j")
    async def j(step, input):
        return await step.run("s", lambda: input)

    app = make_app([j])
    errors = record(app, "worker:error")
    real_claim, real_run_job = app._store.claim, app._runtime._run_job
    bugs = {"claim": 1, "run": 1}

    def buggy_claim(**kwargs):
        if bugs["claim"]:
            bugs["claim"] -= 1
            raise RuntimeError("a bug while claiming")
        return real_claim(**kwargs)

    async def buggy_run_job(ctx, started):
        if bugs["run"]:
            bugs["run"] -= 1
            raise RuntimeError("a bug while executing")
        return await real_run_job(ctx, started)

    app._store.claim = buggy_claim
    app._runtime._run_job = buggy_run_job
    first = app.trigger(j, 1)
    await app.start()
    with pytest.raises(RunFailedError, match="could not execute this run") as caught:
        await app.wait_for_run(first.id, timeout=10)
    assert "a bug while executing" in caught.value.error
    second = app.trigger(j, 2)
    assert (await app.wait_for_run(second.id, timeout=10)).output == 2
    await app.stop()
    assert [e["error"] for e in errors] == ["RuntimeError: a bug while claiming", "RuntimeError: a bug while executing"]


async def test_every_duration_and_count_option_is_finite_and_bounded(make_app):
    """Guards defect 4: lease_duration=inf or 1e300 passed validation and killed the worker
    loop with OverflowError at its first claim, silently."""
    bad = [
        {"lease_duration": math.inf}, {"lease_duration": 1e300}, {"lease_duration": math.nan},
        {"lease_duration": limits.MAX_LEASE_DURATION + 1},
        {"polling_interval": math.inf}, {"polling_interval": limits.MAX_POLLING_INTERVAL * 2},
        {"lease_renew_interval": math.inf}, {"max_concurrent_runs": 2**70},
        {"max_concurrent_runs": limits.MAX_CONCURRENT_RUNS + 1}, {"retain_runs": "9999999999999999d"},
        {"retain_runs": "36501d"},
    ]
    for options in bad:
        with pytest.raises(ValidationError, match="durably.limits.MAX_") as caught:
            make_app(**options)
        assert caught.value.__class__ is ValidationError, options
    at_limits = make_app(lease_duration=limits.MAX_LEASE_DURATION, polling_interval=limits.MAX_POLLING_INTERVAL,
                         max_concurrent_runs=limits.MAX_CONCURRENT_RUNS, retain_runs="36500d")
    assert at_limits.lease_duration == limits.MAX_LEASE_DURATION
    app = make_app()
    for wait in (math.inf, 1e300, math.nan, -1):
        with pytest.raises(ValidationError, match="timeout"):
            await app.wait_for_run("x", timeout=wait)
        with pytest.raises(ValidationError, match="timeout"):
            await app.trigger_and_wait("anything", None, timeout=wait)
    with pytest.raises(ValidationError, match="MAX_TIMEOUT"):
        await app.stop(math.inf)
    assert app.get_runs() == []  # trigger_and_wait checked its timeout before triggering


async def test_a_clock_that_gives_no_aware_datetime_is_refused_when_the_app_is_made(make_app, clock):
    """A clock returning a naive datetime (datetime.now()) or not a datetime at all was
    accepted, and every trigger, claim and cancel then failed with a ValueError or an
    AttributeError that did not say the clock was at fault. An age that reached back before
    the year 1 from such a clock's time gave purge_runs an OverflowError."""
    for bad in (lambda: datetime.now(), lambda: "now", lambda: None, lambda: 1.5):
        with pytest.raises(ValidationError, match="clock must be a callable returning an aware datetime"):
            make_app(clock=bad)
    with pytest.raises(ValidationError, match="got 5"):
        make_app(clock=5)
    later = clock.now + timedelta(hours=1)
    assert make_app(clock=lambda: later.astimezone(timezone(timedelta(hours=5)))).trigger("j", None).created_at == later
    early = make_app(clock=lambda: datetime(1, 2, 1, tzinfo=timezone.utc))
    with pytest.raises(ValidationError, match="before the year 1"):
        early.purge_runs(timedelta(days=60))


async def test_bad_arguments_get_validation_errors_not_storage_or_overflow_errors(make_app, clock):
    """Guards defect 9: limit=2**70 and a lone-surrogate run id gave StorageError, an age
    out of datetime's range OverflowError."""
    app = make_app(clock=clock)
    run = app.trigger("j", None)
    calls = [
        lambda: app.get_runs(limit=2**70), lambda: app.get_runs(offset=2**70),
        lambda: app.get_runs(job_name="a\ud800"), lambda: app.get_runs(job_name=[f"j{i}" for i in range(1000)]),
        lambda: app.get_run("a\ud800"), lambda: app.get_steps("a\ud800"), lambda: app.get_logs("\udfff"),
        lambda: app.cancel("a\ud800"), lambda: app.retrigger("a\ud800"), lambda: app.delete_run("a\ud800"),
        lambda: app.get_run("x" * 10_000),
        lambda: app.purge_runs(timedelta(days=10**8)), lambda: app.purge_runs(timedelta(days=1), limit=2**70),
        lambda: app.purge_runs(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))),
        lambda: app.get_logs(run.id, limit=2**70), lambda: app.get_logs(run.id, after_id=-1),
        lambda: app.get_logs(run.id, last=5, after_id=1), lambda: app.get_logs(run.id, last=5, limit=1),
        lambda: app.get_logs(run.id, last=True),
    ]
    for call in calls:
        with pytest.raises(ValidationError):
            call()
    assert [r.id for r in app.get_runs()] == [run.id]


async def test_a_cancelled_run_whose_worker_still_holds_the_lease_is_not_deleted_or_purged(make_app, clock):
    """Guards defect 5: deleting or purging such a run freed its concurrency key while its
    step still ran, and another run of the key started at once."""
    gate = asyncio.Event()
    ran = []

    @job("x")
    async def x(step, input):
        await step.run("work", gate.wait)

    @job("y")
    async def y(step, input):
        await step.run("work", lambda: ran.append("y"))

    worker = make_app([x], clock=clock)
    other = make_app([y], clock=clock)
    run_x = worker.trigger(x, None, concurrency_key="k")
    run_y = other.trigger(y, None, concurrency_key="k")
    task = asyncio.ensure_future(worker.process_one())
    await next_event(worker, "step:start", step_name="work")
    other.cancel(run_x.id)
    clock.advance(1)
    with pytest.raises(ConflictError, match="has not stopped it yet"):
        other.delete_run(run_x.id)
    assert other.purge_runs(timedelta(0)) == 0
    assert other.get_run(run_x.id).status == "cancelled"
    assert await other.process_one() is False and ran == []  # the key is still held

    gate.set()  # the worker finishes its step, sees the cancel and lets go of the lease
    await task
    assert await other.process_one() is True and ran == ["y"]
    other.delete_run(run_x.id)
    assert other.get_run(run_x.id) is None and other.get_run(run_y.id).status == "completed"


async def test_a_cancelled_run_whose_worker_died_can_be_purged_once_its_lease_expired(make_app, clock):
    @job("x")
    async def x(step, input):
        return 1

    dead = make_app([x], clock=clock)
    run = dead.trigger(x, None, concurrency_key="k")
    assert dead._runtime.claim().run.id == run.id  # claimed; its worker never comes back
    dead.cancel(run.id)
    clock.advance(1)
    assert dead.purge_runs(timedelta(0)) == 0
    clock.advance(30)  # past the 30 s lease
    assert dead.purge_runs(timedelta(0)) == 1


async def test_a_run_that_logs_without_end_stores_the_limit_and_one_line_that_says_so(make_app, clock):
    """Guards defect 8: every line of a run that logged 200,000 lines was buffered, stored
    and sent; a 5 MB log or progress message was stored whole."""
    gate = asyncio.Event()

    @job("chatty")
    async def chatty(step, input):
        # Outside any step: a resumed run logs these again, and still stops at the limit.
        for i in range(6000):
            step.log.info(f"line {i}")
        step.log.warn("m" * (limits.MAX_LOG_MESSAGE_BYTES * 3), {"big": "d" * limits.MAX_LOG_DATA_BYTES})
        step.progress(1, 2, "\u00e9" * limits.MAX_PROGRESS_MESSAGE_BYTES)
        await step.run("wait", gate.wait)
        return "done"

    worker = make_app([chatty], clock=clock)
    events = record(worker, "log:write")
    run = worker.trigger(chatty, None)
    stuck = asyncio.ensure_future(worker.process_one())
    await next_event(worker, "step:start", step_name="wait")
    for _ in range(500):  # the lines ride along with the next commit: here a flush
        if worker._store.count_logs(run.id) == 6001:
            break
        await asyncio.sleep(0.01)
    clock.advance(31)  # the first worker is frozen in its step; another takes the run over
    other = make_app([chatty], clock=clock)
    other_events = record(other, "log:write")
    gate.set()
    assert await other.process_one() is True
    await stuck
    assert other.get_run(run.id).output == "done"

    logs = other.get_logs(run.id)
    assert len(logs) == limits.MAX_LOGS_PER_RUN + 1
    last = logs[-1]
    assert last.level == "warn" and "log limit reached" in last.message and "MAX_LOGS_PER_RUN" in last.message
    assert len(events) + len(other_events) == limits.MAX_LOGS_PER_RUN + 1
    long_line = next(log for log in logs if log.level == "warn")
    assert len(long_line.message.encode()) <= limits.MAX_LOG_MESSAGE_BYTES + 200
    assert "[cut: the log message was" in long_line.message and "MAX_LOG_DATA_BYTES" in long_line.message
    assert long_line.data is None
    progress = other.get_run(run.id).progress
    assert len(progress["message"].encode()) <= limits.MAX_PROGRESS_MESSAGE_BYTES
    assert progress["message"].endswith(
        f"the limit is {limits.MAX_PROGRESS_MESSAGE_BYTES:,} (durably.limits.MAX_PROGRESS_MESSAGE_BYTES)]")


async def test_log_and_progress_text_that_utf8_cannot_encode_is_escaped_not_an_error(make_app):
    """A file name from os.listdir that is not UTF-8 holds a lone surrogate ("\\udcff"):
    logging it, or showing it in the progress message, failed the run with a
    ValidationError, although log and progress text is never an error (it is cut)."""
    name = "report-\udcff.csv"

    @job("j")
    async def j(step, input):
        step.log.info(f"reading {name}")
        step.progress(1, 2, f"at {name}")
        return await step.run("s", lambda: 1)

    app = make_app([j])
    events = record(app, "log:write")
    run = app.trigger(j, None)
    await app.process_one()
    done = app.get_run(run.id)
    assert done.status == "completed" and done.progress["message"] == "at report-\\udcff.csv"
    assert [log.message for log in app.get_logs(run.id)] == ["reading report-\\udcff.csv"]
    assert [e["message"] for e in events] == ["reading report-\\udcff.csv"]


async def test_get_logs_pages_forward_and_gives_the_last_lines_in_order(make_app):
    """Guards defect 8: get_logs could only return every line of a run at once."""
    @job("j")
    async def j(step, input):
        for i in range(25):
            step.log.info(f"line {i}")

    app = make_app([j])
    run = app.trigger(j, None)
    await app.process_one()
    every = app.get_logs(run.id)
    assert [log.message for log in every] == [f"line {i}" for i in range(25)]
    pages, after = [], None
    while True:
        page = app.get_logs(run.id, after_id=after, limit=10)
        if not page:
            break
        pages.append([log.message for log in page])
        after = page[-1].id
    assert [len(p) for p in pages] == [10, 10, 5] and sum(pages, []) == [log.message for log in every]
    assert [log.message for log in app.get_logs(run.id, last=3)] == ["line 22", "line 23", "line 24"]
    assert app.get_logs(run.id, limit=0) == [] and app.get_logs(run.id, last=0) == []
    assert app.get_logs(run.id, after_id=every[-1].id) == []
    assert len(app.get_logs(run.id, last=1000)) == 25


# -- the worker registry and status ----------------------------------------------------------


async def test_a_started_worker_records_itself_and_status_finds_pending_runs_nobody_runs(make_app, clock):
    """Runs nobody will ever execute: a trigger-only typo left a run pending for ever in
    silence, and there was no way to ask which workers run which jobs."""
    @job("j")
    async def j(step, input):
        return input

    worker = make_app([j], clock=clock, max_concurrent_runs=3)
    trigger_only = make_app(clock=clock)
    empty = trigger_only.status()
    assert empty.workers == [] and empty.unhandled == {} and empty.healthy
    assert empty.runs == {"pending": 0, "leased": 0, "completed": 0, "failed": 0, "cancelled": 0}

    await worker.start()
    status = trigger_only.status()
    assert [(w.worker_id, w.jobs, w.concurrency) for w in status.workers] == [(worker.worker_id, ["j"], 3)]
    assert status.workers[0].version == durably.__version__ and status.stale_workers == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        done = trigger_only.trigger("j", 1)
        typo = trigger_only.trigger("jj", 2)
        trigger_only.trigger_many("jj", [3, 4])
    assert [type(w.message) for w in caught] == [durably.NoWorkerWarning] * 2
    assert "'jj'" in str(caught[0].message) and typo.id in str(caught[0].message)
    await worker.wait_for_run(done.id, timeout=10)
    status = trigger_only.status()
    assert status.unhandled == {"jj": 3} and not status.healthy
    assert status.runs["pending"] == 3 and status.runs["completed"] == 1
    assert status.to_dict()["unhandled"] == {"jj": 3} and status.to_dict()["healthy"] is False

    clock.advance(limits.WORKER_STALE_AFTER + 1)  # the worker's heartbeat is now old: dead
    stale = trigger_only.status()
    assert stale.workers == [] and [w.worker_id for w in stale.stale_workers] == [worker.worker_id]
    clock.advance(-(limits.WORKER_STALE_AFTER + 1))
    await worker.stop()  # a clean stop takes the worker out of the registry
    assert trigger_only.status().workers == trigger_only.status().stale_workers == []


async def test_a_running_worker_heartbeats(make_app, clock):
    @job("j")
    async def j(step, input):
        return input

    saved = durably.runtime.HEARTBEAT_INTERVAL
    durably.runtime.HEARTBEAT_INTERVAL = 0.02
    try:
        worker = make_app([j], clock=clock)
        await worker.start()
        first = worker.status().workers[0].heartbeat_at
        clock.advance(limits.WORKER_STALE_AFTER * 2)
        for _ in range(500):
            if worker.status().workers:
                break
            await asyncio.sleep(0.01)
        live = worker.status().workers
        assert live and live[0].heartbeat_at > first
        await worker.stop()
    finally:
        durably.runtime.HEARTBEAT_INTERVAL = saved


async def test_any_exception_fails_its_run_with_a_bounded_error_text(make_app):
    """Guards defect 1: an exception's text was stored whole and unchecked: one of
    megabytes was stored as is, a lone surrogate in it made every attempt to fail the run
    a StorageError, and one whose __str__ raised escaped the runtime, leaving the run leased."""
    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("no")

    @job("huge")
    async def huge(step, input):
        await step.run("explode", lambda: (_ for _ in ()).throw(ValueError("x" * 5_000_000)))

    @job("surrogate")
    async def surrogate(step, input):
        raise ValueError("bad \ud800 text\x00")

    @job("unprintable")
    async def unprintable(step, input):
        raise Unprintable()

    app = make_app([huge, surrogate, unprintable])
    runs = [app.trigger(j) for j in (huge, surrogate, unprintable)]
    assert await app.process_until_idle() == 3
    big, odd, blank = (app.get_run(r.id) for r in runs)
    assert big.status == odd.status == blank.status == "failed"
    assert len(big.error.encode()) <= limits.MAX_ERROR_BYTES and "MAX_ERROR_BYTES" in big.error
    assert len(app.get_steps(big.id)[0].error.encode()) <= limits.MAX_ERROR_BYTES
    assert odd.error == "ValueError: bad \\ud800 text\\x00"  # NUL too: PostgreSQL cannot store it
    assert blank.error.startswith("Unprintable: <Unprintable whose message cannot be shown")


async def test_a_job_raising_system_exit_or_a_base_exception_fails_its_run_once(make_app):
    """A job that raised SystemExit (sys.exit() in a library it calls) or an exception not
    derived from Exception left its run leased: executed again after each lease, for ever,
    with only a worker:error each time (none at all when the exception's text raised)."""
    class Abort(BaseException):
        def __str__(self):
            raise RuntimeError("no text")

    calls = []

    @job("exits")
    async def exits(step, input):
        await step.run("parse", lambda: calls.append("exits") or sys_exit(2))

    @job("aborts")
    async def aborts(step, input):
        calls.append("aborts")
        raise Abort()

    @job("fine")
    async def fine(step, input):
        return input

    app = make_app([exits, aborts, fine], lease_duration=1, lease_renew_interval=0.5)
    errors = record(app, "worker:error")
    runs = [app.trigger(exits), app.trigger(aborts), app.trigger(fine, 3)]
    await app.start()
    for run in runs[:2]:
        with pytest.raises(RunFailedError):
            await app.wait_for_run(run.id, timeout=10)
    assert (await app.wait_for_run(runs[2].id, timeout=10)).output == 3
    await app.stop()
    exited, aborted = (app.get_run(r.id) for r in runs[:2])
    assert exited.error == "SystemExit: 2" and exited.failed_step == "parse"
    assert aborted.error.startswith("Abort: <Abort whose message cannot be shown")
    assert sorted(calls) == ["aborts", "exits"] and errors == []


def sys_exit(code: int) -> None:
    raise SystemExit(code)


async def test_ctrl_c_inside_a_step_hands_the_run_back_and_goes_on_up(make_app):
    """KeyboardInterrupt (a second Ctrl-C under asyncio.run) is the process stopping, not
    the job failing: it left the run leased, to resume only after its lease expired."""
    @job("j")
    async def j(step, input):
        await step.run("first", lambda: 1)
        await step.run("second", lambda: (_ for _ in ()).throw(KeyboardInterrupt()))

    app = make_app([j])
    run = app.trigger(j, None)
    with pytest.raises(KeyboardInterrupt):
        await app.process_one()
    handed_back = app.get_run(run.id)
    assert handed_back.status == "pending" and handed_back.error is None
    assert [s.name for s in app.get_steps(run.id)] == ["first"]


async def test_a_listener_whose_error_cannot_be_printed_breaks_neither_trigger_nor_run(make_app):
    """A listener that raised an exception whose __str__ raises made trigger() raise after
    the run was committed, and failed a run whose steps had all succeeded."""
    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("no text")

        def __repr__(self):
            raise RuntimeError("no repr")

    def listener(event):
        raise Unprintable()

    @job("j")
    async def j(step, input):
        return await step.run("s", lambda: 1)

    app = make_app([j])
    app.on("run:trigger", listener)
    app.on("step:complete", listener)
    errors = record(app, "worker:error")
    run = app.trigger(j, None)
    await app.process_one()
    assert app.get_run(run.id).status == "completed" and app.get_run(run.id).output == 1
    assert [e["context"] for e in errors] == ["listener for run:trigger", "listener for step:complete"]
    assert all(e["error"].startswith("Unprintable: <Unprintable whose message cannot be shown") for e in errors)


async def test_a_key_or_validator_error_that_cannot_be_printed_is_still_a_validation_error(make_app):
    """A dict key whose __repr__ raises, or a validator raising an exception whose __str__
    raises, escaped the checks as a RuntimeError instead of a ValidationError."""
    class Opaque:
        def __repr__(self):
            raise RuntimeError("no repr")

    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("no text")

    def validator(value):
        raise Unprintable()

    @job("checked", input=validator)
    async def checked(step, input):
        return input

    @job("odd-result")
    async def odd_result(step, input):
        await step.run("keys", lambda: {Opaque(): 1})

    app = make_app([checked, odd_result])
    with pytest.raises(ValidationError, match="object keys must be strings.*Opaque"):
        app.trigger(odd_result, {Opaque(): 1})
    with pytest.raises(ValidationError, match="rejected by its validator: Unprintable"):
        app.trigger(checked, 1)
    run = app.trigger(odd_result)
    await app.process_one()
    failed = app.get_run(run.id)
    assert failed.failed_step == "keys" and "object keys must be strings" in failed.error
    assert [r.id for r in app.get_runs()] == [run.id]


async def test_serve_returns_once_the_worker_is_stopped_by_stop(make_app):
    """serve() returned only after SIGINT or SIGTERM. Where there are no signals (a
    thread, Pyodide) or when the program stops the worker itself with stop(), it waited
    for ever after the worker had stopped."""
    @job("j")
    async def j(step, input):
        return input

    app = make_app([j])
    served = asyncio.ensure_future(app.serve())
    run = app.trigger(j, 1)
    assert (await app.wait_for_run(run.id, timeout=10)).output == 1  # serve started the worker
    await app.stop()
    await asyncio.wait_for(served, 10)
    assert not app.running and app.status().workers == []
