"""The PostgreSQL schema and the statements that differ there (durably.pg_sql), on a real
server with two connections standing for two workers on two machines: the claims a race
could break are raced here, with one side held inside an open transaction."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from durably import pg_sql as Q
from durably import migrations_postgres as S
from durably.errors import StorageError
from durably.pg_driver import PostgresDriver
from durably.store import INSERT_RUN_IDEMPOTENT

T0 = "2026-01-01T00:00:00.000000Z"
T1 = "2026-01-01T00:00:01.000000Z"
LATER = "2026-01-01T00:10:00.000000Z"


def wait_until(predicate, timeout: float = 10.0, what: str = "the condition"):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def migrate(d: PostgresDriver) -> bool:
    """The store's migrate(), as it will run on PostgreSQL. True if it applied anything."""
    d.execute("BEGIN")
    try:
        d.execute(S.MIGRATION_LOCK)
        d.execute(S.MIGRATIONS_TABLE)
        current = d.execute("SELECT COALESCE(MAX(version), 0) FROM durably_migrations")[0][0][0]
        applied = False
        for number, statements in S.MIGRATIONS:
            if number <= current:
                continue
            for sql in statements:
                d.execute(sql)
            d.execute("INSERT INTO durably_migrations (version, applied_at) VALUES (?, ?)", (number, T0))
            applied = True
        d.execute("COMMIT")
        return applied
    except BaseException:
        d.execute("ROLLBACK")
        raise


def add_run(d, run_id, *, key=None, status="pending", generation=0, expires=None, job="j"):
    d.execute(
        "INSERT INTO durably_runs (id, job_name, status, input, labels, concurrency_key, lease_generation, "
        "lease_expires_at, lease_owner, created_at, updated_at) VALUES (?, ?, ?, '{}', '{}', ?, ?, ?, ?, ?, ?)",
        (run_id, job, status, key, generation, expires, "old" if expires else None, T0, T0),
    )


def claim(d, owner="w", now=T1, jobs=("j",)):
    rows, _ = d.execute(*Q.POSTGRES.claim(owner, list(jobs), now, LATER))
    return rows[0] if rows else None


def backend_pid(d) -> int:
    return d.execute("SELECT pg_backend_pid()")[0][0][0]


def waiting_on_a_lock(observer, pid) -> bool:
    rows, _ = observer.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = ?", (pid,))
    return rows == [("Lock",)]


@pytest.fixture
def two(pg_url):
    """Two workers' connections and an observer, on a migrated schema."""
    a, b, observer = PostgresDriver(pg_url), PostgresDriver(pg_url), PostgresDriver(pg_url)
    migrate(a)
    yield a, b, observer
    for d in (a, b, observer):
        d.close()


# -- the schema --------------------------------------------------------------------------------


