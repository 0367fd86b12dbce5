"""Options and arguments: every one checked where it is passed, and the schema on first use.

Part of the core's behavioural suite (see helpers.py): host-independent, run on
CPython here and inside Pyodide by tests/browser/test_core_in_pyodide.py.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

import durably
from durably import ValidationError, job, limits


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


async def test_the_schema_is_created_by_the_first_call_of_a_trigger_only_process(make_app):
    app = make_app()
    assert app.schema_version() == 0
    run = app.trigger("somejob", {"a": 1})
    assert app.schema_version() == durably.migrations.LATEST_VERSION
    assert app.get_run(run.id).input == {"a": 1}


async def test_every_duration_and_count_option_is_finite_and_bounded(make_app):
    """Guards defect 4: lease_duration=inf or 1e300 passed validation and killed the worker
    loop with OverflowError at its first claim, silently."""
    bad = [
        {"lease_duration": math.inf},
        {"lease_duration": 1e300},
        {"lease_duration": math.nan},
        {"lease_duration": limits.MAX_LEASE_DURATION + 1},
        {"polling_interval": math.inf},
        {"polling_interval": limits.MAX_POLLING_INTERVAL * 2},
        {"lease_renew_interval": math.inf},
        {"max_concurrent_runs": 2**70},
        {"max_concurrent_runs": limits.MAX_CONCURRENT_RUNS + 1},
        {"retain_runs": "9999999999999999d"},
        {"retain_runs": "36501d"},
    ]
    for options in bad:
        with pytest.raises(ValidationError, match="durably.limits.MAX_") as caught:
            make_app(**options)
        assert caught.value.__class__ is ValidationError, options
    at_limits = make_app(
        lease_duration=limits.MAX_LEASE_DURATION,
        polling_interval=limits.MAX_POLLING_INTERVAL,
        max_concurrent_runs=limits.MAX_CONCURRENT_RUNS,
        retain_runs="36500d",
    )
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


async def test_bad_arguments_get_validation_errors_not_storage_or_overflow_errors(make_app, clock):
    """Guards defect 9: limit=2**70 and a lone-surrogate run id gave StorageError, an age
    out of datetime's range OverflowError."""
    app = make_app(clock=clock)
    run = app.trigger("j", None)
    calls = [
        lambda: app.get_runs(limit=2**70),
        lambda: app.get_runs(offset=2**70),
        lambda: app.get_runs(job_name="a\ud800"),
        lambda: app.get_runs(job_name=[f"j{i}" for i in range(1000)]),
        lambda: app.get_run("a\ud800"),
        lambda: app.get_steps("a\ud800"),
        lambda: app.get_logs("\udfff"),
        lambda: app.cancel("a\ud800"),
        lambda: app.retrigger("a\ud800"),
        lambda: app.delete_run("a\ud800"),
        lambda: app.get_run("x" * 10_000),
        lambda: app.purge_runs(timedelta(days=10**8)),
        lambda: app.purge_runs(timedelta(days=1), limit=2**70),
        lambda: app.purge_runs(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))),
        lambda: app.get_logs(run.id, limit=2**70),
        lambda: app.get_logs(run.id, after_id=-1),
        lambda: app.get_logs(run.id, last=5, after_id=1),
        lambda: app.get_logs(run.id, last=5, limit=1),
        lambda: app.get_logs(run.id, last=True),
    ]
    for call in calls:
        with pytest.raises(ValidationError):
            call()
    assert [r.id for r in app.get_runs()] == [run.id]


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
