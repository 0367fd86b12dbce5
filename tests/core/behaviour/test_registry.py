"""The worker registry and status.

Part of the core's behavioural suite (see helpers.py): host-independent, run on
CPython here and inside Pyodide by tests/browser/test_core_in_pyodide.py.
"""

from __future__ import annotations

import asyncio
import warnings

import durably
from durably import job, limits


async def test_a_started_worker_records_itself_and_status_finds_pending_runs_nobody_runs(make_app, clock):
    """Runs nobody will ever execute: a trigger-only typo left a run pending for ever in
    silence, and there was no way to ask which workers run which jobs."""

    @job("j")
    async def j(step, input):
        return input

    worker = make_app([j], clock=clock, max_concurrent_runs=3)
    trigger_only = make_app(clock=clock)
    empty = trigger_only.status()
    assert empty.workers == [] and empty.unhandled == {} and empty.healthy
    assert empty.runs == {"pending": 0, "leased": 0, "waiting": 0, "completed": 0, "failed": 0, "cancelled": 0}

    await worker.start()
    status = trigger_only.status()
    assert [(w.worker_id, w.jobs, w.concurrency) for w in status.workers] == [(worker.worker_id, ["j"], 3)]
    assert status.workers[0].version == durably.__version__ and status.stale_workers == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        done = trigger_only.trigger("j", 1)
        typo = trigger_only.trigger("jj", 2)
        trigger_only.trigger_many("jj", [3, 4])
    assert [type(w.message) for w in caught] == [durably.NoWorkerWarning] * 2
    assert "'jj'" in str(caught[0].message) and typo.id in str(caught[0].message)
    await worker.wait_for_run(done.id, timeout=10)
    status = trigger_only.status()
    assert status.unhandled == {"jj": 3} and not status.healthy
    assert status.runs["pending"] == 3 and status.runs["completed"] == 1
    assert status.to_dict()["unhandled"] == {"jj": 3} and status.to_dict()["healthy"] is False

    clock.advance(limits.WORKER_STALE_AFTER + 1)  # the worker's heartbeat is now old: dead
    stale = trigger_only.status()
    assert stale.workers == [] and [w.worker_id for w in stale.stale_workers] == [worker.worker_id]
    clock.advance(-(limits.WORKER_STALE_AFTER + 1))
    await worker.stop()  # a clean stop takes the worker out of the registry
    assert trigger_only.status().workers == trigger_only.status().stale_workers == []


async def test_a_running_worker_heartbeats(make_app, clock):
    @job("j")
    async def j(step, input):
        return input

    saved = durably.worker.HEARTBEAT_INTERVAL
    durably.worker.HEARTBEAT_INTERVAL = 0.02
    try:
        worker = make_app([j], clock=clock)
        await worker.start()
        first = worker.status().workers[0].heartbeat_at
        clock.advance(limits.WORKER_STALE_AFTER * 2)
        for _ in range(500):
            if worker.status().workers:
                break
            await asyncio.sleep(0.01)
        live = worker.status().workers
        assert live and live[0].heartbeat_at > first
        await worker.stop()
    finally:
        durably.worker.HEARTBEAT_INTERVAL = saved
