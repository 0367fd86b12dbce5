"""Time and ids, in the formats the database stores.

Timestamps are ISO-8601 UTC strings of fixed width (``2026-11-25T18:49:08.123456Z``), so
comparing them as text compares them as times, in SQL and in Python, on both hosts.
Ids are ULIDs: 26 characters, sortable by creation time, unique across processes.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def system_clock() -> datetime:
    return datetime.now(UTC)


def system_now_iso() -> str:
    """``iso(system_clock())``, faster: the text up to the second is made once per second and
    the microseconds appended (a step stores two timestamps; in Pyodide building and
    formatting a datetime each time is a noticeable part of a step's Python)."""
    ns = time.time_ns()
    seconds, micros = divmod(ns // 1000, 1_000_000)
    cached = _second_text[0]
    if cached[0] != seconds:
        text = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")[:-6] + "."
        cached = _second_text[0] = (seconds, text)  # one tuple: threads see a matching pair
    return f"{cached[1]}{micros:06d}Z"


#: The last second ``system_now_iso`` formatted, and its text up to the fraction.
_second_text: list[tuple[int, str]] = [(-1, "")]


def now_text(clock: Clock) -> Callable[[], str]:
    """A function giving ``iso(clock())``: ``system_now_iso`` for the system clock."""
    if clock is system_clock:
        return system_now_iso
    return lambda: iso(clock())


def iso(dt: datetime) -> str:
    """Format an aware datetime as the fixed-width UTC text the database stores."""
    if dt.tzinfo is not UTC:
        if dt.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        dt = dt.astimezone(UTC)
    # isoformat is C code and, with timespec, always fixed width: "...:08.123456+00:00".
    return dt.isoformat(timespec="microseconds")[:-6] + "Z"


def parse_iso(text: str | None) -> datetime | None:
    """Read a stored timestamp as an aware UTC datetime. Text without a zone is UTC (as
    SQLite's own ``datetime('now')`` writes it); another offset is converted to UTC.
    Raises ValueError (or TypeError, OverflowError) for anything else."""
    if text is None:
        return None
    # fromisoformat is C code and reads the trailing "Z" (Python 3.11+); strptime is slow.
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is not UTC:
        dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt


def add_seconds(dt: datetime, seconds: float) -> datetime:
    return dt + timedelta(seconds=seconds)


class UlidFactory:
    """Makes ULIDs that rise strictly within this process, even within one millisecond and
    from several threads at once (a CPython program may trigger from threads while its
    worker loop runs): the step from one id to the next is taken under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    def new(self, now: datetime | None = None) -> str:
        ms = int((now.timestamp() if now is not None else time.time()) * 1000)
        with self._lock:
            if ms <= self._last_ms:
                # Same (or an earlier, if the clock stepped back) millisecond: keep the order
                # by counting up from the previous id.
                ms = self._last_ms
                rand = self._last_rand + 1
            else:
                rand = int.from_bytes(os.urandom(10), "big") >> 1  # leave room to count up
            self._last_ms, self._last_rand = ms, rand
        value = (ms << 80) | rand
        chars = []
        for _ in range(26):
            chars.append(_CROCKFORD[value & 31])
            value >>= 5
        return "".join(reversed(chars))
