"""The SQL that differs between database engines, as data the store sends.

The store writes every statement once; where an engine needs other text, the store sends
``store.dialect.<name>`` instead, and it never asks which engine it has. ``SQLITE`` is
SQLite's (a file on CPython, OPFS in the browser); ``durably.pg_sql.POSTGRES`` is
PostgreSQL's, filled from ``pg_sql`` and ``migrations_postgres`` (docs/postgres.md lists
each statement and why it differs). :func:`for_driver` picks one from the driver's name,
importing the PostgreSQL half only for a PostgreSQL driver, so the browser never loads it.

Fields that are ``None`` (or empty) on SQLite are steps SQLite does not need: its
``BEGIN IMMEDIATE`` serialises every writer, and nothing listens for wake-ups.

Statements take ``?`` placeholders on every engine (the PostgreSQL driver translates them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .migrations import MIGRATIONS
from .rows import RUN_COLUMNS

#: ``LIMIT`` for "no limit", taken by SQLite and PostgreSQL alike (PostgreSQL refuses -1).
NO_LIMIT = 2**63 - 1

#: ``claim(owner, job_names, now, lease_until) -> (sql, params)``.
ClaimStatement = Callable[[str, Sequence[str], str, str], tuple[str, tuple[Any, ...]]]


@dataclass(frozen=True)
class Dialect:
    """One engine's text for the statements that differ (see the module docstring)."""

    #: A short name for messages, e.g. ``"sqlite"``.
    name: str
    #: Opens a write transaction that holds the write lock (or row locks) it needs up front.
    begin: str
    #: Opens a read transaction that sees one moment's state (``durably copy``'s source).
    begin_read: str
    #: The numbered migrations: ``(version, [statement, ...])``, oldest first.
    migrations: Sequence[tuple[int, Sequence[str]]]
    #: Creates the table of applied migrations if it is missing (inside the migration).
    create_migrations_table: str
    #: One row whose one value is true when the migrations table exists (reads only).
    has_migrations_table: str
    #: Records that migration ``?`` was applied.
    record_migration: str
    #: Taken first in the migrating transaction where two processes could both migrate an
    #: empty database at once; None where ``begin`` already serialises them.
    migration_lock: str | None
    #: Leases the oldest claimable run of the given jobs and returns its ``RUN_COLUMNS``.
    claim: ClaimStatement
    #: Stores a completed step, fenced by the run's status and lease generation.
    #: Parameters: run_id, index, name, output, started_at, now, run_id, generation.
    complete_step: str
    #: Stores the failed or cancelled step that ends a run, unless one is stored at its index;
    #: a ``waiting`` row there (the step waited for a retry) takes the new status.
    #: Parameters: run_id, index, name, status, error, started_at, now.
    insert_step_record: str
    #: Records a failed attempt, fenced like ``complete_step``. Parameters: run_id,
    #: run_attempt, step_name, step_index, attempt, error, started_at, finished_at, run_id,
    #: generation.
    record_attempt: str
    #: The driver's ``StorageError.code`` for a unique violation (a claim that raced another
    #: for a concurrency key, on an engine where claims run at the same time).
    unique_violation: str
    #: Cleared before a claim is tried again after ``unique_violation``: holds of runs
    #: cancelled while leased whose lease expired (their worker died). Parameter: now.
    clear_expired_cancel_holds: str | None = None
    #: Taken inside a trigger's transaction before it looks for a pending run of the same
    #: job and concurrency key, where triggers run at the same time. Parameters: job, key.
    trigger_key_lock: str | None = None
    #: Appended to a ``SELECT`` of one run that is then written in the same transaction, so
    #: a concurrent write waits (``" FOR UPDATE"``); empty where ``begin`` locks already.
    lock_row: str = ""
    #: Appended to purge's ``SELECT``: two purges in parallel take different runs.
    skip_locked: str = ""
    #: Tells waiting workers a run became claimable (one parameter: the job name, or
    #: ``"*"`` for any job); sent in the transaction that does it. None: nobody listens.
    wake: str | None = None
    #: The channel a worker listens on for ``wake`` (``Store.listen``); None: polling only.
    wake_channel: str | None = None
    #: Turns an ``INSERT INTO durably_runs`` into one statement that also sends ``wake``
    #: for the inserted run's job (same parameters): for an insert sent alone, with no
    #: transaction to carry the wake-up. None where ``wake`` is None.
    waking: Callable[[str], str] | None = None
    #: Sent after ``durably copy`` wrote rows with their ids (PostgreSQL's identity columns
    #: must be moved past them).
    after_copy: Sequence[str] = ()
    #: Where tables are found through a search path (PostgreSQL): rows ``(schema holding
    #: the migrations table, schema new tables go to)`` when the two differ, else none. An
    #: upgrade is refused then: its new tables would land apart from the runs. None: no
    #: search path (SQLite).
    tables_elsewhere: str | None = None
    #: ``durably copy`` asks whether its source and target are the same tables reached by
    #: two spellings of one URL. Inside the target's transaction, ``copy_mark`` (parameter: a
    #: random 63-bit key) takes a mark only that transaction holds and returns one row: the
    #: runs table's identity. ``copy_seen`` (parameters: the key's high and low 32 bits), on
    #: the source, returns that identity when it sees the mark in its own database, else no
    #: row. None: the engine cannot tell (SQLite's CLI compares the files instead).
    copy_mark: str | None = None
    copy_seen: str | None = None
    #: Sent first in the migrating transaction, before ``migration_lock``: lifts the
    #: server's statement and lock timeouts for that transaction alone, since waiting for
    #: another process's migration, or a migration over a large table, may take longer than
    #: any statement should. None: nothing to lift.
    migration_settings: str | None = None
    #: Whether text may hold NUL (``"\x00"``): SQLite's may, PostgreSQL's may not.
    text_takes_nul: bool = True

    @property
    def latest_version(self) -> int:
        """The version the last migration brings a database to."""
        return self.migrations[-1][0]


