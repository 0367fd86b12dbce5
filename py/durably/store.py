"""All of durably's SQL, one method per state transition.

Every write a worker makes is fenced: its ``WHERE`` names the run's ``status`` and the
``lease_generation`` the worker claimed, and the method reads the row count. A worker that
lost its lease (expired and taken over, or cancelled) changes nothing, and learns so from
the ``False`` it gets back. Nothing here reads a row and then writes it on the strength
of what it read outside a write transaction (``dialect.begin``).

The store is synchronous: SQLite's calls are synchronous in-process calls on both hosts.
A lock makes each method atomic with respect to other threads of the same process
(a CPython program may trigger from a thread while the worker loop runs).

Methods take and return records (the dataclasses and named tuples below, and those of
``durably.models``), never positional rows. Where engines need other SQL the store sends
``self.dialect``'s text (``durably.dialect``) and never asks which engine it has.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, NamedTuple

from .clock import parse_iso
from .dialect import NO_LIMIT, Dialect, for_driver
from .driver import Driver, Row
from .errors import ConflictError, NotFoundError, SchemaError, StorageError
from .jsondata import read_stored, to_json
from .models import (
    FINISHED,
    AttemptRecord,
    Disposition,
    LogRecord,
    Run,
    RunStatus,
    ScheduleRecord,
    SignalRecord,
    StepRecord,
    StepStatus,
    WorkerRecord,
)
from .rows import (
    ATTEMPT_COLUMNS,
    COMPLETED_STEPS_SQL,
    LOG_COLUMNS,
    RUN_COLUMNS,
    SCHEDULE_COLUMNS,
    SIGNAL_COLUMNS,
    STEP_COLUMNS,
    WORKER_COLUMNS,
    attempt_from_row,
    generation_of,
    log_from_row,
    run_from_row,
    schedule_from_row,
    signal_from_row,
    step_from_row,
    worker_from_row,
)

_FINISHED_SQL = "(" + ", ".join(f"'{status}'" for status in FINISHED) + ")"
# What a run leaves besides its row and labels: deleted with it, and when it finishes with
# preserve_steps=False.
_DETAIL_TABLES = ("durably_steps", "durably_logs", "durably_attempts", "durably_signals")

INSERT_RUN = (
    "INSERT INTO durably_runs (id, job_name, status, input, labels, idempotency_key, "
    "concurrency_key, retrigger_of, created_at, updated_at) "
    "VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)"
)
#: With an idempotency key: a concurrent trigger may have inserted the run since we looked
#: (on an engine where triggers run at the same time); no row back means "that one".
INSERT_RUN_IDEMPOTENT = (
    INSERT_RUN + " ON CONFLICT (job_name, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id"
)
#: A claim that met a concurrency key taken by another worker at the same moment tries again
#: this many more times before it gives up until the next poll.
CLAIM_RETRIES = 2
#: The payload of a wake-up for any job (a concurrency key became free).
ANY_JOB = "*"
#: Log lines written by one statement (6 parameters each; SQLite takes 32,766 at most).
LOG_BATCH = 100


#: What ``durably copy`` moves, table by table: ``(table, its columns, its key)``. Every
#: column of the latest schema (tests/core/test_copy.py holds this list to the schema on
#: both engines). Not copied: the worker registry, which describes the processes connected
#: to a database, not its data, and the record of answered requests (schema 4), which the
#: browser keeps for the seconds a hand-over between tabs takes. Schedules are copied with
#: their last and next slots, so a worker on the copy goes on from the same slot.
COPY_TABLES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    (
        "durably_runs",
        (
            "id", "job_name", "status", "input", "output", "error", "failed_step", "labels", "idempotency_key",
            "concurrency_key", "progress", "lease_owner", "lease_generation", "lease_expires_at",
            "completed_steps", "retrigger_of", "created_at", "started_at", "completed_at", "updated_at",
            "wake_at", "waiting_for", "wait_step", "attempt", "deadline_at",
        ),
        ("id",),
    ),
    ("durably_run_labels", ("run_id", "key", "value"), ("run_id", "key")),
    (
        "durably_steps",
        ("run_id", "idx", "name", "status", "output", "error", "started_at", "completed_at", "wake_at"),
        ("run_id", "idx"),
    ),
    ("durably_logs", ("id", "run_id", "step_name", "level", "message", "data", "created_at"), ("id",)),
    (
        "durably_attempts",
        ("id", "run_id", "run_attempt", "step_name", "step_index", "attempt", "error", "started_at", "finished_at"),
        ("id",),
    ),
    ("durably_signals", ("run_id", "name", "signal_id", "payload", "created_at"), ("run_id", "name")),
    (
        "durably_schedules",
        ("job_name", "cron", "timezone", "catch_up", "last_slot", "next_at", "updated_at"),
        ("job_name",),
    ),
)  # fmt: skip


@lru_cache(maxsize=LOG_BATCH)
def _insert_logs_sql(lines: int) -> str:
    return "INSERT INTO durably_logs (run_id, step_name, level, message, data, created_at) VALUES " + ", ".join(
        ["(?, ?, ?, ?, ?, ?)"] * lines
    )


# -- records the store takes and returns ------------------------------------------------------


@dataclass(frozen=True)
class NewRun:
    """A run to insert (``Store.insert_run``), its values checked and encoded.

    ``input_value`` is ``input_json`` decoded: the returned run is built from the values in
    hand, so nothing can fail once the row is written. ``coalesce`` is None or ``"skip"``."""

    run_id: str
    job_name: str
    input_json: str
    input_value: Any
    labels: dict[str, str]
    idempotency_key: str | None
    concurrency_key: str | None
    coalesce: str | None
    now: str
    retrigger_of: str | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """What fences a worker's writes to a run: the run and the generation it was claimed at.
    Every write a worker makes names it; one for a generation that is no longer the run's
    changes nothing."""

    run_id: str
    generation: int
    #: The run's concurrency key and job: a run handed back, or the end of a keyed run,
    #: wakes the workers that wait for them (``Store.listen``).
    concurrency_key: str | None = None
    job_name: str | None = None

    @property
    def wakes(self) -> str:
        """The wake-up payload when this run gives its slot back: its job, or any job when
        it also frees a concurrency key."""
        job = self.job_name
        return job if self.concurrency_key is None and isinstance(job, str) else ANY_JOB


@dataclass(frozen=True, slots=True)
class StoredStep:
    """A stored step as a resumed run reads it back: completed (its result), ``waiting`` (a
    sleep, a signal, a retry's backoff, due at ``wake_at``) or ``failed`` (a signal's
    timeout the job caught, with its ``error``)."""

    index: int
    output_json: str | None
    status: str = "completed"
    wake_at: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class WaitingStep:
    """The step a run waits at, stored as ``waiting`` until ``wake_at`` (None: until a
    signal comes)."""

    index: int
    name: str
    started_at: str
    wake_at: str | None


@dataclass(frozen=True, slots=True)
class NewAttempt:
    """A failed attempt to record (``Store.record_attempt``); ``step_name`` is None when the
    job raised between steps."""

    run_attempt: int
    attempt: int
    step_name: str | None
    step_index: int | None
    error: str
    started_at: str
    finished_at: str


@dataclass(frozen=True, slots=True)
class SignalWait:
    """What ``Store.await_signal`` found: ``"received"`` (``payload_json`` is the signal's
    payload, now the step's result), ``"timeout"`` (the deadline passed: the step is stored
    as failed with ``error``), ``"waiting"`` (the run waits now) or ``"lost"`` (the lease is
    no longer ours: nothing was written)."""

    outcome: str
    payload_json: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A scheduled job as a worker registers it; ``next_at`` is its next slot after now (UTC),
    used when the job has no row yet or its expression or time zone changed."""

    job_name: str
    cron: str
    timezone: str
    catch_up: str
    next_at: str


