"""DBOS Transact on a PostgreSQL system database: the peer for issue 13's figures.

The server is the bench's own throwaway cluster (``python -m bench --postgres`` starts one
with fsync on and gives its admin URL to every measurement in ``DURABLY_BENCH_PG_URL``);
each measurement gets a fresh database on it, dropped afterwards, so every contender meets
the same server in the same state.

- steps, runs, trigger latency: the same code as ``dbos_transact`` (one workflow of N
  ``@DBOS.step`` calls; K one-step workflows through ``DBOS.start_workflow``; trigger =
  the ``start_workflow`` call, start = the workflow's first line), on PostgreSQL.
- workers (workload 7, the scaling curve): K one-step workflows are enqueued on a DBOS
  queue (``DBOSClient.enqueue``, the way another process hands DBOS work), then W worker
  processes are started, each a DBOS executor of that queue; the figure is the rate at
  which runs complete between the 10th and the 90th percentile of completion times (the
  steady state: worker start-up and the last stragglers are left out), with the wall-clock
  rate beside it. The queue polls every 10 ms (its default is 1 s), like Huey's consumer
  here, so polling is not what is measured; each executor runs as many workflows at once
  as DBOS likes (no ``worker_concurrency``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from typing import Any

from bench.common import now
from bench.contenders import dbos_transact

NAME = "dbos-pg"
URL_ENV = "DURABLY_BENCH_PG_URL"
QUEUE = "bench"
POLL = 0.01


def available() -> str | None:
    why = dbos_transact.available()
    if why:
        return why
    if not os.environ.get(URL_ENV):
        return f"no PostgreSQL server: run python -m bench --postgres (or set {URL_ENV} to an admin URL)"
    return None


def _admin_url() -> str:
    url = os.environ.get(URL_ENV)
    if not url:
        raise RuntimeError(f"{URL_ENV} is not set; run python -m bench --postgres")
    return url


def _database(db_path: str) -> tuple[str, str]:
    """A fresh database for this measurement, named after its (unique) file path."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = "bench_" + hashlib.sha1(db_path.encode()).hexdigest()[:16]
    admin = _admin_url()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    return name, make_conninfo(admin, dbname=name)


def _drop(name: str) -> None:
    import psycopg

    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _as_url(conninfo: str) -> str:
    """DBOS takes a URL, psycopg's make_conninfo gives key=value pairs."""
    from psycopg.conninfo import conninfo_to_dict
    from urllib.parse import quote

    p = conninfo_to_dict(conninfo)
    auth = quote(str(p.get("user", "postgres")), safe="") + (f":{quote(str(p['password']), safe='')}" if p.get("password") else "")
    return f"postgresql://{auth}@{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}/{p['dbname']}"


def steps(n: int, db_path: str, slices: int = 20) -> dict:
    name, conninfo = _database(db_path)
    try:
        return dbos_transact.steps(n, db_path, slices, url=_as_url(conninfo))
    finally:
        _drop(name)


def runs(k: int, db_path: str) -> dict:
    name, conninfo = _database(db_path)
    try:
        return dbos_transact.runs(k, db_path, url=_as_url(conninfo))
    finally:
        _drop(name)


def trigger_latency(k: int, db_path: str) -> dict:
    name, conninfo = _database(db_path)
    try:
        return dbos_transact.trigger_latency(k, db_path, url=_as_url(conninfo))
    finally:
        _drop(name)


# -- workload 7: runs/s against worker processes -------------------------------------------------


def _worker(url: str) -> None:
    """One DBOS executor of the bench queue: ``python -m bench.contenders.dbos_postgres worker URL``.
    Prints ``ready`` once it dequeues, stops when its stdin closes."""
    import logging

    from dbos import DBOS

    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS(config={"name": "bench", "system_database_url": url, "run_admin_server": False,
                 "log_level": "WARNING", "application_version": "bench"})
    _register(DBOS)
    DBOS.launch()
    DBOS.register_queue(QUEUE, polling_interval_sec=POLL)
    print("ready", flush=True)
    sys.stdin.read()
    DBOS.destroy(destroy_registry=True)


def _register(DBOS: Any) -> None:
    @DBOS.step()
    def only_step() -> int:
        return 0

    @DBOS.workflow(name="one")
    def one(i: int) -> int:
        return only_step()


def runs_workers(k: int, workers: int, db_path: str) -> dict:
    import psycopg
    from dbos import DBOSClient

    name, conninfo = _database(db_path)
    url = _as_url(conninfo)
    procs: list[subprocess.Popen] = []
    client = None
    try:
        # One executor first creates the system database's tables, then stops: the clients
        # and the measured executors all start on a migrated database.
        _start_workers(url, 1, procs)
        _stop_workers(procs)
        procs.clear()
        client = DBOSClient(system_database_url=url)
        t0 = now()
        for i in range(k):
            client.enqueue({"queue_name": QUEUE, "workflow_name": "one", "app_version": "bench"}, i)
        enqueue_s = now() - t0
        t_start = time.time()
        _start_workers(url, workers, procs)
        done_sql = "SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            deadline = time.monotonic() + 600
            while conn.execute(done_sql).fetchone()[0] < k:
                if time.monotonic() > deadline:
                    raise RuntimeError("runs did not finish within 600 s")
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError("a DBOS worker exited early")
                time.sleep(0.02)
            wall_s = time.time() - t_start
            ends = sorted(r[0] / 1000 for r in conn.execute(
                "SELECT updated_at FROM dbos.workflow_status WHERE status = 'SUCCESS'"))
    finally:
        if client is not None:
            client.destroy()
        _stop_workers(procs)
        _drop(name)
    return workers_result(k, workers, ends, wall_s, enqueue_s=enqueue_s,
                          settings=f"DBOS queue polled every {POLL * 1000:.0f} ms; {workers} executor "
                          + ("process" if workers == 1 else "processes"))


def workers_result(k: int, workers: int, ends: list[float], wall_s: float, **extra: Any) -> dict:
    """The steady-state rate from completion times (epoch seconds): 10th to 90th percentile."""
    lo, hi = ends[int(len(ends) * 0.1)], ends[min(len(ends) - 1, int(len(ends) * 0.9))]
    middle = int(len(ends) * 0.9) - int(len(ends) * 0.1)
    return {"k": k, "workers": workers, "runs_per_s": middle / (hi - lo) if hi > lo else float("nan"),
            "wall_runs_per_s": k / wall_s, "seconds": wall_s, **extra}


def _start_workers(url: str, count: int, procs: list[subprocess.Popen]) -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for _ in range(count):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "bench.contenders.dbos_postgres", "worker", url],
            cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        ))
    for p in procs[-count:]:
        line = p.stdout.readline() if p.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError(f"a DBOS worker did not start (exit {p.poll()})")


def _stop_workers(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        try:
            if p.stdin:
                p.stdin.close()
        except OSError:
            pass
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        _worker(sys.argv[2])
    else:
        print("usage: python -m bench.contenders.dbos_postgres worker URL", file=sys.stderr)
        sys.exit(2)
