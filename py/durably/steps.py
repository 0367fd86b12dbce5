"""The step API a job receives (``Step``, ``StepLog``) and what the runtime knows about one
run while it executes (``RunContext``).

A job only ever sees ``Step``: ``await step.run(name, fn)``, ``await step.sleep(...)``,
``await step.wait_for_signal(...)``, ``step.progress(...)``, ``step.log.info(...)``,
``step.cancelled``. What those do to the database is the runtime's (``durably.runtime``);
this module checks what the job passes and hands it on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .errors import ValidationError
from .jobs import Job
from .jsondata import check_json, loads_stored
from .limits import MAX_LOG_DATA_BYTES, MAX_LOG_MESSAGE_BYTES, MAX_LOGS_PER_RUN, MAX_PROGRESS_MESSAGE_BYTES, MAX_WAIT
from .retries import Retry, as_retry
from .store import Claimed, LogLine, PendingWrites, StoredStep
from .validation import check_name, cut_text, safe_text, seconds_option

if TYPE_CHECKING:
    from .runtime import Runtime


@dataclass(slots=True)
class StepInFlight:
    """The step a run is executing now."""

    index: int
    name: str
    started_at: str


@dataclass
class StepFailure:
    """The step whose error ended (or may end) the run: stored with it if the job lets the
    error through. ``attempt`` is its attempt number within the run's attempt, and
    ``max_attempts`` what its ``retries`` allowed (None: no retries)."""

    index: int
    name: str
    started_at: str
    exc: BaseException
    attempt: int | None = None
    max_attempts: int | None = None


@dataclass(frozen=True)
class Suspension:
    """How the run went waiting (see ``Store.wait``): set once the wait is stored."""

    waiting_for: str
    wait_step: str | None
    wake_at: str | None


class RunContext:
    """Everything the runtime knows about one run while this worker executes it."""

    def __init__(self, runtime: Runtime, claimed: Claimed, job: Job) -> None:
        run = claimed.run
        self.runtime = runtime
        self.run = run
        self.run_id = run.id
        self.job = job
        self.generation = claimed.generation
        self.lease = claimed.lease
        self.done = claimed.done
        self.next_index = claimed.next_index
        self.seen: set[str] = set()
        self.current: StepInFlight | None = None
        self.failure: StepFailure | None = None
        self.pending = PendingWrites()
        self.cancel_reason: str | None = None  # "user" | "external" | "stop" | "lease-lost"
        self.task: asyncio.Task[Any] | None = None
        self.flush_handle: asyncio.TimerHandle | None = None
        #: When (event loop time) the lease is renewed next; None once renewed or ended.
        self.renew_at: float | None = None
        self.ended = False
        #: Claim the next run with this one's completion (``Runtime.execute``), and the run
        #: so claimed.
        self.claim_next = False
        self.next_claimed: Claimed | None = None
        #: The job-level attempt this execution is (``Run.attempt``).
        self.attempt = run.attempt
        #: The run's deadline (``@job(timeout=...)``), once known; and the error it failed
        #: with, once passed.
        self.deadline: datetime | None = run.deadline_at
        self.deadline_handle: asyncio.TimerHandle | None = None
        self.timed_out: BaseException | None = None
        #: Set once the run waits: from then on the job is only unwound.
        self.suspended: Suspension | None = None
        # Log lines this run has stored or buffered, for MAX_LOGS_PER_RUN. Only a lease
        # holder writes logs, so a first claim (generation 1) starts from none; a resumed
        # run counts what earlier attempts stored when it first logs.
        self.log_count: int | None = 0 if claimed.generation == 1 else None
        # Until when (monotonic clock) the lease surely holds: a worker that was frozen
        # (SIGSTOP, a suspended laptop) past it checks its lease before starting a step.
        self.lease_deadline = time.monotonic() + runtime.lease_duration
        self._emit = runtime.events.emit

    def emit(self, event_type: str, **data: Any) -> None:
        """Emit an event about this run."""
        self._emit(event_type, self.run_id, self.run.job_name, self.run.labels, **data)


class StepLog:
    """``step.log.info/warn/error(message, data=None)``: persisted with the run, and
    emitted at once as ``log:write``."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx

    def info(self, message: str, data: Any = None) -> None:
        self._write("info", message, data)

    def warn(self, message: str, data: Any = None) -> None:
        self._write("warn", message, data)

    def error(self, message: str, data: Any = None) -> None:
        self._write("error", message, data)

    def _write(self, level: str, message: str, data: Any) -> None:
        if not isinstance(message, str):
            raise ValidationError(f"a log message must be a string, got {type(message).__name__}")
        message = cut_text(message, MAX_LOG_MESSAGE_BYTES, "the log message", "MAX_LOG_MESSAGE_BYTES")
        data_json = None if data is None else check_json(data, "log data", None)
        if data_json is not None and len(data_json) > MAX_LOG_DATA_BYTES:
            message += (
                f" [data dropped: {len(data_json):,} bytes as JSON; the limit is {MAX_LOG_DATA_BYTES:,} "
                "(durably.limits.MAX_LOG_DATA_BYTES)]"
            )
            data = data_json = None
        ctx = self._ctx
        count = ctx.log_count
        if count is None:
            count = ctx.runtime.store.count_logs(ctx.run_id)
        if count >= MAX_LOGS_PER_RUN:
            if count > MAX_LOGS_PER_RUN:
                return  # past the limit: neither stored nor emitted
            level, data, data_json = "warn", None, None
            message = (
                f"log limit reached: this run has {MAX_LOGS_PER_RUN:,} log lines "
                "(durably.limits.MAX_LOGS_PER_RUN); its later lines are neither stored nor emitted"
            )
        ctx.log_count = count + 1
        step_name = ctx.current.name if ctx.current else None
        line = LogLine(step_name, level, message, data_json, ctx.runtime.now())
        if ctx.pending.logs is None:
            ctx.pending.logs = []
        ctx.pending.logs.append(line)
        ctx.runtime.schedule_flush(ctx)
        ctx.emit("log:write", step_name=step_name, level=level, message=message, data=data)


