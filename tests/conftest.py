"""Shared pytest set-up: run ``async def`` tests on a fresh asyncio loop (no plugin needed)."""

from __future__ import annotations

import asyncio
import inspect
import threading

import pytest

# The PostgreSQL fixtures (a throwaway cluster per session): see tests/pg_fixtures.py.
pytest_plugins = ["pg_fixtures"]

ASYNC_TEST_TIMEOUT = 60


def _run(coro_fn, kwargs):
    return asyncio.run(asyncio.wait_for(coro_fn(**kwargs), timeout=ASYNC_TEST_TIMEOUT))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _run(pyfuncitem.obj, kwargs)
        return True
    # Playwright's sync API leaves a loop running in this thread once a browser test ran:
    # give the test a thread (and a loop) of its own.
    outcome: dict = {}

    def target() -> None:
        try:
            _run(pyfuncitem.obj, kwargs)
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"async-test-{pyfuncitem.name}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return True
