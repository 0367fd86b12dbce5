"""PostgreSQL as a careless or hostile user meets it: URLs written by hand, schemas shared
with other applications, ``durably copy`` pointed at the wrong place. Each test is a defect
found by trying, kept so it stays fixed. On the session's throwaway server
(tests/pg_fixtures.py)."""

from __future__ import annotations

import secrets

import pytest
from pg_fixtures import TEST_DATABASE

from durably import Durably
from durably.errors import SchemaError, StorageError, ValidationError
from durably.migrations_postgres import LATEST_VERSION
from durably.pg_driver import PostgresDriver


# -- URLs written by hand -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password, shown",
    [
        ("se%cret99", "%"),  # a % that starts no %XX escape
        ("se@cret99", "@"),  # libpq would take "cret99@host" for the host
        ("se/cret99", "/"),  # the URL's path would start inside the password
        ("se?cret99", "?"),
        ("se#cret99", "#"),
    ],
)
def test_a_password_with_unescaped_url_characters_is_refused_without_showing_it(psycopg_installed, password, shown):
    with pytest.raises(ValidationError) as err:
        PostgresDriver(f"postgresql://app:{password}@127.0.0.1:1/jobs", connect_timeout=1)
    message = str(err.value)
    assert "se" + "cret99" not in message and "cret99" not in message
    assert f"the password in the PostgreSQL URL holds {shown}" in message and f"%{ord(shown):02X}" in message


def test_a_malformed_password_in_the_query_string_is_not_shown(psycopg_installed):
    with pytest.raises(ValidationError) as err:
        PostgresDriver("postgresql://app@127.0.0.1:1/jobs?password=se%cret99", connect_timeout=1)
    assert "cret99" not in str(err.value) and "invalid percent-encoded token" in str(err.value)


def test_several_hosts_as_libpq_takes_them_reach_the_server(pg_cluster):
    # libpq tries each host in turn: the first has nothing listening.
    url = pg_cluster.url("durably_test").replace("@127.0.0.1:", "@127.0.0.1:1,127.0.0.1:")
    driver = PostgresDriver(url, connect_timeout=2)
    try:
        assert driver.execute("SELECT 1")[0] == [(1,)]
        assert driver.where == f"postgres@127.0.0.1:1,127.0.0.1:{pg_cluster.port}/durably_test"
    finally:
        driver.close()


@pytest.mark.parametrize("url, where", [
    ("postgresql://app:pw@[::1]:1/jobs", "app@[::1]:1/jobs"),
    ("postgresql://app@%2Fno%2Fsuch%2Fdir/jobs", "app@/no/such/dir/jobs"),
])
def test_ipv6_and_unix_socket_hosts_are_named_as_written(psycopg_installed, url, where):
    with pytest.raises(StorageError) as err:
        PostgresDriver(url, connect_timeout=1)
    assert f"cannot connect to PostgreSQL at {where}:" in str(err.value) and err.value.code == "08001"


@pytest.mark.parametrize("url", ["postgresql://u@h:99999/db", "postgresql://u@h1:1,h2:x/db"])
def test_a_port_out_of_range_is_bad_input(psycopg_installed, url):
    with pytest.raises(ValidationError, match="is not a number from 1 to 65535"):
        PostgresDriver(url)


# -- schemas shared with other applications ---------------------------------------------------------


