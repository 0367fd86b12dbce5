"""Bench-only job module for durably's browser host (``python -m bench --browser``).

Never part of the site: the bench serves a private copy of ``site/`` with this file added as
``jobs/bench_jobs.py`` and listed in that copy's ``manifest.json``, and the page boots with
``?jobs=bench_jobs&debug=1``. Being a job module (not ``evalPython``), its jobs exist from the
worker's first moment, so a run reclaimed at boot resumes at once (workload 5).

Module-level lists hold what the bench reads back through ``evalPython``: per-slice clocks of
workload 1 and the wall-clock start of each step body of workload 5.
"""

import asyncio
import time

from durably import job

SLICES = {}  # run id -> perf_counter marks at each slice boundary, then at the end
STARTS = []  # (run id, step name, time.time() in ms) per step body started, this worker only


@job("bench-steps")
async def bench_steps(step, input):
    n, slices = input["n"], max(1, min(input["slices"], input["n"]))
    size = max(1, n // slices)
    marks = []
    for i in range(n):
        if i % size == 0 and len(marks) < slices:
            marks.append(time.perf_counter())
        await step.run(f"s{i}", lambda i=i: i)
    marks.append(time.perf_counter())
    SLICES[step.run_id] = marks
    return n


@job("bench-one")
async def bench_one(step, input):
    return await step.run("only", lambda: 0)


@job("bench-slow")
async def bench_slow(step, input):
    for i in range(input["steps"]):
        async def body(name=f"s{i}"):
            STARTS.append((step.run_id, name, time.time() * 1000))
            await asyncio.sleep(input["ms"] / 1000)
            return 0

        await step.run(f"s{i}", body)
    return input["steps"]
