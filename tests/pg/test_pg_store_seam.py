"""The unchanged ``Store`` on PostgreSQL's dialect (``durably.pg_sql.POSTGRES``), on a real
server: one run's life, and the places where the store's control flow depends on the
dialect (the claim's retry after a key taken at the same moment, the key lock of triggers,
wake-ups sent with the commit that makes a run claimable).
"""

from __future__ import annotations

import threading
from dataclasses import replace

from durably import migrations_postgres as S
from durably import pg_sql as Q
from durably.dialect import SQLITE, for_driver
from durably.pg_driver import PostgresDriver
from durably.errors import ConflictError
from durably.store import Lease, NewRun, ScheduleSpec, Store, WaitingStep

T0 = "2026-11-30T12:00:00.000000Z"
T1 = "2026-11-30T12:00:01.000000Z"
LATER = "2026-11-30T12:00:31.000000Z"

def test_the_store_runs_a_run_through_its_life_with_postgresqls_dialect(pg_url):
    store = Store(PostgresDriver(pg_url))
    assert store.dialect is Q.POSTGRES
    try:
        assert store.schema_version() == 0
        assert store.migrate() == S.LATEST_VERSION == store.schema_version()
        new = NewRun("r1", "j", '{"n":1}', {"n": 1}, {"team": "a"}, None, "k", None, T0)
        with store.transaction():
            run, disposition = store.insert_run(new)
        assert disposition == "created" and store.get_run("r1") == run

        claimed = store.claim(owner="w", job_names=["j"], now=T1, lease_until=LATER)
        assert claimed is not None and claimed.run.status == "leased" and claimed.generation == 1
        assert store.claim(owner="w2", job_names=["j"], now=T1, lease_until=LATER) is None
        lease = claimed.lease
        assert store.complete_step(lease, index=0, name="a", output_json="1", started_at=T1, now=T1)
        assert store.renew(lease, now=T1, lease_until=LATER, pending=None)
        assert store.complete_run(lease, now=T1, output_json='"done"')
        # Fenced: the same lease changes nothing once the run is over.
        assert not store.complete_step(lease, index=1, name="b", output_json="2", started_at=T1, now=T1)

        done = store.get_run("r1")
        assert done is not None and (done.status, done.output, done.completed_steps) == ("completed", "done", 1)
        assert [s.name for s in store.get_steps("r1")] == ["a"]
        assert [r.id for r in store.get_runs(statuses=None, job_names=None, labels={"team": "a"}, limit=None, offset=0)] == ["r1"]
        assert store.run_counts(LATER).by_status == {"completed": 1}
        assert [r.id for r in store.purge(cutoff=LATER, limit=10, now=LATER)] == ["r1"]
    finally:
        store.close()


def test_the_dialect_is_picked_from_the_driver(pg_url):
    driver = PostgresDriver(pg_url)
    quiet = PostgresDriver(pg_url)
    quiet.notify = False
    try:
        assert for_driver(driver) is Q.POSTGRES
        assert for_driver(quiet) is Q.POSTGRES_POLLING and Q.POSTGRES_POLLING.wake is None
        assert for_driver(object()) is SQLITE
    finally:
        driver.close()
        quiet.close()


def _new(run_id, job="j", key=None, idem=None):
    return NewRun(run_id, job, "null", None, {}, idem, key, None, T0)


def test_wakes_are_sent_once_per_job_with_the_commit_and_never_for_a_rollback(pg_url):
    store = Store(PostgresDriver(pg_url))
    heard: list = []
    got = threading.Event()
    listening = threading.Event()

    def on(payload):
        heard.append(payload)
        (got if payload is not None else listening).set()

    listener = store.listen(on)
    try:
        store.migrate()
        assert listening.wait(5)  # LISTEN is sent from the listener's thread
        with store.transaction():
            for i in range(5):
                store.insert_run(_new(f"a{i}", "a"))
            store.insert_run(_new("b0", "b"))
        assert got.wait(5)
        try:
            with store.transaction():
                store.insert_run(_new("c0", "c"))
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        with store.transaction(several=False):  # a lone insert wakes after its commit
            store.insert_run(_new("d0", "d"))
        deadline = threading.Event()
        for _ in range(100):
            if "d" in heard:
                break
            deadline.wait(0.05)
        assert [p for p in heard if p is not None] == ["a", "b", "d"]
    finally:
        listener.close()
        store.close()


