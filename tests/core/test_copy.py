"""``durably copy`` / ``Durably.copy_to``: every run of one database into another, SQLite to
PostgreSQL, back, and within one engine. A copy is a snapshot: ids, timestamps and JSON
unchanged, leases handed back, written in one transaction, into an empty target only
unless told to replace what it holds."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import durably
from durably import ConflictError, Durably, Retry, SchemaError, ValidationError, job
from durably.store import COPY_TABLES

from .conftest import FakeClock

ENGINES = ["sqlite", "postgres"]
PACKAGE_ROOT = str(Path(durably.__file__).resolve().parents[1])


@pytest.fixture
def dbs(request, tmp_path):
    """``dbs(engine)``: a new, empty database of that engine (a file, or a schema of the
    session's PostgreSQL server) each time it is called."""
    made = []

    def make(engine: str) -> str:
        if engine == "sqlite":
            return str(tmp_path / f"db-{len(made)}-{secrets.token_hex(3)}.db")
        cluster = request.getfixturevalue("pg_cluster")
        schema = f"c_{secrets.token_hex(6)}"
        cluster.execute(f"CREATE SCHEMA {schema}", dbname="durably_test")
        made.append((cluster, schema))
        return cluster.url("durably_test", options=f"-csearch_path={schema}")

    yield make
    for cluster, schema in made:
        if cluster.running:
            cluster.execute(f"DROP SCHEMA {schema} CASCADE", dbname="durably_test")


def rows_of(app: Durably) -> dict[str, list[tuple]]:
    store = app._store
    out = {}
    for table, columns, key in COPY_TABLES:
        out[table] = store.copy_page(table, columns, key, None, 10**6)
    return out


@job("work")
async def work(step, input):
    for i in range(input["steps"]):
        await step.run(f"s{i}", lambda: {"i": i, "text": "é✓"})
        step.log.info(f"line {i}", {"i": i})
        step.progress(i + 1, input["steps"], "going")
    if input.get("fail"):
        await step.run("boom", lambda: 1 / 0)
    return {"done": input["steps"]}


CALLS: list[str] = []


@job("nap")
async def nap(step, input):
    await step.run("before", lambda: CALLS.append("nap:before"))
    await step.sleep("nap", 3600)
    await step.run("after", lambda: CALLS.append("nap:after"))
    return "rested"


@job("approve")
async def approve(step, input):
    await step.run("ask", lambda: CALLS.append("approve:ask"))
    answer = await step.wait_for_signal("go", timeout=7200)
    return {"answer": answer}


def _fails_once():
    CALLS.append("flaky:call")
    if CALLS.count("flaky:call") == 1:
        raise RuntimeError("not yet")
    return "ok"


@job("flaky")
async def flaky(step, input):
    return await step.run("call", _fails_once, retries=Retry(max_attempts=3, initial=60, jitter=False))


@job("yearly", schedule="0 0 1 1 *")
async def yearly(step, input):
    return None


async def fill(app: Durably, clock: FakeClock) -> dict[str, str]:
    """Runs in every state a copy meets: completed, failed, cancelled, pending, leased
    (live lease: handed back in the copy), waiting (for a sleep, for a signal, for a retry
    with its failed attempt; pending with a signal kept until it waits), with labels, keys,
    steps, logs, progress and a schedule."""
    CALLS.clear()
    for waits in (nap, approve, flaky, yearly):
        app.register(waits)
    ids = {}
    ids["sleeping"] = app.trigger(nap, None).id
    ids["awaiting"] = app.trigger(approve, None, concurrency_key="a").id
    ids["retrying"] = app.trigger(flaky, None).id
    ids["completed"] = app.trigger(work, {"steps": 3}, labels={"team": "a", "n": "1"}, idempotency_key="i1").id
    ids["failed"] = app.trigger(work, {"steps": 1, "fail": True}, concurrency_key="k").id
    await app.process_until_idle()
    ids["cancelled"] = app.trigger(work, {"steps": 1}, labels={"team": "b"}).id
    app.cancel(ids["cancelled"])
    ids["retriggered"] = app.retrigger(ids["completed"]).id
    await app.process_until_idle()
    gate = asyncio.Event()

    @job("held")
    async def held(step, input):
        await step.run("first", lambda: 1)
        await step.run("wait", gate.wait)

    app.register(held)
    ids["leased"] = app.trigger(held, None, concurrency_key="k").id
    task = asyncio.ensure_future(app.process_one())
    for _ in range(200):
        if app.get_steps(ids["leased"]):
            break
        await asyncio.sleep(0.01)
    ids["pending"] = app.trigger(work, {"steps": 2}).id
    ids["signalled"] = app.trigger(approve, None).id
    app.signal(ids["signalled"], "go", {"early": True}, signal_id="s-early")  # kept until it waits
    return ids, gate, task


@pytest.mark.parametrize("source_engine,target_engine", [
    ("sqlite", "postgres"), ("postgres", "sqlite"), ("sqlite", "sqlite"), ("postgres", "postgres"),
])
async def test_a_copy_moves_every_row_unchanged_and_hands_leases_back(dbs, source_engine, target_engine):
    clock = FakeClock()
    source = Durably(dbs(source_engine), jobs=[work], clock=clock)
    target = Durably(dbs(target_engine), clock=clock)
    back = Durably(dbs(source_engine), clock=clock)
    ids, gate, task = await fill(source, clock)
    try:
        before = rows_of(source)
        statuses = {name: source.get_run(run_id).status for name, run_id in ids.items()}
        assert statuses["sleeping"] == statuses["awaiting"] == statuses["retrying"] == "waiting", statuses
        result = source.copy_to(target)
        assert result.handed_back == 1 and result.schema_version == source.schema_version() == target.schema_version()
        assert result.rows == {table: len(rows) for table, rows in before.items()}
        copied = rows_of(target)
        assert set(copied) == set(before) and all(copied[t] for t in copied)
        runs = {table: {r[0]: r for r in rows} for table, rows in (("runs", copied["durably_runs"]),)}["runs"]
        columns = COPY_TABLES[0][1]
        at = {c: i for i, c in enumerate(columns)}
        for table in before:
            if table != "durably_runs":
                assert copied[table] == before[table], table
        for row in before["durably_runs"]:
            copy = runs[row[0]]
            if row[0] == ids["leased"]:
                assert row[at["status"]] == "leased" and row[at["lease_owner"]] is not None
                assert copy[at["status"]] == "pending"
                assert copy[at["lease_owner"]] is None and copy[at["lease_expires_at"]] is None
                assert copy[at["lease_generation"]] == row[at["lease_generation"]]
                same = [c for c in columns if c not in ("status", "lease_owner", "lease_expires_at")]
                assert [copy[at[c]] for c in same] == [row[at[c]] for c in same]
            else:
                assert copy == row, row[0]
        # ... and back: the same rows again (the handed-back run stays handed back).
        target.copy_to(back)
        assert rows_of(back) == copied
        # What users see is the same in the copy.
        for run_id in ids.values():
            a, b = source.get_run(run_id), target.get_run(run_id)
            assert (a.input, a.output, a.error, a.labels, a.progress, a.created_at, a.completed_at) == (
                b.input, b.output, b.error, b.labels, b.progress, b.created_at, b.completed_at)
            assert (a.wake_at, a.waiting_for, a.wait_step) == (b.wake_at, b.waiting_for, b.wait_step)
            assert source.get_steps(run_id) == target.get_steps(run_id)
            assert source.get_logs(run_id) == target.get_logs(run_id)
    finally:
        gate.set()
        await task
        for app in (source, target, back):
            app.close()


@pytest.mark.parametrize("source_engine,target_engine", [("sqlite", "postgres"), ("postgres", "sqlite")])
async def test_runs_that_wait_go_on_in_the_copy_and_finish_there_then_copy_back(dbs, source_engine, target_engine):
    """A sleeping run wakes in the copy at its stored time, a run waiting for a signal gets
    one sent to the copy, a signal sent before its run waited is received there, and a
    retry goes on from its recorded attempt; none of them redoes a committed step. Copied
    back, the finished runs read the same."""
    clock = FakeClock()
    source = Durably(dbs(source_engine), jobs=[work], clock=clock)
    ids, gate, task = await fill(source, clock)
    gate.set()
    await task
    target_db = dbs(target_engine)
    target = Durably(target_db, clock=clock)
    worker = back = None
    try:
        source.copy_to(target)
        before = list(CALLS)
        worker = Durably(target_db, jobs=[work, nap, approve, flaky, yearly], clock=clock)
        await worker.process_until_idle()  # the pending runs, and the early signal's run
        assert worker.get_run(ids["signalled"]).output == {"answer": {"early": True}}
        assert worker.get_run(ids["sleeping"]).status == "waiting"
        # The signal is copied as sent: sending it again to the copy is a duplicate.
        again = worker.signal(ids["signalled"], "go", {"early": True}, signal_id="s-early")
        assert again.disposition == "duplicate"
        assert worker.signal(ids["awaiting"], "go", "yes").disposition == "delivered"
        clock.advance(3600)
        await worker.process_until_idle()
        runs = {name: worker.get_run(ids[name]) for name in ("sleeping", "awaiting", "retrying")}
        assert {name: run.status for name, run in runs.items()} == dict.fromkeys(runs, "completed")
        assert (runs["sleeping"].output, runs["awaiting"].output, runs["retrying"].output) == (
            "rested", {"answer": "yes"}, "ok")
        after = CALLS[len(before):]
        # Committed before the copy: only the run still pending then asks.
        assert "nap:before" not in after and after.count("approve:ask") == 1
        assert after.count("nap:after") == 1 and after.count("flaky:call") == 1
        retried = [s for s in worker.get_steps(ids["retrying"]) if s.name == "call"][0]
        assert len(retried.attempts) == 1 and "not yet" in retried.attempts[0].error
        # And back to the first engine, finished as they are in the copy.
        back = Durably(dbs(source_engine), clock=clock)
        worker.copy_to(back)
        for run_id in ids.values():
            assert back.get_run(run_id) == worker.get_run(run_id)
            assert back.get_steps(run_id) == worker.get_steps(run_id)
        assert [s.job_name for s in back.get_schedules()] == ["yearly"]
    finally:
        for app in (source, target, worker, back):
            if app is not None:
                app.close()


async def test_the_copy_resumes_a_handed_back_run_at_its_first_unfinished_step_and_logs_get_new_ids(dbs):
    """After a copy to PostgreSQL the log id sequence is past the copied ids, and a worker on
    the copy resumes the run that was leased in the source without running its first step."""
    clock = FakeClock()
    source = Durably(dbs("sqlite"), jobs=[work], clock=clock)
    ids, gate, task = await fill(source, clock)
    target_db = dbs("postgres")
    target = Durably(target_db, clock=clock)
    try:
        source.copy_to(target)
    finally:
        gate.set()
        await task
    calls = []

    @job("held")
    async def held(step, input):
        await step.run("first", lambda: calls.append("first"))
        await step.run("wait", lambda: calls.append("wait"))
        step.log.info("after the copy")
        return "resumed"

    worker = Durably(target_db, jobs=[held, work], clock=clock)
    try:
        assert await worker.process_until_idle() == 2  # the leased run and the pending one
        assert worker.get_run(ids["leased"]).output == "resumed" and calls == ["wait"]
        copied_ids = [log.id for log in source.get_logs(ids["completed"])]
        new = worker.get_logs(ids["leased"])
        assert new[-1].message == "after the copy" and new[-1].id > max(copied_ids)
    finally:
        for app in (source, target, worker):
            app.close()


@pytest.mark.parametrize("target_engine", ENGINES)
async def test_a_target_that_holds_runs_is_refused_unless_replaced_and_stays_as_it_was(dbs, target_engine):
    source = Durably(dbs("sqlite"), jobs=[work])
    target = Durably(dbs(target_engine))
    try:
        mine = source.trigger(work, {"steps": 1}).id
        theirs = target.trigger("other", None).id
        with pytest.raises(ConflictError, match=r"not empty \(1 rows in durably_runs\).*--replace"):
            source.copy_to(target)
        assert [r.id for r in target.get_runs()] == [theirs]
        result = source.copy_to(target, replace=True)
        assert result.rows["durably_runs"] == 1
        assert [r.id for r in target.get_runs()] == [mine]
    finally:
        source.close()
        target.close()


def test_text_postgresql_cannot_store_stops_the_copy_naming_row_and_column(dbs):
    source_db = dbs("sqlite")
    source = Durably(source_db)
    target = Durably(dbs("postgres"))
    try:
        run = source.trigger("j", {"n": 1}, labels={"team": "a"})
        conn = sqlite3.connect(source_db)  # an older durably let a NUL into a label value
        conn.execute("UPDATE durably_run_labels SET value = 'a' || char(0) || 'b'")
        conn.commit()
        conn.close()
        with pytest.raises(ValidationError, match=rf"durably_run_labels row \(run_id '{run.id}', key 'team'\): value holds a NUL"):
            source.copy_to(target)
        assert target.get_runs() == []
    finally:
        source.close()
        target.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_source_from_a_newer_durably_is_refused_and_nothing_is_written(dbs, engine):
    source = Durably(dbs(engine))
    target_db = dbs("sqlite")
    try:
        source.trigger("j", 1)
        source.driver.execute("INSERT INTO durably_migrations (version, applied_at) VALUES (99, 'later')")
        newer = Durably(source._store.driver.url if engine == "postgres" else source._store.driver.path)
        target = Durably(target_db)
        try:
            with pytest.raises(SchemaError, match="schema version 99"):
                newer.copy_to(target)
            assert target.schema_version() in (0, target._store.dialect.latest_version)
            assert target.get_runs() == []
        finally:
            newer.close()
            target.close()
    finally:
        source.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_copy_tables_name_every_column_of_the_schema(dbs, engine):
    app = Durably(dbs(engine))
    try:
        app.migrate()
        for table, columns, _ in COPY_TABLES:
            if engine == "sqlite":
                rows, _ = app.driver.execute(f"SELECT name FROM pragma_table_info('{table}')")
            else:
                rows, _ = app.driver.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                    "AND table_schema = current_schema()", (table,))
            assert sorted(r[0] for r in rows) == sorted(columns), table
    finally:
        app.close()


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    return subprocess.run([sys.executable, "-m", "durably", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def test_durably_copy_on_the_command_line_both_ways_and_its_refusals(dbs, tmp_path):
    source_db, pg = dbs("sqlite"), dbs("postgres")
    app = Durably(source_db)
    ids = [app.trigger("j", {"n": i}, labels={"n": str(i)}).id for i in range(3)]
    app.close()
    done = cli("copy", "--from", source_db, "--to", pg, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["rows"]["durably_runs"] == 3 and out["rows"]["durably_run_labels"] == 3 and out["handed_back"] == 0
    assert ":" + pg.split(":")[2].split("@")[0] + "@" not in done.stdout, "the password is printed"
    assert out["to"].startswith("postgresql://postgres@127.0.0.1:")
    listed = [json.loads(line)["id"] for line in cli("runs", "--db", pg, "--json", cwd=tmp_path).stdout.splitlines()]
    assert listed == ids[::-1]
    again = cli("copy", "--from", source_db, "--to", pg, cwd=tmp_path)
    assert again.returncode == 2 and "not empty" in again.stderr and "--replace" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert cli("copy", "--from", source_db, "--to", pg, "--replace", cwd=tmp_path).returncode == 0
    back = str(tmp_path / "back.db")
    assert cli("copy", "--from", pg, "--to", back, cwd=tmp_path).returncode == 0
    assert [r for r in sqlite3.connect(back).execute("SELECT id FROM durably_runs ORDER BY id")] == [(i,) for i in ids]
    for args, needle in [
        (("copy", "--from", str(tmp_path / "missing.db"), "--to", back), "no durably database at"),
        (("copy", "--from", source_db, "--to", source_db), "same database"),
        (("copy", "--from", source_db), "--to"),
        (("copy", "--from", dbs("postgres"), "--to", back), "holds no durably tables"),
    ]:
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)


@job("bulky")
async def bulky(step, input):
    for i in range(input["steps"]):
        await step.run(f"s{i}", lambda i=i: "x" * input["size"] + str(i))
    return "done"


@pytest.mark.parametrize("target_engine", ENGINES)
def test_big_rows_are_copied_in_statements_of_bounded_size(dbs, target_engine, monkeypatch):
    # A step result may be 4 MiB: a copy reads and writes by size, not only by row count, so
    # no statement nears PostgreSQL's 1 GB message limit and memory stays in bounds. Here
    # with small budgets: 60 steps of ~50 kB, at most ~200 kB of values per INSERT.
    from durably import copying

    monkeypatch.setattr(copying, "WRITE_BYTES", 200_000)
    monkeypatch.setattr(copying, "READ_BYTES", 1_000_000)
    monkeypatch.setattr(copying, "FIRST_PAGE", 4)
    source = Durably(dbs("sqlite"), jobs=[bulky])
    target = Durably(dbs(target_engine))
    try:
        run = source.trigger(bulky, {"steps": 60, "size": 50_000})
        asyncio.run(source.process_until_idle())
        writes: list[tuple[str, int, int]] = []
        real = target._store.write_copied

        def counted(table, columns, rows):
            writes.append((table, len(rows), sum(copying._row_bytes(r) for r in rows)))
            return real(table, columns, rows)

        monkeypatch.setattr(target._store, "write_copied", counted)
        result = source.copy_to(target)
        assert result.rows["durably_steps"] == 60
        steps = [w for w in writes if w[0] == "durably_steps"]
        assert len(steps) >= 15  # ~4 results of ~50 kB per statement
        assert all(n == 1 or size <= 200_000 for _, n, size in steps), steps
        assert rows_of(target)["durably_steps"] == rows_of(source)["durably_steps"]
        assert target.get_run(run.id).output == "done"
    finally:
        source.close()
        target.close()
