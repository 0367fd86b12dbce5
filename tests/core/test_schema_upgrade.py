"""A database written by schema 1 (the first release) upgrades to the current schema with
every run, step and count kept, and its unfinished runs resume where they stopped."""

from __future__ import annotations

import asyncio
import sqlite3

import dataclasses

from durably import Durably, job
from durably.dialect import SQLITE
from durably.migrations import LATEST_VERSION, MIGRATIONS

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




async def _write_schema_1(path):
    if True:  # an app whose store knows migration 1 only, as the first release did
        app = Durably(path, jobs=[three], polling_interval=0.05)
        app._store.dialect = dataclasses.replace(SQLITE, migrations=MIGRATIONS[:1])
        done = app.trigger(three, "done")
        await app.process_one()
        cancelled = app.trigger(three, "cancelled")
        app.cancel(cancelled.id)
        paused = app.trigger(three, "paused")
        await app.start()
        while not app.get_steps(paused.id):
            await asyncio.sleep(0.01)
        await app.stop(timeout=0.2)
        waiting = app.trigger(three, "waiting")
        assert app.schema_version() == 1
        app.close()
    return {"done": done.id, "cancelled": cancelled.id, "paused": paused.id, "waiting": waiting.id}


async def test_a_schema_1_database_upgrades_and_resumes(tmp_path):
    path = str(tmp_path / "old.db")
    CALLS.clear()
    BLOCK.add("paused:b")
    ids = await _write_schema_1(path)
    conn = sqlite3.connect(path)
    before_steps = conn.execute("SELECT * FROM durably_steps ORDER BY run_id, idx").fetchall()
    conn.close()
    assert CALLS == ["done:a", "done:b", "done:c", "paused:a", "paused:b"]

    app = Durably(path, jobs=[three], polling_interval=0.05)
    runs = {name: app.get_run(run_id) for name, run_id in ids.items()}
    assert app.schema_version() == LATEST_VERSION
    assert {name: (r.status, r.completed_steps) for name, r in runs.items()} == {
        "done": ("completed", 3), "cancelled": ("cancelled", 0),
        "paused": ("pending", 1), "waiting": ("pending", 0),
    }
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT * FROM durably_steps ORDER BY run_id, idx").fetchall() == before_steps
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
