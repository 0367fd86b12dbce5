"""``Durably``: the public API. Triggering and reading are synchronous (they only touch the
database); running, stopping and waiting are ``async``.

``Durably`` checks every argument (``durably.validation``, ``durably.settings``), then hands
the work to its collaborators: the store (all SQL), the event bus, the runtime kernel (claim
and execute runs) and the worker loop. It builds them and owns them; none of them reaches
back into it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar, overload

from .clock import Clock, UlidFactory, add_seconds, iso, system_clock
from .copying import CopyResult, copy_database
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
from .jobs import Job, JobRegistry
from .jsondata import check_json
from .limits import JOB_SEEN_WINDOW, MAX_OFFSET, MAX_PAGE, MAX_PURGE_LIMIT, MAX_TRIGGER_MANY, WORKER_STALE_AFTER
from .models import RUN_STATUSES, LogRecord, Run, ScheduleRecord, SignalRecord, Status, StepRecord
from .runtime import Runtime, call_in
from .settings import Settings
from .store import NewRun, Store
from .validation import (
    as_list,
    check_id,
    check_labels,
    check_name,
    check_text,
    check_timeout,
    count_option,
    purge_cutoff,
)
from .worker import Worker

T = TypeVar("T")


class _Setting(Generic[T]):
    """A ``Durably`` attribute that reads the setting of the same name (``app.settings``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, app: None, owner: type) -> _Setting[T]: ...
    @overload
    def __get__(self, app: Durably, owner: type | None = None) -> T: ...
    def __get__(self, app: Durably | None, owner: type | None = None) -> T | _Setting[T]:
        if app is None:  # looked up on the class (help(), documentation tools)
            return self
        value: T = getattr(app.settings, self.name)
        return value


