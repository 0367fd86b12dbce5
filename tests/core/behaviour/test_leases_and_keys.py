"""Leases and fencing, idempotency and concurrency keys.

Part of the core's behavioural suite (see helpers.py): host-independent, run on
CPython here and inside Pyodide by tests/browser/test_core_in_pyodide.py.
"""

from __future__ import annotations

import asyncio

import pytest

from durably import ConflictError, job

from .helpers import next_event, record


async def test_leases_are_renewed_while_a_run_executes(make_app, clock):
    gate = asyncio.Event()

    @job("long")
    async def long(step, input):
        await step.run("wait", gate.wait)

    worker = make_app([long], clock=clock, lease_duration=30, lease_renew_interval=0.02)
    other = make_app([long], clock=clock, lease_duration=30)
    run = worker.trigger(long, None)
    renewed = next_event(worker, "run:lease-renewed")
    task = asyncio.ensure_future(worker.process_one())
    await next_event(worker, "step:start")
    clock.advance(20)
    event = await renewed
    clock.advance(20)  # 40 s after the claim, but only 20 s after the renewal
    assert await other.process_one() is False
    assert event["lease_generation"] == 1 and event["worker_id"] == worker.worker_id
    gate.set()
    await task
    assert worker.get_run(run.id).status == "completed"


async def test_runs_started_at_different_times_are_each_renewed_while_they_execute(make_app):
    gates = {"a": asyncio.Event(), "b": asyncio.Event()}

    @job("long")
    async def long(step, input):
        await step.run("wait", gates[input].wait)

    worker = make_app([long], lease_duration=30, lease_renew_interval=0.03)
    a = worker.trigger(long, "a")
    started_a = next_event(worker, "step:start", run_id=a.id)
    task_a = asyncio.ensure_future(worker.process_one())
    await started_a
    b = worker.trigger(long, "b")
    started_b = next_event(worker, "step:start", run_id=b.id)
    task_b = asyncio.ensure_future(worker.process_one())
    await started_b
    await asyncio.wait_for(
        asyncio.gather(
            next_event(worker, "run:lease-renewed", run_id=a.id), next_event(worker, "run:lease-renewed", run_id=b.id)
        ),
        5,
    )
    gates["a"].set()
    await task_a
    # a has ended: b goes on being renewed, and a is not renewed any more.
    renewed = record(worker, "run:lease-renewed")
    await asyncio.wait_for(next_event(worker, "run:lease-renewed", run_id=b.id), 5)
    await asyncio.wait_for(next_event(worker, "run:lease-renewed", run_id=b.id), 5)
    assert {event.run_id for event in renewed} == {b.id}
    gates["b"].set()
    await task_b
    assert [worker.get_run(r.id).status for r in (a, b)] == ["completed", "completed"]


async def test_a_completion_that_claims_the_next_run_writes_both_or_neither(make_app, clock):
    # Store.complete_run_and_claim: the worker completes a run and claims its next one in
    # one commit; a completion refused (the lease is not ours) claims nothing either.
    @job("j")
    async def j(step, input):
        return 1

    app = make_app([j], clock=clock)
    first, second = app.trigger(j, 1), app.trigger(j, 2)
    store, runtime = app._store, app._runtime
    held = runtime.claim()
    assert held.run.id == first.id
    now = app._now()
    claim = {"owner": runtime.worker_id, "job_names": ["j"], "lease_until": "9999-01-01T00:00:00.000000Z"}
    done, following = store.complete_run_and_claim(
        held.lease, now=now, output_json="1", pending=None, preserve_steps=True, **claim
    )
    assert done and following.run.id == second.id and following.generation == 1
    assert app.get_run(first.id).status == "completed" and app.get_run(first.id).output == 1
    assert app.get_run(second.id).status == "leased"
    third = app.trigger(j, 3)
    assert store.complete_run_and_claim(
        held.lease, now=now, output_json="2", pending=None, preserve_steps=True, **claim
    ) == (False, None)
    assert app.get_run(first.id).output == 1 and app.get_run(third.id).status == "pending"
    done, following = store.complete_run_and_claim(
        following.lease, now=now, output_json="1", pending=None, preserve_steps=True, **{**claim, "job_names": ["other"]}
    )
    assert done and following is None and app.get_run(second.id).status == "completed"
    assert app.get_run(third.id).status == "pending"


