"""Helpers of the core's behavioural suite (tests/core/behaviour/test_*.py).

The suite is host-independent on purpose: its tests use only the ``make_app`` and ``clock``
fixtures (tests/core/conftest.py), ``pytest.raises``/``pytest.importorskip`` and these
helpers, so tests/browser/test_core_in_pyodide.py runs every file of it inside Pyodide on
SQLite WASM, as it runs here on CPython's sqlite3.
"""

from __future__ import annotations

import asyncio
from typing import Any

from durably import Durably


def record(app: Durably, event_type: str = "*") -> list:
    events: list = []
    app.on(event_type, events.append)
    return events


def next_event(app: Durably, event_type: str, **match: Any) -> asyncio.Future:
    """A future that resolves with the next ``event_type`` event whose data match."""
    fut = asyncio.get_running_loop().create_future()

    def listener(event: Any) -> None:
        if not fut.done() and all(event.get(k, getattr(event, k, None)) == v for k, v in match.items()):
            fut.set_result(event)

    app.on(event_type, listener)
    return fut


def nested(depth: int, leaf: Any = 1) -> Any:
    """``depth`` lists inside one another around ``leaf``: ``nested(2) == [[1]]``."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def table_rows(app: Durably, table: str) -> int:
    return app.driver.execute(f"SELECT COUNT(*) FROM {table}")[0][0][0]


def engine(make_app: Any) -> str:
    """``"sqlite"`` or ``"postgres"``: the engine ``make_app`` builds apps on (Pyodide's
    make_app, which has no ``engine``, builds them on SQLite)."""
    return getattr(make_app, "engine", "sqlite")


def only_on(make_app: Any, wanted: str, reason: str) -> None:
    """Skip the test unless ``make_app`` builds apps on the engine ``wanted``."""
    import pytest

    if engine(make_app) != wanted:
        pytest.skip(f"only on {wanted}: {reason}")
