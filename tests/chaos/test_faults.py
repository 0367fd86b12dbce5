"""Storage faults: SQLite errors injected on chosen statements and commits.

Whatever fails, the runtime reports a ``worker:error``, hands the run back so it is retried,
never leaves a run half-written (a finished run whose count disagrees with its step rows,
a completed run without its output), and the worker keeps going. The invariants are
checked from a second connection at the moment of each error, and again at the end.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from durably import Durably, job
from durably.errors import StorageError

from bench.chaos.faults import Fault, FaultyDriver


def half_written(db: str) -> list[str]:
    """What a reader sees that a committed state must never show."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        bad = []
        rows = conn.execute(
            "SELECT r.id, r.status, r.output, r.error, r.completed_steps, "
            "(SELECT COUNT(*) FROM durably_steps s WHERE s.run_id = r.id AND s.status = 'completed') "
            "FROM durably_runs r").fetchall()
        for run_id, status, output, error, counted, stored in rows:
            # A finished run stores its count; an unfinished one is counted at read time.
            if status in ("completed", "failed", "cancelled") and counted != stored:
                bad.append(f"{run_id}: completed_steps {counted} but {stored} step rows")
            if status == "completed" and output is None:
                bad.append(f"{run_id}: completed without output")
            if status == "failed" and error is None:
                bad.append(f"{run_id}: failed without error")
        return bad
    finally:
        conn.close()


class Harness:
    """One in-process worker on a FaultyDriver, counting step bodies in its own ledger."""

    def __init__(self, tmp_path: Path, faults: list[Fault]) -> None:
        self.db = str(tmp_path / "jobs.db")
        setup = Durably(self.db)
        setup.get_runs(limit=1)  # the first call creates the schema, here without faults
        setup.close()
        self.driver = FaultyDriver(self.db, faults)
        self.executions: dict[tuple[str, str], int] = {}
        self.errors: list = []
        self.snapshots: list[list[str]] = []

        @job("three")
        async def three(step, input):
            out = []
            for i in range(3):
                name = f"s{i}"

                async def body(name=name):
                    key = (step.run_id, name)
                    self.executions[key] = self.executions.get(key, 0) + 1
                    await asyncio.sleep(0)
                    return f"{input}-{name}"

                out.append(await step.run(name, body))
            return out

        self.app = Durably(self.driver, jobs=[three], polling_interval=0.02,
                           lease_duration=0.5, lease_renew_interval=0.1)

        def on_error(event) -> None:
            self.errors.append(event)
            self.snapshots.append(half_written(self.db))

        self.app.on("worker:error", on_error)

    async def run_all(self, inputs: list[str], timeout: float = 20) -> list:
        runs = [self.app.trigger("three", x) for x in inputs]
        await self.app.start()
        try:
            return [await self.app.wait_for_run(r.id, timeout=timeout) for r in runs]
        finally:
            await self.app.stop()

    def close(self) -> None:
        self.app.close()


@pytest.fixture
def harness(tmp_path):
    made: list[Harness] = []

    def make(*faults: Fault) -> Harness:
        h = Harness(tmp_path, list(faults))
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def assert_clean(h: Harness) -> None:
    assert all(s == [] for s in h.snapshots), h.snapshots
    assert half_written(h.db) == []


async def test_an_io_error_on_a_step_commit_is_reported_and_the_run_is_retried_to_completion(harness):
    h = harness(Fault("SQLITE_IOERR", match="INSERT INTO durably_steps", at="commit", nth=2))
    a, b = await h.run_all(["a", "b"])
    assert a.status == b.status == "completed"
    assert a.output == ["a-s0", "a-s1", "a-s2"] and b.output == ["b-s0", "b-s1", "b-s2"]
    assert len(h.driver.injected) == 1
    assert [e["error"] for e in h.errors] == ["StorageError: disk I/O error (injected)"]
    assert "handed back" in h.errors[0]["context"] and h.errors[0].run_id == a.id
    # Only the step whose commit failed ran twice; the first one, committed, never again.
    assert h.executions[(a.id, "s0")] == 1 and h.executions[(a.id, "s1")] == 2
    assert sum(h.executions.values()) == 7
    assert_clean(h)