async def test_a_claim_that_fails_with_the_completion_leaves_the_completion_written(make_app, clock):
    # The claim runs under a savepoint: its failure rolls back only itself.
    from durably.errors import StorageError

    @job("j")
    async def j(step, input):
        return 1

    app = make_app([j], clock=clock)
    first, second = app.trigger(j, 1), app.trigger(j, 2)
    store, runtime = app._store, app._runtime
    held = runtime.claim()

    def refused(**kwargs):
        raise StorageError("database is locked (injected)", transient=True)

    store.claim = refused
    try:
        done, following = store.complete_run_and_claim(
            held.lease, now=app._now(), output_json="1", pending=None, preserve_steps=True,
            owner=runtime.worker_id, job_names=["j"], lease_until="9999-01-01T00:00:00.000000Z",
        )  # fmt: skip
    finally:
        del store.claim
    assert done and following is None
    assert app.get_run(first.id).status == "completed" and app.get_run(second.id).status == "pending"
    assert runtime.claim().run.id == second.id


async def test_a_worker_executes_queued_runs_back_to_back_each_leased_once(make_app):
    @job("j")
    async def j(step, input):
        return await step.run("only", lambda: input)

    app = make_app([j])
    leased = record(app, "run:leased")
    runs = [app.trigger(j, i) for i in range(5)]
    await app.start()
    try:
        done = [await asyncio.wait_for(app.wait_for_run(run.id), 10) for run in runs]
    finally:
        await app.stop()
    assert [run.output for run in done] == [0, 1, 2, 3, 4]
    assert sorted(event.run_id for event in leased) == sorted(run.id for run in runs)
    assert {event["lease_generation"] for event in leased} == {1}


async def test_every_claim_bumps_the_generation_and_fences_the_previous_holder(make_app, clock):
    @job("j")
    async def j(step, input):
        return 1

    app = make_app([j], clock=clock)
    run = app.trigger(j, None)
    store = app._store
    first = app._runtime.claim()
    assert first.generation == 1
    clock.advance(31)
    second = app._runtime.claim()
    assert second.generation == 2
    now = app._now()
    assert not store.complete_step(first.lease, index=0, name="s", output_json="1", started_at=now, now=now)
    assert not store.complete_run(first.lease, now=now, output_json="1")
    assert not store.renew(first.lease, now=now, lease_until=now, pending=None)
    assert not store.release(first.lease, now=now, pending=None)
    assert app.get_run(run.id).status == "leased"
    assert app.get_steps(run.id) == []
    assert store.complete_run(second.lease, now=now, output_json="1")


async def test_idempotency_key_returns_the_same_run_and_emits_nothing(make_app):
    @job("j")
    async def j(step, input):
        return input

    app = make_app([j])
    first = app.trigger(j, {"n": 1}, idempotency_key="order-7")
    events = record(app)
    again = app.trigger(j, {"n": 2}, idempotency_key="order-7")
    assert again.id == first.id and again.disposition == "idempotent"
    assert again.input == {"n": 1}
    assert events == []
    assert len(app.get_runs()) == 1
    await app.process_until_idle()
    assert app.trigger(j, {"n": 3}, idempotency_key="order-7").status == "completed"


async def test_one_pending_run_per_job_and_concurrency_key(make_app):
    @job("j")
    async def j(step, input):
        return input

    @job("k")
    async def k(step, input):
        return input

    app = make_app([j, k])
    events = record(app)
    first = app.trigger(j, 1, concurrency_key="user-1")
    with pytest.raises(ConflictError, match="user-1"):
        app.trigger(j, 2, concurrency_key="user-1")
    skipped = app.trigger(j, 3, concurrency_key="user-1", coalesce="skip")
    assert skipped.id == first.id and skipped.disposition == "coalesced"
    assert [e.type for e in events] == ["run:trigger", "run:coalesced"]
    assert events[1]["input"] == 3
    other_job = app.trigger(k, 4, concurrency_key="user-1")  # another job may queue behind it
    assert other_job.disposition == "created"
    assert len(app.get_runs(status="pending")) == 2