@dataclass(frozen=True)
class Claimed:
    """A run this worker now holds, with the steps it already completed."""

    run: Run
    generation: int
    done: dict[str, StoredStep]  # step name -> the stored step
    next_index: int

    @property
    def lease(self) -> Lease:
        run = self.run
        return Lease(run.id, self.generation, run.concurrency_key, run.job_name)


class RunState(NamedTuple):
    """A run's status and the lease generation it was last claimed at."""

    status: RunStatus
    generation: int


@dataclass(frozen=True, slots=True)
class StepEnd:
    """The step that ended a run (failed, or cancelled while it ran), stored with the end."""

    index: int
    name: str
    status: StepStatus
    error: str | None
    started_at: str


class LogLine(NamedTuple):
    """A ``step.log`` line waiting to be stored."""

    step_name: str | None
    level: str
    message: str
    data_json: str | None
    created_at: str


class RunCounts(NamedTuple):
    """Runs by status, and runs due to be executed (pending, or waiting and due) by job name."""

    by_status: dict[str, int]
    pending_by_job: dict[str, int]


@dataclass
class PendingWrites:
    """Progress and log lines waiting to ride along with the run's next commit.

    The store writes them but does not clear them: the caller clears them once the
    commit succeeded, so a failed commit loses nothing."""

    progress: str | None = None
    logs: list[LogLine] | None = None

    def empty(self) -> bool:
        return self.progress is None and not self.logs

    def clear(self) -> None:
        """Call once the commit that carried them succeeded."""
        self.progress = None
        self.logs = None


