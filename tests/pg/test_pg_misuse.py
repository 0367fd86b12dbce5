"""PostgreSQL as a careless or hostile user meets it: URLs written by hand, schemas shared
with other applications, ``durably copy`` pointed at the wrong place. Each test is a defect
found by trying, kept so it stays fixed. On the session's throwaway server
(tests/pg_fixtures.py)."""

from __future__ import annotations

import pytest

from durably.errors import StorageError, ValidationError
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
