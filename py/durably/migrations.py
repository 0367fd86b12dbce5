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
# The columns of durably_steps in migrations 1 and 2 (2 rebuilt the table with a new key;
# 5 rebuilds it again with the status 'waiting', a nullable completed_at and wake_at).
_STEP_COLUMNS = """
                run_id       TEXT NOT NULL,
                idx          INTEGER NOT NULL,
                name         TEXT NOT NULL,
                status       TEXT NOT NULL CHECK (status IN ('completed', 'failed', 'cancelled')),
                output       TEXT,
                error        TEXT,
                started_at   TEXT NOT NULL,
                completed_at TEXT NOT NULL,"""

# -- migration 5: runs that wait (retries, durable sleep, signals, timeouts, schedules) --------
#
# SQLite cannot change a CHECK constraint in place: durably_runs and durably_steps are rebuilt
# with the new status 'waiting' and the new columns appended (in the same order as
# migrations_postgres adds them with ALTER TABLE), and their indexes created again.

#: A waiting run is claimable once its wake_at is due: the claim walks this index, oldest due
#: first (docs/architecture.md, "Runs that wait").
RUNS_WAKING_INDEX = "CREATE INDEX durably_runs_waking ON durably_runs (wake_at) WHERE status = 'waiting'"
ATTEMPTS_RUN_INDEX = "CREATE INDEX durably_attempts_run ON durably_attempts (run_id, step_name, run_attempt)"

_RUN_COLUMNS_4 = (
    "id, job_name, status, input, output, error, failed_step, labels, idempotency_key, concurrency_key, "
    "progress, lease_owner, lease_generation, lease_expires_at, completed_steps, retrigger_of, created_at, "
    "started_at, completed_at, updated_at"
)
_STEP_COLUMNS_4 = "run_id, idx, name, status, output, error, started_at, completed_at"

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
    (
        5,
        [
            """
            CREATE TABLE durably_runs_v5 (
                id               TEXT PRIMARY KEY,
                job_name         TEXT NOT NULL,
                status           TEXT NOT NULL CHECK (status IN
                                   ('pending', 'leased', 'waiting', 'completed', 'failed', 'cancelled')),
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
                updated_at       TEXT NOT NULL,
                wake_at          TEXT,
                waiting_for      TEXT CHECK (waiting_for IN ('retry', 'sleep', 'signal')),
                wait_step        TEXT,
                attempt          INTEGER NOT NULL DEFAULT 1,
                deadline_at      TEXT
            )
            """,
            f"INSERT INTO durably_runs_v5 ({_RUN_COLUMNS_4}) SELECT {_RUN_COLUMNS_4} FROM durably_runs",
            "DROP TABLE durably_runs",
            "ALTER TABLE durably_runs_v5 RENAME TO durably_runs",
            RUNS_IDEMPOTENCY_INDEX,
            RUNS_STATUS_INDEX,
            RUNS_JOB_INDEX,
            RUNS_CONCURRENCY_INDEX,
            RUNS_FINISHED_INDEX,
            RUNS_WAKING_INDEX,
            # A step that waits (a sleep, a signal, a retry's backoff) is stored as 'waiting'
            # with the time it is due (wake_at; NULL for a signal without a timeout), so a
            # replay keeps the original deadline. It is not completed: completed_at is NULL.
            """
            CREATE TABLE durably_steps_v5 (
                run_id       TEXT NOT NULL,
                idx          INTEGER NOT NULL,
                name         TEXT NOT NULL,
                status       TEXT NOT NULL CHECK (status IN ('completed', 'failed', 'cancelled', 'waiting')),
                output       TEXT,
                error        TEXT,
                started_at   TEXT NOT NULL,
                completed_at TEXT,
                wake_at      TEXT,
                PRIMARY KEY (run_id, idx)
            ) WITHOUT ROWID
            """,
            f"INSERT INTO durably_steps_v5 ({_STEP_COLUMNS_4}) SELECT {_STEP_COLUMNS_4} FROM durably_steps",
            "DROP TABLE durably_steps",
            "ALTER TABLE durably_steps_v5 RENAME TO durably_steps",
            # Every failed attempt of a step (or of the job, between steps: step_name NULL):
            # what get_steps shows as a step's attempts. run_attempt is the job-level attempt
            # it belonged to; attempt counts the step's attempts within it.
            """
            CREATE TABLE durably_attempts (
                id          INTEGER PRIMARY KEY,
                run_id      TEXT NOT NULL,
                run_attempt INTEGER NOT NULL,
                step_name   TEXT,
                step_index  INTEGER,
                attempt     INTEGER NOT NULL,
                error       TEXT NOT NULL,
                started_at  TEXT NOT NULL,
                finished_at TEXT NOT NULL
            )
            """,
            ATTEMPTS_RUN_INDEX,
            # Signals sent to runs (Durably.signal): one per run and name, the first wins.
            # Stored until the run waits for that name (step.wait_for_signal).
            """
            CREATE TABLE durably_signals (
                run_id     TEXT NOT NULL,
                name       TEXT NOT NULL,
                signal_id  TEXT NOT NULL,
                payload    TEXT NOT NULL,
                created_at TEXT NOT NULL,
                PRIMARY KEY (run_id, name)
            ) WITHOUT ROWID
            """,
            # One row per scheduled job: its cron expression as the last worker registered
            # it, the last slot a run was created for, and the next slot (UTC). A worker
            # creates a slot's runs only by moving next_at on from the value it read.
            """
            CREATE TABLE durably_schedules (
                job_name   TEXT PRIMARY KEY,
                cron       TEXT NOT NULL,
                timezone   TEXT NOT NULL,
                catch_up   TEXT NOT NULL CHECK (catch_up IN ('latest', 'all', 'none')),
                last_slot  TEXT,
                next_at    TEXT NOT NULL,
                updated_at TEXT NOT NULL
            ) WITHOUT ROWID
            """,
        ],
    ),
    (
        6,
        [
            # A call from a page that changes runs records its reply here in the transaction
            # of the change (migration 4): as a rowid table with a TEXT key and an index on
            # created_at, each record wrote three b-trees, nearly doubling a trigger's pages.
            # One WITHOUT ROWID b-tree keyed by the request id writes one; deleting old
            # records (every 100 recorded calls, at most an hour of them) scans the table.
            """
            CREATE TABLE durably_requests_v6 (
                id         TEXT PRIMARY KEY,
                method     TEXT NOT NULL,
                reply      TEXT NOT NULL,
                created_at TEXT NOT NULL
            ) WITHOUT ROWID
            """,
            "INSERT INTO durably_requests_v6 (id, method, reply, created_at) "
            "SELECT id, method, reply, created_at FROM durably_requests WHERE id IS NOT NULL",
            "DROP TABLE durably_requests",
            "ALTER TABLE durably_requests_v6 RENAME TO durably_requests",
        ],
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]
