"""The worker: stopping, waking, polling, slots, and waiting for runs.

Part of the core's behavioural suite (see helpers.py): host-independent, run on
CPython here and inside Pyodide by tests/browser/test_core_in_pyodide.py.
"""

from __future__ import annotations

import asyncio

import pytest

from durably import CancelledError, RunFailedError, job

from .helpers import next_event, record


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
    leased = record(app, "run:leased")
    await app.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    runs = app.trigger_many(j, [1, 2, 3])
    # One polling interval between two runs would be 60 s each: wait for all three at
    # once, for at most 5 s, and check they all ran one after another in that time.
    done = await asyncio.wait_for(asyncio.gather(*(app.wait_for_run(r.id) for r in runs)), 5)
    elapsed = loop.time() - started
    await app.stop()
    assert [run.output for run in done] == [1, 2, 3]
    assert [e.run_id for e in leased] == [run.id for run in runs]
    assert elapsed < app.polling_interval, "the worker slept a polling interval between two runs"


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


async def test_a_job_registered_while_the_worker_runs_has_its_pending_runs_claimed_at_once(make_app):
    @job("late")
    async def late(step, input):
        return await step.run("s", lambda: input)

    app = make_app(polling_interval=60)  # no jobs yet: the worker claims nothing
    await app.start()
    run = app.trigger("late", 7)
    await asyncio.sleep(0.05)  # the loop is asleep for 60 s now
    app.register(late)
    done = await app.wait_for_run(run.id, timeout=5)
    await app.stop()
    assert done.output == 7


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
