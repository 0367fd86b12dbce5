"""The SQL that differs between database engines, as data the store sends.

The store writes every statement once; where an engine needs other text, the store sends
``store.dialect.<name>`` instead, and it never asks which engine it has. ``SQLITE`` is the
one dialect the store uses today (a file on CPython, OPFS in the browser). A PostgreSQL
dialect fills the same fields from ``pg_sql`` and ``migrations_postgres`` (docs/postgres.md
lists each statement and why it differs): ``begin`` is ``"BEGIN"``, ``migration_lock`` an
advisory lock, ``claim`` passes the job names as one array parameter.

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
)
