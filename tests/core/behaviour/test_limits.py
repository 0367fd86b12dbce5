"""Limits: nothing one bad input, stored value or exception can break (issue 9).

Part of the core's behavioural suite (see helpers.py): host-independent, run on
CPython here and inside Pyodide by tests/browser/test_core_in_pyodide.py.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import pytest

from durably import ConflictError, RunFailedError, ValidationError, job, limits

from .helpers import nested, next_event, only_on, record, table_rows


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
    for bad in (
        "a" * (limits.MAX_INPUT_BYTES - 1),
        # fewer characters than the limit, but each is a 6-byte escape in the stored JSON
        "\u00e9" * (limits.MAX_INPUT_BYTES // 6 + 1),
    ):
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
    driver = app.driver
    driver.execute(
        "UPDATE durably_runs SET input = ? WHERE id = ?", ("[" * 200 + "]" * 200, deep.id)
    )  # valid JSON, deeper than the limit
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
    worker.driver.execute(
        "UPDATE durably_steps SET output = ? WHERE run_id = ? AND name = 'first'", ("[" * 100 + "]" * 100, run.id)
    )
    assert "MAX_DEPTH" in worker.get_steps(run.id)[0].decode_error
    clock.advance(31)
    other = make_app([j], clock=clock)
    assert await other.process_one() is True
    failed = other.get_run(run.id)
    assert failed.status == "failed" and failed.failed_step == "first"
    assert "stored result of step 'first' cannot be read" in failed.error
    gate.set()
    await stuck


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
        if worker.count_logs(run.id) == 6001:
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
        f"the limit is {limits.MAX_PROGRESS_MESSAGE_BYTES:,} (durably.limits.MAX_PROGRESS_MESSAGE_BYTES)]"
    )


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
    driver = app.driver
    for text, run in bad.items():
        driver.execute("UPDATE durably_runs SET input = ? WHERE id = ?", (text, run.id))
    driver.execute("UPDATE durably_runs SET output = '1e400', progress = '{\"current\": NaN}' WHERE id = ?", (done.id,))
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
    driver = app.driver
    driver.execute(
        "UPDATE durably_runs SET created_at = '2026-01-01 12:00:00', "
        "started_at = '2026-01-01T12:00:01+02:00' WHERE id = ?",
        (run.id,),
    )
    driver.execute("UPDATE durably_steps SET started_at = 'soon' WHERE run_id = ?", (run.id,))
    driver.execute("UPDATE durably_logs SET created_at = 'yesterday' WHERE run_id = ?", (run.id,))
    for worker_id, heartbeat in (("naive", "2026-01-01 12:00:00"), ("garbage", "a while ago")):
        driver.execute(
            "INSERT INTO durably_workers (worker_id, host, pid, jobs, version, concurrency, started_at, "
            "heartbeat_at) VALUES (?, 'h', 1, '[\"j\"]', '0', 1, ?, ?)",
            (worker_id, heartbeat, heartbeat),
        )

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
        "naive": "2026-01-01T12:00:00.000000Z",
        "garbage": None,
    }
    json.dumps([listed.to_dict(), step.to_dict(), log.to_dict(), status.to_dict()], allow_nan=False)


async def test_a_run_row_without_an_id_does_not_block_the_claims_of_its_job(make_app):
    """SQLite lets a TEXT primary key be NULL. A hand edit that cleared a run's id made
    that row the first claim candidate of its job (NULL sorts first), and a claim of
    `id = NULL` matches nothing: no run of the job was ever claimed again."""
    only_on(make_app, "sqlite", "PostgreSQL refuses a NULL primary key, so no such row can exist there")

    @job("j")
    async def j(step, input):
        return input

    app = make_app([j])
    orphan, good = app.trigger(j, 1), app.trigger(j, 2)
    app.driver.execute("UPDATE durably_runs SET id = NULL WHERE id = ?", (orphan.id,))
    assert await app.process_until_idle() == 1
    assert app.get_run(good.id).output == 2
    assert sorted((r.id or "", r.status) for r in app.get_runs()) == [("", "pending"), (good.id, "completed")]


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


async def test_nul_is_refused_in_labels_and_escaped_in_log_progress_and_error_text(make_app):
    """PostgreSQL's text cannot hold NUL: a label value holding one is refused before
    anything is written, and log, progress and error text escape it as \\x00, the same on
    every engine (on PostgreSQL the run's writes failed before)."""

    @job("j")
    async def j(step, input):
        step.log.info("a\x00b", {"k": "c\x00d"})
        step.progress(1, 2, "e\x00f")
        await step.run("s", lambda: "g\x00h")
        raise RuntimeError("i\x00j")

    app = make_app([j])
    with pytest.raises(ValidationError, match="NUL"):
        app.trigger(j, None, labels={"k": "a\x00b"})
    assert app.get_runs() == []
    run = app.trigger(j, "x\x00y")  # JSON escapes it: stored and given back as it was
    await app.process_until_idle()
    done = app.get_run(run.id)
    assert done.status == "failed" and done.error == "RuntimeError: i\\x00j" and done.input == "x\x00y"
    assert done.progress["message"] == "e\\x00f"
    assert app.get_steps(run.id)[0].output == "g\x00h"
    (log,) = app.get_logs(run.id)
    assert log.message == "a\\x00b" and log.data == {"k": "c\x00d"}
