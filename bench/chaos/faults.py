"""A driver that injects storage faults: SQLite errors on chosen statements or commits.

Wrap a real connection and say which statements fail::

    from bench.chaos.faults import Fault, FaultyDriver

    driver = FaultyDriver("jobs.db", [
        # the 3rd COMMIT of a transaction that inserted a step fails with a disk I/O error
        Fault("SQLITE_IOERR", match="INSERT INTO durably_steps", at="commit", nth=3),
        # the next claim statement fails with "database is locked", twice
        Fault("SQLITE_BUSY", match="SET status = 'leased'", times=2),
    ])
    app = Durably(driver, jobs=[...])

A write sent outside ``BEGIN`` is its own transaction, so an ``at="commit"`` fault that
matches it fails that statement. A failed statement changes nothing, and a failed COMMIT leaves the transaction open and
uncommitted: that is what SQLite does for ``SQLITE_BUSY`` on COMMIT, and what it may do for
``SQLITE_IOERR`` / ``SQLITE_FULL`` (its documentation tells callers to ROLLBACK after them),
so it is the case the store must handle. Every injected error is recorded in ``injected``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

from durably.driver import Sqlite3Driver, sqlite_error

MESSAGES = {
    "SQLITE_IOERR": "disk I/O error",
    "SQLITE_BUSY": "database is locked",
    "SQLITE_FULL": "database or disk is full",
}


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


@dataclass
class Fault:
    """``code`` is raised on the ``nth`` matching occasion, and on the ``times - 1`` after it
    (``times=None``: every one from then on).

    ``match``: a substring of the statement (case-insensitive), or None for any statement.
    ``at="statement"``: the matching statement itself fails. ``at="commit"``: the COMMIT of a
    transaction that ran a matching statement fails (``match=None``: any COMMIT).
    """

    code: str
    match: str | None = None
    at: str = "statement"
    nth: int = 1
    times: int | None = 1
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.code not in MESSAGES:
            raise ValueError(f"code must be one of {sorted(MESSAGES)}, got {self.code!r}")
        if self.at not in ("statement", "commit"):
            raise ValueError(f"at must be 'statement' or 'commit', got {self.at!r}")

    def matches(self, sql: str) -> bool:
        return self.match is None or self.match.lower() in sql.lower()

    def hit(self) -> bool:
        """Count one matching occasion; True if it must fail."""
        self.seen += 1
        if self.seen < self.nth:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        self.fired += 1
        return True

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times


class FaultyDriver:
    """``Sqlite3Driver`` with injected ``StorageError``s (see the module docstring)."""

    name = "sqlite3+faults"

    def __init__(self, path_or_driver: Any, faults: Sequence[Fault] = ()) -> None:
        self.inner = Sqlite3Driver(path_or_driver) if isinstance(path_or_driver, str) else path_or_driver
        self.faults = list(faults)
        self.injected: list[tuple[str, str]] = []  # (code, statement)
        self.armed = True
        self._lock = threading.Lock()
        self._touched: list[Fault] = []  # commit faults whose statement ran in this transaction
        self._in_tx = False

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def execute(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[tuple], int]:
        head = sql.lstrip().upper()
        with self._lock:
            if head.startswith("BEGIN"):
                self._touched = []
                self._in_tx = True
            fail: Fault | None = None
            if self.armed:
                if not self._in_tx and head.startswith(_WRITES):
                    # A write outside BEGIN is its own transaction: its commit is part of
                    # the statement, so a commit fault fails the statement (nothing stored).
                    for f in self.faults:
                        if f.matches(sql) and f.hit():
                            fail = f
                            break
                elif head.startswith("COMMIT"):
                    for f in self.faults:
                        if f.at == "commit" and (f in self._touched or f.match is None) and f.hit():
                            fail = f
                            break
                else:
                    for f in self.faults:
                        if not f.matches(sql):
                            continue
                        if f.at == "commit":
                            if f not in self._touched:
                                self._touched.append(f)
                        elif fail is None and f.hit():
                            fail = f
            if head.startswith(("COMMIT", "ROLLBACK")):
                self._touched = []
                # A failed COMMIT leaves the transaction open until the ROLLBACK.
                self._in_tx = head.startswith("COMMIT") and fail is not None
            if fail is not None:
                self.injected.append((fail.code, " ".join(sql.split())[:120]))
                raise sqlite_error(f"{MESSAGES[fail.code]} (injected)", fail.code)
        return self.inner.execute(sql, params)

    def close(self) -> None:
        self.inner.close()
