"""All of durably's SQL, one method per state transition.

Every write a worker makes is fenced: its ``WHERE`` names the run's ``status`` and the
``lease_generation`` the worker claimed, and the method reads the row count. A worker that
lost its lease (expired and taken over, or cancelled) changes nothing, and learns so from
the ``False`` it gets back. Nothing here reads a row and then writes it on the strength
of what it read outside a ``BEGIN IMMEDIATE`` transaction.

The store is synchronous: both hosts' SQLite calls are synchronous in-process calls.
A lock makes each method atomic with respect to other threads of the same process
(a CPython program may trigger from a thread while the worker loop runs).
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from .driver import Driver
from .errors import ConflictError, NotFoundError, SchemaError, StorageError
from .models import (
    COMPLETED_STEPS_SQL,
    FINISHED,
    RUN_COLUMNS,
    LogRecord,
    Run,
    StepRecord,
    WorkerRecord,
    read_stored,
    read_time,
    run_from_row,
    worker_from_row,
)
from .clock import parse_iso
from .schema import LATEST_VERSION, MIGRATIONS

_FINISHED_SQL = "('completed', 'failed', 'cancelled')"


@dataclass(frozen=True)
class Claimed:
    """A run this worker now holds, with the steps it already completed."""

    run: Run
    generation: int
    done: dict[str, tuple[int, str]]  # step name -> (index, output JSON)
    next_index: int


@dataclass
class PendingWrites:
    """Progress and log lines waiting to ride along with the run's next commit.

    The store writes them but does not clear them: the caller clears them once the
    commit succeeded, so a failed commit loses nothing."""

    progress: str | None = None
    logs: list[tuple] | None = None  # (step_name, level, message, data_json, created_at)

    def empty(self) -> bool:
        return self.progress is None and not self.logs

    def clear(self) -> None:
        """Call once the commit that carried them succeeded."""
        self.progress = None
        self.logs = None


class Store:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self._lock = threading.RLock()
        self._migrated = False

    # -- plumbing -----------------------------------------------------------------------

    def _x(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[tuple], int]:
        return self.driver.execute(sql, params)

    @contextmanager
    def _write(self, several: bool = True) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE`` transaction: the write lock is taken up front, so two
        processes never both read a state and then both act on it.

        With ``several=False`` the caller sends a single statement, which SQLite runs as
        its own transaction: just as atomic, it takes the write lock at its start (and
        waits while another process holds it), and it costs one call instead of three,
        which matters most in the browser, where each call crosses the JS bridge."""
        with self._lock:
            self._ensure_schema()
            if not several:
                yield
                return
            self._x("BEGIN IMMEDIATE")
            try:
                yield
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

    @contextmanager
    def _read(self) -> Iterator[None]:
        with self._lock:
            self._ensure_schema()
            yield

    def _ensure_schema(self) -> None:
        if not self._migrated:
            self.migrate()

    def migrate(self) -> int:
        """Create or upgrade the schema; return its version. A database written by a newer
        durably is refused and left untouched."""
        with self._lock:
            if self._migrated:
                return LATEST_VERSION
            version = self._schema_version()
            if version > LATEST_VERSION:
                raise SchemaError(
                    f"this database was written by a newer durably (schema version {version}; "
                    f"this durably knows up to {LATEST_VERSION}). Upgrade durably to open it; "
                    "the database was not modified."
                )
            if version < LATEST_VERSION:
                self._x("BEGIN IMMEDIATE")
                try:
                    self._x(
                        "CREATE TABLE IF NOT EXISTS durably_migrations ("
                        "version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
                    )
                    # Another process may have migrated while we waited for the lock.
                    rows, _ = self._x("SELECT COALESCE(MAX(version), 0) FROM durably_migrations")
                    current = rows[0][0]
                    for number, statements in MIGRATIONS:
                        if number <= current:
                            continue
                        for sql in statements:
                            self._x(sql)
                        self._x(
                            "INSERT INTO durably_migrations (version, applied_at) "
                            "VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                            (number,),
                        )
                    self._x("COMMIT")
                except BaseException:
                    try:
                        self._x("ROLLBACK")
                    except StorageError:
                        pass
                    raise
            self._migrated = True
            return LATEST_VERSION

    def _schema_version(self) -> int:
        rows, _ = self._x(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'durably_migrations'"
        )
        if not rows:
            return 0
        rows, _ = self._x("SELECT COALESCE(MAX(version), 0) FROM durably_migrations")
        return int(rows[0][0])

    def schema_version(self) -> int:
        with self._lock:
            return self._schema_version()

    # -- triggering -----------------------------------------------------------------------

    def insert_run(
        self,
        *,
        run_id: str,
        job_name: str,
        input_json: str,
        input_value: Any,
        labels: dict[str, str],
        idempotency_key: str | None,
        concurrency_key: str | None,
        coalesce: str | None,
        now: str,
        retrigger_of: str | None = None,
    ) -> tuple[Run, str]:
        """Insert a pending run, or return the run that the keys say it is.

        Returns ``(run, disposition)``: ``"created"``, ``"idempotent"`` (same job and
        idempotency key) or ``"coalesced"`` (a pending run of the same job and concurrency
        key exists and ``coalesce == "skip"``). Raises ``ConflictError`` when such a
        pending run exists and ``coalesce`` is None. Call inside ``transaction()``; without
        keys and labels it sends one statement, so ``transaction(several=False)`` will do.
        ``input_value`` is ``input_json`` decoded: the returned run is built from the values
        in hand, so nothing can fail once the row is written.
        """
        if idempotency_key is not None:
            rows, _ = self._x(
                f"SELECT {RUN_COLUMNS} FROM durably_runs WHERE job_name = ? AND idempotency_key = ?",
                (job_name, idempotency_key),
            )
            if rows:
                return run_from_row(rows[0], "idempotent"), "idempotent"
        if concurrency_key is not None:
            rows, _ = self._x(
                f"SELECT {RUN_COLUMNS} FROM durably_runs WHERE job_name = ? "
                "AND concurrency_key = ? AND status = 'pending' ORDER BY id LIMIT 1",
                (job_name, concurrency_key),
            )
            if rows:
                if coalesce == "skip":
                    return run_from_row(rows[0], "coalesced"), "coalesced"
                raise ConflictError(
                    f"job {job_name!r} already has a pending run ({rows[0][0]}) with "
                    f"concurrency key {concurrency_key!r}; wait for it to start, or pass "
                    "coalesce='skip' to get that run back instead of an error"
                )
        labels_json = json.dumps(labels, sort_keys=True)
        self._x(
            "INSERT INTO durably_runs (id, job_name, status, input, labels, idempotency_key, "
            "concurrency_key, retrigger_of, created_at, updated_at) "
            "VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                job_name,
                input_json,
                labels_json,
                idempotency_key,
                concurrency_key,
                retrigger_of,
                now,
                now,
            ),
        )
        for key, value in labels.items():
            self._x(
                "INSERT INTO durably_run_labels (run_id, key, value) VALUES (?, ?, ?)",
                (run_id, key, value),
            )
        created_at = parse_iso(now)
        run = Run(
            id=run_id, job_name=job_name, status="pending", input=input_value, output=None,
            error=None, failed_step=None, labels=labels, progress=None, created_at=created_at,  # type: ignore[arg-type]
            started_at=None, completed_at=None, updated_at=created_at,  # type: ignore[arg-type]
            idempotency_key=idempotency_key, concurrency_key=concurrency_key, completed_steps=0,
            retrigger_of=retrigger_of, disposition="created",
        )
        return run, "created"

    @contextmanager
    def transaction(self, several: bool = True) -> Iterator[None]:
        """A write transaction for callers that group several store calls (trigger_many).
        ``several=False``: the caller's calls send one statement only (see ``_write``)."""
        with self._write(several):
            yield

    # -- reading --------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run | None:
        with self._read():
            rows, _ = self._x(f"SELECT {RUN_COLUMNS} FROM durably_runs WHERE id = ?", (run_id,))
        return run_from_row(rows[0]) if rows else None

    def _run_row(self, run_id: str) -> tuple | None:
        rows, _ = self._x(f"SELECT {RUN_COLUMNS} FROM durably_runs WHERE id = ?", (run_id,))
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
        where: list[str] = []
        params: list[Any] = []
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        if job_names:
            where.append(f"job_name IN ({', '.join('?' * len(job_names))})")
            params.extend(job_names)
        for key, value in (labels or {}).items():
            where.append(
                "id IN (SELECT run_id FROM durably_run_labels WHERE key = ? AND value = ?)"
            )
            params.extend((key, value))
        sql = f"SELECT {RUN_COLUMNS} FROM durably_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
        params.extend((-1 if limit is None else limit, offset))
        with self._read():
            rows, _ = self._x(sql, params)
        return [run_from_row(r) for r in rows]

    def get_steps(self, run_id: str) -> list[StepRecord]:
        with self._read():
            rows, _ = self._x(
                "SELECT run_id, name, idx, status, output, error, started_at, completed_at "
                "FROM durably_steps WHERE run_id = ? ORDER BY idx",
                (run_id,),
            )
        out = []
        for r in rows:
            output, problem = read_stored(r[4], "output")
            started_at, late = read_time(r[6], "started_at")
            completed_at, later = read_time(r[7], "completed_at")
            out.append(StepRecord(
                run_id=r[0],
                name=r[1],
                index=r[2],
                status=r[3],
                output=output,
                error=r[5],
                started_at=started_at,  # type: ignore[arg-type]
                completed_at=completed_at,  # type: ignore[arg-type]
                decode_error=_problems(problem, late, later),
            ))
        return out

    def get_logs(
        self, run_id: str, *, after_id: int | None = None, limit: int | None = None, last: int | None = None
    ) -> list[LogRecord]:
        """The run's log lines in id order: those with an id above ``after_id``, at most
        ``limit`` of them; or, with ``last``, the last ``last`` lines (still in id order)."""
        columns = "id, run_id, step_name, level, message, data, created_at"
        if last is not None:
            sql = (
                f"SELECT * FROM (SELECT {columns} FROM durably_logs WHERE run_id = ? "
                "ORDER BY id DESC LIMIT ?) AS tail ORDER BY id"
            )
            params: tuple = (run_id, last)
        else:
            sql = f"SELECT {columns} FROM durably_logs WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?"
            params = (run_id, -1 if after_id is None else after_id, -1 if limit is None else limit)
        with self._read():
            rows, _ = self._x(sql, params)
        out = []
        for r in rows:
            data, problem = read_stored(r[5], "data")
            created_at, late = read_time(r[6], "created_at")
            out.append(LogRecord(
                id=r[0],
                run_id=r[1],
                step_name=r[2],
                level=r[3],
                message=r[4],
                data=data,
                created_at=created_at,  # type: ignore[arg-type]
                decode_error=_problems(problem, late),
            ))
        return out

    def count_logs(self, run_id: str) -> int:
        """How many log lines the run has stored."""
        with self._read():
            rows, _ = self._x("SELECT COUNT(*) FROM durably_logs WHERE run_id = ?", (run_id,))
        return int(rows[0][0])

    def run_state(self, run_id: str) -> tuple[str, int] | None:
        """``(status, lease_generation)`` of a run, or None if it is gone."""
        with self._read():
            rows, _ = self._x(
                "SELECT status, lease_generation FROM durably_runs WHERE id = ?", (run_id,)
            )
        return (rows[0][0], rows[0][1]) if rows else None

    # -- the worker's transitions ---------------------------------------------------------

    def claim(
        self, *, owner: str, job_names: Sequence[str], now: str, lease_until: str
    ) -> Claimed | None:
        """Lease the oldest claimable run of one of ``job_names``, in one statement.

        Claimable: pending, or leased with an expired lease (its worker died), and no other
        run with the same concurrency key holds a live lease. The claim bumps
        ``lease_generation``, which fences every later write of the previous holder.
        """
        if not job_names:
            return None
        marks = ", ".join("?" * len(job_names))
        # Two candidates, each the first in id order of its own index range (status, id):
        # the oldest pending run and the oldest run whose lease expired. Asking for both
        # with one OR made SQLite walk every run of the registered jobs and sort them,
        # which grew with the finished runs kept in the table. The unary + keeps SQLite
        # off the (job_name, id) index, which would walk a job's finished runs too.
        # A concurrency key is held by a run that is leased, or cancelled while leased until
        # its worker has stopped it (cancel keeps the lease; the worker's acknowledgement,
        # or the lease's expiry if that worker died, clears it). A pending run waits while
        # any other run of its key is leased, even with an expired lease: that run's
        # worker may only be slow, not dead, and may still be executing a step. The
        # expired run itself is claimable (taken over, its old worker fenced out) unless
        # another run of its key holds a live lease. A row without an id (SQLite allows a
        # NULL TEXT primary key; only a hand edit makes one) would sort first and match no
        # `id = ?`, so the claim would find nothing for ever: such rows are skipped.
        holds_key = (
            "SELECT 1 FROM durably_runs o WHERE o.concurrency_key = r.concurrency_key AND o.id <> r.id"
        )
        free_key_pending = (
            f"(r.concurrency_key IS NULL OR NOT EXISTS ({holds_key} AND (o.status = 'leased'"
            " OR (o.status = 'cancelled' AND o.lease_expires_at >= ?))))"
        )
        free_key_expired = (
            f"(r.concurrency_key IS NULL OR NOT EXISTS ({holds_key}"
            " AND o.status IN ('leased', 'cancelled') AND o.lease_expires_at >= ?))"
        )
        with self._write(several=False):
            rows, _ = self._x(
                f"""
                UPDATE durably_runs
                SET status = 'leased', lease_owner = ?, lease_generation = lease_generation + 1,
                    lease_expires_at = ?, started_at = COALESCE(started_at, ?), updated_at = ?
                WHERE id = (
                    SELECT id FROM (
                        SELECT * FROM (
                            SELECT r.id FROM durably_runs r
                            WHERE r.status = 'pending' AND r.id IS NOT NULL
                              AND +r.job_name IN ({marks}) AND {free_key_pending}
                            ORDER BY r.id LIMIT 1)
                        UNION ALL
                        SELECT * FROM (
                            SELECT r.id FROM durably_runs r
                            WHERE r.status = 'leased' AND r.lease_expires_at < ? AND r.id IS NOT NULL
                              AND +r.job_name IN ({marks}) AND {free_key_expired}
                            ORDER BY r.id LIMIT 1))
                    ORDER BY id LIMIT 1)
                RETURNING {RUN_COLUMNS}
                """,
                (owner, lease_until, now, now, *job_names, now, now, *job_names, now),
            )
            if not rows:
                return None
            row = rows[0]
            # A claimable run's stored steps are all completed (a failed or cancelled step
            # ends its run), so a run that completed none has none to load. Read outside
            # the claim: only the holder of the lease, now us, writes this run's steps.
            steps: list[tuple] = []
            if row[15]:
                steps, _ = self._x(
                    "SELECT name, idx, output FROM durably_steps WHERE run_id = ? ORDER BY idx",
                    (row[0],),
                )
        done = {name: (idx, output) for name, idx, output in steps}
        next_index = steps[-1][1] + 1 if steps else 0
        return Claimed(run=run_from_row(row), generation=row[17], done=done, next_index=next_index)

    def _fence(self, run_id: str, generation: int, now: str, pending: PendingWrites | None,
               extra_set: str = "", extra_params: Sequence[Any] = (), status: str = "leased") -> bool:
        """The fenced UPDATE that every worker write starts with; writes pending logs too."""
        progress = pending.progress if pending else None
        _, changes = self._x(
            f"UPDATE durably_runs SET updated_at = ?, progress = COALESCE(?, progress){extra_set} "
            "WHERE id = ? AND status = ? AND lease_generation = ?",
            (now, progress, *extra_params, run_id, status, generation),
        )
        if not changes:
            return False
        if pending is not None and pending.logs:
            self._write_logs(run_id, pending.logs)
        return True

    def _write_logs(self, run_id: str, logs: list[tuple]) -> None:
        for step_name, level, message, data, created_at in logs:
            self._x(
                "INSERT INTO durably_logs (run_id, step_name, level, message, data, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, step_name, level, message, data, created_at),
            )

    def complete_step(
        self,
        *,
        run_id: str,
        generation: int,
        index: int,
        name: str,
        output_json: str,
        started_at: str,
        now: str,
    ) -> bool:
        """Store a completed step, fenced, in one statement and one commit: the insert
        happens only while the run is leased at our generation. It writes the steps table
        only (about one page); the run's completed_steps is counted from it.
        False (and nothing written) if the lease is no longer ours."""
        with self._write(several=False):
            _, changes = self._x(
                "INSERT INTO durably_steps (run_id, idx, name, status, output, started_at, completed_at) "
                "SELECT ?, ?, ?, 'completed', ?, ?, ? WHERE EXISTS (SELECT 1 FROM durably_runs "
                "WHERE id = ? AND status = 'leased' AND lease_generation = ?)",
                (run_id, index, name, output_json, started_at, now, run_id, generation),
            )
        return changes == 1

    def renew(
        self, *, run_id: str, generation: int, now: str, lease_until: str, pending: PendingWrites | None
    ) -> bool:
        with self._write(_has_logs(pending)):
            return self._fence(
                run_id, generation, now, pending, ", lease_expires_at = ?", (lease_until,)
            )

    def flush(self, *, run_id: str, generation: int, now: str, pending: PendingWrites) -> bool:
        """Write buffered progress and logs (the runtime calls it at most every half second)."""
        with self._write(_has_logs(pending)):
            return self._fence(run_id, generation, now, pending)

    def finish_run(
        self,
        *,
        run_id: str,
        generation: int,
        status: str,
        now: str,
        output_json: str | None = None,
        error: str | None = None,
        failed_step: str | None = None,
        step: tuple | None = None,
        pending: PendingWrites | None = None,
        preserve_steps: bool = True,
    ) -> bool:
        """Complete or fail a run (fenced), with its failed step record if any.

        ``step`` is ``(index, name, status, error, started_at)`` of the step that ended it.
        """
        with self._write(step is not None or _has_logs(pending) or not preserve_steps):
            if not self._fence(
                run_id, generation, now, pending,
                ", status = ?, output = ?, error = ?, failed_step = ?, completed_at = ?, "
                f"lease_owner = NULL, lease_expires_at = NULL, completed_steps = {COMPLETED_STEPS_SQL}",
                (status, output_json, error, failed_step, now),
            ):
                return False
            if step is not None:
                self._insert_step_record(run_id, step, now)
            if not preserve_steps:
                self._delete_details(run_id)
        return True

    def _insert_step_record(self, run_id: str, step: tuple, now: str) -> None:
        index, name, status, error, started_at = step
        self._x(
            "INSERT OR IGNORE INTO durably_steps (run_id, idx, name, status, error, started_at, completed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run_id, index, name, status, error, started_at, now),
        )

    def record_cancelled(
        self, *, run_id: str, generation: int, step: tuple | None, now: str,
        pending: PendingWrites | None, preserve_steps: bool,
    ) -> bool:
        """After a cancel: store the interrupted step as cancelled, fenced by the generation
        the worker held (the run's status is already ``cancelled``)."""
        with self._write():
            if not self._fence(run_id, generation, now, pending,
                               ", lease_owner = NULL, lease_expires_at = NULL", status="cancelled"):
                return False
            if step is not None and preserve_steps:
                self._insert_step_record(run_id, step, now)
            if not preserve_steps:
                self._delete_details(run_id)
        return True

    def release(self, *, run_id: str, generation: int, now: str, pending: PendingWrites | None) -> bool:
        """Hand a lease back: the run is pending again, its steps kept, and the next worker
        takes it at once instead of waiting for the lease to expire."""
        with self._write(_has_logs(pending)):
            return self._fence(
                run_id, generation, now, pending,
                ", status = 'pending', lease_owner = NULL, lease_expires_at = NULL",
            )

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

    def cancel(self, run_id: str, now: Callable[[], str]) -> Run:
        """Cancel a pending or leased run at once. Returns the run as it was before.

        ``now`` is called once the write lock is held: a timestamp taken before waiting
        for it would be earlier than the steps other workers commit meanwhile, and the
        run would read as cancelled before its last steps completed."""
        with self._write():
            stamp = now()
            row = self._run_row(run_id)
            if row is None:
                raise NotFoundError(f"no run with id {run_id!r}")
            if row[2] in FINISHED:
                raise ConflictError(
                    f"run {run_id} is already {row[2]}; only pending or leased runs can be cancelled"
                )
            self._x(
                # A leased run keeps its lease (owner, expiry) until its worker has stopped
                # it (record_cancelled), so its concurrency key stays held meanwhile.
                "UPDATE durably_runs SET status = 'cancelled', completed_at = ?, updated_at = ?, "
                f"completed_steps = {COMPLETED_STEPS_SQL} WHERE id = ?",
                (stamp, stamp, run_id),
            )
        return run_from_row(row)

    def finished_row_for(self, run_id: str, action: str) -> tuple:
        row = self._run_row(run_id)
        if row is None:
            raise NotFoundError(f"no run with id {run_id!r}")
        if row[2] not in FINISHED:
            raise ConflictError(
                f"run {run_id} is {row[2]}; {action} needs a finished run "
                "(completed, failed or cancelled): cancel it first or wait for it"
            )
        return row

    def delete_run(self, run_id: str, now: str) -> Run:
        """Delete a finished run with its steps, logs and labels. A run cancelled while a
        worker executed it is refused until that worker has stopped it (or its lease has
        expired): until then its step may still be running, and deleting the run would free
        its concurrency key for another run at once."""
        with self._write():
            row = self.finished_row_for(run_id, "delete")
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
        return run_from_row(row)

    def _delete_details(self, run_id: str) -> None:
        self._x("DELETE FROM durably_steps WHERE run_id = ?", (run_id,))
        self._x("DELETE FROM durably_logs WHERE run_id = ?", (run_id,))

    def purge(self, *, cutoff: str, limit: int, now: str) -> list[Run]:
        """Delete up to ``limit`` finished runs completed before ``cutoff``, oldest first.
        Skips a cancelled run whose worker has not stopped it yet (see ``delete_run``)."""
        with self._write():
            rows, _ = self._x(
                f"SELECT {RUN_COLUMNS} FROM durably_runs WHERE completed_at IS NOT NULL "
                f"AND completed_at < ? AND status IN {_FINISHED_SQL} "
                "AND (lease_expires_at IS NULL OR lease_expires_at < ?) ORDER BY completed_at LIMIT ?",
                (cutoff, now, limit),
            )
            if rows:
                ids = [row[0] for row in rows]
                marks = ", ".join("?" * len(ids))
                for table, column in (
                    ("durably_steps", "run_id"),
                    ("durably_logs", "run_id"),
                    ("durably_run_labels", "run_id"),
                    ("durably_runs", "id"),
                ):
                    self._x(f"DELETE FROM {table} WHERE {column} IN ({marks})", ids)
        return [run_from_row(r) for r in rows]

    # -- the worker registry ------------------------------------------------------------------

    def record_worker(
        self, *, worker_id: str, host: str, pid: int | None, jobs_json: str, version: str,
        concurrency: int, started_at: str, now: str,
    ) -> None:
        """Record a started worker, or its heartbeat if it is recorded (one statement). A
        worker whose row was forgotten (asleep for a day) records itself again."""
        with self._write(several=False):
            self._x(
                "INSERT INTO durably_workers (worker_id, host, pid, jobs, version, concurrency, "
                "started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (worker_id) "
                "DO UPDATE SET heartbeat_at = excluded.heartbeat_at, jobs = excluded.jobs, "
                "concurrency = excluded.concurrency",
                (worker_id, host, pid, jobs_json, version, concurrency, started_at, now),
            )

    def forget_workers(self, *, before: str | None = None, except_id: str | None = None,
                       only_id: str | None = None) -> int:
        """Delete worker rows: those whose heartbeat is older than ``before``, every one but
        ``except_id``, or only ``only_id``. Returns how many."""
        if only_id is not None:
            sql, params = "DELETE FROM durably_workers WHERE worker_id = ?", (only_id,)
        elif except_id is not None:
            sql, params = "DELETE FROM durably_workers WHERE worker_id <> ?", (except_id,)
        else:
            sql, params = "DELETE FROM durably_workers WHERE heartbeat_at < ?", (before,)
        with self._write(several=False):
            _, changes = self._x(sql, params)
        return changes

    def workers(self) -> list[WorkerRecord]:
        """Every recorded worker, live or not, by worker id."""
        with self._read():
            rows, _ = self._x(
                "SELECT worker_id, host, pid, jobs, version, concurrency, started_at, heartbeat_at "
                "FROM durably_workers ORDER BY worker_id"
            )
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

    def run_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """``(runs by status, pending runs by job name)``."""
        with self._read():
            by_status, _ = self._x("SELECT status, COUNT(*) FROM durably_runs GROUP BY status")
            # CAST: a hand edit may leave a BLOB where a job name belongs; names stay text.
            pending, _ = self._x(
                "SELECT CAST(job_name AS TEXT), COUNT(*) FROM durably_runs WHERE status = 'pending' "
                "GROUP BY 1"
            )
        return dict(by_status), dict(pending)

    def close(self) -> None:
        with self._lock:
            self.driver.close()


def _problems(*problems: str | None) -> str | None:
    """The decode problems of one record, joined; None if there are none."""
    found = [p for p in problems if p]
    return "; ".join(found) if found else None


def _has_logs(pending: PendingWrites | None) -> bool:
    return bool(pending is not None and pending.logs)