def test_a_run_handed_back_or_a_keyed_run_ending_wakes_the_workers(pg_url):
    store = Store(PostgresDriver(pg_url))
    heard: list = []
    listening = threading.Event()
    listener = store.listen(lambda p: (heard.append(p), p is None and listening.set()))
    try:
        assert listening.wait(5)
        with store.transaction():
            store.insert_run(_new("r1", "j"))
            store.insert_run(_new("r2", "j", key="k"))
        for _ in range(100):  # the triggers' own wake-up first: it may arrive late
            if "j" in heard:
                break
            threading.Event().wait(0.05)
        first = store.claim(owner="w", job_names=["j"], now=T1, lease_until=LATER)
        second = store.claim(owner="w", job_names=["j"], now=T1, lease_until=LATER)
        assert first.lease == Lease("r1", 1, None, "j") and second.lease.concurrency_key == "k"
        heard.clear()
        assert store.release(first.lease, now=T1, pending=None)
        assert store.complete_run(second.lease, now=T1, output_json="1")
        for _ in range(100):
            if len([p for p in heard if p]) >= 2:
                break
            threading.Event().wait(0.05)
        assert [p for p in heard if p] == ["j", "*"]
    finally:
        listener.close()
        store.close()


def test_a_claim_that_meets_a_key_taken_at_the_same_moment_claims_again(pg_url):
    """Two runs of one key, claimed at once by two workers: the unique index refuses the
    second lease of the key; the store clears dead cancel holds and claims again, and its
    new look sees the key held, so it gets a run of another key instead of an error."""
    store, other = Store(PostgresDriver(pg_url)), Store(PostgresDriver(pg_url))
    try:
        with store.transaction():
            store.insert_run(_new("r1", key="k"))
        assert other.claim(owner="w2", job_names=["j"], now=T1, lease_until=LATER).run.id == "r1"
        with store.transaction():
            store.insert_run(_new("r2", key="k"))
            store.insert_run(_new("r3"))
        # The race, made certain: the first attempt's look at "is the key held?" is blind,
        # as when the other worker's lease had not committed yet.
        sql, params = Q.POSTGRES.claim("w1", ["j"], T1, LATER)
        blind = sql.replace("AND (r.concurrency_key IS NULL OR NOT EXISTS", "AND (TRUE OR NOT EXISTS", 1)
        assert blind != sql
        attempts = iter([(blind, params)])
        store.dialect = replace(Q.POSTGRES, claim=lambda *_: next(attempts, (sql, params)))
        claimed = store.claim(owner="w1", job_names=["j"], now=T1, lease_until=LATER)
        assert claimed is not None and claimed.run.id == "r3"
        assert store.get_run("r2").status == "pending" and store.get_run("r1").status == "leased"
    finally:
        store.close()
        other.close()


# -- runs that wait (schema 5) ---------------------------------------------------------------------


def _a_backend_waits_on_a_lock(observer: Store, timeout: float = 5.0) -> bool:
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        rows, _ = observer.driver.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        if rows[0][0]:
            return True
        done.wait(0.02)
    return False


def test_a_signal_sent_while_a_worker_parks_its_run_is_received_not_lost(pg_url):
    """A signal's transaction holds the run's row: a worker's await_signal (its fence writes
    that row) waits for it, then reads the signal and goes on. Without the row lock the
    worker would read no signal (not committed yet), park the run with no due time, and
    the signal, stored a moment later, would wake nothing."""
    worker, sender, observer = (Store(PostgresDriver(pg_url)) for _ in range(3))
    try:
        worker.migrate()
        with worker.transaction():
            worker.insert_run(_new("r1", "approve"))
        lease = worker.claim(owner="w", job_names=["approve"], now=T1, lease_until=LATER).lease
        got: list = []
        with sender.transaction():
            record = sender.signal("r1", "go", signal_id="s1", payload_json='"yes"', now=T1)
            assert record.disposition == "stored"  # the run is leased: kept until it waits
            parking = threading.Thread(target=lambda: got.append(worker.await_signal(
                lease, step=WaitingStep(0, "go", T1, None), run_wake_at=None, timeout_error="timed out",
                now=T1, pending=None)))
            parking.start()
            assert _a_backend_waits_on_a_lock(observer)
            assert not got
        parking.join(10)
        assert got and got[0].outcome == "received" and got[0].payload_json == '"yes"'
        assert worker.get_run("r1").status == "leased"
    finally:
        for store in (worker, sender, observer):
            store.close()


def test_two_signals_of_one_name_at_once_the_second_sees_the_first(pg_url):
    first, second = Store(PostgresDriver(pg_url)), Store(PostgresDriver(pg_url))
    try:
        first.migrate()
        with first.transaction():
            first.insert_run(_new("r1", "approve"))
        outcome: list = []
        with first.transaction():
            first.signal("r1", "go", signal_id="a", payload_json="1", now=T1)

            def send() -> None:
                try:
                    outcome.append(second.signal("r1", "go", signal_id="b", payload_json="2", now=T1))
                except Exception as exc:
                    outcome.append(exc)

            racing = threading.Thread(target=send)
            racing.start()
            racing.join(0.3)
            assert racing.is_alive()  # waits for the first one's row lock
        racing.join(10)
        assert isinstance(outcome[0], ConflictError) and "signal id a" in str(outcome[0])
        assert second.signal("r1", "go", signal_id="a", payload_json="1", now=T1).disposition == "duplicate"
    finally:
        first.close()
        second.close()


