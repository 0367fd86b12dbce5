"""durably itself, on CPython, through its public API only (issue 2).

- steps: one run of a job with N steps, triggered, then drained with ``process_until_idle``.
- runs: K one-step runs triggered at once, then the worker (``start``) runs them with its
  default of one run at a time; done when ``wait_for_run`` has returned for each.
- trigger latency: trigger = the ``trigger`` call; start = the ``run:leased`` event.
- scale (ours only): ``get_runs`` with filters on a database of many runs, bytes per run and
  per step, ``purge_runs`` throughput.

The checkout's own ``py/`` goes first on ``sys.path``: the bench measures this working tree,
not whatever version happens to be installed.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from datetime import timedelta
from typing import Any

from bench.common import SliceClock, db_bytes, latency_result, now, runs_result, spread, steps_result

NAME = "durably"
_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "py")


def _import() -> Any:
    if _PY not in sys.path:
        sys.path.insert(0, _PY)
    import durably

    return durably


def available() -> str | None:
    try:
        durably = _import()
    except ImportError as exc:
        return f"the durably core is not importable yet ({exc}); it lands with issue 2"
    missing = [n for n in ("Durably", "job") if not hasattr(durably, n)]
    if missing:
        return f"the durably core is not there yet (no {', '.join(missing)} in py/durably/; issue 2)"
    return None


def _noop(i: int) -> Any:
    return lambda: i


def steps(n: int, db_path: str, slices: int = 20) -> dict:
    d = _import()
    clock = SliceClock(n, slices)

    @d.job("bench-steps")
    async def bench_steps(step: Any, input: Any) -> int:
        for i in range(n):
            clock.tick(i)
            await step.run(f"s{i}", _noop(i))
        return n

    async def main() -> float:
        app = d.Durably(db_path, jobs=[bench_steps])
        try:
            t0 = now()
            run = app.trigger(bench_steps, {})
            await app.process_until_idle()
            clock.end()
            seconds = now() - t0
            status = app.get_run(run.id).status
            if status != "completed":
                raise RuntimeError(f"bench run ended {status}")
            return seconds
        finally:
            app.close()

    seconds = asyncio.run(main())
    return steps_result(n, seconds, clock, settings="WAL, synchronous=NORMAL")


def _one_step_job(d: Any) -> Any:
    @d.job("bench-one")
    async def bench_one(step: Any, input: Any) -> int:
        return await step.run("only", _noop(0))

    return bench_one


def runs(k: int, db_path: str) -> dict:
    d = _import()
    bench_one = _one_step_job(d)

    async def main() -> float:
        app = d.Durably(db_path, jobs=[bench_one])
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

    return runs_result(k, asyncio.run(main()), concurrency="max_concurrent_runs=1 (default)")


def trigger_latency(k: int, db_path: str) -> dict:
    d = _import()
    bench_one = _one_step_job(d)
    leased: dict[str, float] = {}

    def on_leased(event: Any) -> None:
        leased[event.run_id] = now()

    async def main() -> tuple[list[float], list[float]]:
        app = d.Durably(db_path, jobs=[bench_one])
        app.on("run:leased", on_leased)
        await app.start()
        trig, start = [], []
        try:
            for i in range(k):
                t0 = now()
                run = app.trigger(bench_one, {"i": i})
                t1 = now()
                await app.wait_for_run(run.id, timeout=60)
                trig.append(t1 - t0)
                start.append(leased[run.id] - t0)
        finally:
            await app.stop()
            app.close()
        return trig, start

    trig, start = asyncio.run(main())
    return latency_result(trig, start)


def _file_bytes(db_path: str) -> int:
    """Database size with the WAL folded in, so sizes compare across phases."""
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return db_bytes(db_path)


def scale(n_runs: int, db_path: str, steps_b: int = 5, batch: int = 1000) -> dict:
    """Half the runs are job A (1 step), half job B (``steps_b`` steps); labels spread over 100
    tenants. Sizes are measured after each phase; the marginal step cost comes from
    comparing A's and B's growth, so it excludes the run's own completion update."""
    d = _import()

    @d.job("scale-a")
    async def scale_a(step: Any, input: Any) -> int:
        return await step.run("only", _noop(0))

    @d.job("scale-b")
    async def scale_b(step: Any, input: Any) -> int:
        for i in range(steps_b):
            await step.run(f"s{i}", _noop(i))
        return steps_b

    out: dict = {"runs": n_runs, "steps_per_run_b": steps_b}
    half = n_runs // 2

    async def main() -> None:
        app = d.Durably(db_path, jobs=[scale_a, scale_b])
        try:
            app.get_runs(limit=1)  # the first database call creates the schema
            empty = _file_bytes(db_path)
            # A labelled 1% comes first (trigger_many takes no labels): enough for a
            # selective label filter. Claims go oldest first, so phase A below runs exactly
            # the A runs and phase B the B runs.
            labelled = max(1, n_runs // 100)
            t0 = now()
            for i in range(labelled):
                app.trigger(scale_a, {"l": i}, labels={"tenant": f"t{i % 100}"})
            for job, count in ((scale_a, half - labelled), (scale_b, n_runs - half)):
                for lo in range(0, count, batch):
                    n = min(batch, count - lo)
                    app.trigger_many(job, [{"i": lo + j} for j in range(n)])
            out["trigger_runs_per_s"] = n_runs / (now() - t0)
            pending = _file_bytes(db_path)
            out["bytes_per_pending_run"] = (pending - empty) / n_runs

            t0 = now()
            done_a = await app.process_until_idle(max_runs=half)
            out["process_a_runs_per_s"] = done_a / (now() - t0)
            after_a = _file_bytes(db_path)
            t0 = now()
            done_b = await app.process_until_idle()
            out["process_b_runs_per_s"] = done_b / (now() - t0)
            after_b = _file_bytes(db_path)
            grow_a = (after_a - pending) / max(1, done_a)
            grow_b = (after_b - after_a) / max(1, done_b)
            per_step = (grow_b - grow_a) / (steps_b - 1)
            out["bytes_per_step"] = per_step
            out["bytes_per_completed_run_excl_steps"] = out["bytes_per_pending_run"] + grow_a - per_step
            out["db_bytes"] = after_b

            queries = {
                "get_runs_status_completed_limit50": dict(status="completed", limit=50),
                "get_runs_job_b_limit50_offset1000": dict(job_name="scale-b", limit=50, offset=1000),
                "get_runs_label_tenant_limit50": dict(labels={"tenant": "t7"}, limit=50),
                "get_runs_status_and_job_limit50": dict(status=["completed", "failed"], job_name="scale-a", limit=50),
                "get_runs_failed_none_match": dict(status="failed", limit=50),
            }
            for key, kwargs in queries.items():
                times = []
                for _ in range(7):
                    t = now()
                    app.get_runs(**kwargs)
                    times.append((now() - t) * 1e3)
                out[key + "_ms"] = spread(times)["median"]

            t0 = now()
            purged = 0
            while True:
                got = app.purge_runs(timedelta(0), limit=500)
                if not got:
                    break
                purged += got
            out["purged"] = purged
            out["purge_runs_per_s"] = purged / (now() - t0)
        finally:
            app.close()

    asyncio.run(main())
    return out