class Step:
    """What a job receives: ``await step.run(name, fn)``, ``step.progress(...)``,
    ``step.log.info(...)``, ``step.cancelled``."""

    __slots__ = ("_ctx", "log")

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx
        self.log = StepLog(ctx)

    @property
    def run_id(self) -> str:
        return self._ctx.run_id

    @property
    def cancelled(self) -> bool:
        """True once the run was cancelled; the job should return soon (it is interrupted
        at its next ``await`` anyway)."""
        return self._ctx.cancel_reason in ("user", "external")

    async def run(
        self, name: str, fn: Callable[[], Any], *, retries: Retry | int | None = None, timeout: float | None = None
    ) -> Any:
        """Run ``fn`` (a sync or async callable without arguments) as the step ``name``,
        once per run: if the step completed before (in an earlier attempt), return its
        stored result without calling ``fn``. The result must be JSON data; what the step
        returns is what JSON gives back (a tuple comes back as a list), first time or not.

        ``retries`` (a ``Retry``, or N for ``Retry(max_attempts=N)``): a failed attempt is
        recorded and the run waits, durably, before the next one; the job sees the error
        only after the last. ``timeout`` (seconds, for an ``async`` fn): the step is
        cancelled past it and the attempt fails with ``TimeoutError`` (a synchronous fn
        cannot be interrupted: its result stands).

        Example::

            users = await step.run("fetch", lambda: fetch_users(org), retries=3, timeout=30)
        """
        ctx = self._ctx
        check_name(name, "a step name")
        if not callable(fn):
            raise ValidationError(f"step {name!r}: fn must be a callable without arguments, got {type(fn).__name__}")
        policy = None if retries is None else as_retry(retries, f"step {name!r}")
        if timeout is not None:
            timeout = seconds_option(f"step {name!r}: timeout", timeout, MAX_WAIT, "MAX_WAIT")
        # _stored(name), written out: this is every step's path.
        if name in ctx.seen:
            self._stored(name)  # raises
        ctx.seen.add(name)
        stored = ctx.done.get(name)
        if stored is not None and stored.status == "completed":
            try:
                return loads_stored(stored.output_json)
            except Exception as err:  # an older durably or a hand edit stored it
                exc = ValidationError(
                    f"the stored result of step {name!r} cannot be read ({type(err).__name__}: "
                    f"{safe_text(err, 500)}); the run cannot resume past it: retrigger the run"
                )
                ctx.failure = StepFailure(stored.index, name, ctx.runtime.now(), exc)
                raise exc from None
        return await ctx.runtime.execute_step(ctx, name, fn, policy, timeout, stored)

    async def sleep(self, name: str, seconds: float) -> None:
        """Wait ``seconds`` durably, as the step ``name``: the wake-up time is stored with
        the step (a replay keeps it), the run gives its worker slot back (status
        ``waiting``), and any worker resumes it once it is due.

        Example::

            await step.sleep("cool-down", 3600)
        """
        check_name(name, "a step name")
        seconds = seconds_option(f"step.sleep {name!r}: seconds", seconds, MAX_WAIT, "MAX_WAIT", zero=True)
        stored = self._stored(name)
        await self._ctx.runtime.sleep_step(self._ctx, name, stored, seconds=seconds)

    async def sleep_until(self, name: str, when: datetime) -> None:
        """``sleep`` until the aware datetime ``when`` (at once if it has passed).

        Example::

            await step.sleep_until("opening", datetime(2027, 1, 1, 9, tzinfo=ZoneInfo("Europe/Paris")))
        """
        check_name(name, "a step name")
        if not isinstance(when, datetime) or when.utcoffset() is None:
            raise ValidationError(
                f"step.sleep_until {name!r}: when must be an aware datetime "
                f"(e.g. datetime(2027, 1, 1, tzinfo=timezone.utc)), got {when!r}"
            )
        try:
            when = when.astimezone(UTC)
        except OverflowError:  # 9999-12-31 23:00 at UTC-14 is past the year 9999 in UTC
            raise ValidationError(
                f"step.sleep_until {name!r}: when {when.isoformat()} is past the year 9999 in UTC, "
                "which no datetime holds; pick an earlier time"
            ) from None
        stored = self._stored(name)
        await self._ctx.runtime.sleep_step(self._ctx, name, stored, until=when)

    async def wait_for_signal(self, name: str, timeout: float | None = None) -> Any:
        """Wait durably for the signal ``name`` (``Durably.signal(run_id, name, payload)``,
        ``durably signal``, the page's ``signal``) and return its payload; the step is named
        after the signal. The run holds no worker slot while it waits. A signal sent before
        the run waits for it is kept until it does. Past ``timeout`` seconds (counted from
        the first time the run waits here) raises ``SignalTimeoutError``, which the job may
        catch.

        Example::

            decision = await step.wait_for_signal("approval", timeout=86400)
        """
        check_name(name, "a signal name")
        if timeout is not None:
            timeout = seconds_option(f"step.wait_for_signal {name!r}: timeout", timeout, MAX_WAIT, "MAX_WAIT")
        stored = self._stored(name)
        return await self._ctx.runtime.signal_step(self._ctx, name, stored, timeout)

    def _stored(self, name: str) -> StoredStep | None:
        """What the run stored for the step ``name``, once the name is checked unused in this
        execution."""
        ctx = self._ctx
        if name in ctx.seen:
            exc = ValidationError(
                f"step name {name!r} is used twice in one execution of job {ctx.run.job_name!r}; "
                "each step needs its own name (in a loop, put the item's id or index in it)"
            )
            ctx.failure = StepFailure(ctx.next_index, name, ctx.runtime.now(), exc)
            raise exc
        ctx.seen.add(name)
        return ctx.done.get(name)

    def progress(self, current: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress; shown at once to listeners (``run:progress``) and stored with
        the run's next commit (within half a second)."""
        for label, value in (("current", current), ("total", total)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValidationError(f"progress {label} must be a number, got {type(value).__name__}")
        if current is None:
            raise ValidationError("progress current must be a number, got None")
        if message is not None:
            if not isinstance(message, str):
                raise ValidationError(f"progress message must be a string, got {type(message).__name__}")
            message = cut_text(
                message, MAX_PROGRESS_MESSAGE_BYTES, "the progress message", "MAX_PROGRESS_MESSAGE_BYTES"
            )
        ctx = self._ctx
        progress = {"current": current, "total": total, "message": message}
        ctx.pending.progress = check_json(progress, "progress", None)
        ctx.runtime.schedule_flush(ctx)
        ctx.emit("run:progress", progress=progress)