async def test_runs_with_the_same_concurrency_key_never_overlap(make_app):
    spans: dict[str, list] = {}

    def make(name: str):
        @job(name)
        async def body(step, input):
            async def work():
                spans.setdefault(input, []).append(("start", asyncio.get_running_loop().time()))
                await asyncio.sleep(0.05)
                spans[input].append(("end", asyncio.get_running_loop().time()))

            await step.run("work", work)

        return body

    a, b = make("a"), make("b")
    app = make_app([a, b], max_concurrent_runs=4)
    runs = [
        app.trigger(a, "a1", concurrency_key="k"),
        app.trigger(b, "b1", concurrency_key="k"),
        app.trigger(a, "free1"),
        app.trigger(b, "free2"),
    ]
    await app.start()
    for run in runs:
        await app.wait_for_run(run.id, timeout=10)
    await app.stop()
    a1 = [t for _, t in spans["a1"]]
    b1 = [t for _, t in spans["b1"]]
    assert a1[1] <= b1[0] or b1[1] <= a1[0]
    # Runs without a key did overlap with something: concurrency really was 4.
    free = [t for _, t in spans["free1"]]
    assert free[0] < a1[1]


async def test_a_run_cancelled_by_another_process_holds_its_key_until_its_worker_stops_it(make_app):
    # Process A executes run X (key k); process B cancels X and wants to run Y (key k). X's
    # step is still executing in A until A notices the cancel (at its next lease renewal):
    # B must not start Y before that.
    gate = asyncio.Event()
    log = []

    @job("x")
    async def x(step, input):
        async def body():
            log.append("x-start")
            await gate.wait()
            log.append("x-end")

        await step.run("work", body)

    @job("y")
    async def y(step, input):
        await step.run("work", lambda: log.append("y"))

    a = make_app([x], lease_renew_interval=0.2, lease_duration=5)
    b = make_app([y])
    run_x = a.trigger(x, None, concurrency_key="k")
    run_y = b.trigger(y, None, concurrency_key="k")
    await a.start()
    while log != ["x-start"]:
        await asyncio.sleep(0.01)
    b.cancel(run_x.id)
    assert await b.process_one() is False  # X's worker has not stopped it yet
    assert b.get_run(run_y.id).status == "pending"
    # A notices at its next renewal, interrupts the step and hands the key back.
    for _ in range(200):
        if a.get_steps(run_x.id):
            break
        await asyncio.sleep(0.01)
    assert [s.status for s in a.get_steps(run_x.id)] == ["cancelled"]
    assert await b.process_one() is True
    assert log == ["x-start", "y"]
    await a.stop()


async def test_a_key_held_by_an_expired_lease_is_not_given_to_another_run(make_app, clock):
    # X's worker stopped renewing (frozen or only slow): X is taken over, not skipped; a
    # pending run of the same key, even an older one, waits for X to finish.
    @job("x")
    async def x(step, input):
        return "x"

    @job("y")
    async def y(step, input):
        return "y"

    frozen = make_app([x], clock=clock)
    other = make_app([x, y], clock=clock)
    run_y = other.trigger(y, None, concurrency_key="k")  # older than X
    run_x = other.trigger(x, None, concurrency_key="k")
    claimed = frozen._runtime.claim()  # only X's job is registered there
    assert claimed.run.id == run_x.id
    clock.advance(31)  # past X's lease
    taken = other._runtime.claim()
    assert taken.run.id == run_x.id and taken.generation == 2
    assert other._runtime.claim() is None  # Y waits while X is leased again
    await other._runtime.execute(taken)
    assert await other.process_one() is True
    assert other.get_run(run_y.id).status == "completed"
