"""``durably copy``: every run of one database, with its steps, labels, log lines, failed
attempts and signals, and the schedules' slots, into another, on either engine (SQLite to
PostgreSQL, back, or SQLite to SQLite).

A copy is a snapshot, not a second home for the same runs: the source is read in one read
transaction (one moment's state, even while its workers write), the target is written in
one transaction (all or nothing), and a run leased in the source is written as pending in
the copy, its lease handed back, so a worker on the target resumes it at its first
unfinished step. A waiting run stays waiting, with its due time and what it waits for, and
a signal sent but not yet received is copied with it. Ids, timestamps and JSON move
unchanged (both engines store the same text), so a copy back gives the same rows. Not
copied: the worker registry (it describes the processes connected to a database, not its
runs) and the browser's record of answered requests (kept for the seconds a hand-over
between tabs takes); see ``store.COPY_TABLES``.

The target must hold no rows in the copied tables, unless ``replace`` is given: then they
(and its worker registry and answered requests) are deleted first, in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ConflictError, SchemaError, ValidationError
from .store import COPY_TABLES, Store

#: Rows read per statement, at most. A page starts at FIRST_PAGE rows and grows (doubling)
#: while its values stay under READ_BYTES, or shrinks when they pass it: a step result may
#: be 4 MiB, and 500 of them would be 2 GB in memory at once.
PAGE = 500
FIRST_PAGE = 50
READ_BYTES = 64 * 1024 * 1024
#: About how many bytes of values one INSERT carries: PostgreSQL refuses a message over 1 GB,
#: and a smaller statement keeps both engines' memory in bounds.
WRITE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class CopyResult:
    """What ``copy_database`` wrote: rows per table, how many leased runs were handed back
    (written as pending), and the schema version of both databases."""

    rows: dict[str, int]
    handed_back: int
    schema_version: int

    def to_dict(self) -> dict[str, Any]:
        return {"rows": dict(self.rows), "handed_back": self.handed_back, "schema_version": self.schema_version}


def copy_database(source: Store, target: Store, *, replace: bool = False) -> CopyResult:
    """Copy every run of ``source`` into ``target`` (see the module docstring).

    Both are brought to this durably's schema first (an older source is upgraded, as every
    durably command does; a newer one raises ``SchemaError`` and nothing is written).
    Raises ``ConflictError`` when the target holds runs and ``replace`` is False, and
    ``ValidationError`` naming the row and column of a value the target's engine cannot
    store (NUL in text, on PostgreSQL); the target is unchanged then."""
    version = _migrate(source, "source")
    _migrate(target, "target")
    rows_written = {table: 0 for table, _, _ in COPY_TABLES}
    handed_back = 0
    with target.transaction():
        if source.same_tables_as(target):
            raise ValidationError(
                "the source and the target of the copy are the same tables (one database and schema "
                "reached by two URLs); nothing was copied. Give another database or schema as the target"
            )
        held = {table: n for table, n in target.count_copied().items() if n}
        if held and not replace:
            listed = ", ".join(f"{n:,} rows in {table}" for table, n in held.items())
            raise ConflictError(
                f"the target database is not empty ({listed}); durably copy writes into an empty "
                "database only. Pass --replace (replace=True) to delete what it holds first"
            )
        if replace:
            target.clear_copied()
        with source.snapshot():
            for table, columns, key in COPY_TABLES:
                key_at = [columns.index(column) for column in key]
                after = None
                limit = FIRST_PAGE
                while True:
                    page = source.copy_page(table, columns, key, after, limit)
                    if not page:
                        break
                    if table == "durably_runs":
                        page, n = _hand_back(columns, page)
                        handed_back += n
                    if not target.dialect.text_takes_nul:
                        _check_text(table, columns, key_at, page, target.dialect.name)
                    sizes = [_row_bytes(row) for row in page]
                    for chunk in _chunks(page, sizes, WRITE_BYTES):
                        target.write_copied(table, columns, chunk)
                    rows_written[table] += len(page)
                    after = tuple(page[-1][i] for i in key_at)
                    limit = _next_limit(limit, sum(sizes))
        target.after_copy()
    return CopyResult(rows_written, handed_back, version)


def _row_bytes(row: tuple[Any, ...]) -> int:
    """About how much room a row's values take: their text or bytes, 8 for anything else."""
    return sum(len(v) if isinstance(v, (str, bytes, bytearray, memoryview)) else 8 for v in row)


def _chunks(page: list[tuple[Any, ...]], sizes: list[int], budget: int) -> list[list[tuple[Any, ...]]]:
    """The page cut into runs of rows of about ``budget`` bytes each (a bigger row alone)."""
    chunks: list[list[tuple[Any, ...]]] = [[]]
    used = 0
    for row, size in zip(page, sizes, strict=True):
        if chunks[-1] and used + size > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(row)
        used += size
    return chunks


def _next_limit(limit: int, page_bytes: int) -> int:
    """The next page's row count: doubled up to PAGE while pages stay under READ_BYTES,
    cut in proportion when one passes it."""
    if page_bytes > READ_BYTES:
        return max(1, limit * READ_BYTES // page_bytes)
    if page_bytes * 2 <= READ_BYTES:
        return min(PAGE, limit * 2)
    return limit


def _migrate(store: Store, role: str) -> int:
    """``store.migrate()``, its refusal naming which of the two databases it is about."""
    try:
        return store.migrate()
    except SchemaError as exc:
        raise SchemaError(f"the {role} of the copy: {exc}") from None


def _hand_back(columns: tuple[str, ...], page: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], int]:
    """Leased runs as pending, without lease; a cancelled run's unacknowledged lease cleared."""
    status, owner, expires = columns.index("status"), columns.index("lease_owner"), columns.index("lease_expires_at")
    out, handed = [], 0
    for row in page:
        if row[status] == "leased" or (row[status] == "cancelled" and row[expires] is not None):
            values = list(row)
            if values[status] == "leased":
                values[status] = "pending"
                handed += 1
            values[owner] = values[expires] = None
            row = tuple(values)
        out.append(row)
    return out, handed


def _check_text(
    table: str, columns: tuple[str, ...], key_at: list[int], page: list[tuple[Any, ...]], engine: str
) -> None:
    for row in page:
        for column, value in zip(columns, row, strict=True):
            if isinstance(value, str) and "\x00" in value:
                where = ", ".join(f"{columns[i]} {row[i]!r}" for i in key_at)
                raise ValidationError(
                    f"{table} row ({where}): {column} holds a NUL character (\\x00), which {engine} cannot "
                    "store; nothing was copied. Remove it in the source (an older durably stored it) and copy again"
                )
