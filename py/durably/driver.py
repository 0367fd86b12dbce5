"""Database drivers: the one place where the two hosts differ.

A driver is a small object with one entry point for SQL::

    rows, changes = driver.execute(sql, params)

``rows`` is a list of tuples of plain values (``None``, ``int``, ``float``, ``str``,
``bytes``); ``changes`` is the number of rows the statement inserted, updated or deleted
(0 for a query). Transactions are plain SQL (``BEGIN IMMEDIATE`` / ``COMMIT`` /
``ROLLBACK``) sent through the same entry point, so a driver needs no transaction API.

A driver raises :class:`durably.errors.StorageError` for every database failure, with
``code`` set to the engine's error name (SQLite's ``"SQLITE_BUSY"``, ``"SQLITE_FULL"``,
``"SQLITE_CONSTRAINT_UNIQUE"``, ...) when it is known, and ``transient`` set when the same
statement may succeed if sent again (:func:`sqlite_error` decides it for SQLite's names).
The store never asks which driver it has.

``Sqlite3Driver`` (CPython's ``sqlite3``) lives here; the browser's driver, which calls
the JavaScript SQLite bridge, lives in ``durably.pyodide_driver``.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from .errors import StorageError, ValidationError

#: A row as a driver returns it: a tuple of plain values (None, int, float, str, bytes).
Row = tuple[Any, ...]

#: SQLite's error names for a failure that may pass if the statement is sent again as it is:
#: another connection held the write lock past the busy timeout.
SQLITE_TRANSIENT = frozenset({"SQLITE_BUSY"})


def sqlite_error(message: str, code: str | None) -> StorageError:
    """The ``StorageError`` for an SQLite failure named ``code`` (both SQLite drivers use it)."""
    return StorageError(message, code=code, transient=code in SQLITE_TRANSIENT)


@runtime_checkable
class Driver(Protocol):
    """What the store needs from a database connection."""

    #: A short name for messages and benchmarks, e.g. ``"sqlite3"`` or ``"opfs-sahpool"``.
    name: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[Row], int]:
        """Run one statement; return ``(rows, changes)``. Raise ``StorageError`` on failure."""
        ...

    def close(self) -> None:
        """Release the connection. Calling it twice is harmless."""
        ...


class Sqlite3Driver:
    """CPython's ``sqlite3`` on a file (or ``":memory:"``).

    The connection is in autocommit mode (the store sends its own ``BEGIN IMMEDIATE``),
    in WAL mode with ``synchronous=NORMAL``: a commit survives a killed process, and
    several processes can share the file (readers never block the writer; writers wait up
    to ``busy_timeout`` seconds for each other).

    WAL is switched on just before the first statement that is not a ``SELECT``, not when
    the file is opened: switching rewrites the file's header, and a file this durably must
    refuse (a newer schema, checked with ``SELECT``s first) is never changed.

    ``create=False`` opens an existing file only: a missing one raises ``StorageError``
    with ``code="SQLITE_CANTOPEN"`` instead of being created.
    """

    name = "sqlite3"

    def __init__(
        self, path: str, *, busy_timeout: float = 10.0, synchronous: str = "NORMAL", create: bool = True
    ) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValidationError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
        import sqlite3  # here, not at the top: Pyodide's build may not ship _sqlite3

        self._sqlite3 = sqlite3
        self.path = path
        memory = path == ":memory:"
        try:
            if "\x00" in path:
                raise ValueError("NUL")
            os.fsencode(path)
        except (UnicodeError, ValueError):
            raise ValidationError(
                f"the database path {path!r} cannot be a file name (it holds a NUL or an unpaired surrogate)"
            ) from None
        if not memory and os.path.isdir(path):
            raise StorageError(
                f"cannot open the database {path!r}: {path!r} is a folder; give the path of a database file "
                f"in it, e.g. {os.path.join(path, 'jobs.db')!r}",
                code="SQLITE_CANTOPEN",
            )
        self._wal_pending = not memory
        try:
            if create or memory:
                target, uri = path, False
            else:
                # Quoted as bytes: a file name that is not UTF-8 ("\udcff" in Python) is fine.
                target, uri = "file:" + urllib.parse.quote(os.fsencode(os.path.abspath(path))) + "?mode=rw", True
            self._conn = sqlite3.connect(
                target,
                isolation_level=None,
                check_same_thread=False,
                timeout=busy_timeout,
                uri=uri,
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            self._conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise _storage_error(exc, f"cannot open the database {path!r}") from exc

    def execute(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[Row], int]:
        if self._wal_pending and not sql.lstrip().startswith("SELECT"):
            self._switch_to_wal()
        try:
            cur = self._conn.execute(sql, params)
            rows = cur.fetchall() if cur.description is not None else []
            return rows, cur.rowcount if cur.rowcount > 0 else 0
        except self._sqlite3.Error as exc:
            raise _storage_error(exc) from exc
        except (UnicodeError, OverflowError) as exc:  # a value sqlite3 cannot bind
            raise StorageError(f"cannot store a value: {exc}", code="SQLITE_MISMATCH") from exc

    def _switch_to_wal(self) -> None:
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
        except self._sqlite3.Error as exc:
            raise _storage_error(exc, "cannot switch the database to WAL mode") from exc
        self._wal_pending = False

    def close(self) -> None:
        try:
            self._conn.close()
        except self._sqlite3.Error:  # pragma: no cover - closing a broken connection
            pass


def _storage_error(exc: Exception, context: str | None = None) -> StorageError:
    code = getattr(exc, "sqlite_errorname", None)
    message = str(exc)
    if code == "SQLITE_CANTOPEN":
        message += " (does its folder exist, and may this process write there?)"
    elif message.startswith("no such table: durably_"):  # the schema's version says it exists
        message += (
            " (this database records a durably schema but lacks one of its tables, e.g. dropped "
            "by hand; restore the file from a backup)"
        )
    if context:
        message = f"{context}: {message}"
    return sqlite_error(message, code)
