"""Timeouts: a run past its deadline (counted from its first start, stored) fails with
RunTimeoutError naming the step it was in; a step's timeout cancels it as a failed attempt.

Part of the core's behavioural suite (see helpers.py): host-independent, run on
CPython here and inside Pyodide by tests/browser/test_core_in_pyodide.py.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from durably import Retry, RunFailedError, RunTimeoutError, ValidationError, job


async def test_a_run_past_its_deadline_fails_naming_the_step_it_was_in(make_app, clock):
    @job("late", timeout=60, retries=3)
    async def late(step, input):
        await step.run("quick", lambda: 1)
        await step.run("slow", lambda: clock.advance(61))
        await step.run("never", lambda: 1)

    app = make_app([late], clock=clock)
    run = app.trigger(late, None)
    await app.process_one()
    failed = app.get_run(run.id)
    assert (failed.status, failed.failed_step) == ("failed", "slow")
    assert failed.error.startswith("RunTimeoutError: ") and "in step 'slow'" in failed.error
    assert failed.attempt == 1  # job-level retries do not apply to the run's deadline
    assert [(s.name, s.status) for s in app.get_steps(run.id)] == [("quick", "completed"), ("slow", "failed")]


async def test_the_deadline_counts_from_the_first_start_and_survives_waits_and_restarts(make_app, clock):
    @job("bounded", timeout=100)
    async def bounded(step, input):
        await step.run("a", lambda: 1)
        await step.sleep("pause", 60)
        await step.sleep("long-pause", 1000)  # would end after the deadline
        return "never"

    app = make_app([bounded], clock=clock)
    run = app.trigger(bounded, None)
    clock.advance(500)  # waiting in the queue does not count
    started = clock()
    await app.process_one()
    first = app.get_run(run.id)
    assert first.deadline_at == started + timedelta(seconds=100)
    clock.advance(60)
    other = make_app([bounded], clock=clock)  # a restart: another worker, the stored deadline
    await other.process_one()
    waiting = other.get_run(run.id)
    assert waiting.wake_at == first.deadline_at  # due at the deadline, before the long pause ends
    clock.advance(40)
    await other.process_one()
    with pytest.raises(RunFailedError) as caught:
        await other.wait_for_run(run.id, timeout=1)
    assert caught.value.failed_step == "long-pause" and "RunTimeoutError" in caught.value.error


async def test_a_run_that_wakes_at_its_deadline_fails_naming_the_step_it_waited_in(make_app, clock):
    # The job gives the event loop turns while it replays (as a slow or busy machine would):
    # the run still fails in the step it waited in, not "after its last step".
    @job("slow-replay", timeout=100)
    async def slow_replay(step, input):
        await step.run("a", lambda: 1)
        for _ in range(5):
            await asyncio.sleep(0)
        await step.sleep("long-pause", 1000)
        return "never"

    app = make_app([slow_replay], clock=clock)
    run = app.trigger(slow_replay, None)
    await app.process_one()
    assert app.get_run(run.id).status == "waiting"
    clock.advance(100)
    await app.process_one()
    failed = app.get_run(run.id)
    assert (failed.status, failed.failed_step) == ("failed", "long-pause")
    assert "RunTimeoutError" in failed.error


async def test_a_job_cannot_catch_its_way_past_its_deadline(make_app, clock):
    @job("stubborn", timeout=10)
    async def stubborn(step, input):
        try:
            await step.run("over", lambda: clock.advance(11))
        except RunTimeoutError:
            pass
        try:
            await step.run("more", lambda: 1)
        except RunTimeoutError:
            return "caught"

    app = make_app([stubborn], clock=clock)
    run = app.trigger(stubborn, None)
    await app.process_one()
    failed = app.get_run(run.id)
    assert (failed.status, failed.failed_step, failed.output) == ("failed", "over", None)


async def test_the_deadline_timer_interrupts_a_step_in_flight(make_app):
    @job("hang", timeout=0.2)
    async def hang(step, input):
        await step.run("forever", lambda: asyncio.Event().wait())

    app = make_app([hang])
    run = app.trigger(hang, None)
    await app.process_one()
    failed = app.get_run(run.id)
    assert (failed.status, failed.failed_step) == ("failed", "forever")
    assert failed.error.startswith("RunTimeoutError")


async def test_a_step_timeout_cancels_an_async_step_and_counts_as_a_failed_attempt(make_app, clock):
    cancelled = []

    async def stuck():
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    @job("stepwise")
    async def stepwise(step, input):
        await step.run("stuck", stuck, timeout=0.05, retries=Retry(max_attempts=2, initial=1, jitter=False))

    app = make_app([stepwise], clock=clock)
    run = app.trigger(stepwise, None)
    await app.process_one()
    assert app.get_run(run.id).waiting_for == "retry"
    clock.advance(1)
    await app.process_one()
    failed = app.get_run(run.id)
    assert failed.status == "failed" and len(cancelled) == 2
    assert failed.error == "TimeoutError: step 'stuck' took longer than its timeout (0.05 s) and was cancelled (attempt 2 of 2)"
    (stuck_step,) = app.get_steps(run.id)
    assert [a.error.split(":")[0] for a in stuck_step.attempts] == ["TimeoutError", "TimeoutError"]


async def test_bad_timeouts_are_refused(make_app):
    for bad in (0, -1, float("nan"), 1e12, "10"):
        with pytest.raises(ValidationError):

            @job("t", timeout=bad)
            async def t(step, input):
                pass

    @job("bad-step-timeout")
    async def bad_step_timeout(step, input):
        await step.run("s", lambda: 1, timeout=-5)

    app = make_app([bad_step_timeout])
    run = app.trigger(bad_step_timeout, None)
    await app.process_one()
    assert "timeout" in app.get_run(run.id).error
