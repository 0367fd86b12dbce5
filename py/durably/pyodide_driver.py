"""The browser's database driver: SQLite WASM on OPFS, reached through the JS bridge.

Inside Pyodide, the worker (``web/boot.js``) opens the database with sqlite-wasm's ``opfs-sahpool`` VFS and
registers the bridge (``web/bridge.js``) as the JS module ``durably_bridge``. This driver
turns its one call, ``exec(sql, params) -> changes | {rows, changes} | {error}`` (a bare
number when the statement returned no rows), into the interface of
:mod:`durably.driver`: rows as tuples of plain Python values, ``StorageError`` on failure.

This module imports on CPython too (the test suite imports the whole package); the
Pyodide-only modules ``js`` and ``pyodide`` are imported when a driver is created.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .driver import Row, sqlite_error
from .errors import StorageError

__all__ = ["PyodideDriver"]


class PyodideDriver:
    """A driver over the JS SQLite bridge (``durably_bridge`` by default).

    ``bridge`` may be given directly (any object with an ``exec(sql, params)`` method
    returning the bridge's shape), which is how tests drive it without a browser.

    Example, inside the worker::

        driver = PyodideDriver()
        app = Durably(driver, jobs=[...])
    """

    name = "opfs-sahpool"

    def __init__(self, bridge: Any = None) -> None:
        if bridge is None:
            try:
                import durably_bridge  # registered by web/boot.js
            except ImportError as exc:
                raise StorageError(
                    "the JS SQLite bridge is not available: PyodideDriver only works inside the "
                    "durably Web Worker (web/boot.js registers the 'durably_bridge' module); "
                    "on CPython use a file path or Sqlite3Driver"
                ) from exc
            bridge = durably_bridge
        self._bridge = bridge
        # run(sql, *values): the bridge's entry point taking the values as arguments (no
        # list to convert); bridges without it (older ones, tests' own) get exec().
        self._run = getattr(bridge, "run", None)
        self._closed = False
        self.name = str(getattr(bridge, "vfs", None) or PyodideDriver.name)
        self._to_js = _load_to_js()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[Row], int]:
        if self._closed:
            raise StorageError("the database connection is closed", code="SQLITE_MISUSE")
        if type(params) is not tuple and type(params) is not list:
            # Read the values once: the type check below would use up an iterator, and the
            # statement would then run with every value NULL.
            params = tuple(params)
        # Every statement of a step, claim or trigger has only values Pyodide converts as they
        # are: they go as arguments to run(); anything else as a converted list to exec().
        run = self._run
        plain = run is not None and _PLAIN_PARAMS.issuperset(map(type, params))
        js_params = None if plain or not params else self._to_js([_param(p) for p in params])
        try:
            result = run(sql, *params) if run is not None and plain else self._bridge.exec(sql, js_params)
        except Exception as exc:  # a JsException: a bug in the bridge or a closed database
            raise StorageError(f"the SQLite bridge failed: {exc}") from exc
        if type(result) is int:
            # No rows (every write): the bridge returns the change count alone.
            return [], result
        to_py = getattr(result, "to_py", None)
        if to_py is not None:
            # One deep conversion instead of one FFI crossing per value: arrays become lists,
            # the result object a dict, BigInt an int, a Uint8Array a memoryview.
            result = to_py()
        return _unpack(result)

    def close(self) -> None:
        # The worker owns the database and the OPFS pool: it closes them when the page goes
        # away (db.close(); pool.pauseVfs()), so another tab can take the pool over.
        self._closed = True


def _load_to_js() -> Any:
    """``pyodide.ffi.to_js`` inside Pyodide; identity elsewhere (bridges written in Python)."""
    try:
        from pyodide.ffi import to_js
    except ImportError:
        return lambda value: value
    return to_js


# Parameter types that cross to JS as they are (bool is not one: it is stored as 1/0).
_PLAIN_PARAMS = frozenset((str, int, float, type(None)))


def _param(value: Any) -> Any:
    # bool is an int subclass: SQLite stores 1/0, as CPython's sqlite3 does.
    if isinstance(value, bool):
        return int(value)
    if value is None or isinstance(value, (int, float, str, bytes)):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise StorageError(f"cannot store a {type(value).__name__} in SQLite: use None, int, float, str or bytes")


def _unpack(result: Any) -> tuple[list[Row], int]:
    error = _get(result, "error")
    if error is not None:
        code = _get(error, "code")
        message = _get(error, "message") or "unknown SQLite error"
        raise sqlite_error(str(message), str(code) if code else None)
    rows = []
    for row in _get(result, "rows"):
        # to_py() made most values plain already: convert a row value by value only when
        # it holds something else (a BLOB's memoryview, a JS null).
        values = tuple(row)
        if not _PLAIN_TYPES.issuperset(map(type, values)):
            values = tuple(map(_value, values))
        rows.append(values)
    return rows, int(_get(result, "changes") or 0)


# What a row value may already be (see _value).
_PLAIN_TYPES = frozenset((str, int, float, type(None)))


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(key)
    value = getattr(obj, key, None)
    return value


def _value(value: Any) -> Any:
    """One SQLite value as plain Python: None, int, float, str or bytes."""
    if value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        # Plain int, or a JS BigInt (an integer beyond 2^53), which must not leak out.
        return int(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    # A Uint8Array (BLOB) proxy: copy its bytes out of the JS heap.
    to_bytes = getattr(value, "to_bytes", None)
    if to_bytes is not None:
        return bytes(to_bytes())
    type_name = type(value).__name__
    if type_name in ("JsNull", "JsUndefined") or str(value) in ("null", "undefined"):
        return None
    raise StorageError(f"SQLite returned a value of unexpected type {type_name}: {value!r}")
