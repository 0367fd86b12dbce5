"""The behavioural suite runs against every engine durably has: each test once on SQLite
(a file) and once on PostgreSQL (a fresh schema of the session's throwaway server,
tests/pg_fixtures.py), with one test body. ``make_app`` says which (``make_app.engine``);
a test that cannot apply to one engine skips itself there with ``helpers.only_on``.

Inside Pyodide (tests/browser/test_core_in_pyodide.py) the harness builds its own
``make_app`` on SQLite WASM and never reads this file.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from durably import Durably

ENGINES = ["sqlite", "postgres"]


@pytest.fixture(params=ENGINES)
def make_app(request: pytest.FixtureRequest, db_path: str) -> Iterator[Any]:
    """``make_app(jobs=[...], **options)``: a Durably on the test's database with fast
    polling. Several apps made in one test share the database, like processes would."""
    engine = request.param
    db = db_path if engine == "sqlite" else request.getfixturevalue("pg_url")
    apps: list[Durably] = []

    def make(jobs: Any = (), **options: Any) -> Durably:
        options.setdefault("polling_interval", 0.05)
        app = Durably(options.pop("db", db), jobs=jobs, **options)
        apps.append(app)
        return app

    make.engine = engine  # type: ignore[attr-defined]
    yield make
    for app in apps:
        if not app.running:
            app.close()
