"""Runs: a job, its steps and its output, end to end.

Part of the core's behavioural suite (see helpers.py): host-independent, run on
CPython here and inside Pyodide by tests/browser/test_core_in_pyodide.py.
"""

from __future__ import annotations

import asyncio

from durably import job


async def test_a_job_runs_its_steps_and_stores_output_steps_logs_and_progress(make_app):
    @job("sync-users")
    async def sync_users(step, input):
        users = await step.run("fetch", lambda: [{"id": 1}, {"id": 2}])
        for i, user in enumerate(users):
            await step.run(f"save-{user['id']}", lambda: user["id"] * 10)
            step.progress(i + 1, len(users), "saving")
        step.log.info("done", {"count": len(users)})
        return {"count": len(users), "org": input["org"]}

    app = make_app([sync_users])
    await app.start()
    run = app.trigger("sync-users", {"org": "a"})
    assert run.status == "pending" and run.disposition == "created"
    done = await app.wait_for_run(run.id, timeout=10)
    await app.stop()

    assert done.status == "completed"
    assert done.output == {"count": 2, "org": "a"}
    assert done.progress == {"current": 2, "total": 2, "message": "saving"}
    assert done.started_at is not None and done.completed_at >= done.started_at
    steps = app.get_steps(run.id)
    assert [(s.name, s.index, s.status, s.output) for s in steps] == [
        ("fetch", 0, "completed", [{"id": 1}, {"id": 2}]),
        ("save-1", 1, "completed", 10),
        ("save-2", 2, "completed", 20),
    ]
    assert all(s.completed_at >= s.started_at for s in steps)
    logs = app.get_logs(run.id)
    assert [(log.level, log.message, log.data) for log in logs] == [("info", "done", {"count": 2})]


async def test_job_object_trigger_bare_decorator_and_sync_async_step_functions(make_app):
    async def fetch():
        await asyncio.sleep(0)
        return "async"

    @job
    async def mixed(step, input):
        a = await step.run("sync", lambda: "sync")
        b = await step.run("coroutine-function", fetch)
        c = await step.run("lambda-returning-awaitable", lambda: fetch())
        d = await step.run("tuple", lambda: (1, 2))
        return [a, b, c, d]

    assert mixed.name == "mixed"
    app = make_app([mixed])
    run = app.trigger(mixed, None)
    assert await app.process_until_idle() == 1
    assert app.get_run(run.id).output == ["sync", "async", "async", [1, 2]]


async def test_pending_runs_are_claimed_oldest_first(make_app):
    order = []

    @job("j")
    async def j(step, input):
        order.append(input)

    app = make_app([j])
    for i in range(5):
        app.trigger(j, i)
    assert await app.process_until_idle() == 5
    assert order == [0, 1, 2, 3, 4]


async def test_process_until_idle_respects_max_runs(make_app):
    @job("j")
    async def j(step, input):
        return input

    app = make_app([j])
    app.trigger_many(j, [1, 2, 3])
    assert await app.process_until_idle(max_runs=2) == 2
    assert await app.process_one() is True
    assert await app.process_one() is False


async def test_completed_steps_counts_while_a_run_executes_and_after_a_cancel(make_app):
    seen = []

    @job("j")
    async def j(step, input):
        await step.run("a", lambda: 1)
        await step.run("b", lambda: 2)
        seen.append(app.get_run(step.run_id).completed_steps)
        app.cancel(step.run_id)
        await step.run("c", lambda: 3)

    app = make_app([j])
    run = app.trigger(j, None)
    assert app.get_run(run.id).completed_steps == 0
    await app.process_one()
    assert seen == [2]
    after = app.get_run(run.id)
    assert after.status == "cancelled" and after.completed_steps == 2