# -- SQLite ------------------------------------------------------------------------------------

# A concurrency key is held by a run that is leased, or cancelled while leased until its
# worker has stopped it (cancel keeps the lease; the worker's acknowledgement, or the lease's
# expiry if that worker died, clears it). A pending run waits while any other run of its key
# is leased, even with an expired lease: that run's worker may only be slow, not dead, and
# may still be executing a step. The expired run itself is claimable (taken over, its old
# worker fenced out) unless another run of its key holds a live lease. A row without an id
# (SQLite allows a NULL TEXT primary key; only a hand edit makes one) would sort first and
# match no `id = ?`, so the claim would find nothing for ever: such rows are skipped.
_HOLDS_KEY = "SELECT 1 FROM durably_runs o WHERE o.concurrency_key = r.concurrency_key AND o.id <> r.id"
_FREE_KEY_PENDING = (
    f"(r.concurrency_key IS NULL OR NOT EXISTS ({_HOLDS_KEY} AND (o.status = 'leased'"
    " OR (o.status = 'cancelled' AND o.lease_expires_at >= ?))))"
)
_FREE_KEY_EXPIRED = (
    f"(r.concurrency_key IS NULL OR NOT EXISTS ({_HOLDS_KEY}"
    " AND o.status IN ('leased', 'cancelled') AND o.lease_expires_at >= ?))"
)


