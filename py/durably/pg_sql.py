"""The statements that differ on PostgreSQL, one constant per store transition that needs it.

Everything else the store sends runs unchanged on both engines (docs/postgres.md lists
every statement and why). These are written with ``?`` placeholders, like the store's own
(``pg_driver`` translates them), and run in autocommit mode unless a comment says
"inside a transaction". Each is exercised against a real server by tests/pg/test_pg_sql.py.

Why they differ, in one line each:

- a claim must skip rows another worker is claiming instead of waiting for them
  (``FOR UPDATE SKIP LOCKED``); SQLite has one writer at a time and needs none;
- a fenced step or attempt insert must lock the run row it checks (``FOR SHARE``), or
  under READ COMMITTED it could read a generation that a claim is replacing at that moment;
- ``+job_name`` (SQLite's "do not use this index") is not valid on text in PostgreSQL,
  and a list of job names is one array parameter (``= ANY(?)``);
- ``INSERT OR IGNORE`` is ``ON CONFLICT DO NOTHING``;
- two triggers with one concurrency key must not both see "no pending run": an advisory
  lock per (job, key), taken before the check, does what SQLite's ``BEGIN IMMEDIATE`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from . import migrations_postgres as schema
from .dialect import Dialect
from .rows import RUN_COLUMNS

#: Channel of the wake-up notifications; the payload is the job name.
WAKE_CHANNEL = "durably_wake"

# -- claiming ----------------------------------------------------------------------------------

# A concurrency key is held as in the SQLite claim (see Store.claim); the unique index
# durably_runs_key_holder makes "held by one run" hold across machines too.
_HOLDS_KEY = "SELECT 1 FROM durably_runs o WHERE o.concurrency_key = r.concurrency_key AND o.id <> r.id"
# A pending or due waiting run waits while another run of its key is leased, or cancelled
# with a lease its worker has not acknowledged. Parameter: now.
_FREE_KEY_PENDING = (
    f"(r.concurrency_key IS NULL OR NOT EXISTS ({_HOLDS_KEY}"
    " AND (o.status = 'leased' OR (o.status = 'cancelled' AND o.lease_expires_at >= ?))))"
)

#: Lease the claimable run of the given jobs that fell due first. Parameters: job names (a
#: list), now, now, job names, now, now, job names, now, owner, lease_until, now, now.
#: Returns the run's RUN_COLUMNS, or no row. A 23505 (durably_runs_key_holder) means another
#: worker took a run of the same key at the same moment: clear expired cancel holds
#: (CLEAR_EXPIRED_CANCEL_HOLDS) and claim again.
#: As on SQLite, three candidates: the oldest pending run, the oldest run whose lease
#: expired (both due since they were created), and the waiting run whose wake_at fell due
#: first (the partial index durably_runs_waking); a waiting run waits for its concurrency
#: key like a pending one. Each is the first row of its own index range that no other claim
#: has locked, so concurrent workers get different runs; the claim is a transaction of its
#: own, so the locks of the candidates not taken end with it. ``job_name || ''`` keeps the planner
#: off the job index, as SQLite's unary + does, so it walks the (status, id) index in order
#: and stops at the first row it may take; an ordered index scan also marks the dead
#: entries it passes (runs claimed since the last vacuum), so later claims skip them. (The
#: driver turns bitmap scans off: they would visit and sort every entry of the status,
#: dead ones included.)
CLAIM = f"""
WITH pending AS (
    SELECT r.id, r.created_at AS due FROM durably_runs r
    WHERE r.status = 'pending' AND (r.job_name || '') = ANY(?) AND {_FREE_KEY_PENDING}
    ORDER BY r.id LIMIT 1
    FOR UPDATE SKIP LOCKED
), expired AS (
    SELECT r.id, r.created_at AS due FROM durably_runs r
    WHERE r.status = 'leased' AND r.lease_expires_at < ? AND (r.job_name || '') = ANY(?)
      AND (r.concurrency_key IS NULL OR NOT EXISTS ({_HOLDS_KEY}
           AND o.status IN ('leased', 'cancelled') AND o.lease_expires_at >= ?))
    ORDER BY r.id LIMIT 1
    FOR UPDATE SKIP LOCKED
), waking AS (
    SELECT r.id, r.wake_at AS due FROM durably_runs r
    WHERE r.status = 'waiting' AND r.wake_at <= ? AND (r.job_name || '') = ANY(?) AND {_FREE_KEY_PENDING}
    ORDER BY r.wake_at LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE durably_runs
SET status = 'leased', lease_owner = ?, lease_generation = lease_generation + 1,
    lease_expires_at = ?, started_at = COALESCE(started_at, ?), updated_at = ?,
    wake_at = NULL, waiting_for = NULL, wait_step = NULL
WHERE id = (
    SELECT id FROM (SELECT * FROM pending UNION ALL SELECT * FROM expired UNION ALL SELECT * FROM waking) c
    ORDER BY due, id LIMIT 1)
RETURNING {RUN_COLUMNS}
"""

#: A run cancelled while leased whose worker died keeps its lease fields, and with them its
#: place in durably_runs_key_holder, until its lease expires; SQLite's claim treats it as
#: free from then on. Parameter: now.
CLEAR_EXPIRED_CANCEL_HOLDS = (
    "UPDATE durably_runs SET lease_owner = NULL, lease_expires_at = NULL "
    "WHERE status = 'cancelled' AND concurrency_key IS NOT NULL AND lease_expires_at < ?"
)

# -- the worker's writes -------------------------------------------------------------------------

#: Store a completed step, fenced: nothing is written unless the run is leased at this
#: generation when the row lock is granted (a claim in flight is waited for, then re-read).
#: Parameters: run_id, index, name, output, started_at, now, run_id, generation.
COMPLETE_STEP = (
    "INSERT INTO durably_steps (run_id, idx, name, status, output, started_at, completed_at) "
    "SELECT ?, ?, ?, 'completed', ?, ?, ? FROM durably_runs "
    "WHERE id = ? AND status = 'leased' AND lease_generation = ? FOR SHARE"
)

#: The failed or cancelled step that ends a run (inside the finishing transaction); a
#: ``waiting`` row at its index (the step waited for a retry) takes the new status, any
#: other row stays. Parameters: run_id, index, name, status, error, started_at, now.
INSERT_STEP_RECORD = (
    "INSERT INTO durably_steps (run_id, idx, name, status, error, started_at, completed_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, idx) DO UPDATE SET status = excluded.status, "
    "error = excluded.error, completed_at = excluded.completed_at, wake_at = NULL "
    "WHERE durably_steps.status = 'waiting'"
)

#: Record a failed attempt, fenced as COMPLETE_STEP is (the run row locked FOR SHARE, so a
#: claim in flight is waited for and the generation read after it). Parameters: run_id,
#: run_attempt, step_name, step_index, attempt, error, started_at, finished_at, run_id,
#: generation.
RECORD_ATTEMPT = (
    "INSERT INTO durably_attempts (run_id, run_attempt, step_name, step_index, attempt, error, "
    "started_at, finished_at) SELECT ?, ?, ?, ?, ?, ?, ?, ? FROM durably_runs "
    "WHERE id = ? AND status = 'leased' AND lease_generation = ? FOR SHARE"
)

# -- triggering ------------------------------------------------------------------------------------

#: Inside the trigger's transaction, before looking for a pending run of the same job and
#: concurrency key: concurrent triggers of one (job, key) take turns, and each one's check
#: (a new snapshot under READ COMMITTED) sees the run the previous one inserted. The lock is
#: named after the runs table the statement reaches (its oid), not the first schema of
#: search_path: processes whose search_path spells the way to one table differently still
#: take the same lock. Parameters: job_name, concurrency_key.
TRIGGER_KEY_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtextextended('durably:trigger:' || "
    "CAST(CAST(to_regclass('durably_runs') AS oid) AS text) || ':' || ? || ':' || ?, 0))"
)

#: Wake the workers that LISTEN: delivered when the sending transaction commits (never for
#: one that rolls back), once per distinct payload per transaction. Parameter: job_name.
#: Every notifying commit takes one lock for the whole cluster, so a trigger that sends it
#: commits one at a time with the others that do: send it once per transaction.
WAKE = f"SELECT pg_notify('{WAKE_CHANNEL}', ?)"

# -- reading -----------------------------------------------------------------------------------

#: ``get_runs`` without a limit: PostgreSQL refuses SQLite's ``LIMIT -1``; both engines
#: take the largest 64-bit integer as "no limit".
NO_LIMIT = 2**63 - 1

# -- the dialect ---------------------------------------------------------------------------------

#: A migration's ``applied_at`` in the fixed-width format of every other timestamp.
RECORD_MIGRATION = (
    "INSERT INTO durably_migrations (version, applied_at) "
    """VALUES (?, to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))"""
)

#: After ``durably copy`` wrote log lines and attempts with their ids: each identity
#: column's next value goes past the largest one, or the next row would collide with a copied one.
AFTER_COPY = tuple(
    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
    for table in ("durably_logs", "durably_attempts")
)


#: ``Dialect.copy_mark``: a transaction-scoped advisory lock on a random key (released when
#: the copy's transaction ends), and the runs table's oid (unique within a database).
COPY_MARK = "SELECT CAST(to_regclass('durably_runs') AS oid) FROM (SELECT pg_advisory_xact_lock(?)) AS l"

#: ``Dialect.copy_seen``: the runs table's oid when this database holds the copy's mark (a
#: 64-bit advisory key shows as classid, objid and objsubid 1 in pg_locks, which every role
#: may read). Parameters: the key's high 32 bits, its low 32 bits.
COPY_SEEN = (
    "SELECT CAST(to_regclass('durably_runs') AS oid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND CAST(classid AS bigint) = ? AND CAST(objid AS bigint) = ? AND objsubid = 1"
)


def _claim(owner: str, job_names: Sequence[str], now: str, lease_until: str) -> tuple[str, tuple[Any, ...]]:
    jobs = list(job_names)
    return CLAIM, (jobs, now, now, jobs, now, now, jobs, now, owner, lease_until, now, now)


#: PostgreSQL's text for ``durably.dialect.Dialect``'s fields: what ``Durably("postgresql://...")``
#: runs the store with.
def _waking(insert: str) -> str:
    """An ``INSERT INTO durably_runs`` that also wakes the workers of the run's job: a
    plain trigger's insert and its wake-up commit (and flush) once, not twice."""
    return f"WITH inserted AS ({insert} RETURNING job_name) SELECT pg_notify('{WAKE_CHANNEL}', job_name) FROM inserted"


