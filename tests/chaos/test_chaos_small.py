"""A small CPython chaos run in the normal suite: the real command, a handful of
interruptions of every kind, and its summary line. The large run is on demand
(docs/chaos.md)."""

from __future__ import annotations

import re
import subprocess
import sys

from .conftest import ROOT


def test_a_small_chaos_run_loses_nothing_and_prints_one_summary_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--host", "cpython", "--kills", "6", "--runs", "24",
         "--workers", "2", "--stops", "1", "--terms", "2", "--cancels", "2", "--seed", "11",
         "--keep", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    (line,) = proc.stdout.splitlines()
    assert line.startswith("chaos cpython: runs 24 ")
    assert "interruptions 9 (SIGKILL 6, SIGSTOP 1, SIGTERM 2)" in line
    for figure in ("lost runs 0", "duplicate completions 0", "half-written 0", "overlapping executions 0",
                   "integrity ok"):
        assert figure in line, line
    # Runs that waited (a retried step, a durable sleep, a signal) were among them.
    waits = re.search(r"waits (\d+) \(retried attempts (\d+), sleepers woken (\d+), signals delivered once (\d+)\)", line)
    assert waits and int(waits.group(1)) > 0 and int(waits.group(2)) > 0, line
    assert int(waits.group(3)) == int(waits.group(4)) > 0, line
    reexecuted = int(re.search(r"re-executed step bodies (\d+)", line).group(1))
    assert reexecuted <= 6 + 1
    assert "PASS" in line
    # Every kind of interruption really happened to a worker (the ledger and outputs are kept).
    assert (tmp_path / "ledger.tsv").stat().st_size > 0
    assert len(list(tmp_path.glob("worker-*.out"))) == 2 + 6 + 2


def test_a_small_chaos_run_on_postgresql_with_restarts_loses_nothing(tmp_path, pg_cluster):
    """The same run on a PostgreSQL server of its own, restarted twice under the workers
    (fast, then immediate). ``pg_cluster`` only makes it skip or fail like the other
    PostgreSQL tests when no server can be run here; the run starts its own."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--host", "cpython", "--db", "postgres", "--kills", "6",
         "--runs", "24", "--workers", "2", "--stops", "1", "--terms", "2", "--cancels", "2", "--seed", "11",
         "--restarts", "2", "--keep", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    (line,) = proc.stdout.splitlines()
    assert line.startswith("chaos cpython on postgresql: runs 24 ")
    assert "interruptions 9 (SIGKILL 6, SIGSTOP 1, SIGTERM 2, PostgreSQL restarts 2)" in line
    for figure in ("lost runs 0", "duplicate completions 0", "half-written 0", "overlapping executions 0",
                   "integrity ok", "PASS"):
        assert figure in line, line
    # Runs that waited (a retried step, a durable sleep, a signal) were among them.
    waits = re.search(r"waits (\d+) \(retried attempts (\d+), sleepers woken (\d+), signals delivered once (\d+)\)", line)
    assert waits and int(waits.group(1)) > 0 and int(waits.group(2)) > 0, line
    assert int(waits.group(3)) == int(waits.group(4)) > 0, line
