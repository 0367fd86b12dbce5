"""Retries: a failed attempt is recorded and the run waits, durably, before the next one.

Part of the core's behavioural suite (see helpers.py): host-independent, run on
CPython here and inside Pyodide by tests/browser/test_core_in_pyodide.py.
"""

from __future__ import annotations

import pytest

from durably import Retry, RunFailedError, ValidationError, job
from durably.events import EVENT_FIELDS

from .helpers import record


def _flaky(fails: int, calls: list):
    """A step body that raises ValueError ``fails`` times, then returns how often it ran."""

    def body():
        calls.append(1)
        if len(calls) <= fails:
            raise ValueError(f"boom {len(calls)}")
        return len(calls)

    return body


async def test_a_failed_step_waits_durably_for_its_next_attempt_and_committed_steps_are_not_run_again(
    make_app, clock
):
    before, calls = [], []

    @job("pay")
    async def pay(step, input):
        await step.run("before", lambda: before.append(1) or "b")
        charged = await step.run(
            "charge", _flaky(2, calls), retries=Retry(max_attempts=3, initial=10, backoff=3, jitter=False)
        )
        return charged

    app = make_app([pay], clock=clock)
    events = record(app)
    run = app.trigger(pay, None)
    start = clock()
    assert await app.process_one() is True
    waiting = app.get_run(run.id)
    assert (waiting.status, waiting.waiting_for, waiting.wait_step) == ("waiting", "retry", "charge")
    assert (waiting.wake_at - start).total_seconds() == 10
    steps = {s.name: s for s in app.get_steps(run.id)}
    assert steps["charge"].status == "waiting" and steps["charge"].wake_at == waiting.wake_at
    assert [a.error for a in steps["charge"].attempts] == ["ValueError: boom 1"]

    clock.advance(9)
    assert await app.process_one() is False  # not due yet: nothing to claim
    clock.advance(1)
    assert await app.process_one() is True  # attempt 2 fails: the next wait is 10 * 3 seconds
    assert (app.get_run(run.id).wake_at - clock()).total_seconds() == 30
    clock.advance(30)
    assert await app.process_one() is True
    done = app.get_run(run.id)
    assert (done.status, done.output, done.wake_at, done.waiting_for) == ("completed", 3, None, None)
    assert len(before) == 1 and len(calls) == 3

    retries = [e for e in events if e.type == "step:retry"]
    assert [(e["attempt"], e["delay"], e["error"]) for e in retries] == [
        (1, 10.0, "ValueError: boom 1"),
        (2, 30.0, "ValueError: boom 2"),
    ]
    assert [e["waiting_for"] for e in events if e.type == "run:wait"] == ["retry", "retry"]
    for event in events:
        assert set(event.data) == set(EVENT_FIELDS[event.type]), event.type
    charge = [s for s in app.get_steps(run.id) if s.name == "charge"][0]
    assert (charge.status, charge.output, [a.attempt for a in charge.attempts]) == ("completed", 3, [1, 2])
    assert charge.to_dict()["attempts"][0]["error"] == "ValueError: boom 1"


async def test_run_fail_comes_only_after_the_last_attempt_and_names_it(make_app, clock):
    calls: list = []

    @job("doomed")
    async def doomed(step, input):
        await step.run("call", _flaky(99, calls), retries=2)  # 2 attempts in all

    app = make_app([doomed], clock=clock)
    fails = record(app, "run:fail")
    run = app.trigger(doomed, None)
    await app.process_one()
    assert fails == [] and app.get_run(run.id).status == "waiting"
    clock.advance(3600)
    await app.process_one()
    assert len(fails) == 1 and fails[0]["failed_step"] == "call"
    assert fails[0]["error"] == "ValueError: boom 2 (attempt 2 of 2)"
    with pytest.raises(RunFailedError, match=r"attempt 2 of 2"):
        await app.wait_for_run(run.id, timeout=1)
    (call,) = app.get_steps(run.id)
    assert call.status == "failed" and [a.attempt for a in call.attempts] == [1, 2]


async def test_an_error_retry_on_does_not_name_fails_at_once_and_jitter_keeps_the_delay_in_range(make_app, clock):
    @job("picky")
    async def picky(step, input):
        kind = KeyError if input == "key" else ValueError

        def body():
            raise kind("nope")

        await step.run("s", body, retries=Retry(max_attempts=5, initial=100, retry_on=KeyError))

    app = make_app([picky], clock=clock)
    retries = record(app, "step:retry")
    value_error = app.trigger(picky, "value")
    await app.process_one()
    failed = app.get_run(value_error.id)
    assert failed.status == "failed" and failed.error == "ValueError: nope (attempt 1 of 1)"
    key_error = app.trigger(picky, "key")
    await app.process_one()
    assert app.get_run(key_error.id).status == "waiting"
    assert 50 <= retries[0]["delay"] <= 100  # jitter: between half the delay and all of it


