"""The runtime kernel: claim a run, execute its job step by step, renew its lease, finish it.

It is separate from the public API (``Durably``) and can be driven one run at a time
(``Runtime.process_one``) or by the worker loop (``Runtime.run_loop``).

How a run ends, and who writes what:

* the job returns: the output is stored and the run is ``completed`` (fenced);
* the job raises: the run is ``failed`` with the error and the step that raised (fenced);
* the run is cancelled (here or by another process): the interrupted step is stored as
  ``cancelled`` and its result, if any, is thrown away;
* the worker stops: the job is interrupted at its next step boundary and the lease is
  handed back, so another worker resumes the run at once;
* the lease was lost (expired and taken over): nothing more is written.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .errors import LeaseLostError, StorageError, ValidationError
from .jobs import Job, check_name, cut_text, safe_text
from .clock import add_seconds
from .limits import (
    HEARTBEAT_INTERVAL,
    MAX_ERROR_BYTES,
    MAX_LOG_DATA_BYTES,
    MAX_LOG_MESSAGE_BYTES,
    MAX_LOGS_PER_RUN,
    MAX_PROGRESS_MESSAGE_BYTES,
    MAX_STEP_RESULT_BYTES,
    WORKER_FORGET_AFTER,
)
from .schemas import check_json, loads_stored, to_json, too_large
from .store import Claimed, PendingWrites

if TYPE_CHECKING:
    from .app import Durably

logger = logging.getLogger("durably")

# How long progress and log lines may wait for a step commit to carry them before they
# are written on their own.
FLUSH_DELAY = 0.5
# A run whose database writes fail this many times in a row (other than "database is
# locked", which passes) is failed with the error instead of being retried forever.
MAX_STORAGE_STRIKES = 5

_PLAIN = (str, int, float, bool, type(None))
_SCALARS = frozenset(_PLAIN)  # step results that need no key check on their way to JSON


class _StopRequested(BaseException):
    """Raised at a step boundary when the worker is stopping. A BaseException so that a
    job's ``except Exception`` does not swallow it."""


# What a step body may raise that is not the step failing: the run is stopped, cancelled
# or interrupted, and ends some other way (see Runtime._run_job).
_NOT_FAILURES = (_StopRequested, asyncio.CancelledError, KeyboardInterrupt, GeneratorExit)


@dataclass
class _StepFailure:
    index: int
    name: str
    started_at: str
    exc: BaseException


# The longest the runtime keeps the event loop between two turns it gives to other tasks.
YIELD_EVERY = 0.05