@pytest.fixture
def two_schemas(pg_cluster):
    """Schemas ``base`` (durably's tables at schema 4, one run) and ``app`` (empty), and a
    URL whose search_path puts ``app`` first, as ``"$user", public`` does for a user ``app``
    who owns a schema of that name."""
    import psycopg

    from durably import migrations_postgres

    suffix = secrets.token_hex(4)
    base, app = f"base_{suffix}", f"app_{suffix}"
    with psycopg.connect(pg_cluster.url(TEST_DATABASE), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {base}; CREATE SCHEMA {app}; SET search_path = {base}")
        conn.execute(migrations_postgres.MIGRATIONS_TABLE)
        for number, statements in migrations_postgres.MIGRATIONS:
            if number > 4:
                break
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO durably_migrations VALUES (%s, '2026-01-01T00:00:00.000000Z')", (number,))
        conn.execute(
            "INSERT INTO durably_runs (id, job_name, status, input, created_at, updated_at) "
            "VALUES ('r1', 'j', 'pending', '1', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')"
        )
    yield base, app, pg_cluster.url(TEST_DATABASE, options=f"-csearch_path={app},{base}")
    pg_cluster.execute(f"DROP SCHEMA {base} CASCADE; DROP SCHEMA {app} CASCADE", dbname=TEST_DATABASE)


def test_an_upgrade_never_builds_a_second_set_of_tables_in_the_first_schema_of_search_path(pg_cluster, two_schemas):
    base, app, url = two_schemas
    durably = Durably(url)
    try:
        with pytest.raises(SchemaError) as err:
            durably.get_runs()  # reading upgrades too: a second, empty set would hide run r1
        assert f"are in schema '{base}'" in str(err.value) and f"-csearch_path%3D{base}" in str(err.value)
    finally:
        durably.close()
    tables = pg_cluster.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (app,), dbname=TEST_DATABASE
    )
    assert tables == [(0,)]
    # Told where the tables are, the upgrade runs there and the run is still there.
    durably = Durably(pg_cluster.url(TEST_DATABASE, options=f"-csearch_path={base}"))
    try:
        durably.trigger("j", 2)
        assert durably.schema_version() == LATEST_VERSION and len(durably.get_runs()) == 2
    finally:
        durably.close()


# -- durably copy pointed at the wrong place ---------------------------------------------------------


def test_copy_refuses_the_source_itself_reached_by_another_spelling_of_its_url(pg_url):
    source = Durably(pg_url)
    same = Durably(pg_url + "&application_name=another")  # the same database and schema
    try:
        runs = [source.trigger("j", n).id for n in range(3)]
        with pytest.raises(ValidationError, match="the same tables"):
            source.copy_to(same, replace=True)
        assert sorted(run.id for run in same.get_runs()) == sorted(runs)
    finally:
        source.close()
        same.close()


def test_copy_between_two_schemas_of_one_database_is_not_the_same_tables(pg_cluster, pg_url):
    other = f"c_{secrets.token_hex(4)}"
    pg_cluster.execute(f"CREATE SCHEMA {other}", dbname=TEST_DATABASE)
    source, target = Durably(pg_url), Durably(pg_cluster.url(TEST_DATABASE, options=f"-csearch_path={other}"))
    try:
        run = source.trigger("j", 1)
        assert source.copy_to(target).rows["durably_runs"] == 1
        assert target.get_run(run.id).input == 1
    finally:
        source.close()
        target.close()
        pg_cluster.execute(f"DROP SCHEMA {other} CASCADE", dbname=TEST_DATABASE)


def test_a_schema_where_another_application_has_a_durably_runs_table_is_named_with_what_to_do(pg_cluster, pg_url):
    schema = pg_url.rsplit("search_path%3D", 1)[1]
    pg_cluster.execute(f"CREATE TABLE {schema}.durably_runs (id int, name text)", dbname=TEST_DATABASE)
    pg_cluster.execute(f"INSERT INTO {schema}.durably_runs VALUES (1, 'theirs')", dbname=TEST_DATABASE)
    durably = Durably(pg_url)
    try:
        with pytest.raises(StorageError) as err:
            durably.trigger("j", 1)
        assert err.value.code == "42P07" and "give durably a schema of its own" in str(err.value)
    finally:
        durably.close()
    # Theirs is untouched and nothing of durably's was left behind.
    assert pg_cluster.execute(f"SELECT * FROM {schema}.durably_runs", dbname=TEST_DATABASE) == [(1, "theirs")]
    assert pg_cluster.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,), dbname=TEST_DATABASE
    ) == [("durably_runs",)]


def test_a_search_path_naming_no_schema_that_exists_says_to_create_one(pg_cluster):
    durably = Durably(pg_cluster.url(TEST_DATABASE, options="-csearch_path=no_such_schema"))
    try:
        with pytest.raises(StorageError) as err:
            durably.trigger("j", 1)
        assert err.value.code == "3F000" and "CREATE SCHEMA" in str(err.value)
    finally:
        durably.close()


def test_a_database_that_takes_no_writes_says_to_use_the_primary(pg_cluster, pg_database):
    name = pg_database.rsplit("/", 1)[1]
    pg_cluster.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    durably = Durably(pg_database)
    try:
        with pytest.raises(StorageError) as err:
            durably.trigger("j", 1)
        assert err.value.code == "25006" and "point durably at the primary" in str(err.value)
    finally:
        durably.close()


# -- connections cut at the wrong moment ----------------------------------------------------------


def test_a_connection_terminated_as_it_opens_is_a_transient_storage_error(pg_cluster, pg_url, monkeypatch):
    """pg_terminate_backend (or a restart) between the connect and the driver's SETs: the
    worker must see a StorageError it retries, never a bare psycopg error (which the worker
    took for a bug in durably and failed the run for)."""
    import psycopg

    real_connect = psycopg.connect
    armed = []

    def connect_then_terminate(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        if armed:
            armed.pop()
            pid = conn.info.backend_pid
            pg_cluster.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
        return conn

    driver = PostgresDriver(pg_url)
    try:
        monkeypatch.setattr(psycopg, "connect", connect_then_terminate)
        pg_cluster.execute("SELECT pg_terminate_backend(%s, 10000)", (driver.execute("SELECT pg_backend_pid()")[0][0][0],))
        armed.append(True)
        with pytest.raises(StorageError) as err:  # the old session is gone; the new one ends at once
            driver.execute("SELECT 1")
        assert err.value.transient and "was lost" in str(err.value)
        assert driver.execute("SELECT 1")[0] == [(1,)]  # and the next call reconnects
    finally:
        driver.close()


async def test_a_run_whose_connection_is_cut_as_it_reopens_is_retried_not_failed(pg_cluster, pg_url, monkeypatch):
    import psycopg

    from durably import job

    real_connect = psycopg.connect
    armed = []

    def connect_then_terminate(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        if armed:
            armed.pop()
            pg_cluster.execute("SELECT pg_terminate_backend(%s, 10000)", (conn.info.backend_pid,))
        return conn

    worker = Durably(pg_url, jobs=[], polling_interval=0.05)
    calls = []

    @job("cut")
    async def cut(step, input):
        async def first():
            calls.append(1)
            if len(calls) == 1:  # the worker's session ends, and so does the next one it opens
                pid = worker._store.driver.execute("SELECT pg_backend_pid()")[0][0][0]
                pg_cluster.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
                armed.append(True)
            return "done"

        return await step.run("first", first)

    worker.register(cut)
    monkeypatch.setattr(psycopg, "connect", connect_then_terminate)
    await worker.start()
    try:
        run = worker.trigger("cut", 1)
        final = await worker.wait_for_run(run.id, timeout=30)
        assert final.status == "completed" and final.output == "done", final.error
        assert len(calls) == 2  # the step's commit was lost with the connection: it ran again
    finally:
        await worker.stop()
        worker.close()


# -- server settings a DBA may have chosen ----------------------------------------------------------------


def test_text_outside_latin1_is_stored_and_read_back_where_the_database_defaults_to_latin1(pg_cluster, pg_database):
    name = pg_database.rsplit("/", 1)[1]
    pg_cluster.execute(f"ALTER DATABASE {name} SET client_encoding = 'LATIN1'")
    pg_cluster.execute(f"ALTER DATABASE {name} SET TimeZone = 'Pacific/Chatham'")
    durably = Durably(pg_database)
    try:
        run = durably.trigger("j", {"s": "caf\u00e9 \U0001f600"}, labels={"city": "\u5317\u4eac"})
        again = durably.get_run(run.id)
        assert again.labels == {"city": "\u5317\u4eac"} and again.input == {"s": "caf\u00e9 \U0001f600"}
        assert [r.id for r in durably.get_runs(labels={"city": "\u5317\u4eac"})] == [run.id]
    finally:
        durably.close()


async def test_a_server_that_ends_idle_sessions_does_not_cut_the_listener(pg_cluster, pg_database):
    import asyncio
    import time

    from durably import job

    @job("j")
    async def j(step, input):
        return await step.run("only", lambda: input)

    name = pg_database.rsplit("/", 1)[1]
    pg_cluster.execute(f"ALTER DATABASE {name} SET idle_session_timeout = '200ms'")
    worker = Durably(pg_database, jobs=[j], polling_interval=60)
    other = Durably(pg_database)
    await worker.start()
    try:
        listener = worker._worker._listener
        deadline = time.monotonic() + 10
        while listener.connections < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)  # five idle timeouts
        assert listener.connections == 1
        run = other.trigger("j", 5)  # other's connection was idle too: it reconnects unseen
        assert (await worker.wait_for_run(run.id, timeout=10)).output == 5
    finally:
        await worker.stop()
        worker.close()
        other.close()


def test_a_server_statement_timeout_does_not_stop_a_process_waiting_for_another_ones_migration(pg_cluster, pg_database):
    import threading

    import psycopg

    name = pg_database.rsplit("/", 1)[1]
    pg_cluster.execute(f"ALTER DATABASE {name} SET statement_timeout = '100ms'")
    # Another process migrates (slowly: a large table) and holds the migration lock meanwhile.
    migrating = psycopg.connect(pg_database)
    migrating.execute("SELECT pg_advisory_xact_lock(hashtextextended('durably:migrate:' || current_schema(), 0))")
    done = threading.Timer(0.6, migrating.commit)
    done.start()
    durably = Durably(pg_database)
    try:
        assert durably.trigger("j", 1).status == "pending"  # waited 0.6 s for the lock, then migrated
        assert durably.schema_version() == LATEST_VERSION
    finally:
        done.join()
        migrating.close()
        durably.close()


def test_a_url_too_long_for_postgresqls_start_up_message_is_bad_input_not_a_dead_server(pg_cluster):
    url = pg_cluster.url(TEST_DATABASE, application_name="a" * 12000)
    with pytest.raises(ValidationError, match="start-up message passes 10,000 bytes"):
        PostgresDriver(url)


@pytest.mark.parametrize("query", ["sslmode=bogus", "target_session_attrs=nope", "keepalives=x"])
def test_a_url_parameter_with_a_value_libpq_refuses_is_bad_input_not_a_transient_failure(psycopg_installed, query):
    with pytest.raises(ValidationError) as err:
        PostgresDriver(f"postgresql://app:pw@127.0.0.1:1/jobs?{query}", connect_timeout=1)
    assert query.split("=")[0] in str(err.value) and "not a valid PostgreSQL URL" in str(err.value)


def test_copy_into_a_target_of_a_newer_durably_names_the_target_and_writes_nothing(pg_cluster, pg_url, tmp_path):
    source = Durably(str(tmp_path / "jobs.db"))
    target = Durably(pg_url)
    try:
        source.trigger("j", 1)
        target.schema_version()
        target._store.migrate()
        target._store.driver.execute("INSERT INTO durably_migrations (version, applied_at) VALUES (99, 'later')")
        newer = Durably(pg_url)
        try:
            with pytest.raises(SchemaError, match=r"^the target of the copy: .*schema version 99"):
                source.copy_to(newer)
            assert newer._store.driver.execute("SELECT count(*) FROM durably_runs")[0] == [(0,)]
        finally:
            newer.close()
    finally:
        source.close()
        target.close()


def test_triggers_reaching_one_runs_table_through_different_search_paths_take_turns_on_a_key(two_schemas):
    """``two_schemas``' tables are at schema 4: bring them up to date first, in place."""
    import threading

    import psycopg

    from durably import ConflictError, pg_sql

    base, app, url = two_schemas
    base_url = url.replace(f"search_path%3D{app}%2C{base}", f"search_path%3D{base}")
    assert base_url != url
    up = Durably(base_url)
    up.get_runs()  # migrates base to the latest schema
    up.close()
    # A trigger in another process, spelling search_path as "base": it holds the key's lock
    # and has inserted its pending run, not yet committed.
    other = psycopg.connect(base_url)
    other.execute(pg_sql.TRIGGER_KEY_LOCK.replace("?", "%s"), ("j", "k"))
    other.execute(
        "INSERT INTO durably_runs (id, job_name, status, input, concurrency_key, created_at, updated_at) "
        "VALUES ('r2', 'j', 'pending', '2', 'k', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')"
    )
    commit = threading.Timer(0.5, other.commit)
    commit.start()
    durably = Durably(url)  # search_path "app, base": the same tables
    try:
        with pytest.raises(ConflictError, match="already has a pending run"):
            durably.trigger("j", 3, concurrency_key="k")  # waits for the other trigger, then sees its run
    finally:
        commit.join()
        other.close()
        durably.close()