class Durably:
    """A durable job runtime on one database: an SQLite file, or PostgreSQL.

    Example::

        app = Durably("jobs.db", jobs=[sync_users])
        await app.start()
        run = app.trigger("sync-users", {"org": "a"})
        await app.wait_for_run(run.id, timeout=10)
        await app.stop()

    ``db`` is a path, ``":memory:"``, a ``postgresql://USER:PASSWORD@HOST:PORT/DBNAME`` URL
    (``pip install 'durably[postgres]'``; docs/postgres.md), or a driver object (see
    ``durably.driver``). The first
    database call creates or upgrades the schema, so a process that only triggers never
    needs ``start()``. The options and their defaults are ``durably.settings.Settings``'s.
    ``worker_host`` is the ``(host, pid)`` a started worker records in the registry
    (``status()``); by default this machine's name and this process's id.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | Driver,
        *,
        jobs: Iterable[Job] = (),
        polling_interval: float = Settings.polling_interval,
        lease_duration: float = Settings.lease_duration,
        lease_renew_interval: float = Settings.lease_renew_interval,
        max_concurrent_runs: int = Settings.max_concurrent_runs,
        preserve_steps: bool = Settings.preserve_steps,
        retain_runs: str | None = None,
        clock: Clock | None = None,
        worker_id: str | None = None,
        worker_host: tuple[str, int | None] | None = None,
    ) -> None:
        self.settings = Settings.check(
            polling_interval=polling_interval,
            lease_duration=lease_duration,
            lease_renew_interval=lease_renew_interval,
            max_concurrent_runs=max_concurrent_runs,
            preserve_steps=preserve_steps,
            retain_runs=retain_runs,
        )
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
        # Job name -> when (monotonic) a live worker was last seen registering it, so that a
        # trigger-only process does not ask the registry on every trigger.
        self._jobs_seen: dict[str, float] = {}
        self._store = Store(_driver_for(db, self.settings))
        self._ids = UlidFactory()
        self._events = EventBus(self._clock)
        self._jobs = JobRegistry()
        self._waiters = _Waiters()
        self._runtime = Runtime(
            store=self._store,
            events=self._events,
            jobs=self._jobs,
            clock=self._clock,
            settings=self.settings,
            worker_id=self.worker_id,
            on_finished=self._run_ended,
        )
        self._worker = Worker(self._runtime, host=worker_host, new_id=self._ids.new)
        self._closed = False
        if jobs is None:
            jobs = ()
        if isinstance(jobs, (Job, str)) or not isinstance(jobs, Iterable):
            example = getattr(jobs.fn, "__name__", "my_job") if isinstance(jobs, Job) else "my_job"
            raise ValidationError(f"jobs must be a list of jobs made with @job, e.g. jobs=[{example}]; got {jobs!r}")
        self._jobs.register(*jobs)

    # -- the settings, as attributes (read-only) ----------------------------------------------

    polling_interval = _Setting[float]()
    lease_duration = _Setting[float]()
    lease_renew_interval = _Setting[float]()
    max_concurrent_runs = _Setting[int]()
    preserve_steps = _Setting[bool]()
    retain_runs = _Setting["timedelta | None"]()

    @property
    def driver(self) -> Driver:
        """The database connection (``execute(sql, params)``)."""
        return self._store.driver

    @property
    def jobs(self) -> dict[str, Job]:
        """The registered jobs by name (a copy)."""
        return self._jobs.as_dict()

    def _check_open(self) -> None:
        if self._closed:
            raise ConflictError("this Durably instance is closed; create a new one")

    def _now(self) -> str:
        return iso(self._clock())

    # -- the database ---------------------------------------------------------------------

    def migrate(self) -> int:
        """Create or upgrade the schema now and return its version (the first database call
        does it anyway). A database written by a newer durably raises ``SchemaError`` and is
        left untouched: a host calls this first to fail before it announces itself ready."""
        self._check_open()
        return self._store.migrate()

    def schema_version(self) -> int:
        """The database's schema version, 0 for a database without durably's tables. Reads
        only: unlike every other call it never creates or upgrades the schema."""
        self._check_open()
        return self._store.schema_version()

    def reclaim_all_leases(self) -> int:
        """Hand back every lease in the database, so the runs they held resume at once, and
        forget every other worker in the registry; returns how many leases were handed back.

        Only for a host that knows no other worker can be running on this database: the
        browser, whose worker holds the database's Web Lock. There, a leased run is one a
        closed or reloaded tab left behind."""
        self._check_open()
        reclaimed = self._store.reclaim_all_leases(self._now())
        self._store.forget_other_workers(self.worker_id)
        return reclaimed

    def copy_to(self, target: Durably, *, replace: bool = False) -> CopyResult:
        """Copy every run of this database, with its steps, labels and log lines, into
        ``target``'s (any engine to any engine: ``durably copy``). The copy is a snapshot:
        runs leased here are pending there (their leases handed back), ids and timestamps
        are unchanged, and the target is written in one transaction. A target that holds
        runs is refused (``ConflictError``) unless ``replace=True``, which deletes them first.

        Example::

            with_sqlite = Durably("jobs.db")
            with_sqlite.copy_to(Durably("postgresql://app:secret@db/jobs"))
        """
        self._check_open()
        target._check_open()
        if target is self or target._store.driver is self._store.driver:
            raise ValidationError("copy_to() needs another database than this one as its target")
        return copy_database(self._store, target._store, replace=replace)

    # -- requests answered once ------------------------------------------------------------

    def answer_once(self, request_id: str, method: str, answer: Callable[[], str]) -> str:
        """Answer a request at most once per ``request_id``: ``answer()`` (a call that
        changes runs, returning its reply as text) runs in one transaction with the record
        of that reply, and a repeat of the id returns the recorded reply without running
        anything; a failure records nothing. The browser host uses it for the calls a tab
        sends again after the tab that runs the jobs went away before replying::

            reply = app.answer_once("tab-1:7", "trigger", lambda: json.dumps(app.trigger("a").to_dict()))
        """
        self._check_open()
        with self._store.transaction():
            reply = self._store.request_reply(request_id)
            if reply is not None:
                return reply
            reply = answer()
            self._store.record_request(request_id, method, reply, self._now())
        return reply

    def forget_answers(self, older_than: timedelta) -> int:
        """Delete the replies ``answer_once`` recorded more than ``older_than`` ago; returns
        how many."""
        self._check_open()
        return self._store.prune_requests(iso(self._clock() - older_than))

    # -- jobs -------------------------------------------------------------------------------

    def register(self, *jobs: Job) -> None:
        """Register jobs (made with ``@job``). Registering the same job twice is harmless;
        two different jobs with one name is an error. A started worker looks for their
        pending runs at once, not at its next poll."""
        self._jobs.register(*jobs)
        self._worker.wake_from_anywhere()

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
        new = self._new_run(job, input, idempotency_key, concurrency_key, coalesce, labels)
        # Without keys or labels a trigger is one INSERT: no BEGIN and COMMIT around it.
        plain = idempotency_key is None and concurrency_key is None and not new.labels
        with self._store.transaction(several=not plain):
            run, disposition = self._store.insert_run(new)
        self._after_trigger(run, disposition, input)
        if disposition == "created" and not self._jobs:
            self._warn_if_no_worker(run.job_name, [run.id])
        return run

    def trigger_many(self, job: Job | str, inputs: Sequence[Any], *, labels: dict[str, str] | None = None) -> list[Run]:
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
        self._jobs.for_trigger(job)  # a bad job is an error even with no inputs
        news = [self._new_run(job, item, None, None, None, labels) for item in inputs]
        with self._store.transaction():
            results = [self._store.insert_run(new) for new in news]
        for (run, disposition), item in zip(results, inputs, strict=True):
            self._after_trigger(run, disposition, item)
        if results and not self._jobs:
            self._warn_if_no_worker(results[0][0].job_name, [run.id for run, _ in results])
        return [run for run, _ in results]

    def _new_run(
        self,
        job: Job | str,
        input: Any,
        idempotency_key: str | None,
        concurrency_key: str | None,
        coalesce: str | None,
        labels: dict[str, str] | None,
    ) -> NewRun:
        name, definition = self._jobs.for_trigger(job)
        data = definition.input_schema.dump(input, f"the input of job {name!r}") if definition else input
        input_json = check_json(data, f"the input of job {name!r}", "MAX_INPUT_BYTES")
        if idempotency_key is not None:
            check_name(idempotency_key, "idempotency_key")
        if concurrency_key is not None:
            check_name(concurrency_key, "concurrency_key")
        if coalesce not in (None, "skip"):
            raise ValidationError(f"coalesce must be None or 'skip', got {coalesce!r}")
        if coalesce is not None and concurrency_key is None:
            raise ValidationError("coalesce='skip' needs a concurrency_key to coalesce on")
        return NewRun(
            run_id=self._ids.new(),
            job_name=name,
            input_json=input_json,
            # Decoded here, before the write: the run a trigger returns is built from it,
            # and it is what JSON gives back (a tuple as a list), as get_run would return.
            input_value=json.loads(input_json),
            labels=check_labels(labels),
            idempotency_key=idempotency_key,
            concurrency_key=concurrency_key,
            coalesce=coalesce,
            now=self._now(),
        )

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
            warnings.warn(
                NoWorkerWarning(
                    f"no worker has registered job {job_name!r} in the last {JOB_SEEN_WINDOW / 60:g} minutes "
                    f"(durably.limits.JOB_SEEN_WINDOW): {runs} will stay pending until one does. Check the "
                    "job name; `durably status` lists the workers and their jobs"
                ),
                stacklevel=3,
            )

    def _after_trigger(self, run: Run, disposition: str, input: Any) -> None:
        if disposition == "created":
            self._events.emit("run:trigger", run.id, run.job_name, run.labels, input=run.input)
            self._worker.wake_from_anywhere()
        elif disposition == "coalesced":
            self._events.emit("run:coalesced", run.id, run.job_name, run.labels, input=input)

    # -- reading ----------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run | None:
        """The run with this id, or None."""
        self._check_open()
        return self._store.get_run(check_id(run_id))

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
        statuses = as_list(status, "status")
        for value in statuses or ():
            if value not in RUN_STATUSES:
                raise ValidationError(f"unknown status {value!r}; use one of {', '.join(RUN_STATUSES)}")
        job_names = as_list(job_name, "job_name")
        for name in job_names or ():
            check_text(name, "a job name")
        if limit is not None:
            count_option("limit", limit, 0, MAX_PAGE, "MAX_PAGE")
        count_option("offset", offset, 0, MAX_OFFSET, "MAX_OFFSET")
        return self._store.get_runs(
            statuses=statuses,
            job_names=job_names,
            labels=check_labels(labels) if labels else None,
            limit=limit,
            offset=offset,
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

    def count_logs(self, run_id: str) -> int:
        """How many ``step.log`` lines the run has stored. Raises NotFoundError for an
        unknown run."""
        self._require_run(run_id)
        return self._store.count_logs(run_id)

    # -- operations -------------------------------------------------------------------------

    def cancel(self, run_id: str, *, reason: str | None = None) -> Run:
        """Cancel a pending, leased or waiting run at once. A step running in this process is
        interrupted at its next ``await`` and its result is never stored; a worker in
        another process notices at its next step boundary or lease renewal. ``reason``, when
        given, is stored as the run's ``error`` (the browser's move says where the run went)."""
        self._check_open()
        if reason is not None:
            check_text(reason, "a cancel reason")
        before = self._store.cancel(check_id(run_id), self._now, reason)
        self._runtime.interrupt_run(before.id, "user")
        self._events.emit("run:cancel", before.id, before.job_name, before.labels)
        self._waiters.notify(before.id)
        return self._require_run(before.id)

    def retrigger(self, run_id: str) -> Run:
        """A new run of a finished run's job with the same input, labels and concurrency
        key (not its idempotency key)."""
        self._check_open()
        check_id(run_id)
        with self._store.transaction():
            old = self._store.finished_run(run_id, "retrigger")
            if old.decode_error is not None:
                raise ConflictError(
                    f"run {run_id} cannot be retriggered: {old.decode_error}; trigger a new run instead"
                )
            run, disposition = self._store.insert_run(
                NewRun(
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
            )
        self._after_trigger(run, disposition, old.input)
        if not self._jobs:
            self._warn_if_no_worker(run.job_name, [run.id])
        return run

    def signal(self, run_id: str, name: str, payload: Any = None, signal_id: str | None = None) -> SignalRecord:
        """Send the signal ``name`` with ``payload`` (JSON data) to a run, from any process:
        the run's ``step.wait_for_signal(name)`` returns the payload. The first signal of a
        name wins: sent again with the same ``signal_id`` and payload it is returned as
        ``duplicate``, any other raises ``ConflictError``. A run waiting for it is due at
        once (``disposition`` ``"delivered"``; a worker in this process starts it now, one
        in another process at its next poll, or at once on PostgreSQL, whose ``NOTIFY``
        wakes it); otherwise the signal is kept until the run
        waits for it (``"stored"``). A finished run, or one whose wait for this name timed
        out, raises ``ConflictError``; an unknown run ``NotFoundError``. ``signal_id``
        defaults to a new id, returned in the record.

        Example::

            app.signal(run.id, "approval", {"approved": True}, signal_id="ticket-42")
        """
        self._check_open()
        check_id(run_id)
        check_name(name, "a signal name")
        if signal_id is None:
            signal_id = self._ids.new()
        else:
            check_name(signal_id, "signal_id")
        payload_json = check_json(payload, f"the payload of signal {name!r}", "MAX_SIGNAL_BYTES")
        record = self._store.signal(run_id, name, signal_id=signal_id, payload_json=payload_json, now=self._now())
        if record.disposition != "duplicate":
            run = self._store.get_run(run_id)
            if run is not None:
                self._events.emit(
                    "run:signal", run.id, run.job_name, run.labels, name=name, signal_id=signal_id,
                    disposition=record.disposition,
                )  # fmt: skip
        if record.disposition == "delivered":
            self._worker.wake_from_anywhere()
        return record

    def get_schedules(self) -> list[ScheduleRecord]:
        """The scheduled jobs as the workers registered them (``@job(schedule=...)``), with
        the last slot a run was created for and the next one."""
        self._check_open()
        return self._store.schedules()

    def delete_run(self, run_id: str) -> None:
        """Delete a finished run with its steps and logs. A run cancelled while a worker
        executed it is refused (``ConflictError``) until that worker has stopped it, or its
        lease has expired: its step may still be running, and its concurrency key is held."""
        self._check_open()
        run = self._store.delete_run(check_id(run_id), self._now())
        self._events.emit("run:delete", run.id, run.job_name, run.labels)
        self._waiters.notify(run.id)

    def purge_runs(self, older_than: timedelta | datetime, limit: int = 500) -> int:
        """Delete up to ``limit`` finished runs whose ``completed_at`` is older than
        ``older_than`` (an age as a ``timedelta``, or a cut-off ``datetime``). Returns how
        many were deleted; call again while it returns ``limit``. A cancelled run whose
        worker has not stopped it yet is skipped (see ``delete_run``)."""
        self._check_open()
        cutoff = purge_cutoff(older_than, self._clock())
        count_option("limit", limit, 1, MAX_PURGE_LIMIT, "MAX_PURGE_LIMIT")
        try:
            iso(cutoff)
        except OverflowError:  # a date at the very edge of the calendar, in another time zone
            raise ValidationError(f"older_than is out of range: {older_than!r}") from None
        return self._worker.purge(cutoff, limit)

    def status(self) -> Status:
        """The live workers with their jobs, the runs by status, and ``unhandled``: the
        runs due to be executed (pending, or waiting and due) of each job that no live
        worker registers (by job name). A worker
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
        counts = self._store.run_counts(iso(now))
        live = [w for w in workers if w.heartbeat_at is not None and w.heartbeat_at >= stale_before]
        stale = [w for w in workers if w not in live]
        handled = {name for w in live for name in w.jobs}
        return Status(
            workers=live,
            stale_workers=stale,
            runs={status: counts.by_status.get(status, 0) for status in RUN_STATUSES},
            unhandled={name: count for name, count in sorted(counts.pending_by_job.items()) if name not in handled},
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
        if self._worker.running:
            return
        self._store.migrate()
        await self._worker.start()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop the worker: no new run starts; each run in flight finishes its current step
        and hands its lease back (it is pending again and resumes at once elsewhere). Past
        ``timeout`` seconds the steps still running are cancelled and their leases handed
        back. The instance stays usable and can be started again."""
        await self._worker.stop(check_timeout(timeout, zero=True))

    @property
    def running(self) -> bool:
        return self._worker.running

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
                self._runtime.interrupt_all("stop")

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, handle, sig.name)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # no signals here (e.g. Pyodide)
                pass
        signalled = asyncio.ensure_future(stop_requested.wait())
        stopped = asyncio.ensure_future(self._worker.wait_stopped())
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
        """Create the runs of the registered jobs' due schedule slots, then claim one run and
        execute it now, without a worker loop. Returns False if there was nothing to claim.
        A run that waits (a retry, a sleep, a signal) counts as executed: it is claimed
        again once it is due."""
        self._check_open()
        self._worker.fire_schedules()
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

    def _run_ended(self, run_id: str) -> None:
        """The runtime stopped executing a run: tell its waiters, and free its slot."""
        self._waiters.notify(run_id)
        self._worker.wake()

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
            run = self._outcome(run_id, timeout)
            if run.status == "completed":
                return run
            wait = self.settings.polling_interval
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"run {run_id} is still {run.status} after {timeout} s; "
                        "is a worker running for job " + repr(run.job_name) + "?"
                    )
                wait = min(wait, remaining)
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.add(run_id, fut)
            try:
                await asyncio.wait_for(fut, wait)
            except TimeoutError:
                pass
            finally:
                self._waiters.discard(run_id, fut)

    def poll_run(self, run_id: str) -> Run | None:
        """One look at the run, as ``wait_for_run`` takes at each poll: the run if it
        completed, None while it is pending or leased; raises as ``wait_for_run`` does if
        it failed, was cancelled or is unknown. Never waits.

        Example::

            run = app.poll_run(run_id)
            if run is None:
                run = await app.wait_for_run(run_id, timeout=60)
        """
        run = self._outcome(run_id)
        return run if run.status == "completed" else None

    def _outcome(self, run_id: str, timeout: float | None = None) -> Run:
        """The run as ``wait_for_run`` sees it now: returned if completed, pending or
        leased, ``RunFailedError`` or ``CancelledError`` raised if it failed or was
        cancelled. Checks the arguments as ``wait_for_run``."""
        self._check_open()
        check_id(run_id)
        check_timeout(timeout)
        run = self._store.get_run(run_id)
        if run is None:
            raise NotFoundError(f"no run with id {run_id!r} (it may have been deleted)")
        if run.status == "failed":
            raise RunFailedError(
                f"run {run.id} of job {run.job_name!r} failed"
                + (f" at step {run.failed_step!r}" if run.failed_step else "")
                + f": {run.error}",
                run_id=run.id,
                error=run.error,
                failed_step=run.failed_step,
            )
        if run.status == "cancelled":
            raise CancelledError(f"run {run.id} of job {run.job_name!r} was cancelled", run_id=run.id)
        return run

    async def trigger_and_wait(
        self, job: Job | str, input: Any = None, *, timeout: float | None = None, **trigger_options: Any
    ) -> Run:
        """``trigger`` then ``wait_for_run``. A bad ``timeout`` is refused before the trigger."""
        check_timeout(timeout)
        run = self.trigger(job, input, **trigger_options)
        return await self.wait_for_run(run.id, timeout=timeout)

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database. Stop the worker first (``await app.stop()``)."""
        if self._closed:
            return
        if self._worker.running:
            raise ConflictError("the worker is still running; await app.stop() before close()")
        self._closed = True
        self._store.close()

    async def __aenter__(self) -> Durably:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        self.close()


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _driver_for(db: object, settings: Settings) -> Driver:
    if isinstance(db, (str, os.PathLike)):
        path = os.fspath(db)
        if not path:
            raise ValidationError(
                "db must be a file path, ':memory:', a postgresql:// URL or a driver object; got an empty path"
            )
        if isinstance(path, str) and _URL.match(path):
            # Imported only for a URL: the browser's build leaves PostgreSQL's modules out.
            from .pg_driver import PostgresDriver, is_postgres_url

            if not is_postgres_url(path):
                raise ValidationError(
                    f"db {path.split('://')[0]}://... is a URL durably cannot open: give a file path, ':memory:' "
                    "or a postgresql://USER:PASSWORD@HOST:PORT/DBNAME URL"
                )
            # A worker frozen inside a transaction (SIGSTOP, a suspended machine) loses it,
            # and its row locks, before its lease could expire.
            return PostgresDriver(path, idle_in_transaction_timeout=min(10.0, settings.lease_duration))
        return Sqlite3Driver(str(path))
    if isinstance(db, Driver):
        return db
    raise ValidationError(
        f"db must be a file path, ':memory:', a postgresql:// URL or a driver object with execute() and close(), "
        f"got {db!r}"
    )


class _Waiters:
    """The futures of ``wait_for_run`` calls, by run id: resolved as soon as the run
    finishes in this process (from any thread), so a waiter need not wait for its poll."""

    def __init__(self) -> None:
        self._by_run: dict[str, set[asyncio.Future[None]]] = {}

    def add(self, run_id: str, fut: asyncio.Future[None]) -> None:
        self._by_run.setdefault(run_id, set()).add(fut)

    def discard(self, run_id: str, fut: asyncio.Future[None]) -> None:
        waiters = self._by_run.get(run_id)
        if waiters is not None:
            waiters.discard(fut)
            if not waiters:
                self._by_run.pop(run_id, None)

    def notify(self, run_id: str) -> None:
        for fut in self._by_run.pop(run_id, ()):
            if not fut.done():
                call_in(fut.get_loop(), _resolve, fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
