"""Fixtures for the core's behavioural suite.

The behavioural suite (``behaviour/test_*.py``) only uses ``make_app`` and ``clock`` from
here (and ``pytest.raises``), so the browser tests can run the same files inside Pyodide with
a ``make_app`` that builds apps on the SQLite WASM bridge instead of ``sqlite3``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from durably import Durably


class FakeClock:
    """A clock the test moves by hand: leases expire when the test says so."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "jobs.db")


@pytest.fixture
def make_app(db_path: str) -> Iterator[Any]:
    """``make_app(jobs=[...], **options)``: a Durably on the test's database file with fast
    polling. Several apps made in one test share the file, like processes would."""
    apps: list[Durably] = []

    def make(jobs: Any = (), **options: Any) -> Durably:
        options.setdefault("polling_interval", 0.05)
        app = Durably(options.pop("db", db_path), jobs=jobs, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        if not app.running:
            app.close()
