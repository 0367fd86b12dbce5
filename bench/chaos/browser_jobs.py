"""The browser chaos suite's job, served as the job module ``chaos_jobs`` by the harness's
private copy of the site (``bench/chaos/browser.py``; ``tests/browser/test_tabs.py`` uses it
too). A job module rather than code sent through ``evalPython``: after a hand-over the tab
that takes over imports it like any job module, so it can resume the runs at once.

Each step body writes a ledger row (``start``, then ``end`` or ``abort``) with the run id,
step name, this worker's ``WORKER`` id and ``time.time()`` into ``chaos_ledger``, a table of
the same database that the runtime never writes, each row committed on its own (no
transaction spans an await) before the body returns.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from durably import job

#: This worker's id in the ledger: one per Pyodide, so one per leader's lifetime.
WORKER = f"tab:{os.urandom(4).hex()}"
_ledger: list[Any] = []  # the driver, made on first use (the database exists by then)


def note(kind: str, run_id: str, step: str) -> None:
    if not _ledger:
        from durably.pyodide_driver import PyodideDriver

        driver = PyodideDriver()
        driver.execute(
            "CREATE TABLE IF NOT EXISTS chaos_ledger (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
            "run_id TEXT NOT NULL, step TEXT NOT NULL, worker TEXT NOT NULL, t REAL NOT NULL)"
        )
        _ledger.append(driver)
    _ledger[0].execute(
        "INSERT INTO chaos_ledger (kind, run_id, step, worker, t) VALUES (?, ?, ?, ?, ?)",
        [kind, run_id, step, WORKER, time.time()],
    )


@job("chaos-steps")
async def chaos_steps(step, input):
    """Sleeps input["steps"][i] ms in step s<i>, writing the ledger around each body."""
    total = 0
    for i, ms in enumerate(input["steps"]):
        async def body(name=f"s{i}", ms=ms):
            note("start", step.run_id, name)
            try:
                await asyncio.sleep(ms / 1000)
            except BaseException:
                try:
                    note("abort", step.run_id, name)
                finally:
                    raise
            note("end", step.run_id, name)
            return ms
        total += await step.run(f"s{i}", body)
    return {"total": total}
