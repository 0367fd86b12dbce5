"""``Durably("postgresql://...")`` as users meet it: wake-ups across processes, a worker
that lives through a server restart, and every connection error as one line of the CLI
with its exit status. On the session's throwaway server (tests/pg_fixtures.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import durably
from durably import Durably, StorageError, ValidationError, job
from durably.pg_driver import PostgresDriver

PACKAGE_ROOT = str(Path(durably.__file__).resolve().parents[1])


@job("j")
async def j(step, input):
    return await step.run("only", lambda: input)


async def until(predicate, timeout: float = 10.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def listening(app: Durably, times: int = 1):
    listener = app._worker._listener
    return lambda: listener is not None and listener.connections >= times


# -- waking without polling -----------------------------------------------------------------------


async def test_a_trigger_in_another_process_starts_the_run_without_waiting_for_the_poll(pg_url):
    worker = Durably(pg_url, jobs=[j], polling_interval=60)
    other = Durably(pg_url)  # its own connection and no worker: another process, as far as the worker knows
    await worker.start()
    try:
        await until(listening(worker), what="the worker to listen")
        started = asyncio.get_running_loop().create_future()
        worker.on("run:leased", lambda e: started.done() or started.set_result(time.monotonic()))
        t0 = time.monotonic()
        run = other.trigger("j", 7)
        assert await asyncio.wait_for(started, 10) - t0 < 5  # the poll would take 60 s
        assert (await worker.wait_for_run(run.id, timeout=10)).output == 7
    finally:
        await worker.stop()
        worker.close()
        other.close()


async def test_without_notify_the_same_trigger_waits_for_the_poll(pg_url):
    """The control for the test above: the run starts because of the wake-up, not by chance."""
    worker = Durably(PostgresDriver(pg_url, notify=False), jobs=[j], polling_interval=60)
    other = Durably(PostgresDriver(pg_url, notify=False))
    await worker.start()
    try:
        assert worker._worker._listener is None
        await asyncio.sleep(0.1)  # the worker's first look for runs is over
        run = other.trigger("j", 7)
        await asyncio.sleep(1.5)
        assert worker.get_run(run.id).status == "pending"
    finally:
        await worker.stop()
        worker.close()
        other.close()


async def test_a_keyed_run_ending_in_another_process_wakes_the_run_waiting_for_its_key(pg_url):
    gate = asyncio.Event()

    @job("hold")
    async def hold(step, input):
        await step.run("wait", gate.wait)

    holder = Durably(pg_url, jobs=[hold], polling_interval=60)
    waiter = Durably(pg_url, jobs=[j], polling_interval=60)
    other = Durably(pg_url)
    first = holder.trigger(hold, None, concurrency_key="k")
    await holder.start()
    await waiter.start()
    try:
        await until(lambda: holder.get_run(first.id).status == "leased", what="the holder to start")
        await until(listening(waiter), what="the waiter to listen")
        second = other.trigger("j", 1, concurrency_key="k")  # of another job, waiting for the key
        await asyncio.sleep(0.3)
        assert waiter.get_run(second.id).status == "pending"
        t0 = time.monotonic()
        gate.set()
        await waiter.wait_for_run(second.id, timeout=10)
        assert time.monotonic() - t0 < 5
    finally:
        gate.set()
        for app in (holder, waiter):
            await app.stop()
            app.close()
        other.close()


@job("approve")
async def approve(step, input):
    return await step.wait_for_signal("go")


async def test_a_signal_from_another_process_resumes_the_waiting_run_without_waiting_for_the_poll(pg_url):
    worker = Durably(pg_url, jobs=[approve], polling_interval=60)
    other = Durably(pg_url)
    run = other.trigger("approve", None)
    await worker.start()
    try:
        await until(lambda: worker.get_run(run.id).status == "waiting", what="the run to wait for its signal")
        await until(listening(worker), what="the worker to listen")
        t0 = time.monotonic()
        assert other.signal(run.id, "go", "yes").disposition == "delivered"
        assert (await worker.wait_for_run(run.id, timeout=10)).output == "yes"
        assert time.monotonic() - t0 < 5  # the poll would take 60 s
    finally:
        await worker.stop()
        worker.close()
        other.close()


async def test_a_keyed_run_that_starts_to_sleep_in_another_process_frees_its_key_at_once(pg_url):
    gate = asyncio.Event()

    @job("nap")
    async def nap(step, input):
        await step.run("wait", gate.wait)
        await step.sleep("nap", 3600)

    sleeper = Durably(pg_url, jobs=[nap], polling_interval=60)
    waiter = Durably(pg_url, jobs=[j], polling_interval=60)
    other = Durably(pg_url)
    first = other.trigger("nap", None, concurrency_key="k")
    await sleeper.start()
    await waiter.start()
    try:
        await until(lambda: sleeper.get_run(first.id).status == "leased", what="the sleeper to start")
        await until(listening(waiter), what="the waiter to listen")
        second = other.trigger("j", 1, concurrency_key="k")
        await asyncio.sleep(0.3)
        assert waiter.get_run(second.id).status == "pending"  # the key is held
        t0 = time.monotonic()
        gate.set()
        await waiter.wait_for_run(second.id, timeout=10)
        assert time.monotonic() - t0 < 5
        assert waiter.get_run(first.id).status == "waiting"
    finally:
        gate.set()
        for app in (sleeper, waiter):
            await app.stop()
            app.close()
        other.close()


# -- the server restarts ----------------------------------------------------------------------------


async def test_a_worker_lives_through_a_server_restart_and_loses_nothing(pg_server, pg_url):
    """The server goes away under a step: the step's commit fails, the run is handed back
    or its lease expires, and once the server is back it resumes after its last committed
    step. No committed step runs again, the worker keeps running, its listener reconnects."""
    executions: list[str] = []
    slow = asyncio.Event()

    @job("multi")
    async def multi(step, input):
        for i in range(6):
            async def body(i=i):
                executions.append(f"s{i}")
                if i == 2:
                    slow.set()
                await asyncio.sleep(0.2)
                return i

            await step.run(f"s{i}", body)
        return "done"

    worker = Durably(pg_url, jobs=[multi], polling_interval=0.2, lease_duration=1.5, lease_renew_interval=0.3)
    errors: list = []
    failed = asyncio.Event()
    worker.on("worker:error", lambda e: (errors.append(e), failed.set()))
    await worker.start()
    try:
        await until(listening(worker), what="the worker to listen")
        run = worker.trigger(multi, None)
        await asyncio.wait_for(slow.wait(), 10)
        committed = [s.name for s in worker.get_steps(run.id)]
        assert committed == ["s0", "s1"]
        await asyncio.to_thread(pg_server.stop, "fast")
        await asyncio.wait_for(failed.wait(), 10)  # s2's commit (or a renewal) met no server
        await asyncio.to_thread(pg_server.start)
        done = await worker.wait_for_run(run.id, timeout=30)
        assert done.output == "done" and worker.running
        assert [s.name for s in worker.get_steps(run.id)] == [f"s{i}" for i in range(6)]
        assert all(executions.count(name) == 1 for name in committed), executions
        assert len(executions) <= 7  # at most the step in flight ran twice
        assert all("StorageError" in e["error"] for e in errors)
        await until(listening(worker, 2), what="the listener to reconnect")
    finally:
        await worker.stop()
        worker.close()


async def test_runs_that_wait_through_a_server_restart_wake_and_finish(pg_server, pg_url):
    """A run asleep and a run waiting for its signal while the server restarts: the sleeper
    wakes at its stored time, the signal sent once the server is back is received, and
    neither redoes its first step."""
    firsts: list[str] = []

    @job("nap")
    async def nap(step, input):
        await step.run("first", lambda: firsts.append("nap"))
        await step.sleep("nap", 1.5)
        return "rested"

    @job("ask")
    async def ask(step, input):
        await step.run("first", lambda: firsts.append("ask"))
        return await step.wait_for_signal("go")

    worker = Durably(pg_url, jobs=[nap, ask], polling_interval=0.2)
    other = Durably(pg_url)
    await worker.start()
    try:
        sleeper, asker = other.trigger("nap", None), other.trigger("ask", None)
        await until(lambda: {worker.get_run(sleeper.id).status, worker.get_run(asker.id).status} == {"waiting"},
                    what="both runs to wait")
        # "fast": the test server commits asynchronously, which an immediate stop may undo.
        await asyncio.to_thread(pg_server.restart, "fast")
        sent = None
        for _ in range(100):  # the sender is a client like any other: it tries again
            try:
                sent = other.signal(asker.id, "go", "yes", signal_id="after-restart")
                break
            except StorageError as exc:
                assert exc.transient, exc
                await asyncio.sleep(0.1)
        assert sent is not None and sent.disposition == "delivered"
        assert (await worker.wait_for_run(asker.id, timeout=20)).output == "yes"
        assert (await worker.wait_for_run(sleeper.id, timeout=20)).output == "rested"
        assert sorted(firsts) == ["ask", "nap"] and worker.running
    finally:
        await worker.stop()
        worker.close()
        other.close()


async def test_after_a_restart_wake_ups_reach_the_worker_again(pg_server, pg_url):
    worker = Durably(pg_url, jobs=[j], polling_interval=60)
    other = Durably(pg_url)
    await worker.start()
    try:
        await until(listening(worker), what="the worker to listen")
        await asyncio.to_thread(pg_server.restart, "fast")
        await until(listening(worker, 2), timeout=20, what="the listener to reconnect")
        await asyncio.sleep(0.1)  # the wake-up of the reconnection has been handled
        t0 = time.monotonic()
        run = other.trigger("j", 3)
        assert (await worker.wait_for_run(run.id, timeout=10)).output == 3
        assert time.monotonic() - t0 < 5
    finally:
        await worker.stop()
        worker.close()
        other.close()


# -- what a user can get wrong, through Durably and the CLI ------------------------------------------


def test_durably_takes_postgres_urls_and_refuses_other_urls(pg_url):
    app = Durably(pg_url.replace("postgresql://", "postgres://", 1))
    try:
        assert app.driver.name == "postgresql" and app.migrate() == app.schema_version()
    finally:
        app.close()
    with pytest.raises(ValidationError, match="mysql://... is a URL durably cannot open"):
        Durably("mysql://u:p@h/db")


def test_the_idle_transaction_timeout_is_never_longer_than_the_lease(pg_url):
    app = Durably(pg_url, lease_duration=3, lease_renew_interval=1)
    try:
        assert app.driver.execute("SHOW idle_in_transaction_session_timeout")[0] == [("3s",)]
    finally:
        app.close()


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": PACKAGE_ROOT, **(env or {})}
    full.pop("DURABLY_DB", None)
    return subprocess.run([sys.executable, "-m", "durably", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=60)


def test_connection_errors_are_one_line_with_their_exit_status(pg_cluster, pg_url, tmp_path):
    good = pg_cluster.url("durably_test")
    wrong_password = pg_cluster.url("durably_test", password="not-the-password")
    missing_db = pg_cluster.url("no_such_db")
    nobody_there = good.replace(f":{pg_cluster.port}/", ":1/")
    bare_schema = pg_url  # a schema without durably's tables
    source = str(tmp_path / "source.db")
    made = Durably(source)  # an SQLite database with durably's tables
    made.migrate()
    made.close()
    cases = [
        # (args, exit status, what the line says)
        (("trigger", "--db", wrong_password, "j"), 1, "the user name or password is wrong"),
        (("runs", "--db", wrong_password), 1, "password authentication failed"),
        (("trigger", "--db", missing_db, "j"), 1, "create the database first"),
        (("runs", "--db", missing_db), 2, "no durably database at postgresql://postgres@127.0.0.1"),
        (("status", "--db", missing_db, "--check"), 2, "does not exist"),
        (("worker", "json", "--db", nobody_there), 2, "defines no jobs"),
        (("trigger", "--db", nobody_there, "j"), 1, "is the server running"),
        (("runs", "--db", bare_schema), 2, "holds no durably tables"),
        (("signal", "--db", nobody_there, "R1", "go"), 1, "is the server running"),
        (("signal", "--db", wrong_password, "R1", "go"), 1, "password authentication failed"),
        (("signal", "--db", missing_db, "R1", "go"), 2, "no durably database at"),
        (("schedules", "--db", bare_schema), 2, "holds no durably tables"),
        (("copy", "--from", bare_schema, "--to", str(tmp_path / "c.db")), 2, "holds no durably tables"),
        (("copy", "--from", source, "--to", nobody_there), 1, "is the server running"),
        (("trigger", "--db", "postgresql://u@h:notaport/db", "j"), 2, "not a valid PostgreSQL URL"),
        (("trigger", "--db", "mysql://u@h/db", "j"), 2, "is a URL durably cannot open"),
    ]
    for args, status, needle in cases:
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == status, (args[:2], proc.returncode, proc.stderr)
        assert needle in proc.stderr and "Traceback" not in proc.stderr, (args[:2], proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "not-the-password" not in proc.stderr and pg_cluster.password not in proc.stderr
    # The worker with a server that is not there: one line after the job module is imported.
    (tmp_path / "jobs_mod.py").write_text("from durably import job\n@job('j')\nasync def j(step, input):\n    return 1\n")
    proc = cli("worker", "jobs_mod", "--db", nobody_there, cwd=tmp_path)
    assert proc.returncode == 1 and "is the server running" in proc.stderr and "Traceback" not in proc.stderr


def test_a_newer_schema_on_postgresql_is_refused_and_left_as_it_is(pg_url, tmp_path):
    app = Durably(pg_url)
    app.trigger("x", 1)
    app.driver.execute("INSERT INTO durably_migrations (version, applied_at) VALUES (99, 'later')")
    app.close()
    proc = cli("runs", "--db", pg_url, cwd=tmp_path)
    assert proc.returncode == 1 and "newer durably" in proc.stderr and "not modified" in proc.stderr
    proc = cli("trigger", "--db", pg_url, "x", "2", cwd=tmp_path)
    assert proc.returncode == 1 and "newer durably" in proc.stderr
    check = PostgresDriver(pg_url)
    try:
        assert check.execute("SELECT count(*) FROM durably_runs")[0] == [(1,)]
    finally:
        check.close()


def test_without_psycopg_a_postgresql_url_says_what_to_install(pg_url, tmp_path):
    blocker = tmp_path / "blocked"
    (blocker / "psycopg").mkdir(parents=True)
    (blocker / "psycopg" / "__init__.py").write_text("raise ImportError('No module named psycopg')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(blocker), PACKAGE_ROOT])}
    proc = cli("trigger", "--db", pg_url, "j", cwd=tmp_path, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "pip install 'durably[postgres]'" in proc.stderr
    with pytest.raises(StorageError, match="psycopg"):
        import importlib

        sys.modules["psycopg"] = None  # type: ignore[assignment]  # import fails, as when not installed
        try:
            importlib.invalidate_caches()
            Durably(pg_url)
        finally:
            del sys.modules["psycopg"]
