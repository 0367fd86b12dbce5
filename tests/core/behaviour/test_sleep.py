"""Durable sleep: the wake-up time is stored with the step, the run gives its slot back,
and any worker resumes it once it is due.

Part of the core's behavioural suite (see helpers.py): host-independent, run on
CPython here and inside Pyodide by tests/browser/test_core_in_pyodide.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from durably import CancelledError, job

from .helpers import record


async def test_a_sleeping_run_holds_no_slot_and_any_worker_resumes_it_when_due(make_app, clock):
    calls = []

    @job("nap")
    async def nap(step, input):
        await step.run("before", lambda: calls.append("before"))
        await step.sleep("nap", 3600)
        await step.run("after", lambda: calls.append("after"))
        return "rested"

    first = make_app([nap], clock=clock, max_concurrent_runs=1)
    events = record(first)
    run = first.trigger(nap, None)
    start = clock()
    await first.process_one()
    sleeping = first.get_run(run.id)
    assert (sleeping.status, sleeping.waiting_for, sleeping.wait_step) == ("waiting", "sleep", "nap")
    assert sleeping.wake_at == start + timedelta(seconds=3600)
    nap_step = [s for s in first.get_steps(run.id) if s.name == "nap"][0]
    assert (nap_step.status, nap_step.wake_at, nap_step.completed_at) == ("waiting", sleeping.wake_at, None)
    assert [e.to_dict()["wake_at"] for e in events if e.type == "run:wait"] == [sleeping.to_dict()["wake_at"]]

    # The slot is free: another run goes first.
    other = first.trigger(nap, "x")
    await first.process_one()
    assert first.get_run(other.id).status == "waiting"

    clock.advance(3599)
    assert await first.process_one() is False
    clock.advance(1)
    second = make_app([nap], clock=clock)  # another worker, another process
    assert await second.process_one() is True
    done = second.get_run(run.id)
    assert (done.status, done.output, done.waiting_for) == ("completed", "rested", None)
    assert calls.count("before") == 2 and calls.count("after") == 1  # once per run: the sleeper did not redo it
    assert [s.status for s in second.get_steps(run.id)] == ["completed", "completed", "completed"]


async def test_a_replay_keeps_the_original_wake_up_time(make_app, clock):
    durations = [60, 100_000]  # what the job asks for the first time, and on its replay

    @job("keep")
    async def keep(step, input):
        await step.sleep("wait", durations.pop(0))
        return "woke"

    app = make_app([keep], clock=clock)
    run = app.trigger(keep, None)
    await app.process_one()
    clock.advance(60)
    await app.process_one()
    assert app.get_run(run.id).output == "woke"  # the stored 60 s, not the 100,000 asked on replay


async def test_sleep_until_a_time_and_a_time_that_has_passed(make_app, clock):
    @job("until")
    async def until(step, input):
        await step.sleep_until("past", clock() - timedelta(days=1))  # no wait
        await step.sleep("zero", 0)  # no wait either
        await step.sleep_until("noon", datetime.fromisoformat(input))
        return "noon"

    app = make_app([until], clock=clock)
    waits = record(app, "run:wait")
    when = (clock() + timedelta(hours=2)).isoformat()
    run = app.trigger(until, when)
    await app.process_one()
    assert len(waits) == 1 and waits[0]["wait_step"] == "noon"
    assert app.get_run(run.id).to_dict()["wake_at"] == waits[0]["wake_at"]
    clock.advance(7200)
    await app.process_one()
    assert app.get_run(run.id).output == "noon"


async def test_bad_sleeps_fail_the_run_with_a_clear_error(make_app, clock):
    @job("bad")
    async def bad(step, input):
        if input == "naive":
            await step.sleep_until("s", datetime(2030, 1, 1))
        await step.sleep("s", float(input))

    app = make_app([bad], clock=clock)
    for arg, text in (("naive", "aware datetime"), ("-1", "seconds"), ("inf", "MAX_WAIT"), ("1e12", "MAX_WAIT")):
        run = app.trigger(bad, arg)
        await app.process_one()
        failed = app.get_run(run.id)
        assert failed.status == "failed" and text in failed.error, (arg, failed.error)


async def test_sleep_until_a_time_past_the_calendar_in_utc_is_a_clear_error(make_app, clock):
    @job("edge")
    async def edge(step, input):
        # 9999-12-31 23:00 at UTC-14 is 10000-01-01 13:00 UTC: no datetime holds it.
        await step.sleep_until("far", datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-14))))

    app = make_app([edge], clock=clock)
    run = app.trigger(edge, None)
    await app.process_one()
    failed = app.get_run(run.id)
    assert failed.status == "failed"
    assert failed.error.startswith("ValidationError: step.sleep_until 'far'") and "UTC" in failed.error


async def test_a_started_worker_wakes_for_a_sleeper_before_its_next_poll(make_app):
    @job("short")
    async def short(step, input):
        await step.sleep("blink", 0.2)
        return "awake"

    app = make_app([short], polling_interval=600)  # no poll within the test
    await app.start()
    try:
        run = app.trigger(short, None)
        done = await app.wait_for_run(run.id, timeout=10)
        assert done.output == "awake"
    finally:
        await app.stop()


async def test_cancelling_a_sleeping_run_ends_it(make_app, clock):
    @job("sleeper")
    async def sleeper(step, input):
        await step.sleep("long", 3600)

    app = make_app([sleeper], clock=clock)
    run = app.trigger(sleeper, None)
    await app.process_one()
    app.cancel(run.id)
    clock.advance(3600)
    assert await app.process_one() is False
    assert app.get_run(run.id).status == "cancelled"
    with pytest.raises(CancelledError):
        await app.wait_for_run(run.id, timeout=1)
