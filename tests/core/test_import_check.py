"""importDatabase's check of the file (durably.browser.check_import), on CPython: the same
Python code the worker runs on a scratch copy in the OPFS pool, here over a bridge written in
Python on sqlite3. A file that could harm the database once imported is refused, saying why."""

from __future__ import annotations

import json
import sqlite3

import pytest

from durably import Durably, job
from durably.browser import check_import
from durably.errors import ValidationError


class Sqlite3Bridge:
    """The JS bridge's shapes (a change count, or rows; an error object) over sqlite3."""

    vfs = "test"

    def __init__(self, path):
        self.con = sqlite3.connect(path, isolation_level=None)

    def exec(self, sql, params):
        try:
            cur = self.con.execute(sql, params or [])
            rows = cur.fetchall()
        except sqlite3.Error as exc:
            return {"error": {"name": "SQLite3Error", "code": "SQLITE_ERROR", "message": str(exc)}}
        if cur.description is None:
            return max(cur.rowcount, 0)
        return {"rows": [list(r) for r in rows], "changes": 0}


@job()
async def hello(step, x):
    return x


def durably_file(tmp_path, sql=""):
    path = tmp_path / "exported.db"
    app = Durably(str(path), jobs=[hello])
    app.migrate()
    app.trigger("hello", 1)
    app.close()
    if sql:
        con = sqlite3.connect(path)
        con.executescript(sql)
        con.close()
    return path


def test_a_durably_file_passes_with_its_version_and_runs(tmp_path):
    info = json.loads(check_import(Sqlite3Bridge(durably_file(tmp_path))))
    assert info["runs"] == 1 and info["version"] >= 5


def test_a_file_with_a_trigger_that_would_delete_runs_is_refused(tmp_path):
    path = durably_file(
        tmp_path, "CREATE TRIGGER wipe AFTER INSERT ON durably_runs BEGIN DELETE FROM durably_runs; END;"
    )
    with pytest.raises(ValidationError, match=r"the file has trigger\(s\) durably did not create: wipe \(on durably_runs\)"):
        check_import(Sqlite3Bridge(path))


def test_extra_tables_and_views_of_the_users_own_are_accepted(tmp_path):
    path = durably_file(tmp_path, "CREATE TABLE mine (x); CREATE VIEW recent AS SELECT id FROM durably_runs;")
    assert json.loads(check_import(Sqlite3Bridge(path)))["runs"] == 1


def test_a_schema_1_file_with_durablys_own_old_trigger_is_migrated_and_accepted(tmp_path):
    """Schema 1 had a trigger of durably's own (durably_steps_completed); migration 2 drops it,
    so the check, made after migrating, accepts the file."""
    from durably.migrations import MIGRATIONS

    path = tmp_path / "v1.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE durably_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    version, statements = MIGRATIONS[0]
    for statement in statements:
        con.execute(statement)
    con.execute("INSERT INTO durably_migrations VALUES (?, '2026-01-01T00:00:00Z')", (version,))
    con.commit()
    con.close()
    info = json.loads(check_import(Sqlite3Bridge(path)))
    assert info["version"] >= 5 and info["runs"] == 0


@pytest.mark.parametrize("damage", ["random-after-header", "truncated", "page-size-1000"])
def test_a_damaged_or_partial_file_is_refused_as_unreadable(tmp_path, damage):
    data = bytearray(durably_file(tmp_path).read_bytes())
    if damage == "random-after-header":
        data[100:] = bytes((i * 7919) % 251 for i in range(len(data) - 100))
    elif damage == "truncated":
        data = data[: len(data) // 2 // 4096 * 4096]
    else:
        data[16:18] = (1000).to_bytes(2, "big")
    bad = tmp_path / "bad.db"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValidationError, match="the file is not a readable SQLite database"):
        check_import(Sqlite3Bridge(bad))
