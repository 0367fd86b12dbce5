"""DBOS Transact (``dbos`` on PyPI) with its SQLite system database.

Two settings are measured, because they differ by an fsync per commit:
- ``dbos``: as shipped. DBOS leaves SQLite's defaults (rollback journal, synchronous=FULL).
- ``dbos-wal``: the same code given a SQLAlchemy engine that opens the file in WAL with
  synchronous=NORMAL, durably's own settings, so the comparison is not only about fsyncs.

Workloads use DBOS's fastest in-process paths, which sets the bar high for us:
- steps: one workflow calling N ``@DBOS.step`` functions.
- runs: K one-step workflows started at once with ``DBOS.start_workflow`` (they run on DBOS's
  thread pool, concurrently), then every result awaited.
- trigger latency: trigger = the ``start_workflow`` call; start = the workflow body's first line.
DBOS is a process-wide singleton, so each call launches and destroys it (outside the timing).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from bench.common import SliceClock, latency_result, now, runs_result, steps_result

NAME = "dbos"


def available() -> str | None:
    try:
        import dbos  # noqa: F401
    except ImportError:
        return "dbos is not installed: pip install -e '.[bench]'"
    return None


def _launch(db_path: str, tuned: bool, register: Callable[[Any], None], url: str | None = None) -> Any:
    """``url``: a PostgreSQL system database instead of the SQLite file (bench.contenders.dbos_postgres)."""
    from dbos import DBOS

    logging.getLogger("dbos").setLevel(logging.WARNING)
    config: dict = {
        "name": "bench",
        "system_database_url": url or f"sqlite:///{db_path}",
        "run_admin_server": False,
        "log_level": "WARNING",
    }
    if tuned and not url:
        import sqlalchemy as sa
        from sqlalchemy import event

        engine = sa.create_engine(f"sqlite:///{db_path}")

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # What DBOS sets on its own engine, plus durably's journal and sync settings.
            dbapi_conn.isolation_level = "IMMEDIATE"
            dbapi_conn.execute("PRAGMA busy_timeout=30000")
            dbapi_conn.execute("PRAGMA foreign_keys=ON")
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")

        config["system_database_engine"] = engine
    DBOS(config=config)
    register(DBOS)
    DBOS.launch()
    return DBOS


def _settings(tuned: bool, url: str | None = None) -> str:
    if url:
        return "PostgreSQL system database (server defaults: fsync, synchronous_commit on)"
    return "WAL, synchronous=NORMAL" if tuned else "rollback journal (DELETE), synchronous=FULL (as shipped)"


def steps(n: int, db_path: str, slices: int = 20, tuned: bool = False, url: str | None = None) -> dict:
    clock = SliceClock(n, slices)
    fns: dict = {}

    def register(DBOS: Any) -> None:
        @DBOS.step()
        def bench_step(i: int) -> int:
            clock.tick(i)
            return i

        @DBOS.workflow()
        def bench_steps(count: int) -> int:
            for i in range(count):
                bench_step(i)
            return count

        fns["wf"] = bench_steps

    DBOS = _launch(db_path, tuned, register, url)
    try:
        t0 = now()
        fns["wf"](n)
        clock.end()
        seconds = now() - t0
    finally:
        DBOS.destroy(destroy_registry=True)
    return steps_result(n, seconds, clock, settings=_settings(tuned, url))


def _register_one(fns: dict, started: dict) -> Callable[[Any], None]:
    def register(DBOS: Any) -> None:
        @DBOS.step()
        def only_step() -> int:
            return 0

        @DBOS.workflow()
        def one(key: int) -> int:
            started[key] = now()
            return only_step()

        fns["one"] = one

    return register


def runs(k: int, db_path: str, tuned: bool = False, url: str | None = None) -> dict:
    fns: dict = {}
    DBOS = _launch(db_path, tuned, _register_one(fns, {}), url)
    try:
        t0 = now()
        handles = [DBOS.start_workflow(fns["one"], i) for i in range(k)]
        for h in handles:
            h.get_result()
        seconds = now() - t0
    finally:
        DBOS.destroy(destroy_registry=True)
    return runs_result(k, seconds, settings=_settings(tuned, url), path="DBOS.start_workflow")


def trigger_latency(k: int, db_path: str, tuned: bool = False, url: str | None = None) -> dict:
    fns: dict = {}
    started: dict = {}
    DBOS = _launch(db_path, tuned, _register_one(fns, started), url)
    trig, start = [], []
    try:
        for i in range(k):
            t0 = now()
            h = DBOS.start_workflow(fns["one"], i)
            t1 = now()
            h.get_result()
            trig.append(t1 - t0)
            start.append(started[i] - t0)
    finally:
        DBOS.destroy(destroy_registry=True)
    return latency_result(trig, start, settings=_settings(tuned, url), path="DBOS.start_workflow")
