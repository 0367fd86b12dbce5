"""A database written by schema 1 (the first release) upgrades to the current schema with
every run, step and count kept, and its unfinished runs resume where they stopped."""

from __future__ import annotations

import asyncio
import json
import sqlite3

from durably import Durably, job
from durably.migrations import LATEST_VERSION, MIGRATIONS

STEPS_1 = "run_id, idx, name, status, output, error, started_at, completed_at"  # schema 1's columns

CALLS: list[str] = []
BLOCK = {"paused:b"}  # step bodies that wait until the worker is stopped (first phase only)


@job("three")
async def three(step, input):
    for name in ("a", "b", "c"):
        async def body(name=name):
            CALLS.append(f"{input}:{name}")
            if f"{input}:{name}" in BLOCK:
                await asyncio.Event().wait()
            return name.upper()

        await step.run(name, body)
    return "done"




T = "2026-01-02T03:04:05.000000Z"


async def _write_schema_1(path):
    """A database as the first release left it (schema 1, written row by row here: today's
    code reads columns schema 1 does not have): a completed run, a cancelled one, one handed
    back after its first step by a stopped worker, and one never started."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE durably_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    for sql in MIGRATIONS[0][1]:
        conn.execute(sql)
    conn.execute("INSERT INTO durably_migrations VALUES (1, ?)", (T,))
    ids = {"done": "01A", "cancelled": "01B", "paused": "01C", "waiting": "01D"}

    def run(key, status, generation=0, output=None, completed_at=None):
        conn.execute(
            "INSERT INTO durably_runs (id, job_name, status, input, output, lease_generation, created_at, "
            "started_at, completed_at, updated_at) VALUES (?, 'three', ?, ?, ?, ?, ?, ?, ?, ?)",
            (ids[key], status, json.dumps(key), output, generation, T, T if generation else None, completed_at, T),
        )

    def step(key, idx, name):
        conn.execute(
            "INSERT INTO durably_steps (run_id, idx, name, status, output, started_at, completed_at) "
            "VALUES (?, ?, ?, 'completed', ?, ?, ?)",
            (ids[key], idx, name, json.dumps(name.upper()), T, T),
        )

    run("done", "completed", 1, '"done"', T)
    for idx, name in enumerate("abc"):
        step("done", idx, name)
    run("cancelled", "cancelled", completed_at=T)
    run("paused", "pending", 1)
    step("paused", 0, "a")
    run("waiting", "pending")
    conn.commit()
    conn.close()
    return ids


async def test_a_schema_1_database_upgrades_and_resumes(tmp_path):
    path = str(tmp_path / "old.db")
    CALLS.clear()
    BLOCK.add("paused:b")
    ids = await _write_schema_1(path)
    conn = sqlite3.connect(path)
    before_steps = conn.execute(f"SELECT {STEPS_1} FROM durably_steps ORDER BY run_id, idx").fetchall()
    conn.close()

    app = Durably(path, jobs=[three], polling_interval=0.05)
    runs = {name: app.get_run(run_id) for name, run_id in ids.items()}
    assert app.schema_version() == LATEST_VERSION
    assert {name: (r.status, r.completed_steps) for name, r in runs.items()} == {
        "done": ("completed", 3), "cancelled": ("cancelled", 0),
        "paused": ("pending", 1), "waiting": ("pending", 0),
    }
    # Schema 5's new fields read as a run that never waited.
    assert all((r.attempt, r.wake_at, r.waiting_for, r.deadline_at) == (1, None, None, None) for r in runs.values())
    conn = sqlite3.connect(path)
    assert conn.execute(f"SELECT {STEPS_1} FROM durably_steps ORDER BY run_id, idx").fetchall() == before_steps
    table_sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'durably_steps'").fetchone()[0]
    assert "WITHOUT ROWID" in table_sql
    assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'").fetchone()[0] == 0
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()

    CALLS.clear()
    BLOCK.clear()
    assert await app.process_until_idle() == 2
    # The paused run resumed at its interrupted step; its first step was not run again.
    assert sorted(CALLS) == sorted(["paused:b", "paused:c", "waiting:a", "waiting:b", "waiting:c"])
    for name in ("paused", "waiting"):
        run = app.get_run(ids[name])
        assert (run.status, run.output, run.completed_steps) == ("completed", "done", 3)
        assert [s.name for s in app.get_steps(run.id)] == ["a", "b", "c"]
    app.close()


def test_a_schema_5_database_keeps_its_recorded_replies_in_schema_6(tmp_path):
    # Migration 6 rebuilds durably_requests as one b-tree: a reply recorded before the
    # upgrade still answers a repeat of its request id, and new ones are recorded.
    path = tmp_path / "five.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE durably_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    for number, statements in MIGRATIONS:
        if number > 5:
            break
        for sql in statements:
            conn.execute(sql)
        conn.execute("INSERT INTO durably_migrations VALUES (?, ?)", (number, T))
    conn.execute("INSERT INTO durably_requests VALUES ('tab:1', 'trigger', '{\"ok\": 1}', ?)", (T,))
    conn.commit()
    conn.close()

    app = Durably(str(path), jobs=[three])
    try:
        assert app.answer_once("tab:1", "trigger", lambda: "never called") == '{"ok": 1}'
        assert app.schema_version() == LATEST_VERSION == 6
        assert app.answer_once("tab:2", "trigger", lambda: '{"ok": 2}') == '{"ok": 2}'
        assert app.answer_once("tab:2", "trigger", lambda: "never called") == '{"ok": 2}'
        from datetime import timedelta

        assert app.forget_answers(timedelta(hours=1)) == 1  # tab:1, recorded at T
    finally:
        app.close()
    conn = sqlite3.connect(path)
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'durably_requests'").fetchone()
    assert "WITHOUT ROWID" in sql
    assert conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'durably_requests' AND type = 'index'").fetchall() == []
    conn.close()
