"""Lease edge cases that need a blocked event loop (CPython only)."""

from __future__ import annotations

import time

from durably import Durably, StorageError, job
from durably.driver import Sqlite3Driver


async def test_a_worker_frozen_past_its_lease_checks_it_before_starting_the_next_step(make_app):
    ran = []
    apps = {}

    @job("j")
    async def j(step, input):
        # A synchronous step that blocks the loop past the lease: renewal cannot run,
        # as if the process had been stopped (SIGSTOP) or the laptop suspended.
        await step.run("freeze", lambda: time.sleep(0.4) or "thawed")
        # Meanwhile another worker found the lease expired and took the run over.
        if apps["other"]._runtime.claim() is None:
            ran.append("takeover failed")
        await step.run("next", lambda: ran.append("next ran on the frozen worker"))

    frozen = make_app([j], lease_duration=0.3, lease_renew_interval=0.25)
    apps["other"] = make_app([j], lease_duration=30, lease_renew_interval=5)
    errors = []
    frozen.on("worker:error", errors.append)
    run = frozen.trigger(j, None)
    await frozen.process_one()
    assert ran == []  # the frozen worker never started the next step's body
    assert [e["error"].split(":")[0] for e in errors] == ["LeaseLostError"]
    assert frozen.get_run(run.id).status == "leased"  # the other worker holds it now
    assert [s.name for s in frozen.get_steps(run.id)] == ["freeze"]


async def test_a_frozen_worker_whose_lease_was_not_taken_renews_it_and_goes_on(make_app):
    @job("j")
    async def j(step, input):
        await step.run("freeze", lambda: time.sleep(0.4))
        return await step.run("next", lambda: "done")

    app = make_app([j], lease_duration=0.3, lease_renew_interval=0.25)
    run = app.trigger(j, None)
    await app.process_one()
    assert app.get_run(run.id).output == "done"


async def test_a_cancel_is_stamped_once_it_holds_the_write_lock(make_app, clock, db_path):
    """A cancel took its timestamp before it waited for the write lock, so a step that
    another worker committed meanwhile (before the cancel) was stamped after the run's
    completed_at: the chaos suite saw 'step committed after the run was cancelled' when
    the machine was loaded. Here the other process's write is a trigger, made between
    the moment the cancel reads the clock and its write if it can be."""
    other = Durably(Sqlite3Driver(db_path, busy_timeout=0), clock=clock)
    armed: list[bool] = []

    def stamping_clock():
        now = clock()
        if armed:
            armed.clear()
            clock.advance(1)
            try:
                other.trigger("late", None)  # another process's write, a second later
            except StorageError:
                pass  # the cancel holds the write lock: nothing commits in between
        return now

    canceller = make_app(clock=stamping_clock)
    run = canceller.trigger("j", None)
    assert other.get_runs() != []  # schema checked: the trigger below is one INSERT
    armed.append(True)
    cancelled = canceller.cancel(run.id)
    assert armed == []
    assert all(r.created_at <= cancelled.completed_at for r in canceller.get_runs())
    other.close()
