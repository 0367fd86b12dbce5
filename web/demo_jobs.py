"""The demo page's jobs: plain durably jobs, the same code that would run on CPython.

The worker imports this module after installing durably (an import error is shown on the
page with its traceback) and registers every job at its top level. Each job's docstring is
shown on the page. Long loops ``await asyncio.sleep(0)`` now and then: a step that never
awaits blocks the worker (its messages, lease renewal and cancellation).
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
import re
from dataclasses import dataclass
from math import isqrt

from durably import Retry, SignalTimeoutError, ValidationError, job


# -- crunch: CPU work in chunks, one step per chunk, with progress --------------------------


@dataclass
class Crunch:
    n: int
    chunks: int = 10

    def __post_init__(self) -> None:
        if not 2 <= self.n <= 50_000_000:
            raise ValidationError(f"the input of job 'crunch': n must be between 2 and 50000000, got {self.n}")
        if not 1 <= self.chunks <= 500:
            raise ValidationError(f"the input of job 'crunch': chunks must be between 1 and 500, got {self.chunks}")


@job("crunch", input=Crunch)
async def crunch(step, input: Crunch) -> dict:
    """Counts the primes up to n with a sieve, one durable step per chunk of the range."""
    size = -(-(input.n + 1) // input.chunks)
    count, largest = 0, None
    for i in range(input.chunks):
        lo, hi = i * size, min((i + 1) * size, input.n + 1)
        if lo >= hi:
            break
        found = await step.run(f"chunk-{i + 1}", lambda: primes_between(lo, hi))
        count += found["count"]
        largest = found["largest"] or largest
        step.progress(i + 1, input.chunks, f"{count} primes up to {hi - 1}")
    return {"n": input.n, "primes": count, "largest": largest}


async def primes_between(lo: int, hi: int) -> dict:
    """A segmented sieve of [lo, hi): the count of primes and the largest one."""
    sieve = bytearray(b"\x01") * (hi - lo)
    for x in range(lo, min(2, hi)):
        sieve[x - lo] = 0
    small = bytearray(b"\x01") * (isqrt(hi - 1) + 1)
    marked = 0
    for p in range(2, len(small)):
        if not small[p]:
            continue
        marked += 1
        small[p * p :: p] = bytes(len(range(p * p, len(small), p)))
        start = max(p * p, -(-lo // p) * p)
        sieve[start - lo :: p] = bytes(len(range(start - lo, hi - lo, p)))
        if marked % 64 == 0:
            await asyncio.sleep(0)  # let the worker answer the page between slices
    count = sieve.count(1)
    return {"count": count, "largest": lo + sieve.rindex(1) if count else None}


# -- import-csv: pasted rows, validated and imported in batches ------------------------------

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class CsvImport:
    csv: str
    batch_size: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 1000:
            raise ValidationError(f"the input of job 'import-csv': batch_size must be between 1 and 1000, got {self.batch_size}")


@job("import-csv", input=CsvImport)
async def import_csv(step, input: CsvImport) -> dict:
    """Imports pasted CSV rows (name,email,age) in batches of batch_size; bad rows are logged and skipped."""
    rows = await step.run("parse", lambda: parse_csv(input.csv))
    imported: list[str] = []
    rejected = 0
    batches = [rows[i : i + input.batch_size] for i in range(0, len(rows), input.batch_size)]
    for b, batch in enumerate(batches, 1):
        result = await step.run(f"batch-{b}", lambda: import_batch(step, batch))
        imported += result["imported"]
        rejected += result["rejected"]
        step.progress(b, len(batches), f"{len(imported)} imported, {rejected} rejected")
    return {"rows": len(rows), "imported": len(imported), "rejected": rejected, "names": imported[:20]}


def parse_csv(text: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text.strip()))
    missing = {"name", "email", "age"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"the CSV needs a header line with name,email,age; missing: {', '.join(sorted(missing))}")
    return [{"line": reader.line_num, **{k: (row.get(k) or "").strip() for k in ("name", "email", "age")}} for row in reader]


def import_batch(step, batch: list[dict]) -> dict:
    imported, rejected = [], 0
    for row in batch:
        problem = (
            "the name is empty" if not row["name"]
            else f"{row['email']!r} is not an email address" if not EMAIL.match(row["email"])
            else f"the age {row['age']!r} is not a whole number from 0 to 150"
            if not (row["age"].isdigit() and int(row["age"]) <= 150) else None
        )
        if problem:
            rejected += 1
            step.log.warn(f"line {row['line']} skipped: {problem}", row)
        else:
            imported.append(row["name"])
    return {"imported": imported, "rejected": rejected}


# -- slow: long steps, to show resume-after-reload -----------------------------------------


@dataclass
class Slow:
    steps: int = 5
    seconds: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 100 or not 0 <= self.seconds <= 60:
            raise ValidationError("the input of job 'slow': steps must be 1-100 and seconds 0-60")


@job("slow", input=Slow)
async def slow(step, input: Slow) -> dict:
    """Sleeps in each step: reload the page mid-run and it resumes at the next unfinished step."""
    for i in range(1, input.steps + 1):

        async def work(i: int = i) -> dict:
            # One log line per execution of a step body: a finished step never logs twice.
            step.log.info(f"step-{i} executing")
            await asyncio.sleep(input.seconds)
            return {"step": i, "slept": input.seconds}

        await step.run(f"step-{i}", work)
        step.progress(i, input.steps, f"step {i} of {input.steps} done")
    return {"steps": input.steps}


# -- flaky: fails at a chosen step, so a failed run can be retriggered ----------------------


@dataclass
class Flaky:
    steps: int = 3
    fail_at: int = 2
    chance: float = 0.5
    message: str = "the payment service timed out"


@job("flaky", input=Flaky)
async def flaky(step, input: Flaky) -> dict:
    """Fails at step fail_at with probability chance (0-1): retrigger a failed run to try again."""
    for i in range(1, input.steps + 1):

        async def work(i: int = i) -> dict:
            await asyncio.sleep(0.2)
            if i == input.fail_at and random.random() < input.chance:
                raise RuntimeError(input.message)
            return {"step": i}

        await step.run(f"step-{i}", work)
        step.progress(i, input.steps)
    return {"steps": input.steps, "message": "all steps passed"}


# -- approval: a retried step, a durable pause, and a person's decision ---------------------


@dataclass
class Approval:
    amount: int = 120
    pause: float = 3.0
    timeout: float = 600.0
    chance: float = 0.5  # that a notification attempt fails

    def __post_init__(self) -> None:
        if not 0 <= self.pause <= 3600 or not 1 <= self.timeout <= 86400 or not 0 <= self.chance <= 1:
            raise ValidationError(
                "the input of job 'approval': pause must be 0-3600 s, timeout 1-86400 s and chance 0-1"
            )


@job("approval", input=Approval)
async def approval(step, input: Approval) -> dict:
    """Asks for a decision: notifies an approver (a flaky call, retried with backoff), pauses
    durably, then waits for the signal 'decision' (send it from the run's panel, e.g.
    {"approved": true}) without holding the worker; no decision within timeout seconds
    declines. Reload the page while it waits: it still waits."""
    request = await step.run("draft", lambda: {"amount": input.amount, "currency": "EUR"})

    def notify() -> str:
        if random.random() < input.chance:
            raise ConnectionError("the notification service did not answer")
        return "notified"

    await step.run("notify", notify, retries=Retry(max_attempts=5, initial=1, backoff=2, jitter=False))
    await step.sleep("pause", input.pause)
    try:
        decision = await step.wait_for_signal("decision", timeout=input.timeout)
    except SignalTimeoutError:
        return {**request, "approved": False, "reason": "no decision in time"}
    approved = bool(decision.get("approved")) if isinstance(decision, dict) else bool(decision)
    return {**request, "approved": approved, "decision": decision}