@lru_cache(maxsize=64)
def _sqlite_claim_sql(jobs: int) -> str:
    # Three candidates, each the first of its own index range: the oldest pending run and the
    # oldest run whose lease expired (by id in the index (status, id)), and the waiting run
    # that fell due first (by wake_at in the partial index durably_runs_waking). Asking for
    # them with one OR made SQLite walk every run of the registered jobs and sort them, which
    # grew with the finished runs kept in the table. The unary + keeps SQLite off the
    # (job_name, id) index, which would walk a job's finished runs too. Of the three, the one
    # due first is taken: a pending run is due since it was created, a waiting one at wake_at.
    # A waiting run holds no concurrency key; once due it waits for its key like a pending run.
    marks = ", ".join("?" * jobs)
    return f"""
                UPDATE durably_runs
                SET status = 'leased', lease_owner = ?, lease_generation = lease_generation + 1,
                    lease_expires_at = ?, started_at = COALESCE(started_at, ?), updated_at = ?,
                    wake_at = NULL, waiting_for = NULL, wait_step = NULL
                WHERE id = (
                    SELECT id FROM (
                        SELECT * FROM (
                            SELECT r.id, r.created_at AS due FROM durably_runs r
                            WHERE r.status = 'pending' AND r.id IS NOT NULL
                              AND +r.job_name IN ({marks}) AND {_FREE_KEY_PENDING}
                            ORDER BY r.id LIMIT 1)
                        UNION ALL
                        SELECT * FROM (
                            SELECT r.id, r.created_at AS due FROM durably_runs r
                            WHERE r.status = 'leased' AND r.lease_expires_at < ? AND r.id IS NOT NULL
                              AND +r.job_name IN ({marks}) AND {_FREE_KEY_EXPIRED}
                            ORDER BY r.id LIMIT 1)
                        UNION ALL
                        SELECT * FROM (
                            SELECT r.id, r.wake_at AS due FROM durably_runs r
                            WHERE r.status = 'waiting' AND r.wake_at <= ? AND r.id IS NOT NULL
                              AND +r.job_name IN ({marks}) AND {_FREE_KEY_PENDING}
                            ORDER BY r.wake_at LIMIT 1))
                    ORDER BY due, id LIMIT 1)
                RETURNING {RUN_COLUMNS}
                """


def _sqlite_claim(owner: str, job_names: Sequence[str], now: str, lease_until: str) -> tuple[str, tuple[Any, ...]]:
    return _sqlite_claim_sql(len(job_names)), (
        owner, lease_until, now, now, *job_names, now, now, *job_names, now, now, *job_names, now,
    )  # fmt: skip


SQLITE = Dialect(
    name="sqlite",
    begin="BEGIN IMMEDIATE",
    begin_read="BEGIN",  # deferred: the snapshot starts at the first read (WAL)
    migrations=MIGRATIONS,
    create_migrations_table=(
        "CREATE TABLE IF NOT EXISTS durably_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
    ),
    has_migrations_table=(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'durably_migrations')"
    ),
    record_migration=(
        "INSERT INTO durably_migrations (version, applied_at) VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
    ),
    migration_lock=None,
    claim=_sqlite_claim,
    complete_step=(
        "INSERT INTO durably_steps (run_id, idx, name, status, output, started_at, completed_at) "
        "SELECT ?, ?, ?, 'completed', ?, ?, ? WHERE EXISTS (SELECT 1 FROM durably_runs "
        "WHERE id = ? AND status = 'leased' AND lease_generation = ?)"
    ),
    insert_step_record=(
        "INSERT INTO durably_steps (run_id, idx, name, status, error, started_at, completed_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, idx) DO UPDATE SET status = excluded.status, "
        "error = excluded.error, completed_at = excluded.completed_at, wake_at = NULL "
        "WHERE durably_steps.status = 'waiting'"
    ),
    record_attempt=(
        "INSERT INTO durably_attempts (run_id, run_attempt, step_name, step_index, attempt, error, "
        "started_at, finished_at) SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM durably_runs "
        "WHERE id = ? AND status = 'leased' AND lease_generation = ?)"
    ),
    unique_violation="SQLITE_CONSTRAINT_UNIQUE",
)


def for_driver(driver: Any) -> Dialect:
    """The dialect of a driver's engine, by its ``name``: ``"postgresql"`` (``PostgresDriver``)
    gets PostgreSQL's, every other driver SQLite's. A PostgreSQL driver with ``notify=False``
    gets PostgreSQL's without wake-ups (polling only: for comparisons)."""
    if getattr(driver, "name", None) != "postgresql":
        return SQLITE
    from . import pg_sql  # only here: the browser's build leaves PostgreSQL's modules out

    return pg_sql.POSTGRES if getattr(driver, "notify", True) else pg_sql.POSTGRES_POLLING
