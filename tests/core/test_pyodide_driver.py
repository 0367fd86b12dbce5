"""PyodideDriver on CPython, over a bridge written in Python: the shapes the JS bridge
returns (a bare change count, rows, an error) become the driver interface."""

from __future__ import annotations

import pytest

from durably.errors import StorageError
from durably.pyodide_driver import PyodideDriver


class FakeBridge:
    vfs = "fake-vfs"

    def __init__(self, result):
        self.result = result
        self.calls = []

    def exec(self, sql, params):
        self.calls.append((sql, params))
        return self.result


def test_a_bare_number_is_a_write_without_rows():
    bridge = FakeBridge(1)
    assert PyodideDriver(bridge).execute("INSERT INTO t VALUES (?)", ("x",)) == ([], 1)
    assert bridge.calls == [("INSERT INTO t VALUES (?)", ["x"])]


def test_rows_become_tuples_of_plain_values():
    bridge = FakeBridge({"rows": [[1, "a", None, 2.5, b"\x00"]], "changes": 0})
    rows, changes = PyodideDriver(bridge).execute("SELECT ...")
    assert rows == [(1, "a", None, 2.5, b"\x00")] and changes == 0
    assert bridge.calls == [("SELECT ...", None)]


def test_parameters_are_plain_and_booleans_are_numbers():
    bridge = FakeBridge(0)
    PyodideDriver(bridge).execute("X", ("s", 1, 1.5, None, True, bytearray(b"ab")))
    assert bridge.calls[0][1] == ["s", 1, 1.5, None, 1, b"ab"]
    assert type(bridge.calls[0][1][4]) is int


def test_an_unstorable_parameter_is_refused_before_the_bridge():
    bridge = FakeBridge(0)
    with pytest.raises(StorageError, match="cannot store a dict in SQLite"):
        PyodideDriver(bridge).execute("X", ({"a": 1},))
    assert bridge.calls == []


def test_an_sql_error_becomes_a_storage_error_with_its_code():
    bridge = FakeBridge({"error": {"name": "SQLite3Error", "code": "SQLITE_CONSTRAINT_UNIQUE",
                                   "message": "UNIQUE constraint failed: t.id"}})
    with pytest.raises(StorageError, match="UNIQUE constraint failed") as info:
        PyodideDriver(bridge).execute("INSERT ...")
    assert info.value.code == "SQLITE_CONSTRAINT_UNIQUE"


def test_a_closed_driver_refuses_statements():
    driver = PyodideDriver(FakeBridge(0))
    assert driver.name == "fake-vfs"
    driver.close()
    with pytest.raises(StorageError, match="closed"):
        driver.execute("SELECT 1")


class ArgsBridge(FakeBridge):
    """A bridge with run(sql, *values), as web/bridge.js has."""

    def run(self, sql, *values):
        self.calls.append(("run", sql, values))
        return self.result


def test_plain_values_go_as_arguments_to_run():
    bridge = ArgsBridge(1)
    assert PyodideDriver(bridge).execute("INSERT INTO t VALUES (?, ?, ?, ?)", ("s", 1, 1.5, None)) == ([], 1)
    assert PyodideDriver(bridge).execute("SELECT 1") == ([], 1)
    assert bridge.calls == [("run", "INSERT INTO t VALUES (?, ?, ?, ?)", ("s", 1, 1.5, None)), ("run", "SELECT 1", ())]


def test_other_values_still_go_through_exec_converted():
    # bytes, a bool (stored as 1/0) and a bytearray are not passed as they are
    bridge = ArgsBridge(0)
    PyodideDriver(bridge).execute("X", ("s", True, b"ab", bytearray(b"cd")))
    assert bridge.calls == [("X", ["s", 1, b"ab", b"cd"])]
    with pytest.raises(StorageError, match="cannot store a dict in SQLite"):
        PyodideDriver(bridge).execute("X", ("s", {"a": 1}))
    assert len(bridge.calls) == 1


def test_a_failing_run_call_is_a_storage_error():
    class Broken(ArgsBridge):
        def run(self, sql, *values):
            raise RuntimeError("the database is closed")

    with pytest.raises(StorageError, match="the SQLite bridge failed: the database is closed"):
        PyodideDriver(Broken(0)).execute("SELECT ?", (1,))


def test_values_given_as_an_iterator_are_all_passed():
    # Read once, not used up by the check of their types: else every value would be NULL.
    bridge = ArgsBridge(1)
    PyodideDriver(bridge).execute("INSERT INTO t VALUES (?, ?)", iter(["a", 2]))
    PyodideDriver(bridge).execute("INSERT INTO t VALUES (?, ?)", (v for v in ["b", b"c"]))
    assert bridge.calls == [("run", "INSERT INTO t VALUES (?, ?)", ("a", 2)), ("INSERT INTO t VALUES (?, ?)", ["b", b"c"])]
