"""durably on PostgreSQL (``Durably("postgresql://...")``), beside DBOS on the same server.

The server is the bench's own (``python -m bench --postgres``: fsync and synchronous_commit
on, the server's defaults); each measurement gets a fresh database on it, dropped
afterwards (``bench.contenders.dbos_postgres`` makes and drops them for both contenders).

- steps: one run of N steps, triggered, then drained with ``process_until_idle`` (one
  process: each step is one statement and one commit).
- runs: K one-step runs triggered at once, run by a worker in the same process
  (``start()``, one run at a time); done when ``wait_for_run`` returned for each.
- trigger latency: the worker is another process, as in a deployment, so what wakes it is
  PostgreSQL's ``NOTIFY`` (``durably-pg``) or, with ``notify=False``, its poll every
  ``polling_interval`` (``durably-pg-poll``, the default 1 s). Trigger = the ``trigger`` call
  in the bench process; start = the run's ``started_at`` as the worker stored it (same
  machine, same clock).
- workers (workload 7): K one-step runs triggered first (``trigger_many``), then W worker
  processes started; the figure is the rate at which runs complete between the 10th and
  the 90th percentile of their ``completed_at`` (start-up and stragglers left out), and the
  wall-clock rate beside it, as for DBOS.

The checkout's own ``py/`` goes first on ``sys.path`` (see ``durably_py``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import warnings
from typing import Any

from bench.common import SliceClock, latency_result, now, runs_result, steps_result
from bench.contenders import dbos_postgres
from bench.contenders.durably_py import _import, _noop, _one_step_job

NAME = "durably-pg"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETTINGS = "PostgreSQL (server defaults: fsync, synchronous_commit on), one connection per process"


def available() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install -e '.[postgres]'"
    if not os.environ.get(dbos_postgres.URL_ENV):
        return f"no PostgreSQL server: run python -m bench --postgres (or set {dbos_postgres.URL_ENV} to an admin URL)"
    try:
        _import()
    except ImportError as exc:
        return f"durably is not importable: {exc}"
    return None


def _database(db_path: str) -> tuple[str, str]:
    """A fresh database for this measurement and its URL."""
    name, conninfo = dbos_postgres._database(db_path)
    return name, dbos_postgres._as_url(conninfo)


def _app(d: Any, url: str, notify: bool = True, **options: Any) -> Any:
    from durably.pg_driver import PostgresDriver

    warnings.simplefilter("ignore", d.NoWorkerWarning)  # the bench's triggers come before its workers

    return d.Durably(PostgresDriver(url, notify=notify), **options)


def steps(n: int, db_path: str, slices: int = 20, notify: bool = True) -> dict:
    d = _import()
    clock = SliceClock(n, slices)

    @d.job("bench-steps")
    async def bench_steps(step: Any, input: Any) -> int:
        for i in range(n):
            clock.tick(i)
            await step.run(f"s{i}", _noop(i))
        return n

    name, url = _database(db_path)
    try:

        async def main() -> float:
            app = _app(d, url, notify, jobs=[bench_steps])
            try:
                app.migrate()
                t0 = now()
                run = app.trigger(bench_steps, {})
                await app.process_until_idle()
                clock.end()
                seconds = now() - t0
                if app.get_run(run.id).status != "completed":
                    raise RuntimeError("bench run did not complete")
                return seconds
            finally:
                app.close()

        seconds = asyncio.run(main())
    finally:
        dbos_postgres._drop(name)
    return steps_result(n, seconds, clock, settings=SETTINGS)


def runs(k: int, db_path: str, notify: bool = True) -> dict:
    d = _import()
    bench_one = _one_step_job(d)
    name, url = _database(db_path)
    try:

        async def main() -> float:
            app = _app(d, url, notify, jobs=[bench_one])
            app.migrate()
            await app.start()
            try:
                t0 = now()
                ids = [app.trigger(bench_one, {"i": i}).id for i in range(k)]
                for run_id in ids:
                    await app.wait_for_run(run_id, timeout=600)
                return now() - t0
            finally:
                await app.stop()
                app.close()

        seconds = asyncio.run(main())
    finally:
        dbos_postgres._drop(name)
    return runs_result(k, seconds, concurrency="max_concurrent_runs=1 (default)", settings=SETTINGS)


def trigger_latency(k: int, db_path: str, notify: bool = True) -> dict:
    d = _import()
    name, url = _database(db_path)
    procs: list[subprocess.Popen] = []
    try:
        setup = _app(d, url, notify)
        setup.migrate()
        setup.close()
        _start_workers(url, 1, procs, notify=notify)

        async def main() -> tuple[list[float], list[float]]:
            # Trigger-only, and its wait_for_run polls every 2 ms: the wait is not measured,
            # only how soon the worker starts the run.
            app = _app(d, url, notify, polling_interval=0.002)
            trig, start = [], []
            try:
                for i in range(k):
                    t0 = time.time()
                    run = app.trigger("bench-one", {"i": i})
                    t1 = time.time()
                    done = await app.wait_for_run(run.id, timeout=60)
                    trig.append(t1 - t0)
                    start.append(done.started_at.timestamp() - t0)
            finally:
                app.close()
            return trig, start

        trig, start = asyncio.run(main())
    finally:
        _stop_workers(procs)
        dbos_postgres._drop(name)
    polling = "NOTIFY wakes the worker" if notify else "no NOTIFY: the worker polls every 1 s (the default)"
    return latency_result(trig, start, settings=f"{SETTINGS}; worker in another process; {polling}")


# -- workload 7: runs/s against worker processes -------------------------------------------------


def runs_workers(k: int, workers: int, db_path: str, notify: bool = True) -> dict:
    d = _import()
    name, url = _database(db_path)
    procs: list[subprocess.Popen] = []
    try:
        app = _app(d, url, notify)
        try:
            app.migrate()
            t0 = now()
            for lo in range(0, k, 1000):
                app.trigger_many("bench-one", [{"i": i} for i in range(lo, min(k, lo + 1000))])
            enqueue_s = now() - t0
            t_start = time.time()
            _start_workers(url, workers, procs, notify=notify)
            deadline = time.monotonic() + 600
            done_sql = "SELECT count(*) FROM durably_runs WHERE status = 'completed'"
            while app.driver.execute(done_sql)[0][0][0] < k:
                if time.monotonic() > deadline:
                    raise RuntimeError("runs did not finish within 600 s")
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError("a durably worker exited early")
                time.sleep(0.02)
            wall_s = time.time() - t_start
            from durably.clock import parse_iso

            rows, _ = app.driver.execute("SELECT completed_at FROM durably_runs")
            ends = sorted(parse_iso(r[0]).timestamp() for r in rows)
        finally:
            app.close()
    finally:
        _stop_workers(procs)
        dbos_postgres._drop(name)
    return dbos_postgres.workers_result(
        k, workers, ends, wall_s, enqueue_s=enqueue_s,
        settings=f"{SETTINGS}; {workers} worker process{'es' if workers > 1 else ''}, one run at a time each",
    )


def _worker(url: str, notify: bool) -> None:
    """One worker process: ``python -m bench.contenders.durably_postgres worker URL [--no-notify]``.
    Prints ``ready`` once it listens (or polls), stops when its stdin closes."""
    d = _import()
    bench_one = _one_step_job(d)

    async def main() -> None:
        app = _app(d, url, notify, jobs=[bench_one])
        await app.start()
        listener = app._worker._listener
        while notify and (listener is None or listener.connections < 1):
            await asyncio.sleep(0.005)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await app.stop()
        app.close()

    asyncio.run(main())


def _start_workers(url: str, count: int, procs: list[subprocess.Popen], *, notify: bool) -> None:
    args = [] if notify else ["--no-notify"]
    for _ in range(count):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "bench.contenders.durably_postgres", "worker", url, *args],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        ))
    for p in procs[-count:]:
        line = p.stdout.readline() if p.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError(f"a durably worker did not start (exit {p.poll()})")


def _stop_workers(procs: list[subprocess.Popen]) -> None:
    dbos_postgres._stop_workers(procs)


if __name__ == "__main__":
    if len(sys.argv) in (3, 4) and sys.argv[1] == "worker":
        _worker(sys.argv[2], notify="--no-notify" not in sys.argv[3:])
    else:
        print("usage: python -m bench.contenders.durably_postgres worker URL [--no-notify]", file=sys.stderr)
        sys.exit(2)
