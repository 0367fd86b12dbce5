"""Schedules: workers create one run per due slot, never twice, and catch up on missed
slots as the job's policy says.

Part of the core's behavioural suite (see helpers.py): host-independent, run on
CPython here and inside Pyodide by tests/browser/test_core_in_pyodide.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from durably import ValidationError, job

from .helpers import record

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@job("every-5", schedule="*/5 * * * *")
async def every_5(step, input):
    return input["scheduled_for"]


async def test_a_schedule_creates_one_run_per_slot_with_an_idempotency_key(make_app, clock):
    clock.now = at("2026-01-05T12:00:30")
    app = make_app([every_5], clock=clock)
    assert await app.process_one() is False  # registers the schedule; the next slot is 12:05
    (schedule,) = app.get_schedules()
    assert (schedule.job_name, schedule.cron, schedule.timezone, schedule.catch_up) == (
        "every-5", "*/5 * * * *", "UTC", "latest",
    )  # fmt: skip
    assert schedule.next_at == at("2026-01-05T12:05:00") and schedule.last_slot is None
    clock.now = at("2026-01-05T12:05:01")
    assert await app.process_one() is True
    (run,) = app.get_runs()
    assert (run.status, run.output) == ("completed", "2026-01-05T12:05:00.000000Z")
    assert run.idempotency_key == "schedule:2026-01-05T12:05:00.000000Z"
    assert run.input == {"scheduled_for": "2026-01-05T12:05:00.000000Z"}
    assert await app.process_one() is False
    (schedule,) = app.get_schedules()
    assert (schedule.last_slot, schedule.next_at) == (at("2026-01-05T12:05:00"), at("2026-01-05T12:10:00"))


async def test_any_number_of_workers_create_a_slot_once(make_app, clock):
    clock.now = at("2026-01-05T12:00:30")
    workers = [make_app([every_5], clock=clock) for _ in range(3)]
    for w in workers:
        await w.process_one()
    clock.now = at("2026-01-05T12:05:00")
    for w in workers:
        await w.process_one()
    clock.now = at("2026-01-05T12:10:00")
    for w in reversed(workers):
        await w.process_one()
    assert sorted(r.input["scheduled_for"] for r in workers[0].get_runs()) == [
        "2026-01-05T12:05:00.000000Z", "2026-01-05T12:10:00.000000Z",
    ]  # fmt: skip


async def test_after_downtime_the_catch_up_policy_decides_what_missed_slots_get(make_app, clock):
    jobs = []
    for policy in ("latest", "all", "none"):

        @job(f"c-{policy}", schedule="*/5 * * * *", catch_up=policy)
        async def scheduled(step, input):
            return input["scheduled_for"]

        jobs.append(scheduled)
    clock.now = at("2026-01-05T12:00:30")
    app = make_app(jobs, clock=clock)
    await app.process_until_idle()
    clock.now = at("2026-01-05T12:31:30")  # down from 12:00:30: six slots missed, the last 90 s ago
    await app.process_until_idle()

    def slots(name):
        return sorted(r.input["scheduled_for"][11:16] for r in app.get_runs(job_name=name))

    assert slots("c-latest") == ["12:30"]
    assert slots("c-all") == ["12:05", "12:10", "12:15", "12:20", "12:25", "12:30"]
    assert slots("c-none") == []
    clock.now = at("2026-01-05T12:35:20")  # on time: every policy runs it
    await app.process_until_idle()
    assert slots("c-none") == ["12:35"] and slots("c-latest")[-1] == "12:35"


async def test_a_schedule_in_a_time_zone(make_app, clock):
    @job("paris-9am", schedule="0 9 * * *", timezone="Europe/Paris")
    async def paris(step, input):
        return input["scheduled_for"]

    clock.now = at("2026-01-05T07:00:00")  # 08:00 in Paris (UTC+1 in winter)
    app = make_app([paris], clock=clock)
    await app.process_one()
    assert app.get_schedules()[0].next_at == at("2026-01-05T08:00:00")
    clock.now = at("2026-07-05T06:59:00")  # summer (UTC+2): 9:00 in Paris is 07:00 UTC
    await app.process_until_idle()
    assert app.get_schedules()[0].next_at == at("2026-07-05T07:00:00")


async def test_a_changed_or_removed_schedule_is_registered_again(make_app, clock):
    clock.now = at("2026-01-05T12:00:30")
    app = make_app([every_5], clock=clock)
    await app.process_one()

    @job("every-5", schedule="0 * * * *")
    async def hourly(step, input):
        pass

    second = make_app([hourly], clock=clock)
    await second.process_one()
    (schedule,) = second.get_schedules()
    assert (schedule.cron, schedule.next_at) == ("0 * * * *", at("2026-01-05T13:00:00"))

    @job("every-5")
    async def unscheduled(step, input):
        pass

    third = make_app([unscheduled], clock=clock)
    await third.process_one()
    assert third.get_schedules() == []
    clock.now += timedelta(days=1)
    assert await third.process_one() is False


async def test_workers_with_different_schedules_for_a_job_leave_it_to_the_last_registered(make_app, clock):
    @job("report", schedule="*/5 * * * *")
    async def old(step, input):
        return input["scheduled_for"]

    @job("report", schedule="*/7 * * * *")
    async def new(step, input):
        return input["scheduled_for"]

    clock.now = at("2026-01-05T12:00:30")
    first = make_app([old], clock=clock)
    errors = record(first, "worker:error")
    await first.process_one()  # registers */5
    second = make_app([new], clock=clock)
    await second.process_one()  # a worker with newer code registers */7: it decides
    (schedule,) = first.get_schedules()
    assert (schedule.cron, schedule.next_at) == ("*/7 * * * *", at("2026-01-05T12:07:00"))
    for minute in range(1, 31):
        clock.now = at("2026-01-05T12:00:30") + timedelta(minutes=minute)
        await first.process_until_idle()
        await second.process_until_idle()
    # Only the registered expression's slots, each once: none of the first worker's */5.
    assert sorted(r.input["scheduled_for"][11:16] for r in first.get_runs()) == ["12:07", "12:14", "12:21", "12:28"]
    (schedule,) = first.get_schedules()
    assert (schedule.cron, schedule.last_slot) == ("*/7 * * * *", at("2026-01-05T12:28:00"))
    assert len(errors) == 1, [e["error"] for e in errors]
    assert "'*/7 * * * *'" in errors[0]["error"] and "'*/5 * * * *'" in errors[0]["error"]


async def test_a_worker_whose_schedule_another_worker_removed_stops_firing_it_and_says_so(make_app, clock):
    @job("digest", schedule="*/5 * * * *")
    async def scheduled(step, input):
        return input

    @job("digest")
    async def unscheduled(step, input):
        return input

    clock.now = at("2026-01-05T12:00:30")
    first = make_app([scheduled], clock=clock)
    errors = record(first, "worker:error")
    await first.process_one()
    second = make_app([unscheduled], clock=clock)
    await second.process_one()  # its code has no schedule for the job: the row goes
    assert first.get_schedules() == []
    for minute in (5, 10, 15):
        clock.now = at("2026-01-05T12:00:30") + timedelta(minutes=minute)
        await first.process_until_idle()
    assert first.get_runs() == [] and first.get_schedules() == []
    assert len(errors) == 1 and "has no schedule" in errors[0]["error"], [e["error"] for e in errors]


async def test_bad_schedules_are_refused_when_the_job_is_declared():
    for options, text in (
        ({"schedule": "61 * * * *"}, "cron expression"),
        ({"schedule": "* * *"}, "cron expression"),
        ({"schedule": 5}, "cron expression"),
        ({"schedule": "* * */20 * 1L"}, "never"),
        ({"schedule": "* * * * *", "timezone": "Mars/Olympus_Mons"}, "time zone"),
        ({"schedule": "* * * * *", "catch_up": "some"}, "catch_up"),
        ({"timezone": "UTC"}, "schedule"),
    ):
        with pytest.raises(ValidationError, match=text):

            @job("bad", **options)
            async def bad(step, input):
                pass


async def test_a_scheduled_job_whose_input_schema_refuses_its_runs_input_is_refused_when_declared():
    @dataclass
    class Report:
        day: str

    # Every slot's run would get {"scheduled_for": ...} and fail: refused up front instead.
    with pytest.raises(ValidationError, match="scheduled_for"):

        @job("daily", schedule="0 6 * * *", input=Report)
        async def daily(step, input):
            pass

    @dataclass
    class Slot:
        scheduled_for: str

    @job("daily", schedule="0 6 * * *", input=Slot)
    async def fitting(step, input):
        return input.scheduled_for

    assert fitting.schedule is not None