async def test_a_job_level_retry_replays_the_run_from_its_first_unfinished_step(make_app, clock):
    calls = {"a": 0, "b": 0, "between": 0}
    b_calls: list = []

    @job("whole", retries=Retry(max_attempts=3, initial=5, jitter=False))
    async def whole(step, input):
        await step.run("a", lambda: calls.__setitem__("a", calls["a"] + 1))
        calls["between"] += 1
        if calls["between"] == 1:
            raise RuntimeError("between steps")
        await step.run("b", _flaky(1, b_calls))  # no step retries: the job's retry runs it again
        calls["b"] += 1
        return "ok"

    app = make_app([whole], clock=clock)
    events = record(app)
    run = app.trigger(whole, None)
    await app.process_one()
    first = app.get_run(run.id)
    assert (first.status, first.waiting_for, first.wait_step, first.attempt) == ("waiting", "retry", None, 2)
    clock.advance(5)
    await app.process_one()  # attempt 2: step b fails, the job lets it through
    second = app.get_run(run.id)
    assert (second.status, second.wait_step, second.attempt) == ("waiting", "b", 3)
    assert (second.wake_at - clock()).total_seconds() == 10
    clock.advance(10)
    await app.process_one()
    done = app.get_run(run.id)
    assert (done.status, done.output, done.attempt) == ("completed", "ok", 3)
    assert calls == {"a": 1, "b": 1, "between": 3}
    assert [(e["attempt"], e["failed_step"]) for e in events if e.type == "run:retry"] == [(1, None), (2, "b")]
    assert [e.type for e in events if e.type in ("run:fail", "step:fail")] == []
    b = [s for s in app.get_steps(run.id) if s.name == "b"][0]
    assert [(a.run_attempt, a.attempt) for a in b.attempts] == [(2, 1)]


async def test_a_job_level_retry_does_not_retry_what_durably_refuses_nor_run_a_committed_step_again(
    make_app, clock
):
    calls = []

    @job("reuse", retries=Retry(max_attempts=3, initial=60, jitter=False))
    async def reuse(step, input):
        await step.run("charge", lambda: calls.append("charge") or "paid")
        await step.run("charge", lambda: "again")  # a bug: the same name twice

    @job("unstorable", retries=Retry(max_attempts=3, initial=60, jitter=False))
    async def unstorable(step, input):
        await step.run("send", lambda: calls.append("send") or {"a set"})

    @job("refused")
    async def refused(step, input):
        def body():
            calls.append("refused")
            raise ValidationError("a durably call inside the step was refused")

        await step.run("refused", body, retries=Retry(max_attempts=3, initial=60, jitter=False))

    app = make_app([reuse, unstorable, refused], clock=clock)
    for fn, body, text in (
        (reuse, "charge", "used twice"),
        (unstorable, "send", "cannot store"),
        (refused, "refused", "was refused"),
    ):
        run = app.trigger(fn, None)
        for _ in range(3):
            await app.process_one()
            clock.advance(3600)
        failed = app.get_run(run.id)
        # Refused at once: another attempt would be refused the same way, and must not
        # run the step's body (its side effects) again.
        assert (failed.status, failed.attempt) == ("failed", 1), failed.error
        assert text in failed.error and "attempt 2" not in failed.error and "of 3" not in failed.error
        assert calls.count(body) == 1, calls


async def test_a_run_waiting_for_a_retry_holds_no_slot(make_app, clock):
    @job("slow-retry")
    async def slow_retry(step, input):
        if input == "flaky":
            await step.run("s", _flaky(1, []), retries=Retry(initial=60))
        return input

    app = make_app([slow_retry], clock=clock, max_concurrent_runs=1)
    flaky = app.trigger(slow_retry, "flaky")
    await app.process_one()
    other = app.trigger(slow_retry, "other")
    assert await app.process_one() is True  # the slot is free while the first run waits
    assert app.get_run(other.id).status == "completed"
    assert app.get_run(flaky.id).status == "waiting"
    assert app.status().runs["waiting"] == 1


async def test_cancelling_a_run_that_waits_for_a_retry_ends_it(make_app, clock):
    @job("c")
    async def c(step, input):
        await step.run("s", _flaky(5, []), retries=3)

    app = make_app([c], clock=clock)
    run = app.trigger(c, None)
    await app.process_one()
    cancelled = app.cancel(run.id)
    assert (cancelled.status, cancelled.waiting_for, cancelled.wake_at) == ("cancelled", None, None)
    assert [s.status for s in app.get_steps(run.id)] == ["cancelled"]
    clock.advance(3600)
    assert await app.process_one() is False


async def test_bad_retry_options_are_refused(make_app):
    for bad in (
        lambda: Retry(max_attempts=0),
        lambda: Retry(initial=-1),
        lambda: Retry(backoff=0.5),
        lambda: Retry(max_delay=float("inf")),
        lambda: Retry(retry_on="ValueError"),
        lambda: Retry(jitter="yes"),
    ):
        with pytest.raises(ValidationError):
            bad()
    with pytest.raises(ValidationError, match="retries=0"):

        @job("zero", retries=0)
        async def zero(step, input):
            pass

    @job("bad-step")
    async def bad_step(step, input):
        await step.run("s", lambda: 1, retries="3")

    app = make_app([bad_step])
    run = app.trigger(bad_step, None)
    await app.process_one()
    assert "retries must be None" in app.get_run(run.id).error
    assert Retry(max_attempts=3) == Retry()
