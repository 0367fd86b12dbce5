"""Signals: a run waits for outside input without holding a slot; the first signal of a
name wins, a signal sent early is kept, a timeout raises SignalTimeoutError in the job.

Part of the core's behavioural suite (see helpers.py): host-independent, run on
CPython here and inside Pyodide by tests/browser/test_core_in_pyodide.py.
"""

from __future__ import annotations

import pytest

from durably import (
    ConflictError,
    DurablyError,
    NotFoundError,
    RunFailedError,
    SignalTimeoutError,
    ValidationError,
    job,
)
from durably.events import EVENT_FIELDS

from .helpers import record


@job("approve")
async def approve(step, input):
    await step.run("draft", lambda: "draft")
    decision = await step.wait_for_signal("approval")
    return {"decision": decision}


async def test_a_run_waits_for_a_signal_without_a_slot_and_returns_its_payload(make_app, clock):
    app = make_app([approve], clock=clock)
    events = record(app)
    run = app.trigger(approve, None)
    await app.process_one()
    waiting = app.get_run(run.id)
    assert (waiting.status, waiting.waiting_for, waiting.wait_step, waiting.wake_at) == (
        "waiting", "signal", "approval", None,
    )  # fmt: skip
    assert waiting.to_dict()["waiting_for"] == "signal"
    clock.advance(86400 * 30)
    assert await app.process_one() is False  # only the signal wakes it

    other = make_app(clock=clock)  # another process: a trigger-only app
    sent = other.signal(run.id, "approval", {"ok": True}, signal_id="ticket-1")
    assert (sent.disposition, sent.payload, sent.signal_id, sent.name) == ("delivered", {"ok": True}, "ticket-1", "approval")
    assert app.get_run(run.id).wake_at is not None
    assert await app.process_one() is True
    done = app.get_run(run.id)
    assert (done.status, done.output) == ("completed", {"decision": {"ok": True}})
    approval = [s for s in app.get_steps(run.id) if s.name == "approval"][0]
    assert (approval.status, approval.output) == ("completed", {"ok": True})
    for event in events:
        assert set(event.data) == set(EVENT_FIELDS[event.type]), event.type


async def test_a_signal_sent_before_the_run_waits_is_kept_until_it_does(make_app, clock):
    app = make_app([approve], clock=clock)
    signals = record(app, "run:signal")
    run = app.trigger(approve, None)
    sent = app.signal(run.id, "approval", "early")
    assert sent.disposition == "stored" and signals[0]["disposition"] == "stored"
    assert await app.process_one() is True
    assert app.get_run(run.id).output == {"decision": "early"}


async def test_the_first_signal_wins_and_the_same_signal_id_with_the_same_payload_is_idempotent(make_app, clock):
    app = make_app([approve], clock=clock)
    run = app.trigger(approve, None)
    await app.process_one()
    first = app.signal(run.id, "approval", {"b": 2, "a": 1}, signal_id="s1")
    again = app.signal(run.id, "approval", {"a": 1, "b": 2}, signal_id="s1")
    assert (first.disposition, again.disposition, again.payload, again.created_at) == (
        "delivered", "duplicate", {"a": 1, "b": 2}, first.created_at,
    )  # fmt: skip
    with pytest.raises(ConflictError, match="first signal"):
        app.signal(run.id, "approval", {"a": 2}, signal_id="s1")
    with pytest.raises(ConflictError, match="first signal"):
        app.signal(run.id, "approval", {"a": 1, "b": 2}, signal_id="s2")
    with pytest.raises(ConflictError, match="first signal"):  # true is not 1, false is not 0
        app.signal(run.id, "approval", {"a": True, "b": 2}, signal_id="s1")
    assert app.signal(run.id, "approval", {"a": 1.0, "b": 2}, signal_id="s1").disposition == "duplicate"
    await app.process_one()
    assert app.get_run(run.id).output == {"decision": {"b": 2, "a": 1}}
    assert app.signal(run.id, "approval", {"a": 1, "b": 2}, signal_id="s1").disposition == "duplicate"


async def test_a_signal_timeout_raises_in_the_job_which_may_catch_it(make_app, clock):
    @job("patient")
    async def patient(step, input):
        try:
            return await step.wait_for_signal("reply", timeout=60)
        except SignalTimeoutError as exc:
            assert isinstance(exc, DurablyError) and exc.name == "reply"
            await step.sleep("linger", 10)
            return await step.run("fallback", lambda: "no reply")

    app = make_app([patient], clock=clock)
    run = app.trigger(patient, None)
    await app.process_one()
    waiting = app.get_run(run.id)
    assert (waiting.wake_at - clock()).total_seconds() == 60
    clock.advance(60)
    await app.process_one()
    reply = [s for s in app.get_steps(run.id) if s.name == "reply"][0]
    assert reply.status == "failed" and reply.error.startswith("SignalTimeoutError")
    with pytest.raises(ConflictError, match="timed out"):
        app.signal(run.id, "reply", "too late")
    clock.advance(10)
    await app.process_one()  # the replay raises the stored timeout again, without waiting
    assert app.get_run(run.id).output == "no reply"


async def test_an_uncaught_signal_timeout_fails_the_run_naming_its_step_even_with_job_retries(make_app, clock):
    @job("impatient", retries=3)
    async def impatient(step, input):
        await step.wait_for_signal("reply", timeout=10)

    app = make_app([impatient], clock=clock)
    run = app.trigger(impatient, None)
    await app.process_one()
    clock.advance(10)
    await app.process_one()
    with pytest.raises(RunFailedError) as caught:
        await app.wait_for_run(run.id, timeout=1)
    assert caught.value.failed_step == "reply" and "SignalTimeoutError" in caught.value.error
    assert app.get_run(run.id).attempt == 1  # a retry would time out again: none is made


async def test_a_signal_wait_replays_its_original_deadline(make_app, clock):
    timeouts = [100, 100_000]

    @job("deadline")
    async def deadline(step, input):
        await step.sleep("first", 0)
        try:
            return await step.wait_for_signal("go", timeout=timeouts.pop(0))
        except SignalTimeoutError:
            return "timed out"

    app = make_app([deadline], clock=clock)
    run = app.trigger(deadline, None)
    await app.process_one()
    clock.advance(100)
    await app.process_one()
    assert app.get_run(run.id).output == "timed out"  # the stored 100 s, not the 100,000 of the replay


async def test_bad_signals_are_refused_with_clear_errors(make_app, clock):
    app = make_app([approve], clock=clock)
    with pytest.raises(NotFoundError):
        app.signal("01NOSUCHRUN", "approval", 1)
    run = app.trigger(approve, None)
    for name in ("", "x" * 201, 5):
        with pytest.raises(ValidationError):
            app.signal(run.id, name, 1)
    with pytest.raises(ValidationError, match="JSON"):
        app.signal(run.id, "approval", {1, 2})
    with pytest.raises(ValidationError, match="MAX_SIGNAL_BYTES"):
        app.signal(run.id, "approval", "x" * (1024 * 1024 + 1))
    with pytest.raises(ValidationError):
        app.signal(run.id, "approval", 1, signal_id="")
    app.cancel(run.id)
    with pytest.raises(ConflictError, match="cancelled"):
        app.signal(run.id, "approval", 1)
