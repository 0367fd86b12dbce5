"""Steps: each runs once per run, its result stored; a failing step fails the run.

Part of the core's behavioural suite (see helpers.py): host-independent, run on
CPython here and inside Pyodide by tests/browser/test_core_in_pyodide.py.
"""

from __future__ import annotations

import asyncio

import pytest

from durably import RunFailedError, ValidationError, job

from .helpers import next_event, record


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


async def test_progress_and_logs_reject_bad_values_clearly(make_app):
    problems = []

    @job("j")
    async def j(step, input):
        for call in (
            lambda: step.progress("half"),
            lambda: step.progress(1, "x"),
            lambda: step.log.info(5),
            lambda: step.log.info("m", {1, 2}),
        ):
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
