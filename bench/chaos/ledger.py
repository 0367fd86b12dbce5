"""The ledger: what the job bodies themselves say they executed.

The runtime never writes it. Each line is appended with one ``os.write`` on a file opened
with ``O_APPEND``, so lines from several processes never interleave, and a line is on disk
(in the page cache, which survives a SIGKILL) before the step body returns.

Line format (tab-separated): ``kind run_id step pid time`` where ``kind`` is ``start`` (the
body began), ``end`` (it returned normally) or ``abort`` (it was interrupted by an
exception, e.g. a cancellation). A body killed by SIGKILL has a ``start`` and nothing else.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


def note(path: str, kind: str, run_id: str, step: str) -> None:
    line = f"{kind}\t{run_id}\t{step}\t{os.getpid()}\t{time.time():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@dataclass
class Execution:
    """One execution of one step body, as the ledger tells it."""

    run_id: str
    step: str
    pid: int
    start: float
    end: float | None = None  # None: no end line (killed)
    outcome: str = "running"  # "end" | "abort" | "fail" | "running" (no end line)


def read(path: str | Path) -> list[Execution]:
    """Pair each ``start`` with the next ``end``/``abort``/``fail`` of the same run, step and pid."""
    p = Path(path)
    if not p.exists():
        return []
    open_: dict[tuple[str, str, int], Execution] = {}
    out: list[Execution] = []
    for raw in p.read_text().splitlines():
        parts = raw.split("\t")
        if len(parts) != 5:
            continue  # a torn last line cannot happen with O_APPEND, but never crash on it
        kind, run_id, step, pid_s, t_s = parts
        key = (run_id, step, int(pid_s))
        if kind == "start":
            ex = Execution(run_id, step, int(pid_s), float(t_s))
            open_[key] = ex
            out.append(ex)
        elif key in open_:
            ex = open_.pop(key)
            ex.end = float(t_s)
            ex.outcome = kind
    return out
