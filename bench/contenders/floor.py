"""The physical floor: CPython's sqlite3 on a file, WAL + synchronous=NORMAL (durably's own
settings), doing only the commits a durable runtime cannot avoid and nothing else.

- steps: one INSERT + COMMIT per step.
- runs: three commits per one-step run, the least a durable run needs: the trigger's
  INSERT, the claim's UPDATE, then the step's INSERT and the run's completion together.
- trigger latency: trigger = the INSERT's commit; start = the claim's commit after it.
"""

from __future__ import annotations

import sqlite3

from bench.common import SliceClock, latency_result, now, runs_result, steps_result

NAME = "floor"

SCHEMA = """
CREATE TABLE runs (id INTEGER PRIMARY KEY, job TEXT, status TEXT, input TEXT, output TEXT,
                   lease_generation INTEGER NOT NULL DEFAULT 0, created_at TEXT, completed_at TEXT);
CREATE TABLE steps (id INTEGER PRIMARY KEY, run_id INTEGER, idx INTEGER, name TEXT,
                    output TEXT, completed_at TEXT);
"""
STAMP = "2026-01-01T00:00:00.000000Z"  # fixed-width like durably's; the clock is not the subject


def available() -> str | None:
    return None


def _open(db_path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, isolation_level=None)  # autocommit: one statement, one commit
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(SCHEMA)
    return conn


def steps(n: int, db_path: str, slices: int = 20) -> dict:
    conn = _open(db_path)
    clock = SliceClock(n, slices)
    t0 = now()
    for i in range(n):
        clock.tick(i)
        conn.execute(
            "INSERT INTO steps (run_id, idx, name, output, completed_at) VALUES (1, ?, ?, ?, ?)",
            (i, f"s{i}", str(i), STAMP),
        )
    clock.end()
    seconds = now() - t0
    conn.close()
    return steps_result(n, seconds, clock, settings="WAL, synchronous=NORMAL")


def _trigger(conn: sqlite3.Connection) -> int:
    return conn.execute(
        "INSERT INTO runs (job, status, input, created_at) VALUES ('one', 'pending', '{}', ?)",
        (STAMP,),
    ).lastrowid


def _claim(conn: sqlite3.Connection, run_id: int) -> None:
    conn.execute(
        "UPDATE runs SET status = 'leased', lease_generation = lease_generation + 1 "
        "WHERE id = ? AND status = 'pending'",
        (run_id,),
    )


def _finish(conn: sqlite3.Connection, run_id: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO steps (run_id, idx, name, output, completed_at) VALUES (?, 0, 'only', '0', ?)",
        (run_id, STAMP),
    )
    conn.execute(
        "UPDATE runs SET status = 'completed', output = '0', completed_at = ? "
        "WHERE id = ? AND lease_generation = 1",
        (STAMP, run_id),
    )
    conn.execute("COMMIT")


def runs(k: int, db_path: str) -> dict:
    conn = _open(db_path)
    t0 = now()
    ids = [_trigger(conn) for _ in range(k)]
    for run_id in ids:
        _claim(conn, run_id)
        _finish(conn, run_id)
    seconds = now() - t0
    conn.close()
    return runs_result(k, seconds, commits_per_run=3)


def trigger_latency(k: int, db_path: str) -> dict:
    conn = _open(db_path)
    trig, start = [], []
    for _ in range(k):
        t0 = now()
        run_id = _trigger(conn)
        t1 = now()
        _claim(conn, run_id)
        t2 = now()
        _finish(conn, run_id)
        trig.append(t1 - t0)
        start.append(t2 - t0)
    conn.close()
    return latency_result(trig, start)