class RunContext:
    """Everything the runtime knows about one run while this worker executes it."""

    def __init__(self, runtime: "Runtime", claimed: Claimed, job: Job) -> None:
        run = claimed.run
        self.runtime = runtime
        self.run = run
        self.run_id = run.id
        self.job = job
        self.generation = claimed.generation
        self.done = claimed.done
        self.next_index = claimed.next_index
        self.seen: set[str] = set()
        self.current: tuple[int, str, str] | None = None  # (index, name, started_at)
        self.failure: _StepFailure | None = None
        self.pending = PendingWrites()
        self.cancel_reason: str | None = None  # "user" | "external" | "stop" | "lease-lost"
        self.task: asyncio.Task | None = None
        self.flush_handle: asyncio.TimerHandle | None = None
        self.renew_handle: asyncio.TimerHandle | None = None
        self.ended = False
        # Log lines this run has stored or buffered, for MAX_LOGS_PER_RUN. Only a lease
        # holder writes logs, so a first claim (generation 1) starts from none; a resumed
        # run counts what earlier attempts stored when it first logs.
        self.log_count: int | None = 0 if claimed.generation == 1 else None
        # Until when (monotonic clock) the lease surely holds: a worker that was frozen
        # (SIGSTOP, a suspended laptop) past it checks its lease before starting a step.
        self.lease_deadline = time.monotonic() + runtime.app.lease_duration

    def emit(self, event_type: str, **data: Any) -> None:
        self.runtime.app._events.emit(event_type, self.run_id, self.run.job_name, self.run.labels, **data)


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
            count = ctx.runtime.app._store.count_logs(ctx.run_id)
        if count >= MAX_LOGS_PER_RUN:
            if count > MAX_LOGS_PER_RUN:
                return  # past the limit: neither stored nor emitted
            level, data, data_json = "warn", None, None
            message = (
                f"log limit reached: this run has {MAX_LOGS_PER_RUN:,} log lines "
                "(durably.limits.MAX_LOGS_PER_RUN); its later lines are neither stored nor emitted"
            )
        ctx.log_count = count + 1
        step_name = ctx.current[1] if ctx.current else None
        entry = (step_name, level, message, data_json, ctx.runtime.app._now())
        if ctx.pending.logs is None:
            ctx.pending.logs = []
        ctx.pending.logs.append(entry)
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

    async def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (a sync or async callable without arguments) as the step ``name``,
        once per run: if the step completed before (in an earlier attempt), return its
        stored result without calling ``fn``. The result must be JSON data; what the step
        returns is what JSON gives back (a tuple comes back as a list), first time or not.

        Example::

            users = await step.run("fetch", lambda: fetch_users(org))
        """
        ctx = self._ctx
        check_name(name, "a step name")
        if not callable(fn):
            raise ValidationError(f"step {name!r}: fn must be a callable without arguments, got {type(fn).__name__}")
        if name in ctx.seen:
            exc = ValidationError(
                f"step name {name!r} is used twice in one execution of job {ctx.run.job_name!r}; "
                "each step needs its own name (in a loop, put the item's id or index in it)"
            )
            ctx.failure = _StepFailure(ctx.next_index, name, ctx.runtime.app._now(), exc)
            raise exc
        ctx.seen.add(name)
        hit = ctx.done.get(name)
        if hit is not None:
            try:
                return loads_stored(hit[1])
            except Exception as err:  # an older durably or a hand edit stored it
                exc = ValidationError(
                    f"the stored result of step {name!r} cannot be read ({type(err).__name__}: "
                    f"{safe_text(err, 500)}); the run cannot resume past it: retrigger the run"
                )
                ctx.failure = _StepFailure(hit[0], name, ctx.runtime.app._now(), exc)
                raise exc from None
        return await ctx.runtime.execute_step(ctx, name, fn)

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
            message = cut_text(message, MAX_PROGRESS_MESSAGE_BYTES, "the progress message",
                               "MAX_PROGRESS_MESSAGE_BYTES")
        ctx = self._ctx
        progress = {"current": current, "total": total, "message": message}
        ctx.pending.progress = check_json(progress, "progress", None)
        ctx.runtime.schedule_flush(ctx)
        ctx.emit("run:progress", progress=progress)


class Runtime:
    def __init__(self, app: "Durably") -> None:
        self.app = app
        self.active: dict[str, RunContext] = {}
        self.stopping = False
        self._tasks: set[asyncio.Task] = set()
        self._waiter: asyncio.Future | None = None
        self._loop_task: asyncio.Task | None = None
        self._last_maintenance = float("-inf")
        self._lease_until: dict[str, str] = {}
        self._strikes: dict[str, int] = {}  # run id -> storage failures in a row
        self._yielded = time.monotonic()  # when the runtime last gave the event loop a turn
        self._started_at: str | None = None  # set while started: this worker is in the registry
        self._heartbeat_handle: asyncio.TimerHandle | None = None
        self._last_prune = float("-inf")

    # -- claiming -------------------------------------------------------------------------

    def claim(self) -> Claimed | None:
        app = self.app
        names = list(app._jobs)
        if not names:
            return None
        now = app._clock()
        lease_until = app._iso_after(now, app.lease_duration)
        claimed = app._store.claim(
            owner=app.worker_id, job_names=names, now=app._iso(now), lease_until=lease_until
        )
        if claimed is not None:
            self._lease_until[claimed.run.id] = lease_until
        return claimed

    async def process_one(self) -> bool:
        claimed = self.claim()
        if claimed is None:
            return False
        await self.execute(claimed)
        return True

    # -- executing a run ------------------------------------------------------------------

    async def execute(self, claimed: Claimed) -> None:
        app = self.app
        run = claimed.run
        job = app._jobs[run.job_name]
        ctx = RunContext(self, claimed, job)
        ctx.task = asyncio.current_task()
        self.active[run.id] = ctx
        # Renewal is a timer callback, not a task: the store is synchronous, and a task
        # costs several turns of the event loop to start and cancel (each ~0.15 ms in
        # Pyodide), which a short run would pay for nothing.
        self._schedule_renew(ctx)
        started = time.monotonic()
        try:
            ctx.emit(
                "run:leased",
                worker_id=app.worker_id,
                lease_generation=ctx.generation,
                lease_expires_at=self._lease_until.pop(run.id, None),
                resumed_steps=len(ctx.done),
            )
            await self._run_job(ctx, started)
        finally:
            ctx.ended = True
            if ctx.renew_handle is not None:
                ctx.renew_handle.cancel()
            if ctx.flush_handle is not None:
                ctx.flush_handle.cancel()
            self.active.pop(run.id, None)
            app._notify_finished(run.id)
            self.wake()

    async def _run_job(self, ctx: RunContext, started: float) -> None:
        app = self.app
        job = ctx.job
        try:
            if ctx.run.decode_error is not None:
                raise ValidationError(
                    f"run {ctx.run_id} cannot be executed: {ctx.run.decode_error}. Delete it and "
                    "trigger a new run with a good input"
                )
            value = job.input_schema.load(ctx.run.input, f"the input of run {ctx.run_id}")
            result = await job.fn(Step(ctx), value)
            if ctx.cancel_reason is not None:
                raise asyncio.CancelledError()
            data = job.output_schema.dump(result, f"the output of job {job.name!r}")
            output_json = check_json(data, f"the output of job {job.name!r}", "MAX_OUTPUT_BYTES")
        except _StopRequested:
            self._release(ctx)
            return
        except asyncio.CancelledError:
            if not self._on_cancelled(ctx):
                raise
            return
        except LeaseLostError as exc:
            self._lease_lost(ctx, str(exc))
            return
        except StorageError as exc:
            self._storage_failed(ctx, exc)
            return
        except KeyboardInterrupt:
            # Ctrl-C: the process is stopping, the job did not fail. Hand the run back (it
            # resumes at its first unfinished step) and let the interrupt go on.
            self._release(ctx)
            raise
        except GeneratorExit:
            raise
        except BaseException as exc:  # whatever the job raised, SystemExit included: it fails
            self._fail(ctx, exc)
            return
        try:
            ok = app._store.finish_run(
                run_id=ctx.run_id,
                generation=ctx.generation,
                status="completed",
                now=app._now(),
                output_json=output_json,
                pending=ctx.pending,
                preserve_steps=app.preserve_steps,
            )
        except StorageError as exc:
            self._storage_failed(ctx, exc)
            return
        if not ok:
            self._lost(ctx)
            return
        ctx.pending.clear()
        ctx.emit("run:complete", output=json.loads(output_json), duration=time.monotonic() - started)

    async def execute_step(self, ctx: RunContext, name: str, fn: Callable[[], Any]) -> Any:
        app = self.app
        await self._maybe_yield()
        if self.stopping:
            raise _StopRequested()
        if ctx.cancel_reason is not None:
            raise asyncio.CancelledError()
        if time.monotonic() >= ctx.lease_deadline:
            self._confirm_lease(ctx)
        index = ctx.next_index
        ctx.next_index += 1
        started_at = app._now()
        ctx.current = (index, name, started_at)
        ctx.emit("step:start", step_name=name, step_index=index)
        t0 = time.monotonic()
        try:
            value = fn()
            if inspect.isawaitable(value):
                value = await value
        except BaseException as exc:
            if not isinstance(exc, _NOT_FAILURES):
                ctx.failure = _StepFailure(index, name, started_at, exc)
            raise
        if ctx.cancel_reason is not None:
            # Cancelled while a synchronous step ran: its result is never stored.
            raise asyncio.CancelledError()
        try:
            # Scalars go straight to the encoder; containers are checked for non-string keys
            # and nesting first, in one walk (JSON would turn a key 1 into "1", and
            # {1: "a", "1": "b"} would lose a value). The size is the encoded text's length.
            output_json = (
                to_json(value) if type(value) in _SCALARS
                else check_json(value, "the result", "MAX_STEP_RESULT_BYTES")
            )
            if len(output_json) > MAX_STEP_RESULT_BYTES:
                raise too_large("the result", len(output_json), "MAX_STEP_RESULT_BYTES")
        except ValidationError as err:
            exc = ValidationError(f"step {name!r} returned a value durably cannot store: {err}")
            ctx.failure = _StepFailure(index, name, started_at, exc)
            raise exc from None
        except (TypeError, ValueError) as err:
            exc = ValidationError(
                f"step {name!r} returned a value that is not JSON data ({type(value).__name__}: {err}); "
                "return dicts, lists, strings, numbers, booleans or None"
            )
            ctx.failure = _StepFailure(index, name, started_at, exc)
            raise exc from None
        if not isinstance(value, _PLAIN):
            # Hand back what a resumed run would get: the value as JSON gives it back.
            value = json.loads(output_json)
        ok = app._store.complete_step(
            run_id=ctx.run_id,
            generation=ctx.generation,
            index=index,
            name=name,
            output_json=output_json,
            started_at=started_at,
            now=app._now(),
        )
        if not ok:
            self._raise_lost(ctx)
        if self._strikes:
            self._strikes.pop(ctx.run_id, None)
        ctx.current = None
        ctx.done[name] = (index, output_json)
        ctx.emit("step:complete", step_name=name, step_index=index, output=value, duration=time.monotonic() - t0)
        return value

    # -- how runs end -----------------------------------------------------------------------

    def _fail(self, ctx: RunContext, exc: BaseException) -> None:
        app = self.app
        failure = ctx.failure if ctx.failure is not None and _caused_by(exc, ctx.failure.exc) else None
        error = describe(exc)
        step = None
        if failure is not None:
            step = (failure.index, failure.name, "failed", describe(failure.exc), failure.started_at)
        try:
            ok = app._store.finish_run(
                run_id=ctx.run_id,
                generation=ctx.generation,
                status="failed",
                now=app._now(),
                error=error,
                failed_step=failure.name if failure else None,
                step=step,
                pending=ctx.pending,
                preserve_steps=app.preserve_steps,
            )
        except StorageError as err:
            self._storage_failed(ctx, err)
            return
        if not ok:
            self._lost(ctx)
            return
        ctx.pending.clear()
        if failure is not None:
            ctx.emit("step:fail", step_name=failure.name, step_index=failure.index, error=step[3])  # type: ignore[index]
        ctx.emit("run:fail", error=error, failed_step=failure.name if failure else None)

    def _on_cancelled(self, ctx: RunContext) -> bool:
        """Handle an asyncio cancellation of the run's task. Returns False if it did not
        come from durably (the caller re-raises it)."""
        reason = ctx.cancel_reason
        task = asyncio.current_task()
        if reason is None:
            # Someone else cancelled us (the event loop is closing, or the caller's own
            # timeout): hand the run back so it resumes elsewhere, and let it propagate.
            self._release(ctx)
            return False
        if task is not None and task.cancelling():
            task.uncancel()
        if reason == "stop":
            self._release(ctx)
        elif reason == "lease-lost":
            self._lease_lost(ctx, "the lease expired and another worker took the run")
        else:
            self._record_cancel(ctx)
        return True

    def _record_cancel(self, ctx: RunContext) -> None:
        app = self.app
        current = ctx.current
        step = (current[0], current[1], "cancelled", None, current[2]) if current else None
        try:
            app._store.record_cancelled(
                run_id=ctx.run_id,
                generation=ctx.generation,
                step=step,
                now=app._now(),
                pending=ctx.pending,
                preserve_steps=app.preserve_steps,
            )
        except StorageError as exc:
            self._worker_error(ctx, exc, "storing the cancelled step")
        if current is not None:
            ctx.emit("step:cancel", step_name=current[1], step_index=current[0])
        if ctx.cancel_reason == "external":
            ctx.emit("run:cancel")  # the canceller was another process; tell our listeners too

    def _release(self, ctx: RunContext) -> None:
        app = self.app
        try:
            app._store.release(run_id=ctx.run_id, generation=ctx.generation, now=app._now(), pending=ctx.pending)
        except StorageError as exc:
            self._worker_error(ctx, exc, "handing the lease back (the run resumes when the lease expires)")

    def _lost(self, ctx: RunContext) -> None:
        """A fenced write changed nothing: find out whether the run was cancelled or taken."""
        state = self.app._store.run_state(ctx.run_id)
        if state is not None and state[0] == "cancelled" and state[1] == ctx.generation:
            ctx.cancel_reason = ctx.cancel_reason or "external"
            self._record_cancel(ctx)
        else:
            self._lease_lost(ctx, "the run's lease is no longer held by this worker")

    def _raise_lost(self, ctx: RunContext) -> None:
        state = self.app._store.run_state(ctx.run_id)
        if state is not None and state[0] == "cancelled" and state[1] == ctx.generation:
            ctx.cancel_reason = ctx.cancel_reason or "external"
            raise asyncio.CancelledError()
        ctx.cancel_reason = "lease-lost"
        raise LeaseLostError(
            f"run {ctx.run_id}: this worker lost its lease (generation {ctx.generation}); "
            "the step's result was not stored and another worker owns the run now"
        )

    def _lease_lost(self, ctx: RunContext, why: str) -> None:
        self.app._events.emit(
            "worker:error", ctx.run_id, ctx.run.job_name, ctx.run.labels,
            error=f"LeaseLostError: {why}", context="lease lost; nothing more is written for this run",
        )

    def _confirm_lease(self, ctx: RunContext) -> None:
        """Renew the lease now, before a step starts, or raise if it is gone."""
        app = self.app
        now = app._clock()
        if app._store.renew(
            run_id=ctx.run_id, generation=ctx.generation, now=app._iso(now),
            lease_until=app._iso_after(now, app.lease_duration), pending=None,
        ):
            ctx.lease_deadline = time.monotonic() + app.lease_duration
            return
        self._raise_lost(ctx)

    def _storage_failed(self, ctx: RunContext, exc: StorageError) -> None:
        """The database failed mid-run: nothing half-written (the transaction rolled back).
        Hand the run back so it is retried, by this worker or another; but a run whose
        writes fail time after time (a result too big to store, a disk that stays full) is
        failed with the error rather than retried forever."""
        strikes = self._strikes[ctx.run_id] = self._strikes.get(ctx.run_id, 0) + 1
        if strikes >= MAX_STORAGE_STRIKES and exc.code != "SQLITE_BUSY":
            self._strikes.pop(ctx.run_id, None)
            self._worker_error(ctx, exc, f"a database write failed {strikes} times in a row; failing the run")
            error = (
                f"StorageError: {exc} (the database refused this run's writes {strikes} times in a "
                "row, so it was failed instead of retried again; retrigger it once the cause is fixed)"
            )
            try:
                if self.app._store.finish_run(
                    run_id=ctx.run_id, generation=ctx.generation, status="failed", now=self.app._now(),
                    error=error, failed_step=ctx.current[1] if ctx.current else None,
                ):
                    ctx.emit("run:fail", error=error, failed_step=ctx.current[1] if ctx.current else None)
                    return
            except StorageError:
                pass
            self._release(ctx)
            return
        self._worker_error(ctx, exc, "a database write failed; the run is handed back and will be retried")
        self._release(ctx)

    def _worker_error(self, ctx: RunContext | None, exc: BaseException, context: str) -> None:
        error = describe(exc)  # never raises, whatever the exception's __str__ does
        logger.error("durably: %s: %s", context, error)
        run = ctx.run if ctx else None
        self.app._events.emit(
            "worker:error",
            run.id if run else None,
            run.job_name if run else None,
            run.labels if run else None,
            error=error,
            context=context,
        )

    # -- leases, flushes --------------------------------------------------------------------

    def _schedule_renew(self, ctx: RunContext) -> None:
        loop = asyncio.get_running_loop()
        ctx.renew_handle = loop.call_later(self.app.lease_renew_interval, self._renew, ctx)

    def _renew(self, ctx: RunContext) -> None:
        """Extend the lease (fenced) and write buffered progress and logs; every
        ``lease_renew_interval`` while the run executes. A refused renewal means the run
        was cancelled elsewhere or the lease was taken over: the run is interrupted."""
        ctx.renew_handle = None
        if ctx.ended:
            return
        app = self.app
        now = app._clock()
        lease_until = app._iso_after(now, app.lease_duration)
        try:
            ok = app._store.renew(
                run_id=ctx.run_id, generation=ctx.generation, now=app._iso(now),
                lease_until=lease_until, pending=ctx.pending,
            )
            state = None if ok else app._store.run_state(ctx.run_id)
        except StorageError as exc:
            self._worker_error(ctx, exc, "renewing a lease (will try again)")
            self._schedule_renew(ctx)
            return
        if ok:
            ctx.pending.clear()
            ctx.lease_deadline = time.monotonic() + app.lease_duration
            ctx.emit(
                "run:lease-renewed",
                worker_id=app.worker_id,
                lease_generation=ctx.generation,
                lease_expires_at=lease_until,
            )
            self._schedule_renew(ctx)
            return
        cancelled = state is not None and state[0] == "cancelled" and state[1] == ctx.generation
        self.interrupt(ctx, "external" if cancelled else "lease-lost")

    def interrupt(self, ctx: RunContext, reason: str) -> None:
        if ctx.cancel_reason is None or reason == "user":
            ctx.cancel_reason = reason
        task = ctx.task
        if task is None or task.done():
            return
        try:
            current = asyncio.current_task()
        except RuntimeError:
            current = None
        # From inside the run itself (a step cancelling its own run) there is no await to
        # interrupt: the step's end checks cancel_reason and throws its result away.
        if task is not current:
            task.cancel()

    def schedule_flush(self, ctx: RunContext) -> None:
        if ctx.flush_handle is None:
            loop = asyncio.get_running_loop()
            ctx.flush_handle = loop.call_later(FLUSH_DELAY, self._flush, ctx)

    def _flush(self, ctx: RunContext) -> None:
        ctx.flush_handle = None
        if ctx.pending.empty() or self.active.get(ctx.run_id) is not ctx:
            return
        app = self.app
        try:
            if app._store.flush(run_id=ctx.run_id, generation=ctx.generation, now=app._now(), pending=ctx.pending):
                ctx.pending.clear()
        except StorageError as exc:
            self._worker_error(ctx, exc, "storing progress and logs (will try again with the next commit)")

    # -- the worker loop ----------------------------------------------------------------------

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        handle = loop.call_later(seconds, lambda: waiter.done() or waiter.set_result(None))
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiter = None

    async def run_loop(self) -> None:
        app = self.app
        while not self.stopping:
            claimed_any = False
            # Count tasks, not active runs: a task just created has not registered its run yet.
            while len(self._tasks) < app.max_concurrent_runs and not self.stopping:
                try:
                    claimed = self.claim()
                except Exception as exc:  # a storage fault, or a bug: the loop goes on
                    self._worker_error(None, exc, "claiming a run (will try again)")
                    break
                if claimed is None:
                    break
                claimed_any = True
                task = asyncio.ensure_future(self._guarded_execute(claimed))
                self._tasks.add(task)
                task.add_done_callback(self._task_done)
            if not claimed_any and not self._tasks:
                self._maybe_maintain()
            if self.stopping:
                break
            if claimed_any and len(self._tasks) < app.max_concurrent_runs:
                await asyncio.sleep(0)  # let new runs start, then look for more
                continue
            await self._sleep(app.polling_interval)

    def _task_done(self, task: asyncio.Task) -> None:
        # Wake the loop only once the task no longer counts against max_concurrent_runs,
        # or a full worker would sleep a whole polling interval before claiming again.
        self._tasks.discard(task)
        self.wake()

    async def _guarded_execute(self, claimed: Claimed | None) -> None:
        # Runs back to back in one task while there are runs to claim: going through the
        # worker loop between two runs costs several turns of the event loop (each ~0.15 ms
        # in Pyodide, as much as a short run's SQL).
        while claimed is not None:
            try:
                await self.execute(claimed)
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except BaseException as exc:  # a bug in durably itself: report it, keep the worker
                self._worker_error(None, exc, f"executing run {claimed.run.id}")
                if isinstance(exc, Exception):
                    self._fail_claimed(claimed, exc)
            claimed = None
            await self._maybe_yield()
            if self.stopping:
                break
            try:
                claimed = self.claim()
            except Exception as exc:
                self._worker_error(None, exc, "claiming a run (will try again)")

    def _fail_claimed(self, claimed: Claimed, exc: Exception) -> None:
        """Fail a run whose execution raised out of the runtime itself (fenced: only if this
        worker still holds it). Retried, it would most likely raise again, one lease
        duration later, for ever."""
        run = claimed.run
        error = (
            f"durably could not execute this run ({describe(exc)}); it was failed so that the "
            "worker goes on. Retrigger it once the cause is fixed"
        )
        try:
            if self.app._store.finish_run(
                run_id=run.id, generation=claimed.generation, status="failed", now=self.app._now(), error=error,
            ):
                self.app._events.emit("run:fail", run.id, run.job_name, run.labels, error=error, failed_step=None)
        except Exception as err:
            logger.error("durably: failing run %s after an internal error: %r", run.id, err)

    async def _maybe_yield(self) -> None:
        """Give the event loop a turn if the runtime has kept it for YIELD_EVERY seconds.
        Steps that never suspend (quick synchronous bodies) would otherwise hold it for a
        whole run or more, and with it every other task and timer: in the browser, the
        page's requests, a cancel among them."""
        now = time.monotonic()
        if now - self._yielded >= YIELD_EVERY:
            await asyncio.sleep(0)
            self._yielded = time.monotonic()

    def _maybe_maintain(self) -> None:
        app = self.app
        if app.retain_runs is None:
            return
        now = time.monotonic()
        if now - self._last_maintenance < app.maintenance_interval:
            return
        self._last_maintenance = now
        try:
            app.purge_runs(app.retain_runs)
        except Exception as exc:  # the worker loop goes on
            self._worker_error(None, exc, "purging old runs (retain_runs)")

    async def start(self) -> None:
        self.stopping = False
        self._started_at = self.app._now()
        self._last_prune = float("-inf")
        self._heartbeat()  # records this worker; then every HEARTBEAT_INTERVAL
        self._loop_task = asyncio.ensure_future(self.run_loop())

    # -- the worker registry ------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Record this worker (its jobs, host, pid, version) with the time, in the registry
        that ``Durably.status()`` reads; every HEARTBEAT_INTERVAL while it runs. A failure
        is a worker:error, never a stop: running jobs does not depend on the registry."""
        app = self.app
        self._heartbeat_handle = None
        if self._started_at is None:
            return
        from . import __version__

        host, pid = app._worker_host or (socket.gethostname(), os.getpid())
        now = app._clock()
        try:
            app._store.record_worker(
                worker_id=app.worker_id, host=host, pid=pid, jobs_json=to_json(sorted(app._jobs)),
                version=__version__, concurrency=app.max_concurrent_runs, started_at=self._started_at,
                now=app._iso(now),
            )
            if time.monotonic() - self._last_prune >= WORKER_FORGET_AFTER / 24:
                self._last_prune = time.monotonic()
                app._store.forget_workers(before=app._iso(add_seconds(now, -WORKER_FORGET_AFTER)))
        except Exception as exc:
            self._worker_error(None, exc, "recording this worker's heartbeat (will try again)")
        self._heartbeat_handle = asyncio.get_running_loop().call_later(HEARTBEAT_INTERVAL, self._heartbeat)

    def _forget_self(self) -> None:
        """A clean stop: take this worker out of the registry."""
        if self._heartbeat_handle is not None:
            self._heartbeat_handle.cancel()
            self._heartbeat_handle = None
        if self._started_at is None:
            return
        self._started_at = None
        try:
            self.app._store.forget_workers(only_id=self.app.worker_id)
        except Exception as exc:
            self._worker_error(None, exc, "removing this worker from the registry (it will count as dead)")

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    async def wait_stopped(self) -> None:
        """Return once the worker loop has ended (``stop()``), at once if it is not running."""
        task = self._loop_task
        if task is not None:
            await asyncio.wait({task})

    async def stop(self, timeout: float | None) -> None:
        self.stopping = True
        self.wake()
        if self._loop_task is not None:
            try:
                await self._loop_task
            finally:
                self._loop_task = None
        tasks = set(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            if late:
                for ctx in list(self.active.values()):
                    if ctx.task in late:
                        self.interrupt(ctx, "stop")
                await asyncio.gather(*late, return_exceptions=True)
        self._forget_self()
        self.stopping = False


def describe(exc: BaseException) -> str:
    """``"Type: message"`` as stored for a failed run or step: never raises, and fits in
    ``MAX_ERROR_BYTES`` (an exception's message can be anything, of any size)."""
    name = type(exc).__name__[:200]
    return f"{name}: {safe_text(exc, MAX_ERROR_BYTES - len(name) - 2)}"


def _caused_by(exc: BaseException, origin: BaseException) -> bool:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 50:
        if current is origin:
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False