async def test_a_full_disk_on_the_step_insert_stores_nothing_and_the_step_runs_again(harness):
    h = harness(Fault("SQLITE_FULL", match="INSERT INTO durably_steps", nth=3, times=2))
    runs = await h.run_all(["a", "b"])
    assert [r.status for r in runs] == ["completed", "completed"]
    assert [e["error"] for e in h.errors] == ["StorageError: database or disk is full (injected)"] * 2
    assert all(len(s.output) == 3 for s in runs)
    assert sum(h.executions.values()) == 6 + 2
    assert_clean(h)


async def test_a_locked_database_at_the_final_commit_never_leaves_a_completed_run_without_output(harness):
    h = harness(Fault("SQLITE_BUSY", match="output = ?", at="commit", nth=1, times=2))
    (a,) = await h.run_all(["a"])
    assert a.status == "completed" and a.output == ["a-s0", "a-s1", "a-s2"]
    assert len(h.errors) == 2 and all("database is locked" in e["error"] for e in h.errors)
    # Every step had committed: the retries only finish the run, no step body runs again.
    assert set(h.executions.values()) == {1}
    assert_clean(h)


async def test_errors_while_claiming_are_reported_and_the_worker_keeps_claiming(harness):
    h = harness(Fault("SQLITE_BUSY", match="SET status = 'leased'", times=3))
    runs = await h.run_all(["a", "b", "c"])
    assert [r.status for r in runs] == ["completed"] * 3
    assert [e["context"] for e in h.errors] == ["claiming a run (will try again)"] * 3
    assert set(h.executions.values()) == {1}
    assert_clean(h)


async def test_a_run_of_faults_on_every_commit_is_survived_and_other_runs_complete(harness):
    h = harness(Fault("SQLITE_IOERR", at="commit", nth=5, times=6))
    runs = await h.run_all(["a", "b", "c"])
    assert [r.status for r in runs] == ["completed"] * 3
    assert len(h.driver.injected) == 6 and len(h.errors) >= 6
    assert all(n <= 1 + 6 for n in h.executions.values())
    assert_clean(h)


async def test_a_failed_trigger_commit_creates_no_run_and_the_next_trigger_works(harness):
    h = harness(Fault("SQLITE_FULL", match="INSERT INTO durably_runs", at="commit"))
    with pytest.raises(StorageError) as err:
        h.app.trigger("three", "lost")
    assert err.value.code == "SQLITE_FULL" and "full" in str(err.value)
    assert h.app.get_runs() == []
    (a,) = await h.run_all(["a"])
    assert a.status == "completed"
    assert [r.input for r in h.app.get_runs()] == ["a"]
    assert_clean(h)


def test_the_fault_driver_counts_commits_after_a_matching_statement(tmp_path):
    d = FaultyDriver(str(tmp_path / "x.db"), [Fault("SQLITE_IOERR", match="INSERT INTO t", at="commit", nth=2)])
    d.execute("CREATE TABLE t (x)")
    for i in range(3):
        d.execute("BEGIN IMMEDIATE")
        d.execute("SELECT 1")
        d.execute("COMMIT")  # no INSERT: never counted
        d.execute("BEGIN IMMEDIATE")
        d.execute("INSERT INTO t VALUES (?)", (i,))
        if i == 1:
            with pytest.raises(StorageError) as err:
                d.execute("COMMIT")
            assert err.value.code == "SQLITE_IOERR"
            d.execute("ROLLBACK")  # the failed COMMIT left the transaction open
        else:
            d.execute("COMMIT")
    assert d.execute("SELECT x FROM t")[0] == [(0,), (2,)]
    d.close()


async def test_a_run_whose_writes_always_fail_is_failed_clearly_instead_of_retried_forever(harness):
    h = harness(Fault("SQLITE_FULL", match="INSERT INTO durably_steps", nth=2, times=None))
    app = h.app
    run = app.trigger("three", "x")
    await app.start()
    try:
        from durably import RunFailedError

        with pytest.raises(RunFailedError) as failed:
            await app.wait_for_run(run.id, timeout=20)
    finally:
        await app.stop()
    assert failed.value.failed_step == "s1"
    assert "database or disk is full" in failed.value.error and "5 times in a row" in failed.value.error
    assert h.executions[(run.id, "s0")] == 1 and h.executions[(run.id, "s1")] == 5
    assert_clean(h)