class Store:
    """The database: ``driver`` runs the SQL, ``dialect`` holds the text that differs
    (by default the one ``durably.dialect.for_driver`` picks for the driver)."""

    def __init__(self, driver: Driver, dialect: Dialect | None = None) -> None:
        self.driver = driver
        self.dialect = dialect if dialect is not None else for_driver(driver)
        self._lock = threading.RLock()
        self._migrated = False
        # Wake-ups to send before the open transaction commits (None: no transaction open).
        self._wakes: set[str] | None = None
        self._in_write = False  # inside a _write(): a nested one joins it

    # -- plumbing -----------------------------------------------------------------------

    def _x(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[Row], int]:
        return self.driver.execute(sql, params)

    @contextmanager
    def _write(self, several: bool = True) -> Iterator[None]:
        """One write transaction (``dialect.begin``): the write lock is taken up front, so
        two processes never both read a state and then both act on it.

        With ``several=False`` the caller sends a single statement, which the database runs
        as its own transaction: just as atomic, it takes the write lock at its start (and
        waits while another process holds it), and it costs one call instead of three,
        which matters most in the browser, where each call crosses the JS bridge.

        Inside another ``_write`` (of this store, on this thread: the lock is held) it joins
        that transaction: its statements commit or roll back with the outer ones."""
        with self._lock:
            if not self._migrated:
                self.migrate()
            if not several or self._in_write:
                yield
                return
            self._in_write = True
            try:
                with self._transaction():
                    yield
            finally:
                self._in_write = False

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._x(self.dialect.begin)
        self._wakes = set()
        try:
            yield
            wake = self.dialect.wake
            if wake is not None:
                for payload in sorted(self._wakes):  # delivered when the transaction commits
                    self._x(wake, (payload,))
            # A failed COMMIT can leave the transaction open (SQLITE_BUSY always does;
            # SQLITE_IOERR and SQLITE_FULL may): roll it back like any other failure, or
            # the connection keeps the write lock and every later BEGIN fails.
            self._x("COMMIT")
        except BaseException:
            try:
                self._x("ROLLBACK")
            except StorageError:
                pass  # the failed statement may already have rolled it back
            raise
        finally:
            self._wakes = None

    def _wake(self, payload: str) -> None:
        """Tell the workers that listen (``listen``) a run of job ``payload`` (``ANY_JOB``:
        of any job) became claimable: with the open transaction's commit, or now after a
        lone statement. Nothing on an engine where nobody listens."""
        if self.dialect.wake is None:
            return
        if self._wakes is not None:
            self._wakes.add(payload)
        else:
            self._x(self.dialect.wake, (payload,))

    def listen(self, callback: Callable[[str | None], Any]) -> Any:
        """Call ``callback(job_name)`` (from another thread) when another process makes a run
        claimable: ``"*"`` for any job, None after the listener (re)connected and may have
        missed some. Returns an object to ``close()``, or None where the engine sends no
        wake-ups (SQLite: the worker polls)."""
        channel = self.dialect.wake_channel
        listen = getattr(self.driver, "listen", None)
        if channel is None or listen is None:
            return None
        return listen(channel, callback)

    @contextmanager
    def _read(self) -> Iterator[None]:
        with self._lock:
            if not self._migrated:
                self.migrate()
            yield

    @contextmanager
    def transaction(self, several: bool = True) -> Iterator[None]:
        """A write transaction for callers that group several store calls (trigger_many).
        ``several=False``: the caller's calls send one statement only (see ``_write``).
        Nested in another transaction of this store, it joins that one."""
        with self._write(several):
            yield

    # -- the schema -------------------------------------------------------------------------

    def migrate(self) -> int:
        """Create or upgrade the schema; return its version. A database written by a newer
        durably is refused with ``SchemaError`` and left untouched."""
        dialect = self.dialect
        latest = dialect.latest_version
        with self._lock:
            if self._migrated:
                return latest
            version = self._schema_version()
            if version > latest:
                raise SchemaError(
                    f"this database was written by a newer durably (schema version {version}; "
                    f"this durably knows up to {latest}). Upgrade durably to open it; "
                    "the database was not modified."
                )
            if version < latest:
                if version and dialect.tables_elsewhere is not None:
                    rows, _ = self._x(dialect.tables_elsewhere)
                    if rows:
                        found, first = rows[0]
                        raise SchemaError(
                            f"durably's tables (schema version {version}) are in schema {found!r}, but "
                            f"new tables would be created in {first!r}, the first schema of search_path, "
                            f"apart from the runs. Put {found!r} first in search_path (in the URL: "
                            f"?options=-csearch_path%3D{found}); the database was not modified."
                        )
                with self._transaction():
                    if dialect.migration_settings is not None:
                        self._x(dialect.migration_settings)
                    if dialect.migration_lock is not None:
                        self._x(dialect.migration_lock)
                    self._x(dialect.create_migrations_table)
                    # Another process may have migrated while we waited for the lock.
                    rows, _ = self._x("SELECT COALESCE(MAX(version), 0) FROM durably_migrations")
                    current = rows[0][0]
                    for number, statements in dialect.migrations:
                        if number <= current:
                            continue
                        for sql in statements:
                            self._x(sql)
                        self._x(dialect.record_migration, (number,))
            self._migrated = True
            return latest

    def _schema_version(self) -> int:
        rows, _ = self._x(self.dialect.has_migrations_table)
        if not rows[0][0]:
            return 0
        rows, _ = self._x("SELECT COALESCE(MAX(version), 0) FROM durably_migrations")
        return int(rows[0][0])

    def schema_version(self) -> int:
        """The database's schema version; 0 when it has no durably tables. Reads only."""
        with self._lock:
            return self._schema_version()

    # -- triggering -----------------------------------------------------------------------

    def insert_run(self, new: NewRun) -> tuple[Run, Disposition]:
        """Insert a pending run, or return the run that the keys say it is.

        Returns ``(run, disposition)``: ``"created"``, ``"idempotent"`` (same job and
        idempotency key) or ``"coalesced"`` (a pending run of the same job and concurrency
        key exists and ``coalesce == "skip"``). Raises ``ConflictError`` when such a
        pending run exists and ``coalesce`` is None. Call inside ``transaction()``; without
        keys and labels it sends one statement, so ``transaction(several=False)`` will do.
        """
        if new.idempotency_key is not None:
            rows, _ = self._x(
                f"SELECT {RUN_COLUMNS} FROM durably_runs WHERE job_name = ? AND idempotency_key = ?",
                (new.job_name, new.idempotency_key),
            )
            if rows:
                return run_from_row(rows[0], "idempotent"), "idempotent"
        if new.concurrency_key is not None:
            if self.dialect.trigger_key_lock is not None:
                # Two triggers of this job and key take turns here, so the second one's
                # look for a pending run sees the first one's.
                self._x(self.dialect.trigger_key_lock, (new.job_name, new.concurrency_key))
            rows, _ = self._x(
                f"SELECT {RUN_COLUMNS} FROM durably_runs WHERE job_name = ? "
                "AND concurrency_key = ? AND status = 'pending' ORDER BY id LIMIT 1",
                (new.job_name, new.concurrency_key),
            )
            if rows:
                if new.coalesce == "skip":
                    return run_from_row(rows[0], "coalesced"), "coalesced"
                raise ConflictError(
                    f"job {new.job_name!r} already has a pending run ({rows[0][0]}) with "
                    f"concurrency key {new.concurrency_key!r}; wait for it to start, or pass "
                    "coalesce='skip' to get that run back instead of an error"
                )
        values = (
            new.run_id,
            new.job_name,
            new.input_json,
            json.dumps(new.labels, sort_keys=True),
            new.idempotency_key,
            new.concurrency_key,
            new.retrigger_of,
            new.now,
            new.now,
        )
        woken = False
        if new.idempotency_key is None:
            waking = self.dialect.waking
            if self._wakes is None and waking is not None:
                # A lone insert (a plain trigger): its wake-up rides in the same statement,
                # so it commits (and flushes) once, not twice.
                self._x(waking(INSERT_RUN), values)
                woken = True
            else:
                self._x(INSERT_RUN, values)
        else:
            inserted, _ = self._x(INSERT_RUN_IDEMPOTENT, values)
            if not inserted:  # a concurrent trigger with this key committed first
                rows, _ = self._x(
                    f"SELECT {RUN_COLUMNS} FROM durably_runs WHERE job_name = ? AND idempotency_key = ?",
                    (new.job_name, new.idempotency_key),
                )
                return run_from_row(rows[0], "idempotent"), "idempotent"
        for key, value in new.labels.items():
            self._x("INSERT INTO durably_run_labels (run_id, key, value) VALUES (?, ?, ?)", (new.run_id, key, value))
        created_at = parse_iso(new.now)
        assert created_at is not None
        run = Run(
            id=new.run_id,
            job_name=new.job_name,
            status="pending",
            input=new.input_value,
            output=None,
            error=None,
            failed_step=None,
            labels=new.labels,
            progress=None,
            created_at=created_at,
            started_at=None,
            completed_at=None,
            updated_at=created_at,
            idempotency_key=new.idempotency_key,
            concurrency_key=new.concurrency_key,
            completed_steps=0,
            retrigger_of=new.retrigger_of,
            disposition="created",
        )
        if not woken:
            self._wake(new.job_name)
        return run, "created"

    # -- requests (the browser's forwarded calls) -------------------------------------------

    def request_reply(self, request_id: str) -> str | None:
        """The reply recorded for this request id, or None. Call inside ``transaction()``
        with the call it guards, so a request is answered from here or run, never both."""
        rows, _ = self._x("SELECT reply FROM durably_requests WHERE id = ?", (request_id,))
        return str(rows[0][0]) if rows else None

    def record_request(self, request_id: str, method: str, reply: str, now: str) -> None:
        """Record a request's reply; call inside the ``transaction()`` of its change."""
        self._x(
            "INSERT INTO durably_requests (id, method, reply, created_at) VALUES (?, ?, ?, ?)",
            (request_id, method, reply, now),
        )

    def prune_requests(self, before: str) -> int:
        """Delete the requests recorded before ``before``; returns how many."""
        with self._write(several=False):
            _, changes = self._x("DELETE FROM durably_requests WHERE created_at < ?", (before,))
        return changes

    # -- reading --------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run | None:
        """The run, or None."""
        with self._read():
            row = self._run_row(run_id)
        return run_from_row(row) if row is not None else None

    def _run_row(self, run_id: str, *, lock: bool = False) -> Row | None:
        """The run's row; with ``lock`` (inside a write transaction) other writers of the
        row wait until this transaction ends."""
        suffix = self.dialect.lock_row if lock else ""
        rows, _ = self._x(f"SELECT {RUN_COLUMNS} FROM durably_runs WHERE id = ?{suffix}", (run_id,))
        return rows[0] if rows else None

    def get_runs(
        self,
        *,
        statuses: Sequence[str] | None,
        job_names: Sequence[str] | None,
        labels: dict[str, str] | None,
        limit: int | None,
        offset: int,
    ) -> list[Run]:
        """Runs newest first: of these statuses and job names (None: any), carrying every
        label pair given; at most ``limit`` (None: all) after skipping ``offset``."""
        where: list[str] = []
        params: list[Any] = []
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        if job_names:
            where.append(f"job_name IN ({', '.join('?' * len(job_names))})")
            params.extend(job_names)
        for key, value in (labels or {}).items():
            where.append("id IN (SELECT run_id FROM durably_run_labels WHERE key = ? AND value = ?)")
            params.extend((key, value))
        sql = f"SELECT {RUN_COLUMNS} FROM durably_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
        params.extend((NO_LIMIT if limit is None else limit, offset))
        with self._read():
            rows, _ = self._x(sql, params)
        return [run_from_row(r) for r in rows]

    def get_steps(self, run_id: str) -> list[StepRecord]:
        """The run's stored steps in execution order (none for an unknown run), each with its
        failed attempts. A step that has failed attempts but no stored row (the job caught
        its error and went on) is listed as ``failed`` with them, at its last attempt's index."""
        with self._read():
            rows, _ = self._x(f"SELECT {STEP_COLUMNS} FROM durably_steps WHERE run_id = ? ORDER BY idx", (run_id,))
            tries, _ = self._x(
                f"SELECT {ATTEMPT_COLUMNS} FROM durably_attempts WHERE run_id = ? AND step_name IS NOT NULL "
                "ORDER BY id",
                (run_id,),
            )
        steps = [step_from_row(r) for r in rows]
        if not tries:
            return steps
        by_name: dict[str, list[AttemptRecord]] = {}
        for row in tries:
            record = attempt_from_row(row)
            by_name.setdefault(record.step_name or "", []).append(record)
        out = [replace(step, attempts=by_name.pop(step.name, [])) for step in steps]
        for name, attempts in by_name.items():
            last = attempts[-1]
            out.append(
                StepRecord(
                    run_id,
                    name,
                    last.step_index if last.step_index is not None else -1,
                    "failed",
                    None,
                    last.error,
                    attempts[0].started_at,  # type: ignore[arg-type]  # None only after a hand edit
                    last.finished_at,
                    attempts=attempts,
                )
            )
        out.sort(key=lambda step: step.index)
        return out

    def get_logs(
        self, run_id: str, *, after_id: int | None = None, limit: int | None = None, last: int | None = None
    ) -> list[LogRecord]:
        """The run's log lines in id order: those with an id above ``after_id``, at most
        ``limit`` of them; or, with ``last``, the last ``last`` lines (still in id order)."""
        params: tuple[Any, ...]
        if last is not None:
            sql = (
                f"SELECT * FROM (SELECT {LOG_COLUMNS} FROM durably_logs WHERE run_id = ? "
                "ORDER BY id DESC LIMIT ?) AS tail ORDER BY id"
            )
            params = (run_id, last)
        else:
            sql = f"SELECT {LOG_COLUMNS} FROM durably_logs WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?"
            params = (run_id, -1 if after_id is None else after_id, NO_LIMIT if limit is None else limit)
        with self._read():
            rows, _ = self._x(sql, params)
        return [log_from_row(r) for r in rows]

    def count_logs(self, run_id: str) -> int:
        """How many log lines the run has stored."""
        with self._read():
            rows, _ = self._x("SELECT COUNT(*) FROM durably_logs WHERE run_id = ?", (run_id,))
        return int(rows[0][0])

    def run_state(self, run_id: str) -> RunState | None:
        """The run's status and lease generation, or None if it is gone."""
        with self._read():
            rows, _ = self._x("SELECT status, lease_generation FROM durably_runs WHERE id = ?", (run_id,))
        return RunState(rows[0][0], rows[0][1]) if rows else None

    # -- the worker's transitions ---------------------------------------------------------

    def claim(self, *, owner: str, job_names: Sequence[str], now: str, lease_until: str) -> Claimed | None:
        """Lease the oldest claimable run of one of ``job_names``, in one statement; None
        when there is none.

        Claimable: pending, or leased with an expired lease (its worker died), and no other
        run with the same concurrency key holds it (see ``dialect``). The claim bumps
        ``lease_generation``, which fences every later write of the previous holder.
        """
        if not job_names:
            return None
        dialect = self.dialect
        with self._write(several=False):
            for attempt in range(CLAIM_RETRIES + 1):
                try:
                    rows, _ = self._x(*dialect.claim(owner, job_names, now, lease_until))
                    break
                except StorageError as exc:
                    # Another worker claimed a run of the same concurrency key at the same
                    # moment (the engine's unique index on key holders refused ours): a
                    # new look sees it held. A dead worker's expired cancel hold is cleared.
                    if exc.code != dialect.unique_violation or attempt == CLAIM_RETRIES:
                        raise
                    if dialect.clear_expired_cancel_holds is not None:
                        self._x(dialect.clear_expired_cancel_holds, (now,))
            if not rows:
                return None
            row = rows[0]
            run = run_from_row(row)
            # Only a lease holder writes steps, so a run claimed for the first time (generation
            # 1) has none to load. Read outside the claim: only the holder of the lease, now
            # us, writes this run's steps.
            generation = generation_of(row)
            steps: list[Row] = []
            if generation > 1:
                steps, _ = self._x(
                    "SELECT name, idx, output, status, wake_at, error FROM durably_steps WHERE run_id = ? ORDER BY idx",
                    (run.id,),
                )
        done = {
            name: StoredStep(idx, output, status, wake_at, error) for name, idx, output, status, wake_at, error in steps
        }
        next_index = steps[-1][1] + 1 if steps else 0
        return Claimed(run=run, generation=generation, done=done, next_index=next_index)

    def _fence(
        self,
        lease: Lease,
        now: str,
        pending: PendingWrites | None,
        extra_set: str = "",
        extra_params: Sequence[Any] = (),
        status: str = "leased",
    ) -> bool:
        """The fenced UPDATE that every worker write starts with; writes pending logs too."""
        progress = pending.progress if pending else None
        run_id = lease.run_id
        _, changes = self._x(
            f"UPDATE durably_runs SET updated_at = ?, progress = COALESCE(?, progress){extra_set} "
            "WHERE id = ? AND status = ? AND lease_generation = ?",
            (now, progress, *extra_params, run_id, status, lease.generation),
        )
        if not changes:
            return False
        if pending is not None and pending.logs:
            # Several lines a statement: over a network each statement is a round trip.
            logs = pending.logs
            for start in range(0, len(logs), LOG_BATCH):
                batch = logs[start : start + LOG_BATCH]
                params: list[Any] = []
                for line in batch:
                    params.append(run_id)
                    params.extend(line)
                self._x(_insert_logs_sql(len(batch)), params)
        return True

    def complete_step(
        self, lease: Lease, *, index: int, name: str, output_json: str, started_at: str, now: str
    ) -> bool:
        """Store a completed step, fenced, in one statement and one commit: the insert
        happens only while the run is leased at our generation. It writes the steps table
        only (about one page); the run's completed_steps is counted from it.
        False (and nothing written) if the lease is no longer ours."""
        with self._lock:  # one statement: its own transaction (see _write)
            if not self._migrated:
                self.migrate()
            run_id = lease.run_id
            _, changes = self.driver.execute(
                self.dialect.complete_step,
                (run_id, index, name, output_json, started_at, now, run_id, lease.generation),
            )
        return changes == 1

    def renew(self, lease: Lease, *, now: str, lease_until: str, pending: PendingWrites | None) -> bool:
        """Extend the lease to ``lease_until`` (fenced), writing the pending progress and logs."""
        with self._write(_has_logs(pending)):
            return self._fence(lease, now, pending, ", lease_expires_at = ?", (lease_until,))

    def flush(self, lease: Lease, *, now: str, pending: PendingWrites) -> bool:
        """Write buffered progress and logs (the runtime calls it at most every half second)."""
        with self._write(_has_logs(pending)):
            return self._fence(lease, now, pending)

    def complete_run(
        self,
        lease: Lease,
        *,
        now: str,
        output_json: str,
        pending: PendingWrites | None = None,
        preserve_steps: bool = True,
    ) -> bool:
        """Complete a run with its output (fenced)."""
        return self._finish(lease, now, pending, preserve_steps, None, "completed", output_json, None, None)

    def complete_run_and_claim(
        self,
        lease: Lease,
        *,
        now: str,
        output_json: str,
        pending: PendingWrites | None,
        preserve_steps: bool,
        owner: str,
        job_names: Sequence[str],
        lease_until: str,
    ) -> tuple[bool, Claimed | None]:
        """``complete_run``, then ``claim`` of the next run, in one transaction: a worker that
        goes straight on to its next run pays one commit for both (and the run's row and
        the status index pages they share are written once). Returns ``(completed,
        claimed)``: ``(False, None)``, nothing written and nothing claimed, if the lease is
        no longer ours; ``claimed`` is None when no run is claimable, or when the claim
        failed: it runs under a savepoint, so its failure (PostgreSQL aborts a transaction
        at a concurrent claim's unique violation) rolls back only the claim, and the
        caller claims on its own. A failure of the completion or of the commit raises
        ``StorageError`` with nothing written."""
        with self._write():
            if not self.complete_run(
                lease, now=now, output_json=output_json, pending=pending, preserve_steps=preserve_steps
            ):
                return False, None
            self._x("SAVEPOINT durably_claim")
            try:
                claimed = self.claim(owner=owner, job_names=job_names, now=now, lease_until=lease_until)
            except StorageError:
                self._x("ROLLBACK TO SAVEPOINT durably_claim")
                claimed = None
            self._x("RELEASE SAVEPOINT durably_claim")
            return True, claimed

    def fail_run(
        self,
        lease: Lease,
        *,
        now: str,
        error: str,
        failed_step: str | None = None,
        step: StepEnd | None = None,
        pending: PendingWrites | None = None,
        preserve_steps: bool = True,
    ) -> bool:
        """Fail a run with its error (fenced); ``step`` is the failed step's record to store
        with it, ``failed_step`` the name the run keeps."""
        return self._finish(lease, now, pending, preserve_steps, step, "failed", None, error, failed_step)

    def _finish(
        self,
        lease: Lease,
        now: str,
        pending: PendingWrites | None,
        preserve_steps: bool,
        step: StepEnd | None,
        *values: str | None,
    ) -> bool:
        """The fenced end of a run: ``values`` are its status, output, error, failed step."""
        with self._write(step is not None or _has_logs(pending) or not preserve_steps):
            if not self._fence(
                lease,
                now,
                pending,
                ", status = ?, output = ?, error = ?, failed_step = ?, completed_at = ?, "
                f"lease_owner = NULL, lease_expires_at = NULL, completed_steps = {COMPLETED_STEPS_SQL}",
                (*values, now),
            ):
                return False
            if step is not None:
                self._insert_step_record(lease.run_id, step, now)
            if not preserve_steps:
                self._delete_details(lease.run_id)
            if lease.concurrency_key is not None:
                self._wake(ANY_JOB)  # its key is free: a run of any job may wait for it
        return True

    def _insert_step_record(self, run_id: str, step: StepEnd, now: str) -> None:
        self._x(
            self.dialect.insert_step_record,
            (run_id, step.index, step.name, step.status, step.error, step.started_at, now),
        )

    def record_cancelled(
        self, lease: Lease, *, step: StepEnd | None, now: str, pending: PendingWrites | None, preserve_steps: bool
    ) -> bool:
        """After a cancel: store the interrupted step as cancelled, fenced by the generation
        the worker held (the run's status is already ``cancelled``), and let go of the lease."""
        with self._write():
            if not self._fence(
                lease, now, pending, ", lease_owner = NULL, lease_expires_at = NULL", status="cancelled"
            ):
                return False
            if step is not None and preserve_steps:
                self._insert_step_record(lease.run_id, step, now)
            if not preserve_steps:
                self._delete_details(lease.run_id)
            if lease.concurrency_key is not None:
                self._wake(ANY_JOB)
        return True

    def release(self, lease: Lease, *, now: str, pending: PendingWrites | None) -> bool:
        """Hand a lease back: the run is pending again, its steps kept, and the next worker
        takes it at once instead of waiting for the lease to expire."""
        with self._write(_has_logs(pending)):
            if not self._fence(
                lease, now, pending, ", status = 'pending', lease_owner = NULL, lease_expires_at = NULL"
            ):
                return False
            self._wake(lease.wakes)
        return True

    # -- runs that wait (retries, sleeps, signals) --------------------------------------------

    def wait(
        self,
        lease: Lease,
        *,
        now: str,
        waiting_for: str,
        wake_at: str | None,
        wait_step: str | None,
        step: WaitingStep | None,
        pending: PendingWrites | None,
        next_attempt: bool = False,
    ) -> bool:
        """The run gives its slot back and waits, fenced, in one transaction: status
        ``waiting`` with what it waits for (``waiting_for``: retry, sleep or signal), at which
        step (``wait_step``) and when it is due (``wake_at``; None: only a signal wakes it);
        no lease; the pending progress and logs written. ``step`` is stored as ``waiting``
        (a row already at its index takes the new due time). ``next_attempt`` moves the run to
        its next job-level attempt (a ``@job(retries=...)`` retry). Any worker's claim takes
        the run once ``wake_at`` is due. False, and nothing written, if the lease is not ours."""
        with self._write():
            if not self._fence(
                lease,
                now,
                pending,
                ", status = 'waiting', wake_at = ?, waiting_for = ?, wait_step = ?, lease_owner = NULL, "
                "lease_expires_at = NULL" + (", attempt = attempt + 1" if next_attempt else ""),
                (wake_at, waiting_for, wait_step),
            ):
                return False
            if step is not None:
                self._put_step(
                    lease.run_id, step.index, step.name, "waiting", None, None, step.started_at, None, step.wake_at
                )
            if lease.concurrency_key is not None:
                self._wake(ANY_JOB)  # a waiting run holds no key: a run of any job may wait for it
        return True

    def await_signal(
        self,
        lease: Lease,
        *,
        step: WaitingStep,
        run_wake_at: str | None,
        timeout_error: str,
        now: str,
        pending: PendingWrites | None,
    ) -> SignalWait:
        """Wait at ``step`` for the signal named ``step.name``, in one transaction, fenced:

        * a signal of that name is stored: the step is stored completed with its payload as
          the result, and the outcome is ``received`` (the run goes on);
        * else, if ``step.wake_at`` (the wait's deadline) is due: the step is stored failed
          with ``timeout_error``, outcome ``timeout`` (the job gets SignalTimeoutError);
        * else the run waits (as ``wait`` with ``waiting_for="signal"``, due at
          ``run_wake_at``: the wait's deadline, or the run's own if that is earlier), and the
          step is stored ``waiting`` with its deadline: outcome ``waiting``.

        ``Store.signal`` takes the same write lock, so a signal is either seen here or wakes
        the waiting run. Outcome ``lost`` (nothing written) if the lease is not ours."""
        run_id = lease.run_id
        with self._write():
            if not self._fence(lease, now, pending):
                return SignalWait("lost")
            rows, _ = self._x("SELECT payload FROM durably_signals WHERE run_id = ? AND name = ?", (run_id, step.name))
            if rows:
                payload = rows[0][0]
                self._put_step(run_id, step.index, step.name, "completed", payload, None, step.started_at, now, None)
                return SignalWait("received", payload_json=payload)
            if step.wake_at is not None and step.wake_at <= now:
                self._put_step(run_id, step.index, step.name, "failed", None, timeout_error, step.started_at, now, None)
                return SignalWait("timeout", error=timeout_error)
            self._fence(
                lease,
                now,
                None,
                ", status = 'waiting', wake_at = ?, waiting_for = 'signal', wait_step = ?, lease_owner = NULL, "
                "lease_expires_at = NULL",
                (run_wake_at, step.name),
            )
            self._put_step(run_id, step.index, step.name, "waiting", None, None, step.started_at, None, step.wake_at)
            if lease.concurrency_key is not None:
                self._wake(ANY_JOB)
        return SignalWait("waiting")

    def finish_step(
        self,
        lease: Lease,
        *,
        index: int,
        name: str,
        status: str,
        output_json: str | None,
        error: str | None,
        started_at: str,
        now: str,
        attempt: bool = False,
    ) -> bool:
        """Store a step's end (``completed`` with its result, or ``failed`` with its error)
        where a row may already be stored at its index (a ``waiting`` step: a sleep that is
        over, a step that succeeded after a retry), fenced, in one transaction. With
        ``attempt`` (the step's body ran again after a retry) the row takes this attempt's
        ``started_at``, as a new step's row has its one attempt's; otherwise (a wait that is
        over) it keeps the time the wait began. A new step's result goes through
        ``complete_step`` instead, the one-statement path. False, and nothing written, if
        the lease is not ours."""
        with self._write():
            if not self._fence(lease, now, None):
                return False
            self._put_step(
                lease.run_id, index, name, status, output_json, error, started_at, now, None, keep_start=not attempt
            )
        return True

    def _put_step(
        self,
        run_id: str,
        index: int,
        name: str,
        status: str,
        output: str | None,
        error: str | None,
        started_at: str,
        completed_at: str | None,
        wake_at: str | None,
        keep_start: bool = True,
    ) -> None:
        # The row at (run_id, idx) whatever was there: a step that waited keeps its index,
        # and its first start unless ``keep_start`` is False.
        self._x(
            "INSERT INTO durably_steps (run_id, idx, name, status, output, error, started_at, completed_at, wake_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, idx) DO UPDATE SET name = excluded.name, "
            "status = excluded.status, output = excluded.output, error = excluded.error, "
            "completed_at = excluded.completed_at, wake_at = excluded.wake_at"
            + ("" if keep_start else ", started_at = excluded.started_at"),
            (run_id, index, name, status, output, error, started_at, completed_at, wake_at),
        )

    def record_attempt(self, lease: Lease, attempt: NewAttempt) -> bool:
        """Record a failed attempt (of a step, or of the job between steps), fenced, in one
        statement. False, and nothing written, if the lease is not ours."""
        with self._write(several=False):
            _, changes = self._x(
                self.dialect.record_attempt,
                (
                    lease.run_id,
                    attempt.run_attempt,
                    attempt.step_name,
                    attempt.step_index,
                    attempt.attempt,
                    attempt.error,
                    attempt.started_at,
                    attempt.finished_at,
                    lease.run_id,
                    lease.generation,
                ),
            )
        return changes == 1

    def count_attempts(self, run_id: str, step_name: str | None, run_attempt: int) -> int:
        """How many failed attempts of this step (None: of the job between steps) the run
        recorded in its job-level attempt ``run_attempt``."""
        # "step_name IS ?" is SQLite's; "IS NULL" and "= ?" are every engine's.
        step = "step_name IS NULL" if step_name is None else "step_name = ?"
        params = (run_id, run_attempt) if step_name is None else (run_id, step_name, run_attempt)
        with self._read():
            rows, _ = self._x(
                f"SELECT COUNT(*) FROM durably_attempts WHERE run_id = ? AND {step} AND run_attempt = ?", params
            )
        return int(rows[0][0])

    def set_deadline(self, lease: Lease, *, deadline_at: str, now: str) -> bool:
        """Store the run's deadline (``@job(timeout=...)``) unless it has one, fenced, in one
        statement. False if the lease is not ours."""
        with self._write(several=False):
            _, changes = self._x(
                "UPDATE durably_runs SET deadline_at = COALESCE(deadline_at, ?), updated_at = ? "
                "WHERE id = ? AND status = 'leased' AND lease_generation = ?",
                (deadline_at, now, lease.run_id, lease.generation),
            )
        return changes == 1

    def next_wake(self, job_names: Sequence[str]) -> str | None:
        """When the first waiting run of these jobs falls due (its ``wake_at``); None when
        none waits with a due time."""
        if not job_names:
            return None
        marks = ", ".join("?" * len(job_names))
        with self._read():
            rows, _ = self._x(
                f"SELECT MIN(wake_at) FROM durably_runs WHERE status = 'waiting' AND wake_at IS NOT NULL "
                f"AND job_name IN ({marks})",
                tuple(job_names),
            )
        return rows[0][0] if rows else None

    # -- signals --------------------------------------------------------------------------------

    def signal(self, run_id: str, name: str, *, signal_id: str, payload_json: str, now: str) -> SignalRecord:
        """Store a signal for a run, in one transaction. The first signal of a name wins: the
        same ``signal_id`` with an equal payload again returns the stored one as
        ``duplicate``; any other raises ``ConflictError``. A run waiting for this name is
        made due now (``delivered``); otherwise the signal is kept until the run waits for
        it (``stored``). Raises ``NotFoundError`` for an unknown run, ``ConflictError`` for
        a finished run or one whose wait for this name is over (it timed out)."""
        with self._write():
            # Locked where writers run at the same time (PostgreSQL): a worker's await_signal
            # (which holds the row from its fence) either commits its wait before this looks
            # at the run, or reads this signal after it commits; and two signals of one name
            # take turns, so the second sees the first.
            row = self._run_row(run_id, lock=True)
            if row is None:
                raise NotFoundError(f"no run with id {run_id!r}")
            rows, _ = self._x(
                f"SELECT {SIGNAL_COLUMNS} FROM durably_signals WHERE run_id = ? AND name = ?", (run_id, name)
            )
            if rows:
                first = rows[0]
                if first[2] == signal_id and _same_json(first[3], payload_json):
                    return signal_from_row(first, "duplicate")
                raise ConflictError(
                    f"run {run_id} already has a signal {name!r} (signal id {first[2]}, sent at {first[4]}); "
                    "the first signal of a name wins. Send it again with that signal_id and the same payload "
                    "to get it back, or use another name"
                )
            status = row[2]
            if status in FINISHED:
                raise ConflictError(f"run {run_id} is {status}; a signal can only be sent to an unfinished run")
            done, _ = self._x(
                "SELECT status FROM durably_steps WHERE run_id = ? AND name = ? AND status <> 'waiting'", (run_id, name)
            )
            if done:
                raise ConflictError(
                    f"run {run_id} no longer waits for signal {name!r}: its step {name!r} is {done[0][0]}"
                    + (" (the wait timed out)" if done[0][0] == "failed" else "")
                )
            self._x(
                f"INSERT INTO durably_signals ({SIGNAL_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                (run_id, name, signal_id, payload_json, now),
            )
            _, woken = self._x(
                "UPDATE durably_runs SET wake_at = ?, updated_at = ? WHERE id = ? AND status = 'waiting' "
                "AND waiting_for = 'signal' AND wait_step = ?",
                (now, now, run_id, name),
            )
            if woken:
                self._wake(row[1])  # its job: the run is due now
        return signal_from_row((run_id, name, signal_id, payload_json, now), "delivered" if woken else "stored")

    # -- schedules ------------------------------------------------------------------------------

    def sync_schedules(self, job_names: Sequence[str], specs: Sequence[ScheduleSpec], now: str) -> list[ScheduleRecord]:
        """Register a worker's scheduled jobs, in one transaction: a job of ``job_names``
        without a spec loses its row (its schedule was removed from the code); a spec whose
        job has no row, or a row with another expression or time zone, starts afresh at
        ``spec.next_at`` with no last slot; any other row keeps its slots (so the slots it
        missed are caught up) and takes the spec's catch-up policy. Returns the rows of the
        specs, as stored."""
        scheduled = {spec.job_name for spec in specs}
        with self._write():
            for name in job_names:
                if name not in scheduled:
                    self._x("DELETE FROM durably_schedules WHERE job_name = ?", (name,))
            for spec in specs:
                rows, _ = self._x("SELECT cron, timezone FROM durably_schedules WHERE job_name = ?", (spec.job_name,))
                if rows and tuple(rows[0]) == (spec.cron, spec.timezone):
                    self._x(
                        "UPDATE durably_schedules SET catch_up = ?, updated_at = ? "
                        "WHERE job_name = ? AND catch_up <> ?",
                        (spec.catch_up, now, spec.job_name, spec.catch_up),
                    )
                else:
                    self._x(
                        f"INSERT INTO durably_schedules ({SCHEDULE_COLUMNS}) VALUES (?, ?, ?, ?, NULL, ?, ?) "
                        "ON CONFLICT (job_name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone, "
                        "catch_up = excluded.catch_up, last_slot = NULL, next_at = excluded.next_at, "
                        "updated_at = excluded.updated_at "
                        # A worker that registered the same expression at the same moment (on
                        # an engine where two registrations run at once) keeps its row.
                        "WHERE durably_schedules.cron <> excluded.cron "
                        "OR durably_schedules.timezone <> excluded.timezone",
                        (spec.job_name, spec.cron, spec.timezone, spec.catch_up, spec.next_at, now),
                    )
            if not specs:
                return []
            marks = ", ".join("?" * len(specs))
            rows, _ = self._x(
                f"SELECT {SCHEDULE_COLUMNS} FROM durably_schedules WHERE job_name IN ({marks}) ORDER BY job_name",
                [spec.job_name for spec in specs],
            )
        return [schedule_from_row(r) for r in rows]

    def fire_schedule(
        self,
        job_name: str,
        *,
        cron: str,
        timezone: str,
        seen_next_at: str,
        next_at: str,
        last_slot: str | None,
        runs: Sequence[NewRun],
        now: str,
    ) -> list[tuple[Run, Disposition]] | None:
        """Move the schedule on from the next slot a worker read (``seen_next_at``) to
        ``next_at`` and create the runs of the slots that fell due (``runs``, each with its
        slot's idempotency key), in one transaction. None, and nothing written, when the
        schedule's next slot is no longer ``seen_next_at`` (another worker fired it first)
        or the schedule is no longer registered as ``cron`` in ``timezone`` (a worker with
        other code registered it since). A slot whose run exists already comes back as
        ``idempotent``: no slot is created twice."""
        with self._write():
            _, changed = self._x(
                "UPDATE durably_schedules SET next_at = ?, last_slot = COALESCE(?, last_slot), updated_at = ? "
                "WHERE job_name = ? AND next_at = ? AND cron = ? AND timezone = ?",
                (next_at, last_slot, now, job_name, seen_next_at, cron, timezone),
            )
            if not changed:
                return None
            return [self.insert_run(new) for new in runs]

    def schedules(self) -> list[ScheduleRecord]:
        """Every registered schedule, by job name."""
        with self._read():
            rows, _ = self._x(f"SELECT {SCHEDULE_COLUMNS} FROM durably_schedules ORDER BY job_name")
        return [schedule_from_row(r) for r in rows]

    def reclaim_all_leases(self, now: str) -> int:
        """Hand back every lease in the database at once; returns how many.

        Only for a host that knows no other worker can be running on this database: the
        browser, whose worker holds the database's Web Lock. There, a leased run is one a
        closed or reloaded tab left behind, and it resumes at once instead of after its
        lease expires."""
        with self._write():
            _, changes = self._x(
                "UPDATE durably_runs SET status = 'pending', lease_owner = NULL, "
                "lease_expires_at = NULL, updated_at = ? WHERE status = 'leased'",
                (now,),
            )
            # Runs cancelled while that tab's worker executed them, never acknowledged:
            # their concurrency keys are free now.
            self._x(
                "UPDATE durably_runs SET lease_owner = NULL, lease_expires_at = NULL "
                "WHERE status = 'cancelled' AND lease_expires_at IS NOT NULL"
            )
        return changes

    # -- operations on runs -----------------------------------------------------------------

    def cancel(self, run_id: str, now: Callable[[], str], reason: str | None = None) -> Run:
        """Cancel a pending, leased or waiting run at once. Returns the run as it was before.
        ``reason``, when given, is stored as the run's ``error`` (a moved run says where it went).

        ``now`` is called once the write lock is held: a timestamp taken before waiting
        for it would be earlier than the steps other workers commit meanwhile, and the
        run would read as cancelled before its last steps completed."""
        with self._write():
            row = self._run_row(run_id, lock=True)
            stamp = now()
            if row is None:
                raise NotFoundError(f"no run with id {run_id!r}")
            run = run_from_row(row)
            if run.status in FINISHED:
                raise ConflictError(
                    f"run {run_id} is already {run.status}; only pending, leased or waiting runs can be cancelled"
                )
            self._x(
                # A leased run keeps its lease (owner, expiry) until its worker has stopped
                # it (record_cancelled), so its concurrency key stays held meanwhile.
                "UPDATE durably_runs SET status = 'cancelled', completed_at = ?, updated_at = ?, "
                f"completed_steps = {COMPLETED_STEPS_SQL}, wake_at = NULL, waiting_for = NULL, wait_step = NULL, "
                "error = COALESCE(?, error) WHERE id = ?",
                (stamp, stamp, reason, run_id),
            )
            # The step it waited at, if any, will never go on.
            self._x(
                "UPDATE durably_steps SET status = 'cancelled', completed_at = ?, wake_at = NULL "
                "WHERE run_id = ? AND status = 'waiting'",
                (stamp, run_id),
            )
        return run

    def finished_run(self, run_id: str, action: str, *, lock: bool = False) -> Run:
        """The run, which must be finished for ``action`` (``NotFoundError``, or
        ``ConflictError`` naming its status). Call inside ``transaction()``; ``lock`` when
        the run is written next."""
        row = self._run_row(run_id, lock=lock)
        if row is None:
            raise NotFoundError(f"no run with id {run_id!r}")
        run = run_from_row(row)
        if run.status not in FINISHED:
            raise ConflictError(
                f"run {run_id} is {run.status}; {action} needs a finished run "
                "(completed, failed or cancelled): cancel it first or wait for it"
            )
        return run

    def delete_run(self, run_id: str, now: str) -> Run:
        """Delete a finished run with its steps, logs and labels. A run cancelled while a
        worker executed it is refused until that worker has stopped it (or its lease has
        expired): until then its step may still be running, and deleting the run would free
        its concurrency key for another run at once."""
        with self._write():
            run = self.finished_run(run_id, "delete", lock=True)
            held, _ = self._x(
                "SELECT lease_owner, lease_expires_at FROM durably_runs "
                "WHERE id = ? AND status = 'cancelled' AND lease_expires_at >= ?",
                (run_id, now),
            )
            if held:
                raise ConflictError(
                    f"run {run_id} was cancelled, but its worker ({held[0][0]}) has not stopped it yet: its "
                    "step may still be running and its concurrency key stays held until then. Delete it "
                    "once the worker has stopped it (at its next step or lease renewal) or its lease "
                    f"has expired ({held[0][1]})"
                )
            self._delete_details(run_id)
            self._x("DELETE FROM durably_run_labels WHERE run_id = ?", (run_id,))
            self._x("DELETE FROM durably_runs WHERE id = ?", (run_id,))
        return run

    def _delete_details(self, run_id: str) -> None:
        for table in _DETAIL_TABLES:
            self._x(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))

    def purge(self, *, cutoff: str, limit: int, now: str) -> list[Run]:
        """Delete up to ``limit`` finished runs completed before ``cutoff``, oldest first;
        returns them. Skips a cancelled run whose worker has not stopped it yet (see
        ``delete_run``)."""
        with self._write():
            rows, _ = self._x(
                f"SELECT {RUN_COLUMNS} FROM durably_runs WHERE completed_at IS NOT NULL "
                f"AND completed_at < ? AND status IN {_FINISHED_SQL} "
                "AND (lease_expires_at IS NULL OR lease_expires_at < ?) "
                f"ORDER BY completed_at LIMIT ?{self.dialect.skip_locked}",
                (cutoff, now, limit),
            )
            runs = [run_from_row(r) for r in rows]
            if runs:
                ids = [run.id for run in runs]
                marks = ", ".join("?" * len(ids))
                for table, column in (
                    *((detail, "run_id") for detail in _DETAIL_TABLES),
                    ("durably_run_labels", "run_id"),
                    ("durably_runs", "id"),
                ):
                    self._x(f"DELETE FROM {table} WHERE {column} IN ({marks})", ids)
        return runs

    # -- the worker registry ------------------------------------------------------------------

    def record_worker(
        self,
        *,
        worker_id: str,
        host: str,
        pid: int | None,
        jobs: Sequence[str],
        version: str,
        concurrency: int,
        started_at: str,
        now: str,
    ) -> None:
        """Record a started worker, or its heartbeat ``now`` if it is recorded (one
        statement). A worker whose row was forgotten (asleep for a day) records itself again."""
        with self._write(several=False):
            self._x(
                f"INSERT INTO durably_workers ({WORKER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, jobs = excluded.jobs, "
                "concurrency = excluded.concurrency",
                (worker_id, host, pid, to_json(list(jobs)), version, concurrency, started_at, now),
            )

    def forget_stale_workers(self, before: str) -> int:
        """Delete the workers whose last heartbeat is older than ``before``; returns how many."""
        return self._delete_workers("DELETE FROM durably_workers WHERE heartbeat_at < ?", before)

    def forget_worker(self, worker_id: str) -> int:
        """Delete one worker's row (a clean stop)."""
        return self._delete_workers("DELETE FROM durably_workers WHERE worker_id = ?", worker_id)

    def forget_other_workers(self, worker_id: str) -> int:
        """Delete every worker's row but this one's (a host that knows it is the only worker)."""
        return self._delete_workers("DELETE FROM durably_workers WHERE worker_id <> ?", worker_id)

    def _delete_workers(self, sql: str, param: str) -> int:
        with self._write(several=False):
            _, changes = self._x(sql, (param,))
        return changes

    def workers(self) -> list[WorkerRecord]:
        """Every recorded worker, live or not, by worker id."""
        with self._read():
            rows, _ = self._x(f"SELECT {WORKER_COLUMNS} FROM durably_workers ORDER BY worker_id")
        return [worker_from_row(r) for r in rows]

    def jobs_seen_since(self, since: str) -> set[str]:
        """The job names of the workers whose last heartbeat is at ``since`` or later."""
        with self._read():
            rows, _ = self._x("SELECT jobs FROM durably_workers WHERE heartbeat_at >= ?", (since,))
        seen: set[str] = set()
        for (text,) in rows:
            jobs, _ = read_stored(text, "jobs")
            if isinstance(jobs, list):
                seen.update(j for j in jobs if isinstance(j, str))
        return seen

    def run_counts(self, now: str) -> RunCounts:
        """Runs by status, and by job name the runs due to be executed: pending, or waiting
        with a ``wake_at`` at ``now`` or earlier."""
        with self._read():
            by_status, _ = self._x("SELECT status, COUNT(*) FROM durably_runs GROUP BY status")
            # CAST: a hand edit may leave a BLOB where a job name belongs; names stay text.
            pending, _ = self._x(
                "SELECT CAST(job_name AS TEXT), COUNT(*) FROM durably_runs WHERE status = 'pending' "
                "OR (status = 'waiting' AND wake_at <= ?) GROUP BY 1",
                (now,),
            )
        return RunCounts(dict(by_status), dict(pending))

    # -- durably copy -----------------------------------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every read inside sees the database as it was at its first
        read (a copy taken while workers write is still one moment's state)."""
        with self._read():
            self._x(self.dialect.begin_read)
            try:
                yield
            finally:
                try:
                    self._x("COMMIT")
                except StorageError:
                    pass  # a read transaction has nothing to lose

    def copy_page(
        self, table: str, columns: Sequence[str], key: Sequence[str], after: Row | None, limit: int
    ) -> list[Row]:
        """Up to ``limit`` rows of ``table`` (one of ``COPY_TABLES``) in key order, after the
        row whose key is ``after`` (None: from the first)."""
        keys = ", ".join(key)
        where = f" WHERE ({keys}) > ({', '.join('?' * len(key))})" if after is not None else ""
        sql = f"SELECT {', '.join(columns)} FROM {table}{where} ORDER BY {keys} LIMIT ?"
        rows, _ = self._x(sql, (*(after or ()), limit))
        return rows

    def count_copied(self) -> dict[str, int]:
        """Rows in each of ``COPY_TABLES``."""
        with self._read():
            return {table: int(self._x(f"SELECT COUNT(*) FROM {table}")[0][0][0]) for table, _, _ in COPY_TABLES}

    def write_copied(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        """Insert rows as they are, ids included (inside ``transaction()``)."""
        if not rows:
            return
        one = "(" + ", ".join("?" * len(columns)) + ")"
        params: list[Any] = []
        for row in rows:
            params.extend(row)
        self._x(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([one] * len(rows))}", params)

    def same_tables_as(self, target: Store) -> bool:
        """Are ``target``'s tables this store's own, reached through another connection (one
        PostgreSQL database by two spellings of its URL)? Call inside ``target.transaction()``.
        False where the engines cannot tell (``Dialect.copy_mark``)."""
        mark, seen = target.dialect.copy_mark, self.dialect.copy_seen
        if mark is None or seen is None:
            return False
        key = secrets.randbits(63)
        rows, _ = target._x(mark, (key,))
        table = rows[0][0]
        with self._read():
            rows, _ = self._x(seen, (key >> 32, key & 0xFFFFFFFF))
        return any(row[0] == table for row in rows)

    def clear_copied(self) -> None:
        """Delete every row of ``COPY_TABLES``, the worker registry and the record of answered
        requests (inside ``transaction()``)."""
        for table, _, _ in (*COPY_TABLES, ("durably_workers", (), ()), ("durably_requests", (), ())):
            self._x(f"DELETE FROM {table}")

    def after_copy(self) -> None:
        """What the engine needs once rows were written with their ids (inside ``transaction()``)."""
        for sql in self.dialect.after_copy:
            self._x(sql)

    def close(self) -> None:
        with self._lock:
            self.driver.close()


def _has_logs(pending: PendingWrites | None) -> bool:
    return bool(pending is not None and pending.logs)


def _same_json(stored: str, given: str) -> bool:
    """Do two JSON texts hold the same data (object keys in any order; 1 and 1.0 are the
    same number, as in JavaScript, but true is not 1)?"""
    try:
        return stored == given or _same_data(json.loads(stored), json.loads(given))
    except ValueError:
        return False


def _same_data(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):  # Python's True == 1; JSON's true is not 1
        return a is b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_data(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same_data, a, b))
    return bool(a == b)
