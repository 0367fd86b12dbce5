"""The database schema on PostgreSQL, as numbered migrations.

A version number means the same tables and columns on both engines (``migrations.py`` is
SQLite's): a PostgreSQL database at version 2 holds what an SQLite file at version 2 holds,
so ``durably copy`` moves rows between them column for column. Indexes may differ: each
engine gets the ones its own statements need. A PostgreSQL database never had SQLite's
schema 1, so its first migration is number 2. Never edit a migration that has shipped;
add the next number, here and in ``migrations.py`` alike. Statements both engines take as
they are (most indexes) are imported from ``migrations.py``.

The choices that keep the two engines' data the same (docs/postgres.md says why):

- Timestamps stay fixed-width ISO-8601 UTC text (``2026-11-25T18:49:08.123456Z``), written by
  the app's clock, never by the server's ``now()``: text order is time order on both engines,
  a copy moves them unchanged, and tests keep their controllable clock.
- Every text column is ``COLLATE "C"``: byte order, like SQLite's ``BINARY``, whatever the
  database's locale (a ``en_US`` collation would order ids and timestamps differently from
  SQLite and compare them more slowly).
- JSON stays ``TEXT`` (not ``jsonb``, which would rewrite the stored text), integers are
  ``BIGINT`` (SQLite's integers are 64-bit), and the log id is an identity column that a
  copy may set explicitly (``BY DEFAULT``; ``durably copy`` moves the sequence past it).
- No triggers: waking (``NOTIFY``) is sent by the store's own statements.
"""

from __future__ import annotations

from .migrations import (
    ATTEMPTS_RUN_INDEX,
    RUNS_CONCURRENCY_INDEX,
    RUNS_FINISHED_INDEX,
    RUNS_IDEMPOTENCY_INDEX,
    RUNS_JOB_INDEX,
    RUNS_STATUS_INDEX,
    RUNS_WAKING_INDEX,
)

# Created by the store before it reads the version (as in migrations.py's SQLite store).
MIGRATIONS_TABLE = (
    'CREATE TABLE IF NOT EXISTS durably_migrations (version BIGINT PRIMARY KEY, applied_at TEXT COLLATE "C" NOT NULL)'
)

# Taken first in the migrating transaction: two processes starting on an empty database
# would otherwise both create the tables (PostgreSQL's DDL is transactional, so the loser
# would fail on the catalog's unique indexes). Per schema, like the tables.
MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('durably:migrate:' || current_schema(), 0))"

# The migrating transaction may wait for another process's migration, and a migration
# over a large table (a CHECK constraint is validated by a full scan) may run long: lift a
# statement_timeout or lock_timeout the server or role sets, for this transaction only.
MIGRATION_SETTINGS = "SELECT set_config('statement_timeout', '0', true), set_config('lock_timeout', '0', true)"

# Does this schema hold durably's tables? (SQLite asks sqlite_master.)
HAS_MIGRATIONS_TABLE = "SELECT to_regclass('durably_migrations') IS NOT NULL"

# Does search_path find durably_migrations in a schema other than the one CREATE TABLE
# writes to (its first existing schema)? An upgrade would then build a second, empty set of
# tables there, and every statement after it would read those instead of the runs.
TABLES_ELSEWHERE = (
    "SELECT n.nspname, current_schema() FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.oid = to_regclass('durably_migrations') AND n.nspname IS DISTINCT FROM current_schema()"
)

FIRST_VERSION = 2

MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        2,
        [
            """
            CREATE TABLE durably_runs (
                id               TEXT COLLATE "C" PRIMARY KEY,
                job_name         TEXT COLLATE "C" NOT NULL,
                status           TEXT COLLATE "C" NOT NULL CHECK (status IN
                                   ('pending', 'leased', 'completed', 'failed', 'cancelled')),
                input            TEXT COLLATE "C" NOT NULL,
                output           TEXT COLLATE "C",
                error            TEXT COLLATE "C",
                failed_step      TEXT COLLATE "C",
                labels           TEXT COLLATE "C" NOT NULL DEFAULT '{}',
                idempotency_key  TEXT COLLATE "C",
                concurrency_key  TEXT COLLATE "C",
                progress         TEXT COLLATE "C",
                lease_owner      TEXT COLLATE "C",
                lease_generation BIGINT NOT NULL DEFAULT 0,
                lease_expires_at TEXT COLLATE "C",
                completed_steps  BIGINT NOT NULL DEFAULT 0,
                retrigger_of     TEXT COLLATE "C",
                created_at       TEXT COLLATE "C" NOT NULL,
                started_at       TEXT COLLATE "C",
                completed_at     TEXT COLLATE "C",
                updated_at       TEXT COLLATE "C" NOT NULL
            )
            """,
            # Same job + same key = same run, forever (until the run is deleted). Also the
            # arbiter of INSERT ... ON CONFLICT for concurrent triggers with one key.
            RUNS_IDEMPOTENCY_INDEX,
            # Claiming (oldest pending first) and listing by status, newest first.
            RUNS_STATUS_INDEX,
            RUNS_JOB_INDEX,
            RUNS_CONCURRENCY_INDEX,
            # At most one run holds a concurrency key, whatever machine claims it: a run
            # that is leased (a live or expired lease), or cancelled while leased until its
            # worker acknowledges (record_cancelled clears the lease). Two claims racing for
            # runs of one key cannot both commit: the second waits for the first and fails
            # with a unique violation (23505), and the store tries its next candidate.
            # (SQLite needs no such index: BEGIN IMMEDIATE serialises its claims.)
            """
            CREATE UNIQUE INDEX durably_runs_key_holder
                ON durably_runs (concurrency_key)
                WHERE concurrency_key IS NOT NULL
                  AND (status = 'leased' OR (status = 'cancelled' AND lease_expires_at IS NOT NULL))
            """,
            # Retention and purge: finished runs by age.
            RUNS_FINISHED_INDEX,
            """
            CREATE TABLE durably_run_labels (
                run_id TEXT COLLATE "C" NOT NULL,
                key    TEXT COLLATE "C" NOT NULL,
                value  TEXT COLLATE "C" NOT NULL,
                PRIMARY KEY (run_id, key)
            )
            """,
            "CREATE INDEX durably_run_labels_kv ON durably_run_labels (key, value, run_id)",
            # SQLite's WITHOUT ROWID b-tree keyed (run_id, idx): on PostgreSQL a heap and its
            # primary key. A step's commit writes one heap tuple and one index entry.
            """
            CREATE TABLE durably_steps (
                run_id       TEXT COLLATE "C" NOT NULL,
                idx          BIGINT NOT NULL,
                name         TEXT COLLATE "C" NOT NULL,
                status       TEXT COLLATE "C" NOT NULL CHECK (status IN ('completed', 'failed', 'cancelled')),
                output       TEXT COLLATE "C",
                error        TEXT COLLATE "C",
                started_at   TEXT COLLATE "C" NOT NULL,
                completed_at TEXT COLLATE "C" NOT NULL,
                PRIMARY KEY (run_id, idx)
            )
            """,
            """
            CREATE TABLE durably_logs (
                id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                run_id     TEXT COLLATE "C" NOT NULL,
                step_name  TEXT COLLATE "C",
                level      TEXT COLLATE "C" NOT NULL,
                message    TEXT COLLATE "C" NOT NULL,
                data       TEXT COLLATE "C",
                created_at TEXT COLLATE "C" NOT NULL
            )
            """,
            "CREATE INDEX durably_logs_run ON durably_logs (run_id, id)",
        ],
    ),
    (
        3,
        [
            # The worker registry (migrations.py's migration 3, the same columns in the same
            # order): a heartbeat is one upsert, INSERT ... ON CONFLICT (worker_id) DO UPDATE,
            # which both engines take.
            """
            CREATE TABLE durably_workers (
                worker_id    TEXT COLLATE "C" PRIMARY KEY,
                host         TEXT COLLATE "C" NOT NULL,
                pid          BIGINT,
                jobs         TEXT COLLATE "C" NOT NULL,
                version      TEXT COLLATE "C" NOT NULL,
                concurrency  BIGINT NOT NULL,
                started_at   TEXT COLLATE "C" NOT NULL,
                heartbeat_at TEXT COLLATE "C" NOT NULL
            )
            """,
        ],
    ),
    (
        4,
        [
            # The browser's record of forwarded calls by request id (schema.py's migration 4,
            # the same columns in the same order). Only the browser host writes it; it is here
            # so a version means the same tables on both engines.
            """
            CREATE TABLE durably_requests (
                id         TEXT COLLATE "C" PRIMARY KEY,
                method     TEXT COLLATE "C" NOT NULL,
                reply      TEXT COLLATE "C" NOT NULL,
                created_at TEXT COLLATE "C" NOT NULL
            )
            """,
            "CREATE INDEX durably_requests_created ON durably_requests (created_at)",
        ],
    ),
    (
        5,
        [
            # Runs that wait (migrations.py's migration 5, which rebuilds its tables since
            # SQLite cannot change a CHECK): the same new status, columns in the same order.
            "ALTER TABLE durably_runs DROP CONSTRAINT durably_runs_status_check",
            """
            ALTER TABLE durably_runs ADD CONSTRAINT durably_runs_status_check CHECK (status IN
                ('pending', 'leased', 'waiting', 'completed', 'failed', 'cancelled'))
            """,
            """
            ALTER TABLE durably_runs
                ADD COLUMN wake_at     TEXT COLLATE "C",
                ADD COLUMN waiting_for TEXT COLLATE "C" CHECK (waiting_for IN ('retry', 'sleep', 'signal')),
                ADD COLUMN wait_step   TEXT COLLATE "C",
                ADD COLUMN attempt     BIGINT NOT NULL DEFAULT 1,
                ADD COLUMN deadline_at TEXT COLLATE "C"
            """,
            RUNS_WAKING_INDEX,
            "ALTER TABLE durably_steps DROP CONSTRAINT durably_steps_status_check",
            """
            ALTER TABLE durably_steps ADD CONSTRAINT durably_steps_status_check CHECK (status IN
                ('completed', 'failed', 'cancelled', 'waiting'))
            """,
            "ALTER TABLE durably_steps ALTER COLUMN completed_at DROP NOT NULL",
            'ALTER TABLE durably_steps ADD COLUMN wake_at TEXT COLLATE "C"',
            """
            CREATE TABLE durably_attempts (
                id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                run_id      TEXT COLLATE "C" NOT NULL,
                run_attempt BIGINT NOT NULL,
                step_name   TEXT COLLATE "C",
                step_index  BIGINT,
                attempt     BIGINT NOT NULL,
                error       TEXT COLLATE "C" NOT NULL,
                started_at  TEXT COLLATE "C" NOT NULL,
                finished_at TEXT COLLATE "C" NOT NULL
            )
            """,
            ATTEMPTS_RUN_INDEX,
            """
            CREATE TABLE durably_signals (
                run_id     TEXT COLLATE "C" NOT NULL,
                name       TEXT COLLATE "C" NOT NULL,
                signal_id  TEXT COLLATE "C" NOT NULL,
                payload    TEXT COLLATE "C" NOT NULL,
                created_at TEXT COLLATE "C" NOT NULL,
                PRIMARY KEY (run_id, name)
            )
            """,
            """
            CREATE TABLE durably_schedules (
                job_name   TEXT COLLATE "C" PRIMARY KEY,
                cron       TEXT COLLATE "C" NOT NULL,
                timezone   TEXT COLLATE "C" NOT NULL,
                catch_up   TEXT COLLATE "C" NOT NULL CHECK (catch_up IN ('latest', 'all', 'none')),
                last_slot  TEXT COLLATE "C",
                next_at    TEXT COLLATE "C" NOT NULL,
                updated_at TEXT COLLATE "C" NOT NULL
            )
            """,
        ],
    ),
    (
        6,
        [
            # migrations.py's migration 6 rebuilds SQLite's durably_requests as one b-tree
            # (same columns) to make a browser trigger's record cheaper; nothing changes here.
        ],
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]
