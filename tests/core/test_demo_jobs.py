"""The demo page's jobs (web/demo_jobs.py) on CPython: the same module the browser imports."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from durably import Durably, ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "web"))
import demo_jobs  # noqa: E402

JOBS = [demo_jobs.crunch, demo_jobs.import_csv, demo_jobs.slow, demo_jobs.flaky, demo_jobs.approval]


@pytest.fixture
def app(tmp_path: Path):
    app = Durably(tmp_path / "x.db", jobs=JOBS)
    yield app
    app.close()


def naive_primes(n: int) -> list[int]:
    return [x for x in range(2, n + 1) if all(x % d for d in range(2, int(x**0.5) + 1))]


async def test_crunch_counts_primes_one_step_per_chunk_with_progress(app):
    progress = []
    app.on("run:progress", lambda e: progress.append(e["progress"]["current"]))
    run = app.trigger("crunch", {"n": 10_007, "chunks": 7})
    await app.process_until_idle()
    done = app.get_run(run.id)
    primes = naive_primes(10_007)
    assert done.status == "completed"
    assert done.output == {"n": 10_007, "primes": len(primes), "largest": 10_007}
    assert [s.name for s in app.get_steps(run.id)] == [f"chunk-{i}" for i in range(1, 8)]
    assert progress == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("lo, hi", [(0, 1), (0, 3), (2, 3), (90, 97), (97, 98), (1000, 2000), (0, 30_000)])
async def test_every_chunk_of_the_sieve_agrees_with_trial_division(lo, hi):
    expected = [p for p in naive_primes(hi - 1) if p >= lo]
    found = await demo_jobs.primes_between(lo, hi)
    assert found == {"count": len(expected), "largest": expected[-1] if expected else None}


def test_crunch_refuses_bad_input_before_any_run_exists(app):
    with pytest.raises(ValidationError, match="missing the required field 'n'"):
        app.trigger("crunch", {})
    with pytest.raises(ValidationError, match="n must be between 2 and 50000000, got 1"):
        app.trigger("crunch", {"n": 1})
    with pytest.raises(ValidationError, match="must be int, got str"):
        app.trigger("crunch", {"n": "100"})
    assert app.get_runs() == []


async def test_import_csv_imports_good_rows_in_batches_and_logs_the_bad_ones(app):
    text = "name,email,age\nAda,ada@example.com,36\n,nobody@example.com,3\nBob,bob-at-example,40\n" \
           "<b>Cy</b>,cy@example.com,200\nDee,dee@example.org,51\n"
    run = app.trigger("import-csv", {"csv": text, "batch_size": 2})
    await app.process_until_idle()
    done = app.get_run(run.id)
    assert done.status == "completed", done.error
    assert done.output == {"rows": 5, "imported": 2, "rejected": 3, "names": ["Ada", "Dee"]}
    assert [s.name for s in app.get_steps(run.id)] == ["parse", "batch-1", "batch-2", "batch-3"]
    logs = [(log.step_name, log.level, log.message) for log in app.get_logs(run.id)]
    assert logs == [
        ("batch-1", "warn", "line 3 skipped: the name is empty"),
        ("batch-2", "warn", "line 4 skipped: 'bob-at-example' is not an email address"),
        ("batch-2", "warn", "line 5 skipped: the age '200' is not a whole number from 0 to 150"),
    ]
    assert app.get_logs(run.id)[0].data == {"line": 3, "name": "", "email": "nobody@example.com", "age": "3"}


async def test_import_csv_without_the_header_fails_at_the_parse_step(app):
    run = app.trigger("import-csv", {"csv": "Ada,ada@example.com,36"})
    await app.process_until_idle()
    done = app.get_run(run.id)
    assert done.status == "failed"
    assert done.failed_step == "parse"
    assert "needs a header line with name,email,age" in done.error


async def test_slow_resumes_after_an_interruption_without_rerunning_finished_steps(tmp_path):
    path = tmp_path / "x.db"
    first = Durably(path, jobs=[demo_jobs.slow], lease_duration=30)
    run = first.trigger("slow", {"steps": 3, "seconds": 0.05})
    finished = asyncio.Event()
    first.on("step:complete", lambda e: finished.set() if e["step_name"] == "step-2" else None)
    await first.start()
    await finished.wait()
    await first.stop(timeout=0)  # interrupt step-3, hand the lease back: like a closed tab
    first.close()

    second = Durably(path, jobs=[demo_jobs.slow])
    await second.process_until_idle()
    done = second.get_run(run.id)
    assert done.status == "completed"
    assert [s.name for s in second.get_steps(run.id)] == ["step-1", "step-2", "step-3"]
    executions = [log.message for log in second.get_logs(run.id)]
    assert executions.count("step-1 executing") == 1
    assert executions.count("step-2 executing") == 1
    second.close()


async def test_flaky_fails_at_the_chosen_step_and_a_retrigger_fails_the_same_way(app):
    run = app.trigger("flaky", {"steps": 3, "fail_at": 2, "chance": 1.0, "message": "<i>boom</i>"})
    await app.process_until_idle()
    failed = app.get_run(run.id)
    assert (failed.status, failed.failed_step) == ("failed", "step-2")
    assert "<i>boom</i>" in failed.error
    again = app.retrigger(run.id)
    await app.process_until_idle()
    assert app.get_run(again.id).status == "failed"

    ok = app.trigger("flaky", {"chance": 0.0})
    await app.process_until_idle()
    assert app.get_run(ok.id).output == {"steps": 3, "message": "all steps passed"}


async def test_approval_retries_its_notification_pauses_and_waits_for_the_decision(tmp_path, monkeypatch):
    from datetime import datetime, timedelta, timezone

    now = [datetime(2026, 1, 5, 12, tzinfo=timezone.utc)]
    app = Durably(tmp_path / "a.db", jobs=JOBS, clock=lambda: now[0])
    draws = iter([0.1, 0.9])  # the notification fails once, then goes through
    monkeypatch.setattr(demo_jobs.random, "random", lambda: next(draws))
    run = app.trigger("approval", {"amount": 42, "pause": 3, "timeout": 60})
    await app.process_until_idle()
    assert app.get_run(run.id).waiting_for == "retry"
    now[0] += timedelta(seconds=1)
    await app.process_until_idle()  # notified; then the pause
    assert app.get_run(run.id).waiting_for == "sleep"
    now[0] += timedelta(seconds=3)
    await app.process_until_idle()
    waiting = app.get_run(run.id)
    assert (waiting.status, waiting.waiting_for, waiting.wait_step) == ("waiting", "signal", "decision")
    app.signal(run.id, "decision", {"approved": True})
    await app.process_until_idle()
    done = app.get_run(run.id)
    assert done.output == {"amount": 42, "currency": "EUR", "approved": True, "decision": {"approved": True}}
    notify = [s for s in app.get_steps(run.id) if s.name == "notify"][0]
    assert [a.error for a in notify.attempts] == ["ConnectionError: the notification service did not answer"]
    app.close()