def test_a_delivered_signal_and_a_keyed_run_that_waits_wake_the_workers(pg_url):
    store = Store(PostgresDriver(pg_url))
    heard: list = []
    listening = threading.Event()
    listener = store.listen(lambda p: (heard.append(p), p is None and listening.set()))
    try:
        assert listening.wait(5)
        with store.transaction():
            store.insert_run(_new("r1", "approve"))
            store.insert_run(_new("r2", "nap", key="k"))
        for _ in range(100):  # the triggers' own wake-ups first
            if {"approve", "nap"} <= set(heard):
                break
            threading.Event().wait(0.05)
        one = store.claim(owner="w", job_names=["approve"], now=T1, lease_until=LATER).lease
        two = store.claim(owner="w", job_names=["nap"], now=T1, lease_until=LATER).lease
        assert store.await_signal(one, step=WaitingStep(0, "go", T1, None), run_wake_at=None,
                                  timeout_error="t", now=T1, pending=None).outcome == "waiting"
        heard.clear()
        # A sleep frees the key: runs of any job may wait for it; a signal makes r1 due.
        assert store.wait(two, now=T1, waiting_for="sleep", wake_at=LATER, wait_step="nap",
                          step=WaitingStep(0, "nap", T1, LATER), pending=None)
        assert store.signal("r1", "go", signal_id="s", payload_json="1", now=T1).disposition == "delivered"
        for _ in range(100):
            if len([p for p in heard if p]) >= 2:
                break
            threading.Event().wait(0.05)
        assert [p for p in heard if p] == ["*", "approve"]
        # The signalled run is due at once; the sleeper only at its wake-up time.
        again = store.claim(owner="w2", job_names=["approve", "nap"], now=T1, lease_until=LATER)
        assert again.run.id == "r1" and again.run.status == "leased" and again.run.waiting_for is None
        assert store.claim(owner="w2", job_names=["approve", "nap"], now=T1, lease_until=LATER) is None
        assert store.claim(owner="w2", job_names=["nap"], now=LATER, lease_until=LATER).run.id == "r2"
    finally:
        listener.close()
        store.close()


def test_two_workers_firing_one_schedule_slot_at_once_make_one_run(pg_url):
    """Firing a slot is a compare-and-set on next_at: the second worker's update waits for
    the first one's commit, re-reads next_at, finds it moved and creates nothing."""
    first, second = Store(PostgresDriver(pg_url)), Store(PostgresDriver(pg_url))
    slot, following = "2026-11-30T12:05:00.000000Z", "2026-11-30T12:10:00.000000Z"
    try:
        first.migrate()
        spec = ScheduleSpec("tick", "*/5 * * * *", "UTC", "latest", slot)
        first.sync_schedules(["tick"], [spec], T0)
        second.sync_schedules(["tick"], [spec], T0)  # the same expression: its row is kept
        assert [s.next_at for s in second.schedules()] == [first.schedules()[0].next_at]

        def fire(store: Store, run_id: str):
            new = NewRun(run_id, "tick", "null", None, {}, f"schedule:{slot}", None, None, T1)
            return store.fire_schedule("tick", cron="*/5 * * * *", timezone="UTC", seen_next_at=slot,
                                       next_at=following, last_slot=slot, runs=[new], now=T1)

        late: list = []
        with first.transaction():
            made = fire(first, "r1")
            racing = threading.Thread(target=lambda: late.append(fire(second, "r2")))
            racing.start()
            racing.join(0.3)
            assert racing.is_alive()  # waits for the first one's row lock
        racing.join(10)
        assert [disposition for _, disposition in made] == ["created"] and late == [None]
        assert [r.id for r in first.get_runs(statuses=None, job_names=None, labels=None, limit=None, offset=0)] == [
            "r1"]
    finally:
        first.close()
        second.close()


def test_two_workers_registering_one_schedule_at_once_keep_the_first_ones_slots(pg_url):
    first, second = Store(PostgresDriver(pg_url)), Store(PostgresDriver(pg_url))
    try:
        first.migrate()
        mine = ScheduleSpec("tock", "*/5 * * * *", "UTC", "latest", "2026-11-30T12:05:00.000000Z")
        theirs = replace(mine, next_at="2026-11-30T12:10:00.000000Z")  # its clock read later
        got: list = []
        with first.transaction():
            first.sync_schedules(["tock"], [mine], T0)
            racing = threading.Thread(target=lambda: got.append(second.sync_schedules(["tock"], [theirs], T1)))
            racing.start()
            racing.join(0.3)
            assert racing.is_alive()  # its insert waits for ours
        racing.join(10)
        kept = [s.next_at for s in first.schedules()]
        assert [s.next_at for s in got[0]] == kept and [t.minute for t in kept] == [5]  # ours, not 12:10
    finally:
        first.close()
        second.close()
