"""The jobs the chaos workers run (``durably worker bench.chaos.jobs``).

Every step body writes ``start`` to the ledger, sleeps (an ``await``, so the worker's
lease renewal and cancellation keep working), and writes ``end`` before it returns, or
``abort`` if it is interrupted. Input: ``{"steps": N, "ms": [..], "ledger": PATH}``.
"""

from __future__ import annotations

import asyncio

from durably import job

from bench.chaos.ledger import note


async def _steps(step, input: dict) -> dict:
    ledger = input["ledger"]
    total = 0
    for i in range(input["steps"]):
        name = f"s{i}"
        ms = input["ms"][i]

        async def body(name: str = name, ms: int = ms) -> int:
            note(ledger, "start", step.run_id, name)
            try:
                await asyncio.sleep(ms / 1000)
            except BaseException:
                note(ledger, "abort", step.run_id, name)
                raise
            note(ledger, "end", step.run_id, name)
            return ms

        total += await step.run(name, body)
        step.progress(i + 1, input["steps"])
    return {"total_ms": total}


@job("chaos-a")
async def chaos_a(step, input: dict) -> dict:
    return await _steps(step, input)


@job("chaos-b")
async def chaos_b(step, input: dict) -> dict:
    return await _steps(step, input)