POSTGRES = Dialect(
    name="postgresql",
    begin="BEGIN",
    begin_read="BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    migrations=schema.MIGRATIONS,
    create_migrations_table=schema.MIGRATIONS_TABLE,
    has_migrations_table=schema.HAS_MIGRATIONS_TABLE,
    tables_elsewhere=schema.TABLES_ELSEWHERE,
    record_migration=RECORD_MIGRATION,
    migration_lock=schema.MIGRATION_LOCK,
    migration_settings=schema.MIGRATION_SETTINGS,
    claim=_claim,
    complete_step=COMPLETE_STEP,
    insert_step_record=INSERT_STEP_RECORD,
    record_attempt=RECORD_ATTEMPT,
    unique_violation="23505",
    clear_expired_cancel_holds=CLEAR_EXPIRED_CANCEL_HOLDS,
    trigger_key_lock=TRIGGER_KEY_LOCK,
    lock_row=" FOR UPDATE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    wake=WAKE,
    wake_channel=WAKE_CHANNEL,
    waking=_waking,
    after_copy=AFTER_COPY,
    copy_mark=COPY_MARK,
    copy_seen=COPY_SEEN,
    text_takes_nul=False,
)

#: ``POSTGRES`` without wake-ups: triggers send no ``NOTIFY`` and workers do not listen, so
#: runs written by other processes are found by polling alone (``PostgresDriver(notify=False)``;
#: the benchmarks compare the two).
POSTGRES_POLLING = replace(POSTGRES, name="postgresql (polling)", wake=None, wake_channel=None, waking=None)
