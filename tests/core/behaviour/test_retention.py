"""Retention: purge, retain_runs, preserve_steps, and runs a worker still holds.

Part of the core's behavioural suite (see helpers.py): host-independent, run on
CPython here and inside Pyodide by tests/browser/test_core_in_pyodide.py.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from durably import ConflictError, ValidationError, job

from .helpers import next_event


async def test_purge_runs_deletes_only_finished_runs_older_than_the_age(make_app, clock):
    @job("j")
    async def j(step, input):
        await step.run("s", lambda: 1)

    app = make_app([j], clock=clock)
    old = app.trigger(j, 1)
    await app.process_one()
    clock.advance(3600 * 48)
    recent = app.trigger(j, 2)
    await app.process_one()
    pending = app.trigger(j, 3)
    clock.advance(3600 * 48)
    assert app.purge_runs(timedelta(days=3)) == 1
    assert app.get_run(old.id) is None and app.get_run(recent.id) is not None
    assert app.purge_runs(clock() - timedelta(hours=1)) == 1
    assert app.get_run(pending.id).status == "pending"
    assert app.purge_runs(timedelta(0)) == 0
    with pytest.raises(ValidationError):
        app.purge_runs("30d")
    with pytest.raises(ValidationError):
        app.purge_runs(timedelta(days=1), limit=0)


async def test_retain_runs_purges_old_runs_during_idle_maintenance(make_app, clock):
    @job("j")
    async def j(step, input):
        return 1

    app = make_app([j], clock=clock, retain_runs="15m")
    old = app.trigger(j, None)
    await app.process_one()
    clock.advance(16 * 60)
    fresh = app.trigger(j, None)
    await app.process_one()
    deleted = next_event(app, "run:delete")
    await app.start()
    assert (await asyncio.wait_for(deleted, 5)).run_id == old.id
    await app.stop()
    assert app.get_run(old.id) is None and app.get_run(fresh.id) is not None


async def test_preserve_steps_false_deletes_a_finished_runs_steps_and_logs(make_app):
    @job("j")
    async def j(step, input):
        await step.run("s", lambda: 1)
        step.log.info("x")
        return "out"

    app = make_app([j], preserve_steps=False)
    run = app.trigger(j, None)
    await app.process_one()
    assert app.get_run(run.id).output == "out"
    assert app.get_steps(run.id) == [] and app.get_logs(run.id) == []
    assert app.get_run(run.id).completed_steps == 1  # counted when it finished


async def test_a_cancelled_run_whose_worker_still_holds_the_lease_is_not_deleted_or_purged(make_app, clock):
    """Guards defect 5: deleting or purging such a run freed its concurrency key while its
    step still ran, and another run of the key started at once."""
    gate = asyncio.Event()
    ran = []

    @job("x")
    async def x(step, input):
        await step.run("work", gate.wait)

    @job("y")
    async def y(step, input):
        await step.run("work", lambda: ran.append("y"))

    worker = make_app([x], clock=clock)
    other = make_app([y], clock=clock)
    run_x = worker.trigger(x, None, concurrency_key="k")
    run_y = other.trigger(y, None, concurrency_key="k")
    task = asyncio.ensure_future(worker.process_one())
    await next_event(worker, "step:start", step_name="work")
    other.cancel(run_x.id)
    clock.advance(1)
    with pytest.raises(ConflictError, match="has not stopped it yet"):
        other.delete_run(run_x.id)
    assert other.purge_runs(timedelta(0)) == 0
    assert other.get_run(run_x.id).status == "cancelled"
    assert await other.process_one() is False and ran == []  # the key is still held

    gate.set()  # the worker finishes its step, sees the cancel and lets go of the lease
    await task
    assert await other.process_one() is True and ran == ["y"]
    other.delete_run(run_x.id)
    assert other.get_run(run_x.id) is None and other.get_run(run_y.id).status == "completed"


async def test_a_cancelled_run_whose_worker_died_can_be_purged_once_its_lease_expired(make_app, clock):
    @job("x")
    async def x(step, input):
        return 1

    dead = make_app([x], clock=clock)
    run = dead.trigger(x, None, concurrency_key="k")
    assert dead._runtime.claim().run.id == run.id  # claimed; its worker never comes back
    dead.cancel(run.id)
    clock.advance(1)
    assert dead.purge_runs(timedelta(0)) == 0
    clock.advance(30)  # past the 30 s lease
    assert dead.purge_runs(timedelta(0)) == 1
