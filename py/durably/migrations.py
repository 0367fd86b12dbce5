"""The database schema, as numbered migrations.

This is the contract between the hosts: a file written in the browser opens on CPython and
the reverse. Never edit a migration that has shipped; add the next number instead.
All tables are prefixed ``durably_`` so the runtime can share a file with an application.
"""

from __future__ import annotations

# Statements that more than one migration sends, or that both engines take as they are
# (migrations_postgres imports them): written once. The text must never change, since it is
# what shipped databases were created with.

RUNS_IDEMPOTENCY_INDEX = """
            CREATE UNIQUE INDEX durably_runs_idempotency
                ON durably_runs (job_name, idempotency_key) WHERE idempotency_key IS NOT NULL
            """
RUNS_STATUS_INDEX = "CREATE INDEX durably_runs_status ON durably_runs (status, id)"
RUNS_JOB_INDEX = "CREATE INDEX durably_runs_job ON durably_runs (job_name, id)"
RUNS_CONCURRENCY_INDEX = """
            CREATE INDEX durably_runs_concurrency
                ON durably_runs (concurrency_key, status) WHERE concurrency_key IS NOT NULL
            """
RUNS_FINISHED_INDEX = """
            CREATE INDEX durably_runs_finished
                ON durably_runs (completed_at) WHERE completed_at IS NOT NULL
            """
# The columns of durably_steps in migrations 1 and 2 (2 rebuilt the table with a new key).
_STEP_COLUMNS = """
                run_id       TEXT NOT NULL,
                idx          INTEGER NOT NULL,
                name         TEXT NOT NULL,
                status       TEXT NOT NULL CHECK (status IN ('completed', 'failed', 'cancelled')),
                output       TEXT,
                error        TEXT,
                started_at   TEXT NOT NULL,
                completed_at TEXT NOT NULL,"""

#: (version, its statements), in order. Each version's statements run in one transaction.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """
            CREATE TABLE durably_runs (
                id               TEXT PRIMARY KEY,
                job_name         TEXT NOT NULL,
                status           TEXT NOT NULL CHECK (status IN
                                   ('pending', 'leased', 'completed', 'failed', 'cancelled')),
                input            TEXT NOT NULL,
                output           TEXT,
                error            TEXT,
                failed_step      TEXT,
                labels           TEXT NOT NULL DEFAULT '{}',
                idempotency_key  TEXT,
                concurrency_key  TEXT,
                progress         TEXT,
                lease_owner      TEXT,
                lease_generation INTEGER NOT NULL DEFAULT 0,
                lease_expires_at TEXT,
                completed_steps  INTEGER NOT NULL DEFAULT 0,
                retrigger_of     TEXT,
                created_at       TEXT NOT NULL,
                started_at       TEXT,
                completed_at     TEXT,
                updated_at       TEXT NOT NULL
            )
            """,
            # Same job + same key = same run, forever (until the run is deleted).
            RUNS_IDEMPOTENCY_INDEX,
            # Claiming (oldest pending first) and listing by status, newest first.
            RUNS_STATUS_INDEX,
            RUNS_JOB_INDEX,
            RUNS_CONCURRENCY_INDEX,
            # Retention and purge: finished runs by age.
            RUNS_FINISHED_INDEX,
            """
            CREATE TABLE durably_run_labels (
                run_id TEXT NOT NULL,
                key    TEXT NOT NULL,
                value  TEXT NOT NULL,
                PRIMARY KEY (run_id, key)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX durably_run_labels_kv ON durably_run_labels (key, value, run_id)",
            f"""
            CREATE TABLE durably_steps ({_STEP_COLUMNS}
                UNIQUE (run_id, idx),
                UNIQUE (run_id, name)
            )
            """,
            """
            CREATE TABLE durably_logs (
                id         INTEGER PRIMARY KEY,
                run_id     TEXT NOT NULL,
                step_name  TEXT,
                level      TEXT NOT NULL,
                message    TEXT NOT NULL,
                data       TEXT,
                created_at TEXT NOT NULL
            )
            """,
            "CREATE INDEX durably_logs_run ON durably_logs (run_id, id)",
            # A completed step bumps its run's counters in the statement that stores it, so
            # a step costs one statement (one bridge call in the browser) and one commit.
            # (Dropped by migration 2, which writes nothing to the run per step.)
            """
            CREATE TRIGGER durably_steps_completed AFTER INSERT ON durably_steps
            WHEN NEW.status = 'completed'
            BEGIN
                UPDATE durably_runs
                SET completed_steps = completed_steps + 1, updated_at = NEW.completed_at
                WHERE id = NEW.run_id;
            END
            """,
        ],
    ),
    (
        2,
        [
            # Steps in one b-tree keyed (run_id, idx), and no per-step write to the run's row:
            # a step's commit now writes about one page instead of four or five (the steps
            # table, its two unique indexes and the run's row through the trigger). A step's
            # name is unique within its run because the runtime checks it; the run's
            # completed_steps is counted from this table while the run is unfinished and
            # stored when it finishes (see models.RUN_COLUMNS and Store.finish_run).
            f"""
            CREATE TABLE durably_steps_v2 ({_STEP_COLUMNS}
                PRIMARY KEY (run_id, idx)
            ) WITHOUT ROWID
            """,
            """
            INSERT INTO durably_steps_v2
                (run_id, idx, name, status, output, error, started_at, completed_at)
            SELECT run_id, idx, name, status, output, error, started_at, completed_at
            FROM durably_steps
            """,
            "DROP TRIGGER durably_steps_completed",
            "DROP TABLE durably_steps",
            "ALTER TABLE durably_steps_v2 RENAME TO durably_steps",
            # Finished runs keep their count in the row (their steps may be deleted by
            # preserve_steps=False); unfinished ones are counted at read time.
            """
            UPDATE durably_runs SET completed_steps = (
                SELECT COUNT(*) FROM durably_steps s
                WHERE s.run_id = durably_runs.id AND s.status = 'completed')
            WHERE completed_at IS NULL
            """,
        ],
    ),
    (
        3,
        [
            # The worker registry: every started worker records itself and heartbeats, so
            # `durably status` can tell which jobs a live worker runs, and which pending runs
            # no live worker will ever execute (a typo in a trigger-only process's job name).
            # See durably.limits for the heartbeat interval and the staleness window.
            """
            CREATE TABLE durably_workers (
                worker_id    TEXT PRIMARY KEY,
                host         TEXT NOT NULL,
                pid          INTEGER,
                jobs         TEXT NOT NULL,
                version      TEXT NOT NULL,
                concurrency  INTEGER NOT NULL,
                started_at   TEXT NOT NULL,
                heartbeat_at TEXT NOT NULL
            ) WITHOUT ROWID
            """,
        ],
    ),
    (
        4,
        [
            # The browser's calls forwarded from one tab to the tab that runs the jobs carry a
            # request id; when that tab closes before its reply arrives, the call is sent again
            # to the tab that takes over. A call that changes runs records its reply here, in
            # the transaction of the change, so the second attempt gets the first one's reply
            # and never makes a second run (durably.browser, docs/protocol.md). Rows are only
            # needed for the seconds a hand-over takes; the browser host deletes old ones.
            """
            CREATE TABLE durably_requests (
                id         TEXT PRIMARY KEY,
                method     TEXT NOT NULL,
                reply      TEXT NOT NULL,
                created_at TEXT NOT NULL
            )
            """,
            "CREATE INDEX durably_requests_created ON durably_requests (created_at)",
        ],
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]
