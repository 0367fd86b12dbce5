"""The floor on PostgreSQL: psycopg on the bench's server (fsync and synchronous_commit on),
doing only the commits a durable runtime cannot avoid, the same as ``floor`` does on SQLite:

- steps: one INSERT per step, each its own transaction (autocommit).
- runs: three commits per one-step run: the trigger's INSERT, the claim's UPDATE, then the
  step's INSERT and the run's completion in one transaction.
- trigger latency: trigger = the INSERT's commit; start = the claim's commit after it.

Every commit waits for its WAL flush, so on one connection these figures are about one
commit per fdatasync of the server's disk: what durably's and DBOS's figures are set against.
"""

from __future__ import annotations

import os

from bench.common import SliceClock, latency_result, now, runs_result, steps_result
from bench.contenders import dbos_postgres

NAME = "pg-floor"
STAMP = "2026-01-01T00:00:00.000000Z"
SCHEMA = [
    "CREATE TABLE runs (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, job TEXT, status TEXT, input TEXT, "
    "output TEXT, lease_generation BIGINT NOT NULL DEFAULT 0, created_at TEXT, completed_at TEXT)",
    "CREATE TABLE steps (run_id BIGINT, idx BIGINT, name TEXT, output TEXT, completed_at TEXT, "
    "PRIMARY KEY (run_id, idx))",
]
SETTINGS = "psycopg, one connection, autocommit (fsync, synchronous_commit on)"


def available() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install -e '.[postgres]'"
    if not os.environ.get(dbos_postgres.URL_ENV):
        return f"no PostgreSQL server: run python -m bench --postgres (or set {dbos_postgres.URL_ENV})"
    return None


class _Db:
    def __init__(self, db_path: str) -> None:
        import psycopg

        self.name, conninfo = dbos_postgres._database(db_path)
        self.conn = psycopg.connect(conninfo, autocommit=True)
        for sql in SCHEMA:
            self.conn.execute(sql)

    def close(self) -> None:
        self.conn.close()
        dbos_postgres._drop(self.name)


def steps(n: int, db_path: str, slices: int = 20) -> dict:
    db = _Db(db_path)
    try:
        clock = SliceClock(n, slices)
        t0 = now()
        for i in range(n):
            clock.tick(i)
            db.conn.execute("INSERT INTO steps (run_id, idx, name, output, completed_at) VALUES (1, %s, %s, %s, %s)",
                            (i, f"s{i}", str(i), STAMP))
        clock.end()
        seconds = now() - t0
    finally:
        db.close()
    return steps_result(n, seconds, clock, settings=SETTINGS)


def _trigger(conn) -> int:
    return conn.execute("INSERT INTO runs (job, status, input, created_at) VALUES ('one', 'pending', '{}', %s) "
                        "RETURNING id", (STAMP,)).fetchone()[0]


def _claim(conn, run_id: int) -> None:
    conn.execute("UPDATE runs SET status = 'leased', lease_generation = lease_generation + 1 "
                 "WHERE id = %s AND status = 'pending'", (run_id,))


def _finish(conn, run_id: int) -> None:
    with conn.transaction():
        conn.execute("INSERT INTO steps (run_id, idx, name, output, completed_at) VALUES (%s, 0, 'only', '0', %s)",
                     (run_id, STAMP))
        conn.execute("UPDATE runs SET status = 'completed', output = '0', completed_at = %s "
                     "WHERE id = %s AND lease_generation = 1", (STAMP, run_id))


def runs(k: int, db_path: str) -> dict:
    db = _Db(db_path)
    try:
        t0 = now()
        ids = [_trigger(db.conn) for _ in range(k)]
        for run_id in ids:
            _claim(db.conn, run_id)
            _finish(db.conn, run_id)
        seconds = now() - t0
    finally:
        db.close()
    return runs_result(k, seconds, commits_per_run=3, settings=SETTINGS)


def trigger_latency(k: int, db_path: str) -> dict:
    db = _Db(db_path)
    trig, start = [], []
    try:
        for _ in range(k):
            t0 = now()
            run_id = _trigger(db.conn)
            t1 = now()
            _claim(db.conn, run_id)
            t2 = now()
            _finish(db.conn, run_id)
            trig.append(t1 - t0)
            start.append(t2 - t0)
    finally:
        db.close()
    return latency_result(trig, start, settings=SETTINGS)
