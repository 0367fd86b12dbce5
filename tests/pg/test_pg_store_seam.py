"""The store's engine seam (durably.dialect) with PostgreSQL's statements, on a real server.

PostgreSQL is not wired into ``Durably`` yet (issue 13; docs/postgres.md). This fills a
``Dialect`` from ``pg_sql`` and ``migrations_postgres`` the way that work will, and drives
the unchanged ``Store`` through one run's life in one process: what fits today. The parts
that need more than text (the trigger key lock, the claim's retry on a key held elsewhere,
wake-ups) are issue 13's and are not exercised here.
"""

from __future__ import annotations

from dataclasses import replace

from durably import migrations_postgres as S
from durably import pg_sql as Q
from durably.dialect import SQLITE
from durably.pg_driver import PostgresDriver
from durably.store import NewRun, Store

T0 = "2026-11-30T12:00:00.000000Z"
T1 = "2026-11-30T12:00:01.000000Z"
LATER = "2026-11-30T12:00:31.000000Z"

POSTGRES = replace(
    SQLITE,
    name="postgresql",
    begin="BEGIN",
    migrations=S.MIGRATIONS,
    create_migrations_table=S.MIGRATIONS_TABLE,
    has_migrations_table=S.HAS_MIGRATIONS_TABLE,
    record_migration=(
        "INSERT INTO durably_migrations (version, applied_at) "
        """VALUES (?, to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))"""
    ),
    migration_lock=S.MIGRATION_LOCK,
    claim=lambda owner, jobs, now, until: (Q.CLAIM, (list(jobs), now, now, list(jobs), now, owner, until, now, now)),
    complete_step=Q.COMPLETE_STEP,
    insert_step_record=Q.INSERT_STEP_RECORD,
)


def test_the_store_runs_a_run_through_its_life_with_postgresqls_dialect(pg_url):
    store = Store(PostgresDriver(pg_url), POSTGRES)
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
