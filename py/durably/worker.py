"""The worker loop: keeps up to ``max_concurrent_runs`` runs executing, sleeps until woken
(a trigger or a run's end in this process), until the next poll or until the next run
or schedule falls due, whichever comes first; creates the runs of its jobs' schedules as
their slots fall due; purges old runs when idle (``retain_runs``), and records this worker
in the registry that ``Durably.status()`` reads, with a heartbeat.

What wakes it (its wake sources): a trigger or a run's end in this process
(``wake``/``wake_from_anywhere``), the time the next waiting run or schedule slot of its
jobs falls due, and, where the engine sends them, the wake-ups of other processes
(``Store.listen``: PostgreSQL's ``NOTIFY``, for a trigger, a run handed back, a freed
concurrency key, a signal delivered). Polling finds everything else (runs other processes
wrote on SQLite, leases that expired) and is the fallback when a wake-up is missed.

It drives a :class:`durably.runtime.Runtime`, which claims and executes each run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .clock import add_seconds, iso, parse_iso
from .errors import ConflictError
from .jsondata import to_json
from .limits import HEARTBEAT_INTERVAL, WORKER_FORGET_AFTER
from .runtime import Runtime
from .schedules import Schedule
from .store import ANY_JOB, Claimed, NewRun, ScheduleSpec

#: How often idle maintenance (``retain_runs``) runs at most, in seconds.
MAINTENANCE_INTERVAL = 60.0
#: Runs ``retain_runs`` purges in one transaction.
RETENTION_BATCH = 500


class Worker:
    """The loop of a started worker around ``runtime``.

    ``host`` is the ``(host, pid)`` this worker records in the registry; None records this
    machine's name and this process's id (the browser host passes ``("browser", None)``)."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        host: tuple[str, int | None] | None = None,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.runtime = runtime
        self._host = host
        self._new_id = new_id
        self._max_runs = runtime.settings.max_concurrent_runs
        self._polling_interval = runtime.settings.polling_interval
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waiter: asyncio.Future[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._last_maintenance = float("-inf")
        self._started_at: str | None = None  # set while started: this worker is in the registry
        self._heartbeat_handle: asyncio.TimerHandle | None = None
        self._last_prune = float("-inf")
        self._listener: Any = None  # Store.listen's, while started on an engine that sends wake-ups
        # The schedules of the registered jobs: job name -> (schedule, its next slot), as of
        # the job names they were read for (the registry's names tuple).
        self._schedules: dict[str, tuple[Schedule, datetime]] = {}
        self._scheduled_for: tuple[str, ...] | None = None
        # When the loop last looked for runs to claim (the app's clock): a run that fell due
        # after that wakes the loop; one due before it was not claimable then (its concurrency
        # key was held) and waits for the next poll.
        self._looked_at: datetime | None = None

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    async def start(self) -> None:
        """Record this worker and start the loop in the running event loop."""
        runtime = self.runtime
        runtime.bind_loop()
        runtime.stopping = False
        self._started_at = runtime.now()
        self._last_prune = float("-inf")
        self._heartbeat()  # records this worker; then every HEARTBEAT_INTERVAL
        try:
            self._listener = runtime.store.listen(self._woken_by)
        except Exception as exc:  # polling still finds every run
            runtime.report(exc, "listening for wake-ups (the worker polls instead)")
        self._loop_task = asyncio.ensure_future(self._run_loop())

    async def wait_stopped(self) -> None:
        """Return once the loop has ended (``stop()``), at once if it is not running."""
        task = self._loop_task
        if task is not None:
            await asyncio.wait({task})

    async def stop(self, timeout: float | None) -> None:
        """Start no new run; let each run in flight reach its next step boundary and hand
        its lease back; past ``timeout`` seconds interrupt the steps still running."""
        runtime = self.runtime
        runtime.stopping = True
        self.wake()
        if self._loop_task is not None:
            try:
                await self._loop_task
            finally:
                self._loop_task = None
        tasks = set(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            if late:
                for ctx in list(runtime.active.values()):
                    if ctx.task in late:
                        runtime.interrupt(ctx, "stop")
                await asyncio.gather(*late, return_exceptions=True)
        self._stop_listening()
        self._forget_self()
        runtime.stopping = False

    # -- waking ------------------------------------------------------------------------------

    def wake(self) -> None:
        """Look for runs to claim now instead of at the next poll (in the loop's thread)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wake_from_anywhere(self) -> None:
        """``wake``, from any thread."""
        self.runtime.call_in_loop(self.wake)

    def _woken_by(self, job_name: str | None) -> None:
        """Another process made a run of ``job_name`` claimable (``"*"``: of any job; None:
        the listener reconnected and may have missed some). Called from its thread."""
        if job_name is None or job_name == ANY_JOB or job_name in self.runtime.jobs.names:
            self.wake_from_anywhere()

    def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.close()
            except Exception as exc:
                self.runtime.report(exc, "closing the wake-up listener")

    async def _sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        handle = loop.call_later(seconds, _resolve, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiter = None

    # -- the loop ------------------------------------------------------------------------------

    async def _run_loop(self) -> None:
        runtime = self.runtime
        while not runtime.stopping:
            self.fire_schedules()
            self._looked_at = runtime.clock()
            claimed_any = False
            # Count tasks, not active runs: a task just created has not registered its run yet.
            while len(self._tasks) < self._max_runs and not runtime.stopping:
                try:
                    claimed = runtime.claim()
                except Exception as exc:  # a storage fault, or a bug: the loop goes on
                    runtime.report(exc, "claiming a run (will try again)")
                    break
                if claimed is None:
                    break
                claimed_any = True
                task = asyncio.ensure_future(self._execute_runs(claimed))
                self._tasks.add(task)
                task.add_done_callback(self._task_done)
            if not claimed_any and not self._tasks:
                self._maybe_maintain()
            if runtime.stopping:
                break
            if claimed_any and len(self._tasks) < self._max_runs:
                await asyncio.sleep(0)  # let new runs start, then look for more
                continue
            await self._sleep(self._next_look())

    def _next_look(self) -> float:
        """Seconds until the loop looks for runs again: the polling interval, or less when a
        waiting run of its jobs or a schedule's next slot falls due sooner."""
        runtime = self.runtime
        wait = self._polling_interval
        now = runtime.clock()
        looked = self._looked_at or now
        due: list[datetime] = [next_at for _, next_at in self._schedules.values()]
        try:
            wake_at = runtime.store.next_wake(runtime.jobs.names)
            if wake_at is not None:
                wake = parse_iso(wake_at)
                if wake is not None and wake > looked:  # due before we looked: not claimable yet
                    due.append(wake)
        except Exception as exc:  # the worker polls as before
            runtime.report(exc, "reading when the next waiting run is due (the worker polls meanwhile)")
        for when in due:
            wait = min(wait, max(0.0, (when - now).total_seconds()))
        return wait

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        # Wake the loop only once the task no longer counts against max_concurrent_runs,
        # or a full worker would sleep a whole polling interval before claiming again.
        self._tasks.discard(task)
        self.wake()

    async def _execute_runs(self, claimed: Claimed | None) -> None:
        # Runs back to back in one task while there are runs to claim: going through the
        # worker loop between two runs costs several turns of the event loop (each ~0.15 ms
        # in Pyodide, as much as a short run's SQL).
        # A run that completes claims the next one in its own commit (claim_next).
        runtime = self.runtime
        while claimed is not None:
            following = None
            try:
                following = await runtime.execute(claimed, claim_next=True)
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except BaseException as exc:  # a bug in durably itself: report it, keep the worker
                runtime.report(exc, f"executing run {claimed.run.id}")
                if isinstance(exc, Exception):
                    runtime.fail_claimed(claimed, exc)
            claimed = following
            await runtime.maybe_yield()
            if runtime.stopping:
                if claimed is not None:
                    runtime.release_claimed(claimed)
                break
            if claimed is not None:
                continue
            try:
                claimed = runtime.claim()
            except Exception as exc:
                runtime.report(exc, "claiming a run (will try again)")

    # -- schedules --------------------------------------------------------------------------------

    def fire_schedules(self) -> int:
        """Create the runs of the registered jobs' schedule slots that fell due (registering
        the schedules first when the jobs changed); returns how many runs were created. A
        failure is a ``worker:error``: the loop goes on, and tries again at its next look."""
        runtime = self.runtime
        try:
            if self._scheduled_for is not runtime.jobs.names:
                self._sync_schedules()
            if not self._schedules:
                return 0
            now = runtime.clock()
            created = 0
            for name, (schedule, next_at) in list(self._schedules.items()):
                if next_at <= now:
                    created += self._fire(name, schedule, next_at, now)
            return created
        except Exception as exc:
            runtime.report(exc, "creating the runs of due schedules (will try again)")
            return 0

    def _sync_schedules(self) -> None:
        runtime = self.runtime
        names = runtime.jobs.names
        now = runtime.clock()
        specs = []
        for name in names:
            schedule = runtime.jobs[name].schedule
            if schedule is not None:
                first = schedule.next_after(now)
                if first is not None:
                    specs.append(ScheduleSpec(name, schedule.cron, schedule.timezone, schedule.catch_up, iso(first)))
        rows = runtime.store.sync_schedules(names, specs, iso(now))
        self._schedules = {}
        for row in rows:
            job = runtime.jobs.get(row.job_name)
            if job is not None and job.schedule is not None and row.next_at is not None:
                self._schedules[row.job_name] = (job.schedule, row.next_at)
        self._scheduled_for = names

    def _fire(self, name: str, schedule: Schedule, next_at: datetime, now: datetime) -> int:
        runtime = self.runtime
        slots = schedule.due(next_at, now)
        following = schedule.next_after(now)
        if following is None:  # the expression has no time left in 50 years
            self._schedules.pop(name, None)
            return 0
        stamp = iso(now)
        news = []
        for slot in slots:
            at = iso(slot)
            data = {"scheduled_for": at}
            news.append(
                NewRun(
                    run_id=self._new_id() if self._new_id else f"{name}:{at}",
                    job_name=name,
                    input_json=to_json(data),
                    input_value=data,
                    labels={},
                    idempotency_key=f"schedule:{at}",
                    concurrency_key=None,
                    coalesce=None,
                    now=stamp,
                )
            )
        results = runtime.store.fire_schedule(
            name,
            cron=schedule.cron,
            timezone=schedule.timezone,
            seen_next_at=iso(next_at),
            next_at=iso(following),
            last_slot=iso(slots[-1]) if slots else None,
            runs=news,
            now=stamp,
        )
        if results is None:  # another worker fired it first, or registered other code
            self._schedules.pop(name, None)
            row = next((r for r in runtime.store.schedules() if r.job_name == name), None)
            if row is not None and (row.cron, row.timezone) == (schedule.cron, schedule.timezone):
                if row.next_at is not None:
                    self._schedules[name] = (schedule, row.next_at)  # go on from where it is now
                return 0
            # The last worker to register a job's schedule decides it (during a deploy, the
            # newer code): this one leaves the schedule to it.
            theirs = "has no schedule" if row is None else f"is scheduled {row.cron!r} ({row.timezone})"
            runtime.report(
                ConflictError(
                    f"job {name!r} {theirs} in the code of the last worker that registered it, and "
                    f"{schedule.cron!r} ({schedule.timezone}) here; this worker creates no runs for that "
                    "schedule until it is restarted: run the same code on every worker"
                ),
                "firing a schedule registered differently by another worker",
            )
            return 0
        self._schedules[name] = (schedule, following)
        created = 0
        for run, disposition in results:
            if disposition == "created":
                created += 1
                runtime.events.emit("run:trigger", run.id, run.job_name, run.labels, input=run.input)
        return created

    # -- maintenance ---------------------------------------------------------------------------

    def purge(self, cutoff: datetime, limit: int) -> int:
        """Delete up to ``limit`` finished runs completed before ``cutoff`` (see
        ``Durably.purge_runs``), emitting ``run:delete`` for each; returns how many."""
        runtime = self.runtime
        runs = runtime.store.purge(cutoff=iso(cutoff), limit=limit, now=runtime.now())
        for run in runs:
            runtime.events.emit("run:delete", run.id, run.job_name, run.labels)
        return len(runs)

    def _maybe_maintain(self) -> None:
        retain = self.runtime.settings.retain_runs
        if retain is None:
            return
        now = time.monotonic()
        if now - self._last_maintenance < MAINTENANCE_INTERVAL:
            return
        self._last_maintenance = now
        try:
            self.purge(self.runtime.clock() - retain, RETENTION_BATCH)
        except Exception as exc:  # the worker loop goes on
            self.runtime.report(exc, "purging old runs (retain_runs)")

    # -- the worker registry ------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Record this worker (its jobs, host, pid, version) with the time, in the registry
        that ``Durably.status()`` reads; every HEARTBEAT_INTERVAL while it runs. A failure
        is a worker:error, never a stop: running jobs does not depend on the registry."""
        self._heartbeat_handle = None
        if self._started_at is None:
            return
        from . import __version__

        runtime = self.runtime
        host, pid = self._host or (socket.gethostname(), os.getpid())
        now = runtime.clock()
        try:
            runtime.store.record_worker(
                worker_id=runtime.worker_id,
                host=host,
                pid=pid,
                jobs=sorted(runtime.jobs),
                version=__version__,
                concurrency=self._max_runs,
                started_at=self._started_at,
                now=iso(now),
            )
            if time.monotonic() - self._last_prune >= WORKER_FORGET_AFTER / 24:
                self._last_prune = time.monotonic()
                runtime.store.forget_stale_workers(iso(add_seconds(now, -WORKER_FORGET_AFTER)))
        except Exception as exc:
            runtime.report(exc, "recording this worker's heartbeat (will try again)")
        self._heartbeat_handle = asyncio.get_running_loop().call_later(HEARTBEAT_INTERVAL, self._heartbeat)

    def _forget_self(self) -> None:
        """A clean stop: take this worker out of the registry."""
        if self._heartbeat_handle is not None:
            self._heartbeat_handle.cancel()
            self._heartbeat_handle = None
        if self._started_at is None:
            return
        self._started_at = None
        try:
            self.runtime.store.forget_worker(self.runtime.worker_id)
        except Exception as exc:
            self.runtime.report(exc, "removing this worker from the registry (it will count as dead)")


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
