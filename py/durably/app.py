"""``Durably``: the public API. Triggering and reading are synchronous (they only touch the
database); running, stopping and waiting are ``async``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import threading
import time
import warnings
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Sequence

from .clock import Clock, UlidFactory, add_seconds, iso, system_clock
from .driver import Driver, Sqlite3Driver
from .errors import (
    CancelledError,
    ConflictError,
    NotFoundError,
    NoWorkerWarning,
    RunFailedError,
    StorageError,
    ValidationError,
)
from .events import Event, EventBus
from .jobs import Job, check_name, check_text
from .limits import (
    JOB_SEEN_WINDOW,
    MAX_CONCURRENT_RUNS,
    MAX_FILTER_VALUES,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    MAX_LEASE_DURATION,
    MAX_NAME_LENGTH,
    MAX_OFFSET,
    MAX_PAGE,
    MAX_POLLING_INTERVAL,
    MAX_PURGE_LIMIT,
    MAX_RETENTION,
    MAX_TIMEOUT,
    MAX_TRIGGER_MANY,
    WORKER_STALE_AFTER,
)
from .models import ACTIVE, FINISHED, LogRecord, Run, Status, StepRecord
from .runtime import Runtime
from .schemas import check_json
from .store import Store

RUN_STATUSES = ("pending", "leased", "completed", "failed", "cancelled")
_RETAIN = re.compile(r"^([1-9][0-9]*)([dhm])$")
_RETAIN_UNITS = {"d": 86400, "h": 3600, "m": 60}


def parse_retention(value: str) -> timedelta:
    """``"30d"``, ``"12h"``, ``"15m"`` (m = minutes) -> timedelta; anything else is rejected."""
    match = _RETAIN.match(value) if isinstance(value, str) and len(value) <= 20 else None
    if match is None:
        raise ValidationError(
            f"retain_runs must look like '30d', '12h' or '15m' (days, hours, minutes), got {value!r}"
        )
    seconds = int(match.group(1)) * _RETAIN_UNITS[match.group(2)]
    if seconds > MAX_RETENTION:
        raise ValidationError(
            f"retain_runs is at most {int(MAX_RETENTION // 86400)}d (durably.limits.MAX_RETENTION), got {value!r}"
        )
    return timedelta(seconds=seconds)


def seconds_option(name: str, value: Any, maximum: float, limit: str, *, zero: bool = False) -> float:
    """A duration option: a finite number of seconds above 0 (or from 0, with ``zero``)
    and at most ``maximum``, the limit named ``limit`` in durably.limits."""
    if (
        isinstance(value, bool) or not isinstance(value, (int, float))
        or not (0 <= value if zero else 0 < value) or not value <= maximum
    ):
        low = "from 0" if zero else "above 0"
        raise ValidationError(
            f"{name} must be a number of seconds {low} and at most {maximum:,.0f} (durably.limits.{limit}), "
            f"got {value!r}"
        )
    return float(value)


def check_timeout(value: Any, name: str = "timeout", *, zero: bool = False) -> float | None:
    """None (wait without end), or a finite number of seconds up to ``MAX_TIMEOUT``."""
    if value is None:
        return None
    return seconds_option(name, value, MAX_TIMEOUT, "MAX_TIMEOUT", zero=zero)


def count_option(name: str, value: Any, low: int, high: int, limit: str | None = None) -> int:
    """An integer option from ``low`` to ``high`` (the limit named ``limit``, if any)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        where = f" (durably.limits.{limit})" if limit else ""
        raise ValidationError(f"{name} must be an integer from {low} to {high:,}{where}, got {value!r}")
    return value


