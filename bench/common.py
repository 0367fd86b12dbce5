"""What every contender and the runner share: slice timing, statistics, db sizes.

Contender modules (``bench/contenders/*.py``) all have the same shape::

    NAME = "floor"                       # the label in tables and charts
    def available() -> str | None: ...   # None when it can run, else why not
    def steps(n, db_path, slices) -> dict
    def runs(k, db_path) -> dict
    def trigger_latency(k, db_path) -> dict
    # and, for durably only: def scale(n_runs, db_path) -> dict

Each call runs in a fresh child process on a fresh database file, so one contender's
threads, caches and imports never leak into another's timing.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import Iterable, Sequence

now = time.perf_counter


class SliceClock:
    """Time a job of ``n`` steps in equal slices, to see whether a step gets dearer as more
    steps are stored. A contender calls ``tick(i)`` at the start of step ``i`` and ``end()``
    after the job finishes; each slice's time therefore includes the commits of its steps.
    """

    def __init__(self, n: int, slices: int) -> None:
        self.n = n
        self.slices = max(1, min(slices, n))
        self.size = max(1, n // self.slices)
        self.marks: list[float] = []

    def tick(self, i: int) -> None:
        if i % self.size == 0 and len(self.marks) < self.slices:
            self.marks.append(now())

    def end(self) -> None:
        self.marks.append(now())

    def result(self) -> dict:
        """Per-step cost in microseconds for each slice, and where each slice ends."""
        out_us, ends = [], []
        for j in range(len(self.marks) - 1):
            first = j * self.size
            last = self.n if j == len(self.marks) - 2 else (j + 1) * self.size
            out_us.append((self.marks[j + 1] - self.marks[j]) / (last - first) * 1e6)
            ends.append(last)
        return {"slice_us_per_step": out_us, "slice_end": ends}


def steps_result(n: int, seconds: float, clock: SliceClock, **extra) -> dict:
    return {"n": n, "seconds": seconds, "steps_per_s": n / seconds, **clock.result(), **extra}


def runs_result(k: int, seconds: float, **extra) -> dict:
    return {"k": k, "seconds": seconds, "runs_per_s": k / seconds, **extra}


def latency_result(trigger_s: Sequence[float], start_s: Sequence[float], **extra) -> dict:
    """Latency samples in milliseconds; the runner takes medians and p95 per round."""
    return {
        "k": len(trigger_s),
        "trigger_ms": [x * 1e3 for x in trigger_s],
        "start_ms": [x * 1e3 for x in start_s],
        **extra,
    }


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): with few samples it returns a real sample."""
    xs = sorted(values)
    if not xs:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(xs)))
    return xs[rank - 1]


def spread(values: Sequence[float]) -> dict:
    """Median with min and max: the shape every figure is reported in."""
    xs = [v for v in values if v is not None and not math.isnan(v)]
    if not xs:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def db_bytes(path: str) -> int:
    """Size of a database on disk, its WAL and shared-memory files included."""
    total = 0
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            total += os.path.getsize(path + suffix)
        except FileNotFoundError:
            pass
    return total


def sqlite_settings(path: str) -> dict:
    """The journal mode a contender left on its file (synchronous is per connection, so
    contenders report that themselves)."""
    import sqlite3

    try:
        conn = sqlite3.connect(path)
        try:
            return {"journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0]}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return {"journal_mode": f"unknown ({exc})"}


def remove_db(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass
