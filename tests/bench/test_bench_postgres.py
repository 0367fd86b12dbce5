"""Smoke test of the PostgreSQL peer (DBOS on its Postgres system database) on the session's
throwaway server: each workload returns figures of the shape the runner reads. No timing is
asserted (``python -m bench --postgres`` is where the figures come from)."""

from __future__ import annotations

import pytest

from bench.contenders import dbos_postgres


@pytest.fixture
def bench_server(pg_cluster, monkeypatch, tmp_path):
    pytest.importorskip("dbos", reason="dbos is a bench dependency: pip install -e '.[bench]'")
    monkeypatch.setenv(dbos_postgres.URL_ENV, pg_cluster.url("postgres"))
    return str(tmp_path / "bench.db")  # names the measurement's database; no file is made


@pytest.mark.slow
def test_dbos_on_postgres_runs_every_workload_and_leaves_no_database_behind(bench_server, pg_cluster):
    assert dbos_postgres.available() is None
    steps = dbos_postgres.steps(20, bench_server, slices=4)
    assert steps["n"] == 20 and steps["steps_per_s"] > 0 and len(steps["slice_us_per_step"]) == 4
    assert dbos_postgres.runs(10, bench_server)["runs_per_s"] > 0
    latency = dbos_postgres.trigger_latency(5, bench_server)
    assert len(latency["start_ms"]) == 5
    scaled = dbos_postgres.runs_workers(40, 2, bench_server)
    assert scaled["k"] == 40 and scaled["workers"] == 2 and scaled["runs_per_s"] > 0 and scaled["wall_runs_per_s"] > 0
    left = pg_cluster.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench_%'")
    assert left == []


def test_without_a_server_the_peer_says_how_to_get_one(monkeypatch):
    monkeypatch.delenv(dbos_postgres.URL_ENV, raising=False)
    reason = dbos_postgres.available()
    assert reason is not None and ("--postgres" in reason or "dbos is not installed" in reason)


@pytest.mark.slow
def test_durably_on_postgres_runs_every_workload_and_leaves_no_database_behind(bench_server, pg_cluster):
    from bench.contenders import durably_postgres

    assert durably_postgres.available() is None
    steps = durably_postgres.steps(20, bench_server, slices=4)
    assert steps["n"] == 20 and steps["steps_per_s"] > 0 and len(steps["slice_us_per_step"]) == 4
    assert durably_postgres.runs(10, bench_server)["runs_per_s"] > 0
    for notify in (True, False):
        latency = durably_postgres.trigger_latency(3, bench_server, notify=notify)
        # A worker stamps started_at with the time it took just before its claim, which may
        # be a hair before the trigger's own clock reading: allow a few ms below zero.
        assert len(latency["start_ms"]) == 3 and all(-5 < ms < 60_000 for ms in latency["start_ms"])
    scaled = durably_postgres.runs_workers(40, 2, bench_server)
    assert scaled["k"] == 40 and scaled["workers"] == 2 and scaled["runs_per_s"] > 0 and scaled["wall_runs_per_s"] > 0
    left = pg_cluster.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench_%'")
    assert left == []


def test_the_polling_setting_runs_only_the_trigger_workload():
    from bench.contenders import supports

    assert supports("durably-pg-poll", "trigger") and not supports("durably-pg-poll", "steps")
    assert supports("durably-pg", "workers") and supports("durably-pg", "steps")


def test_the_postgresql_floor_runs_workloads_1_to_3_and_leaves_no_database_behind(bench_server, pg_cluster):
    from bench.contenders import pg_floor

    assert pg_floor.available() is None
    assert pg_floor.steps(20, bench_server, slices=4)["steps_per_s"] > 0
    assert pg_floor.runs(10, bench_server)["runs_per_s"] > 0
    assert len(pg_floor.trigger_latency(5, bench_server)["start_ms"]) == 5
    assert pg_cluster.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench_%'") == []