class Durably:
    """A durable job runtime on one SQLite database.

    Example::

        app = Durably("jobs.db", jobs=[sync_users])
        await app.start()
        run = app.trigger("sync-users", {"org": "a"})
        await app.wait_for_run(run.id, timeout=10)
        await app.stop()

    ``db`` is a path, ``":memory:"``, or a driver object (see ``durably.driver``). The first
    database call creates or upgrades the schema, so a process that only triggers never
    needs ``start()``.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | Driver,
        *,
        jobs: Iterable[Job] = (),
        polling_interval: float = 1.0,
        lease_duration: float = 30.0,
        lease_renew_interval: float = 5.0,
        max_concurrent_runs: int = 1,
        preserve_steps: bool = True,
        retain_runs: str | None = None,
        clock: Clock | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.polling_interval = seconds_option(
            "polling_interval", polling_interval, MAX_POLLING_INTERVAL, "MAX_POLLING_INTERVAL")
        self.lease_duration = seconds_option(
            "lease_duration", lease_duration, MAX_LEASE_DURATION, "MAX_LEASE_DURATION")
        self.lease_renew_interval = seconds_option(
            "lease_renew_interval", lease_renew_interval, MAX_LEASE_DURATION, "MAX_LEASE_DURATION")
        if self.lease_renew_interval >= self.lease_duration:
            raise ValidationError(
                f"lease_renew_interval ({lease_renew_interval}) must be shorter than lease_duration "
                f"({lease_duration}), or leases expire before they are renewed"
            )
        self.max_concurrent_runs = count_option(
            "max_concurrent_runs", max_concurrent_runs, 1, MAX_CONCURRENT_RUNS, "MAX_CONCURRENT_RUNS")
        if not isinstance(preserve_steps, bool):
            raise ValidationError(f"preserve_steps must be True or False, got {preserve_steps!r}")
        self.preserve_steps = preserve_steps
        self.retain_runs: timedelta | None = None if retain_runs is None else parse_retention(retain_runs)
        #: How often idle maintenance (retain_runs) runs at most, in seconds.
        self.maintenance_interval = 60.0
        if clock is not None:
            # Asked once here: a clock that gives a naive datetime (datetime.now()) would
            # otherwise fail every trigger and claim with an error that does not name it.
            sample = clock() if callable(clock) else None
            if not isinstance(sample, datetime) or sample.utcoffset() is None:
                got = f"it returned {sample!r}" if callable(clock) else f"got {clock!r}"
                raise ValidationError(
                    "clock must be a callable returning an aware datetime, e.g. "
                    f"lambda: datetime.now(timezone.utc); {got}"
                )
        self._clock: Clock = clock or system_clock
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        check_name(self.worker_id, "worker_id")
        # (host, pid) this worker records in the registry; None: this machine and process.
        # The browser host sets ("browser", None).
        self._worker_host: tuple[str, int | None] | None = None
        # Job name -> when (monotonic) a live worker was last seen registering it, so that a
        # trigger-only process does not ask the registry on every trigger.
        self._jobs_seen: dict[str, float] = {}

        if isinstance(db, (str, os.PathLike)):
            path = os.fspath(db)
            if not path:
                raise ValidationError("db must be a file path, ':memory:' or a driver object; got an empty path")
            driver: Driver = Sqlite3Driver(path)
        elif isinstance(db, Driver):
            driver = db
        else:
            raise ValidationError(
                f"db must be a file path, ':memory:' or a driver object with execute() and close(), got {db!r}"
            )
        self._store = Store(driver)
        self._ids = UlidFactory()
        self._events = EventBus(self._clock)
        self._jobs: dict[str, Job] = {}
        self._runtime = Runtime(self)
        self._waiters: dict[str, set[asyncio.Future]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        if jobs is None:
            jobs = ()
        if isinstance(jobs, (Job, str)) or not isinstance(jobs, Iterable):
            example = getattr(jobs.fn, "__name__", "my_job") if isinstance(jobs, Job) else "my_job"
            raise ValidationError(f"jobs must be a list of jobs made with @job, e.g. jobs=[{example}]; got {jobs!r}")
        self.register(*jobs)

    # -- small helpers --------------------------------------------------------------------

    def _now(self) -> str:
        return iso(self._clock())

    @staticmethod
    def _iso(dt: datetime) -> str:
        return iso(dt)

    @staticmethod
    def _iso_after(dt: datetime, seconds: float) -> str:
        return iso(add_seconds(dt, seconds))

    @property
    def driver(self) -> Driver:
        return self._store.driver

    @property
    def jobs(self) -> dict[str, Job]:
        """The registered jobs by name (a copy)."""
        return dict(self._jobs)

    def _check_open(self) -> None:
        if self._closed:
            raise ConflictError("this Durably instance is closed; create a new one")

    # -- jobs -------------------------------------------------------------------------------

    def register(self, *jobs: Job) -> None:
        """Register jobs (made with ``@job``). Registering the same job twice is harmless;
        two different jobs with one name is an error."""
        for item in jobs:
            if not isinstance(item, Job):
                raise ValidationError(
                    f"register() takes jobs made with @job, got {item!r}; decorate the function with @job"
                )
            existing = self._jobs.get(item.name)
            if existing is not None and existing is not item and existing.fn is not item.fn:
                raise ValidationError(
                    f"two different jobs are named {item.name!r}; give one of them another name"
                )
            self._jobs[item.name] = item

    def _job_for_trigger(self, job: Job | str) -> tuple[str, Job | None]:
        if isinstance(job, Job):
            registered = self._jobs.get(job.name)
            if registered is None:
                self.register(job)
            return job.name, job
        name = check_name(job, "a job name")
        found = self._jobs.get(name)
        if found is None and self._jobs:
            raise NotFoundError(
                f"unknown job {name!r}; registered jobs: {', '.join(sorted(self._jobs))}"
            )
        # An instance with no jobs at all only triggers: the worker that runs the job
        # checks the input when it starts the run.
        return name, found

    # -- triggering -------------------------------------------------------------------------

    def trigger(
        self,
        job: Job | str,
        input: Any = None,
        *,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        coalesce: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> Run:
        """Create a pending run of ``job`` (a job or its name) and wake the worker.

        Returns the run with ``disposition``: ``"created"``; ``"idempotent"`` if a run of
        this job with this ``idempotency_key`` exists (nothing is emitted); ``"coalesced"``
        if ``coalesce="skip"`` and a run of this job with this ``concurrency_key`` is
        pending. Without ``coalesce``, that case raises ``ConflictError``. Invalid input
        raises ``ValidationError`` and creates nothing.
        """
        self._check_open()
        prepared = self._prepare(job, input, idempotency_key, concurrency_key, coalesce, labels)
        # Without keys or labels a trigger is one INSERT: no BEGIN and COMMIT around it.
        plain = idempotency_key is None and concurrency_key is None and not prepared["labels"]
        with self._store.transaction(several=not plain):
            run, disposition = self._store.insert_run(**prepared)
        self._after_trigger(run, disposition, input)
        if disposition == "created" and not self._jobs:
            self._warn_if_no_worker(run.job_name, [run.id])
        return run

    def trigger_many(
        self, job: Job | str, inputs: Sequence[Any], *, labels: dict[str, str] | None = None
    ) -> list[Run]:
        """Create one pending run per input, all in one transaction: all or nothing. At most
        ``limits.MAX_TRIGGER_MANY`` inputs per call."""
        self._check_open()
        if isinstance(inputs, (str, bytes, dict)) or not isinstance(inputs, Sequence):
            raise ValidationError("trigger_many() takes a list of inputs")
        if len(inputs) > MAX_TRIGGER_MANY:
            raise ValidationError(
                f"trigger_many() takes at most {MAX_TRIGGER_MANY:,} inputs (durably.limits.MAX_TRIGGER_MANY), "
                f"got {len(inputs):,}; call it once per batch"
            )
        self._job_for_trigger(job)  # a bad job is an error even with no inputs
        prepared = [self._prepare(job, item, None, None, None, labels) for item in inputs]
        results = []
        with self._store.transaction():
            for args in prepared:
                results.append(self._store.insert_run(**args))
        for (run, disposition), item in zip(results, inputs):
            self._after_trigger(run, disposition, item)
        if results and not self._jobs:
            self._warn_if_no_worker(results[0][0].job_name, [run.id for run, _ in results])
        return [run for run, _ in results]

    def _prepare(
        self,
        job: Job | str,
        input: Any,
        idempotency_key: str | None,
        concurrency_key: str | None,
        coalesce: str | None,
        labels: dict[str, str] | None,
    ) -> dict[str, Any]:
        name, definition = self._job_for_trigger(job)
        if definition is not None:
            data = definition.input_schema.dump(input, f"the input of job {name!r}")
        else:
            data = input
        input_json = check_json(data, f"the input of job {name!r}", "MAX_INPUT_BYTES")
        if idempotency_key is not None:
            check_name(idempotency_key, "idempotency_key")
        if concurrency_key is not None:
            check_name(concurrency_key, "concurrency_key")
        if coalesce not in (None, "skip"):
            raise ValidationError(f"coalesce must be None or 'skip', got {coalesce!r}")
        if coalesce is not None and concurrency_key is None:
            raise ValidationError("coalesce='skip' needs a concurrency_key to coalesce on")
        return {
            "run_id": self._ids.new(),
            "job_name": name,
            "input_json": input_json,
            # Decoded here, before the write: the run a trigger returns is built from it,
            # and it is what JSON gives back (a tuple as a list), as get_run would return.
            "input_value": json.loads(input_json),
            "labels": check_labels(labels),
            "idempotency_key": idempotency_key,
            "concurrency_key": concurrency_key,
            "coalesce": coalesce,
            "now": self._now(),
        }

    def _warn_if_no_worker(self, job_name: str, run_ids: list[str]) -> None:
        """A trigger-only process accepts any job name: warn (``NoWorkerWarning``) when no
        worker that registers this job has had a heartbeat within JOB_SEEN_WINDOW, so a
        typo does not leave runs pending for ever in silence. The run stands either way."""
        seen = self._jobs_seen.get(job_name)
        if seen is not None and time.monotonic() - seen < WORKER_STALE_AFTER:
            return
        since = iso(add_seconds(self._clock(), -JOB_SEEN_WINDOW))
        try:
            jobs = self._store.jobs_seen_since(since)
        except StorageError:
            return  # the run is stored; a warning is not worth an error
        now = time.monotonic()
        for name in jobs:
            self._jobs_seen[name] = now
        if job_name not in jobs:
            runs = f"run {run_ids[0]}" if len(run_ids) == 1 else f"{len(run_ids)} runs"
            warnings.warn(NoWorkerWarning(
                f"no worker has registered job {job_name!r} in the last {JOB_SEEN_WINDOW / 60:g} minutes "
                f"(durably.limits.JOB_SEEN_WINDOW): {runs} will stay pending until one does. Check the "
                "job name; `durably status` lists the workers and their jobs"
            ), stacklevel=3)

    def _after_trigger(self, run: Run, disposition: str, input: Any) -> None:
        if disposition == "created":
            self._events.emit("run:trigger", run.id, run.job_name, run.labels, input=run.input)
            self._wake()
        elif disposition == "coalesced":
            self._events.emit("run:coalesced", run.id, run.job_name, run.labels, input=input)

    def _wake(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._runtime.wake()
        else:
            loop.call_soon_threadsafe(self._runtime.wake)

    # -- reading ----------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run | None:
        """The run with this id, or None."""
        self._check_open()
        return self._store.get_run(_check_id(run_id))

    def _require_run(self, run_id: str) -> Run:
        run = self.get_run(run_id)
        if run is None:
            raise NotFoundError(f"no run with id {run_id!r}")
        return run

    def get_runs(
        self,
        *,
        status: str | Sequence[str] | None = None,
        job_name: str | Sequence[str] | None = None,
        labels: dict[str, str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Run]:
        """Runs, newest first. ``status`` and ``job_name`` take a value or a list; ``labels``
        matches runs that carry all the given pairs."""
        self._check_open()
        statuses = _as_list(status, "status")
        for value in statuses or ():
            if value not in RUN_STATUSES:
                raise ValidationError(f"unknown status {value!r}; use one of {', '.join(RUN_STATUSES)}")
        job_names = _as_list(job_name, "job_name")
        for name in job_names or ():
            check_text(name, "a job name")
        if limit is not None:
            count_option("limit", limit, 0, MAX_PAGE, "MAX_PAGE")
        count_option("offset", offset, 0, MAX_OFFSET, "MAX_OFFSET")
        return self._store.get_runs(
            statuses=statuses, job_names=job_names, labels=check_labels(labels) if labels else None,
            limit=limit, offset=offset,
        )

    def get_steps(self, run_id: str) -> list[StepRecord]:
        """The run's stored steps in execution order. Raises NotFoundError for an unknown run."""
        self._require_run(run_id)
        return self._store.get_steps(run_id)

    def get_logs(
        self, run_id: str, *, after_id: int | None = None, limit: int | None = None, last: int | None = None
    ) -> list[LogRecord]:
        """The run's ``step.log`` lines in id order. Raises NotFoundError for an unknown run.

        ``after_id``: only lines with a larger id (page on with the last id you got);
        ``limit``: at most that many, from the start (after ``after_id``); ``last``: the
        last N lines, still in id order (not with ``after_id`` or ``limit``).

        Example::

            page = app.get_logs(run.id, limit=500)
            more = app.get_logs(run.id, after_id=page[-1].id, limit=500)
            tail = app.get_logs(run.id, last=100)
        """
        if after_id is not None:
            count_option("after_id", after_id, 0, MAX_OFFSET, "MAX_OFFSET")
        if limit is not None:
            count_option("limit", limit, 0, MAX_PAGE, "MAX_PAGE")
        if last is not None:
            count_option("last", last, 0, MAX_PAGE, "MAX_PAGE")
            if after_id is not None or limit is not None:
                raise ValidationError(
                    "last cannot be combined with after_id or limit: ask for the last N lines, "
                    "or page forward with after_id and limit"
                )
        self._require_run(run_id)
        return self._store.get_logs(run_id, after_id=after_id, limit=limit, last=last)

    # -- operations -------------------------------------------------------------------------

    def cancel(self, run_id: str) -> Run:
        """Cancel a pending or leased run at once. A step running in this process is
        interrupted at its next ``await`` and its result is never stored; a worker in
        another process notices at its next step boundary or lease renewal."""
        self._check_open()
        before = self._store.cancel(_check_id(run_id), self._now)
        ctx = self._runtime.active.get(before.id)
        if ctx is not None:
            loop = self._loop
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if loop is not None and running is not loop:
                loop.call_soon_threadsafe(self._runtime.interrupt, ctx, "user")
            else:
                self._runtime.interrupt(ctx, "user")
        self._events.emit("run:cancel", before.id, before.job_name, before.labels)
        self._notify_finished(before.id)
        return self._require_run(before.id)

    def retrigger(self, run_id: str) -> Run:
        """A new run of a finished run's job with the same input, labels and concurrency
        key (not its idempotency key)."""
        self._check_open()
        _check_id(run_id)
        with self._store.transaction():
            row = self._store.finished_row_for(run_id, "retrigger")
            old = self._store.get_run(run_id)
            assert old is not None and row is not None
            if old.decode_error is not None:
                raise ConflictError(
                    f"run {run_id} cannot be retriggered: {old.decode_error}; trigger a new run instead"
                )
            run, disposition = self._store.insert_run(
                run_id=self._ids.new(),
                job_name=old.job_name,
                input_json=check_json(old.input, "the input", "MAX_INPUT_BYTES"),
                input_value=old.input,
                labels=old.labels,
                idempotency_key=None,
                concurrency_key=old.concurrency_key,
                coalesce=None,
                now=self._now(),
                retrigger_of=old.id,
            )
        self._after_trigger(run, disposition, old.input)
        if not self._jobs:
            self._warn_if_no_worker(run.job_name, [run.id])
        return run

    def delete_run(self, run_id: str) -> None:
        """Delete a finished run with its steps and logs. A run cancelled while a worker
        executed it is refused (``ConflictError``) until that worker has stopped it, or its
        lease has expired: its step may still be running, and its concurrency key is held."""
        self._check_open()
        run = self._store.delete_run(_check_id(run_id), self._now())
        self._events.emit("run:delete", run.id, run.job_name, run.labels)
        self._notify_finished(run.id)

    def purge_runs(self, older_than: timedelta | datetime, limit: int = 500) -> int:
        """Delete up to ``limit`` finished runs whose ``completed_at`` is older than
        ``older_than`` (an age as a ``timedelta``, or a cut-off ``datetime``). Returns how
        many were deleted; call again while it returns ``limit``. A cancelled run whose
        worker has not stopped it yet is skipped (see ``delete_run``)."""
        self._check_open()
        if isinstance(older_than, timedelta):
            if older_than < timedelta(0):
                raise ValidationError(f"older_than must not be negative, got {older_than}")
            if older_than.total_seconds() > MAX_RETENTION:
                raise ValidationError(
                    f"older_than is an age of at most {int(MAX_RETENTION // 86400)} days "
                    f"(durably.limits.MAX_RETENTION), got {older_than}"
                )
            try:
                cutoff = self._clock() - older_than
            except OverflowError:  # an age reaching back before year 1 (a clock set oddly)
                raise ValidationError(
                    f"older_than reaches back before the year 1: {older_than} before {self._clock()}"
                ) from None
        elif isinstance(older_than, datetime):
            if older_than.tzinfo is None:
                raise ValidationError("older_than must be timezone-aware (e.g. datetime.now(timezone.utc))")
            cutoff = older_than
        else:
            raise ValidationError(f"older_than must be a timedelta or a datetime, got {older_than!r}")
        count_option("limit", limit, 1, MAX_PURGE_LIMIT, "MAX_PURGE_LIMIT")
        try:
            cutoff_text = iso(cutoff)
        except OverflowError:  # a date at the very edge of the calendar, in another time zone
            raise ValidationError(f"older_than is out of range: {older_than!r}") from None
        runs = self._store.purge(cutoff=cutoff_text, limit=limit, now=self._now())
        for run in runs:
            self._events.emit("run:delete", run.id, run.job_name, run.labels)
        return len(runs)

    def status(self) -> Status:
        """The live workers with their jobs, the runs by status, and ``unhandled``: the
        pending runs of each job that no live worker registers (by job name). A worker
        records itself when started (``start()``, ``serve()``, ``durably worker``, the
        browser), heartbeats every ``limits.HEARTBEAT_INTERVAL`` seconds, and counts as
        dead once its heartbeat is older than ``limits.WORKER_STALE_AFTER``.

        Example::

            status = app.status()
            if not status.healthy:
                print("no worker for", ", ".join(status.unhandled))
        """
        self._check_open()
        now = self._clock()
        stale_before = add_seconds(now, -WORKER_STALE_AFTER)
        workers = self._store.workers()
        by_status, pending = self._store.run_counts()
        live = [w for w in workers if w.heartbeat_at is not None and w.heartbeat_at >= stale_before]
        stale = [w for w in workers if w not in live]
        handled = {name for w in live for name in w.jobs}
        return Status(
            workers=live,
            stale_workers=stale,
            runs={status: by_status.get(status, 0) for status in RUN_STATUSES},
            unhandled={name: count for name, count in sorted(pending.items()) if name not in handled},
            checked_at=now,
        )

    def on(self, event_type: str, handler: Callable[[Event], Any]) -> Callable[[], None]:
        """Call ``handler(event)`` for each event of ``event_type`` (or ``"*"`` for all).
        Returns a function that unsubscribes it."""
        return self._events.on(event_type, handler)

    # -- running ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker loop in the running event loop. Safe to call twice."""
        self._check_open()
        if self._runtime.running:
            return
        self._loop = asyncio.get_running_loop()
        self._store.migrate()
        await self._runtime.start()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop the worker: no new run starts; each run in flight finishes its current step
        and hands its lease back (it is pending again and resumes at once elsewhere). Past
        ``timeout`` seconds the steps still running are cancelled and their leases handed
        back. The instance stays usable and can be started again."""
        await self._runtime.stop(check_timeout(timeout, zero=True))

    @property
    def running(self) -> bool:
        return self._runtime.running

    async def serve(self, *, on_signal: Callable[[str], Any] | None = None, stop_timeout: float | None = None) -> None:
        """Start, run until SIGINT or SIGTERM, then stop gracefully. A second signal stops
        at once (the steps in flight are cancelled and their leases handed back). Also
        returns once the worker is stopped otherwise (``stop()`` from the program: the
        only way where there are no signals, in a thread or in Pyodide)."""
        check_timeout(stop_timeout, "stop_timeout", zero=True)
        await self.start()
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        signals_seen: list[str] = []

        def handle(signame: str) -> None:
            signals_seen.append(signame)
            if on_signal is not None:
                on_signal(signame)
            if len(signals_seen) == 1:
                stop_requested.set()
            else:
                for ctx in list(self._runtime.active.values()):
                    self._runtime.interrupt(ctx, "stop")

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, handle, sig.name)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # no signals here (e.g. Pyodide)
                pass
        signalled = asyncio.ensure_future(stop_requested.wait())
        stopped = asyncio.ensure_future(self._runtime.wait_stopped())
        try:
            await asyncio.wait({signalled, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if stop_requested.is_set():
                await self.stop(stop_timeout)
        finally:
            signalled.cancel()
            stopped.cancel()
            for sig in installed:
                loop.remove_signal_handler(sig)

    async def process_one(self) -> bool:
        """Claim one run and execute it now, without a worker loop. Returns False if there
        was nothing to claim."""
        self._check_open()
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return await self._runtime.process_one()

    async def process_until_idle(self, max_runs: int | None = None) -> int:
        """Claim and execute runs one after another until none is left (or ``max_runs``).
        Returns how many runs were executed."""
        if max_runs is not None:
            count_option("max_runs", max_runs, 0, MAX_OFFSET, "MAX_OFFSET")
        count = 0
        while max_runs is None or count < max_runs:
            if not await self.process_one():
                break
            count += 1
        return count

    # -- waiting ----------------------------------------------------------------------------

    def _notify_finished(self, run_id: str) -> None:
        for fut in self._waiters.pop(run_id, ()):
            if fut.done():
                continue
            loop = fut.get_loop()
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                fut.set_result(None)
            else:
                loop.call_soon_threadsafe(lambda f=fut: f.done() or f.set_result(None))

    async def wait_for_run(self, run_id: str, timeout: float | None = None) -> Run:
        """Wait until the run finishes and return it if it completed. Raises
        ``CancelledError`` if it was cancelled, ``RunFailedError`` (with the run's error)
        if it failed, ``TimeoutError`` past ``timeout`` seconds, ``NotFoundError`` for an
        unknown (or deleted) run. Returns as soon as the run finishes in this process;
        runs finished by other processes are seen at the next poll."""
        loop = asyncio.get_running_loop()
        check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self._run_outcome(run_id, timeout)
            if run.status == "completed":
                return run
            wait = self.polling_interval
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"run {run_id} is still {run.status} after {timeout} s; "
                        "is a worker running for job " + repr(run.job_name) + "?"
                    )
                wait = min(wait, remaining)
            fut = loop.create_future()
            self._waiters.setdefault(run_id, set()).add(fut)
            try:
                await asyncio.wait_for(fut, wait)
            except (asyncio.TimeoutError, TimeoutError):
                pass
            finally:
                waiters = self._waiters.get(run_id)
                if waiters is not None:
                    waiters.discard(fut)
                    if not waiters:
                        self._waiters.pop(run_id, None)

    def _run_outcome(self, run_id: str, timeout: float | None = None) -> Run:
        """The run as ``wait_for_run`` sees it now: returned if completed, pending or
        leased (the caller waits on for those), ``RunFailedError`` or ``CancelledError``
        raised if it failed or was cancelled. Checks the arguments as ``wait_for_run``."""
        self._check_open()
        _check_id(run_id)
        check_timeout(timeout)
        run = self._store.get_run(run_id)
        if run is None:
            raise NotFoundError(f"no run with id {run_id!r} (it may have been deleted)")
        if run.status == "failed":
            raise RunFailedError(
                f"run {run.id} of job {run.job_name!r} failed"
                + (f" at step {run.failed_step!r}" if run.failed_step else "")
                + f": {run.error}",
                run_id=run.id, error=run.error, failed_step=run.failed_step,
            )
        if run.status == "cancelled":
            raise CancelledError(f"run {run.id} of job {run.job_name!r} was cancelled", run_id=run.id)
        return run

    async def trigger_and_wait(self, job: Job | str, input: Any = None, *, timeout: float | None = None, **trigger_options: Any) -> Run:
        """``trigger`` then ``wait_for_run``. A bad ``timeout`` is refused before the trigger."""
        check_timeout(timeout)
        run = self.trigger(job, input, **trigger_options)
        return await self.wait_for_run(run.id, timeout=timeout)

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database. Stop the worker first (``await app.stop()``)."""
        if self._closed:
            return
        if self._runtime.running:
            raise ConflictError("the worker is still running; await app.stop() before close()")
        self._closed = True
        self._store.close()

    async def __aenter__(self) -> "Durably":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()
        self.close()


def _check_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not run_id:
        raise ValidationError(f"a run id must be a non-empty string, got {run_id!r}")
    if len(run_id) > MAX_NAME_LENGTH:
        raise ValidationError(
            f"a run id is at most {MAX_NAME_LENGTH} characters (durably.limits.MAX_NAME_LENGTH), "
            f"got one of {len(run_id)}"
        )
    return check_text(run_id, "the run id")


def _as_list(value: Any, what: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        if len(value) > MAX_FILTER_VALUES:
            raise ValidationError(
                f"{what} takes at most {MAX_FILTER_VALUES} values (durably.limits.MAX_FILTER_VALUES), got {len(value)}"
            )
        return list(value)
    raise ValidationError(f"{what} must be a string or a list of strings, got {value!r}")


def check_labels(labels: Any) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise ValidationError(f"labels must be a dict of strings to strings, got {type(labels).__name__}")
    if len(labels) > MAX_LABELS:
        raise ValidationError(
            f"a run may carry at most {MAX_LABELS} labels (durably.limits.MAX_LABELS), got {len(labels)}"
        )
    for key, value in labels.items():
        check_name(key, "a label key")
        if not isinstance(value, str):
            raise ValidationError(f"label {key!r} must have a string value, got {type(value).__name__}")
        if len(value) > MAX_LABEL_VALUE:
            raise ValidationError(
                f"label {key!r} is {len(value)} characters long; the limit is {MAX_LABEL_VALUE} "
                "(durably.limits.MAX_LABEL_VALUE)"
            )
        check_text(value, f"the value of label {key!r}")
    return dict(labels)
