"""The jobs the chaos workers run (``durably worker bench.chaos.jobs``).

Every step body writes ``start`` to the ledger, sleeps (an ``await``, so the worker's
lease renewal and cancellation keep working), and writes ``end`` before it returns, or
``abort`` if it is interrupted. Input: ``{"steps": N, "ms": [..], "ledger": PATH}``.

``chaos-wait`` is a run that waits three ways: a step that fails its first attempt (it
writes ``fail``) and is retried after a durable backoff, a durable sleep, and a signal the
harness sends; its output names the signal it received. Input: ``{"ms": [a, b, c],
"nap_ms": N, "ledger": PATH}``.
"""

from __future__ import annotations

import asyncio
import os

from durably import Retry, job

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


@job("chaos-wait")
async def chaos_wait(step, input: dict) -> dict:
    ledger = input["ledger"]
    first, flaky_ms, last = input["ms"]

    def body(name: str, ms: int, fail_once: bool = False):
        async def run() -> int:
            note(ledger, "start", step.run_id, name)
            try:
                await asyncio.sleep(ms / 1000)
            except BaseException:
                note(ledger, "abort", step.run_id, name)
                raise
            # The first attempt that gets this far fails (a marker file beside the ledger says
            # whether one did); the retry, durable, runs it again.
            marker = f"{ledger}.failed-{step.run_id}-{name}"
            if fail_once and not os.path.exists(marker):
                with open(marker, "w"):
                    pass
                note(ledger, "fail", step.run_id, name)
                raise ValueError("the first attempt fails")
            note(ledger, "end", step.run_id, name)
            return ms

        return run

    total = await step.run("w0", body("w0", first))
    total += await step.run("flaky", body("flaky", flaky_ms, True), retries=Retry(max_attempts=4, initial=0.05))
    await step.sleep("nap", input["nap_ms"] / 1000)
    signal = await step.wait_for_signal("go")
    total += await step.run("w1", body("w1", last))
    return {"total_ms": total, "signal": signal}