def test_two_processes_migrating_an_empty_database_at_once_create_it_once(pg_url):
    drivers = [PostgresDriver(pg_url) for _ in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            applied = list(pool.map(migrate, drivers))
        assert sorted(applied) == [False, False, False, True]
        versions = [row[0] for row in drivers[0].execute("SELECT version FROM durably_migrations ORDER BY version")[0]]
        assert versions == [number for number, _ in S.MIGRATIONS] and versions[-1] == S.LATEST_VERSION
        assert drivers[0].execute(S.HAS_MIGRATIONS_TABLE)[0] == [(True,)]
        assert migrate(drivers[0]) is False
    finally:
        for d in drivers:
            d.close()


def test_a_schema_without_durably_says_so(pg_url):
    d = PostgresDriver(pg_url)
    try:
        assert d.execute(S.HAS_MIGRATIONS_TABLE)[0] == [(False,)]
    finally:
        d.close()


def test_postgresql_at_version_2_has_the_tables_and_columns_of_sqlite_at_version_2(two, tmp_path):
    from durably.migrations import LATEST_VERSION, MIGRATIONS

    a, _, _ = two
    assert S.LATEST_VERSION == LATEST_VERSION, "a migration was added to migrations.py but not to migrations_postgres.py"
    lite = sqlite3.connect(tmp_path / "ref.db")
    for _, statements in MIGRATIONS:
        for sql in statements:
            lite.execute(sql)
    tables = [r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    assert tables == [
        "durably_attempts", "durably_logs", "durably_requests", "durably_run_labels", "durably_runs",
        "durably_schedules", "durably_signals", "durably_steps", "durably_workers",
    ]
    for table in tables:
        sqlite_columns = [r[1] for r in lite.execute(f"PRAGMA table_info({table})")]
        pg_columns = [r[0] for r in a.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? ORDER BY ordinal_position", (table,))[0]]
        assert pg_columns == sqlite_columns, table


def test_every_text_column_compares_bytewise_like_sqlite(two):
    a, _, _ = two
    rows, _ = a.execute(
        "SELECT table_name, column_name, collation_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND data_type = 'text' AND collation_name IS DISTINCT FROM 'C'"
    )
    assert rows == []
    # ULIDs and timestamps sort as in SQLite, whatever the database's locale.
    for run_id in ("01B", "01a", "01A", "01_"):
        add_run(a, run_id)
    assert [r[0] for r in a.execute("SELECT id FROM durably_runs ORDER BY id")[0]] == ["01A", "01B", "01_", "01a"]


# -- claims --------------------------------------------------------------------------------------


def test_concurrent_claims_skip_the_run_another_worker_is_claiming(two):
    a, b, _ = two
    for i in range(3):
        add_run(a, f"R{i}")
    a.execute("BEGIN")
    assert claim(a, "a")[0] == "R0"
    assert claim(b, "b")[0] == "R1"  # not blocked by a's open claim: skipped it
    a.execute("COMMIT")
    assert a.execute("SELECT id, lease_owner, lease_generation FROM durably_runs WHERE status = 'leased' ORDER BY id")[0] == [
        ("R0", "a", 1), ("R1", "b", 1)]


def test_a_claim_takes_over_an_expired_lease_and_bumps_its_generation(two):
    a, _, _ = two
    add_run(a, "R0", status="leased", generation=3, expires=T0)
    add_run(a, "R1")
    row = claim(a, "new", now=T1)
    assert (row[0], row[-2], row[-1]) == ("R0", 4, "new")  # older than R1, and its lease expired


def test_two_runs_of_one_key_never_hold_it_together_even_when_claimed_at_the_same_moment(two):
    a, b, observer = two
    add_run(a, "R0", key="k")
    add_run(a, "R1", key="k")
    add_run(a, "R2")
    a.execute("BEGIN")
    assert claim(a, "a")[0] == "R0"
    # b's snapshot cannot see a's uncommitted claim, so its filter lets R1 through: the
    # unique index makes b wait for a, then refuses.
    pid = backend_pid(b)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(claim, b, "b")
        wait_until(lambda: waiting_on_a_lock(observer, pid), what="b to wait for a's claim")
        a.execute("COMMIT")
        with pytest.raises(StorageError) as err:
            pending.result(10)
    assert err.value.code == "23505" and "durably_runs_key_holder" in str(err.value)
    # b claims again: R1 waits for its key, R2 is free.
    assert claim(b, "b")[0] == "R2"
    assert claim(b, "b") is None
    with pytest.raises(StorageError, match="durably_runs_key_holder"):
        a.execute("UPDATE durably_runs SET status = 'leased' WHERE id = 'R1'")


def test_a_dead_workers_expired_cancel_hold_is_cleared_before_its_key_is_given_again(two):
    a, _, _ = two
    add_run(a, "R0", key="k", status="cancelled", generation=1, expires=T0)  # its worker died
    add_run(a, "R1", key="k")
    with pytest.raises(StorageError) as err:
        claim(a, now=T1)
    assert err.value.code == "23505"
    assert a.execute(Q.CLEAR_EXPIRED_CANCEL_HOLDS, (T1,)) == ([], 1)
    assert claim(a, now=T1)[0] == "R1"


def test_a_live_cancel_hold_keeps_the_key(two):
    a, _, _ = two
    add_run(a, "R0", key="k", status="cancelled", generation=1, expires=LATER)  # its worker is stopping it
    add_run(a, "R1", key="k")
    assert a.execute(Q.CLEAR_EXPIRED_CANCEL_HOLDS, (T1,)) == ([], 0)
    assert claim(a, now=T1) is None


# -- fencing -------------------------------------------------------------------------------------


def step(d, generation, index=0, run_id="R0"):
    return d.execute(Q.COMPLETE_STEP, (run_id, index, f"s{index}", "1", T0, T1, run_id, generation))[1]


def test_a_stale_workers_step_waits_for_a_takeover_in_flight_and_then_writes_nothing(two):
    new, old, observer = two
    add_run(new, "R0", status="leased", generation=1, expires=T0)
    new.execute("BEGIN")
    assert claim(new, "new")[-2] == 2
    pid = backend_pid(old)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(step, old, 1)
        wait_until(lambda: waiting_on_a_lock(observer, pid), what="the fenced insert to wait for the claim")
        new.execute("COMMIT")
        assert pending.result(10) == 0
    assert new.execute("SELECT count(*) FROM durably_steps")[0] == [(0,)]


def test_a_takeover_skips_a_run_whose_step_commit_is_in_flight_then_resumes_after_that_step(two):
    new, old, _ = two
    add_run(new, "R0", status="leased", generation=1, expires=T0)
    old.execute("BEGIN")
    assert step(old, 1) == 1
    assert claim(new, "new") is None  # the fenced insert's row lock: skipped, not waited for
    old.execute("COMMIT")
    assert claim(new, "new")[-2] == 2
    # The new holder resumes after the step the old one committed; the old one is fenced out.
    assert new.execute("SELECT idx FROM durably_steps WHERE run_id = 'R0'")[0] == [(0,)]
    assert step(old, 1, index=1) == 0 and step(new, 2, index=1) == 1


def test_the_step_that_ends_a_run_is_written_once(two):
    a, _, _ = two
    add_run(a, "R0", status="leased", generation=1, expires=LATER)
    args = ("R0", 0, "s0", "failed", "boom", T0, T1)
    assert a.execute(Q.INSERT_STEP_RECORD, args)[1] == 1
    assert a.execute(Q.INSERT_STEP_RECORD, args)[1] == 0


# -- triggering ----------------------------------------------------------------------------------


def pending_with_key(d, key="k"):
    return d.execute("SELECT id FROM durably_runs WHERE job_name = 'j' AND concurrency_key = ? AND status = 'pending'",
                     (key,))[0]


def test_concurrent_triggers_with_one_concurrency_key_take_turns(two):
    a, b, observer = two
    a.execute("BEGIN")
    a.execute(Q.TRIGGER_KEY_LOCK, ("j", "k"))
    assert pending_with_key(a) == []
    add_run(a, "R0", key="k")
    pid = backend_pid(b)

    def second():
        b.execute("BEGIN")
        b.execute(Q.TRIGGER_KEY_LOCK, ("j", "k"))
        seen = pending_with_key(b)
        b.execute("COMMIT")
        return seen

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(second)
        wait_until(lambda: waiting_on_a_lock(observer, pid), what="the second trigger to wait")
        a.execute("COMMIT")
        assert pending.result(10) == [("R0",)]  # it sees the first trigger's run: coalesce or refuse
    # Another key does not wait.
    b.execute("BEGIN")
    b.execute(Q.TRIGGER_KEY_LOCK, ("j", "other"))
    b.execute("COMMIT")


def test_an_idempotency_key_makes_one_run_even_when_two_triggers_insert_at_once(two):
    a, b, observer = two
    values = lambda run_id: (run_id, "j", "{}", "{}", "idem", None, None, T0, T0)  # noqa: E731
    a.execute("BEGIN")
    assert a.execute(INSERT_RUN_IDEMPOTENT, values("R0")) == ([("R0",)], 1)
    pid = backend_pid(b)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(b.execute, INSERT_RUN_IDEMPOTENT, values("R1"))
        wait_until(lambda: waiting_on_a_lock(observer, pid), what="the second insert to wait for the first")
        a.execute("COMMIT")
        assert pending.result(10) == ([], 0)  # "look it up and return it as idempotent"
    assert a.execute("SELECT id FROM durably_runs")[0] == [("R0",)]


def test_wake_notifications_arrive_on_commit_once_per_job_and_never_from_a_rollback(two):
    a, _, _ = two
    heard: list = []
    cond = threading.Condition()

    def on_note(payload):
        with cond:
            heard.append(payload)
            cond.notify_all()

    listener = a.listen(Q.WAKE_CHANNEL, on_note)
    try:
        with cond:
            assert cond.wait_for(lambda: heard == [None], timeout=10)
        a.execute("BEGIN")
        a.execute(Q.WAKE, ("rolled-back",))
        a.execute("ROLLBACK")
        a.execute("BEGIN")
        for _ in range(3):
            a.execute(Q.WAKE, ("j",))
        a.execute("COMMIT")
        a.execute(Q.WAKE, ("marker",))
        with cond:
            assert cond.wait_for(lambda: "marker" in heard, timeout=10)
        assert heard == [None, "j", "marker"]
    finally:
        listener.close()


def test_no_limit_is_a_number_both_engines_accept(two, tmp_path):
    a, _, _ = two
    add_run(a, "R0")
    sql = "SELECT id FROM durably_runs ORDER BY id LIMIT ? OFFSET ?"
    assert a.execute(sql, (Q.NO_LIMIT, 0))[0] == [("R0",)]
    lite = sqlite3.connect(":memory:")
    assert lite.execute("SELECT 1 LIMIT ? OFFSET ?", (Q.NO_LIMIT, 0)).fetchall() == [(1,)]


def test_the_claim_walks_the_status_index_in_order_even_before_the_table_has_statistics(two):
    """A new database has no statistics until autovacuum's first ANALYZE. The planner then
    chose bitmap scans of the job and status indexes and a sort, visiting every entry of
    the status at each claim, dead ones left by claimed runs included: claims got slower
    with every run claimed since the last vacuum. The claim must walk (status, id) in order."""
    a, _, _ = two
    for i in range(300):
        add_run(a, f"R{i:04d}")
    for i in range(200):
        assert claim(a, now=T1)[0] == f"R{i:04d}"
    sql, params = Q.POSTGRES.claim("w", ["j"], T1, LATER)
    rows, _ = a.execute("EXPLAIN " + sql, params)
    plan = "\n".join(r[0] for r in rows)
    # The one sort is of the three candidates (one row each), to take the one due first.
    assert "Bitmap" not in plan and plan.count("Sort  (") == 1 and "Sort Key: pending.due" in plan, plan
    assert plan.count("Index Scan using durably_runs_status") == 2, plan
    assert plan.count("Index Scan using durably_runs_waking") == 1, plan
