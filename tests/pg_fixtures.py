"""PostgreSQL fixtures: one throwaway cluster per test session (``bench.pg_cluster``).

- ``pg_cluster``: the session's cluster (fsync off), started on first use, removed at the end.
- ``pg_server``: the same cluster for a test that stops or restarts it; it is running again
  after the test, whatever the test did.
- ``pg_url``: a URL to an empty schema of its own for each test (``search_path`` set in the
  URL), dropped afterwards. Cheaper than a database per test (~2 ms against ~90 ms).
- ``pg_database``: a fresh database of its own, for tests that need a whole one.

When PostgreSQL cannot be run here (no server programs, no psycopg), tests that use these
fixtures are skipped with the reason, unless PostgreSQL is required: in CI (``CI`` set to
true, as CI runs ``.ci/run``) or with ``DURABLY_REQUIRE_POSTGRES=1`` (which ``.ci/run`` and
``make test`` set), where they fail with the reason instead, so a broken install cannot
pass as a green run.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Iterator

import pytest

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import pg_cluster as clusters  # noqa: E402

TEST_DATABASE = "durably_test"


def postgres_required() -> bool:
    return os.environ.get("DURABLY_REQUIRE_POSTGRES") == "1" or os.environ.get("CI", "").lower() in ("true", "1", "yes")


def _unavailable(reason: str) -> None:
    if postgres_required():
        pytest.fail(f"PostgreSQL is required here (CI or DURABLY_REQUIRE_POSTGRES=1) but: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[clusters.PgCluster]:
    reason = clusters.missing()
    if reason:
        _unavailable(reason)
    try:
        cluster = clusters.PgCluster()
    except clusters.PgClusterError as exc:
        _unavailable(str(exc))
    try:
        cluster.create_database(TEST_DATABASE)
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def psycopg_installed() -> None:
    """For tests that need psycopg but no server: the same skip-or-fail policy."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed: pip install -e '.[postgres]'")


@pytest.fixture
def pg_server(pg_cluster: clusters.PgCluster) -> Iterator[clusters.PgCluster]:
    yield pg_cluster
    if not pg_cluster.running:
        pg_cluster.start()


@pytest.fixture
def pg_url(pg_cluster: clusters.PgCluster) -> Iterator[str]:
    schema = f"t_{secrets.token_hex(6)}"
    pg_cluster.execute(f"CREATE SCHEMA {schema}", dbname=TEST_DATABASE)
    yield pg_cluster.url(TEST_DATABASE, options=f"-csearch_path={schema}")
    if not pg_cluster.running:
        pg_cluster.start()
    pg_cluster.execute(f"DROP SCHEMA {schema} CASCADE", dbname=TEST_DATABASE)


@pytest.fixture
def pg_database(pg_cluster: clusters.PgCluster) -> Iterator[str]:
    name = f"d_{secrets.token_hex(6)}"
    url = pg_cluster.create_database(name)
    yield url
    if not pg_cluster.running:
        pg_cluster.start()
    pg_cluster.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
