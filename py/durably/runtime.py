"""The runtime kernel: claim a run, execute its job step by step, renew its lease, finish it.

``Runtime`` is handed what it works with (the store, the event bus, the job registry, the
clock, the settings, this worker's id) and never the ``Durably`` object, so it can be built
and driven alone, one run at a time (``Runtime.process_one``). The worker loop
(``durably.worker``) drives it for a running worker; the step API a job sees is
``durably.steps``.

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
import time
from collections.abc import Callable
from typing import Any

from .clock import Clock, add_seconds, iso
from .errors import LeaseLostError, StorageError, ValidationError
from .events import EventBus
from .jobs import JobRegistry
from .jsondata import SCALARS, check_json, to_json, too_large
from .limits import MAX_STEP_RESULT_BYTES
from .settings import Settings
from .steps import RunContext, Step, StepFailure, StepInFlight
from .store import Claimed, StepEnd, Store
from .validation import describe

logger = logging.getLogger("durably")

#: How long progress and log lines may wait for a step commit to carry them before they
#: are written on their own.
FLUSH_DELAY = 0.5
#: A run whose database writes fail this many times in a row (other than failures the
#: driver marks ``transient``, such as "database is locked") is failed with the error
#: instead of being retried forever.
MAX_STORAGE_STRIKES = 5
#: The longest the runtime keeps the event loop between two turns it gives to other tasks.
YIELD_EVERY = 0.05

_PLAIN = (str, int, float, bool, type(None))


class StopRequested(BaseException):
    """Raised at a step boundary when the worker is stopping. A BaseException so that a
    job's ``except Exception`` does not swallow it."""


# What a step body may raise that is not the step failing: the run is stopped, cancelled
# or interrupted, and ends some other way (see Runtime._run_job).
_NOT_FAILURES = (StopRequested, asyncio.CancelledError, KeyboardInterrupt, GeneratorExit)


def _nothing(run_id: str) -> None:
    pass


class Runtime:
    """Claims and executes runs of the registered jobs (see the module docstring).

    ``on_finished(run_id)`` is called once this process stops executing a run, however
    it ended (completed, failed, cancelled, handed back or lost)."""

    def __init__(
        self,
        *,
        store: Store,
        events: EventBus,
        jobs: JobRegistry,
        clock: Clock,
        settings: Settings,
        worker_id: str,
        on_finished: Callable[[str], None] = _nothing,
    ) -> None:
        self.store = store
        self.events = events
        self.jobs = jobs
        self.clock = clock
        self.settings = settings
        self.worker_id = worker_id
        # Read for every step and renewal: kept as plain attributes.
        self.lease_duration = settings.lease_duration
        self._renew_interval = settings.lease_renew_interval
        self._preserve_steps = settings.preserve_steps
        self._on_finished = on_finished
        #: Runs this process executes now, by id.
        self.active: dict[str, RunContext] = {}
        #: Set while the worker stops: each run is handed back at its next step boundary.
        self.stopping = False
        #: The event loop the runs execute in, once one has (see ``bind_loop``).
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lease_until: dict[str, str] = {}
        self._strikes: dict[str, int] = {}  # run id -> storage failures in a row
        self._yielded = time.monotonic()  # when the runtime last gave the event loop a turn

    def now(self) -> str:
        """The clock's time as the database stores it."""
        return iso(self.clock())

    def bind_loop(self) -> None:
        """Runs execute in the running event loop: other threads reach them through it."""
        self.loop = asyncio.get_running_loop()

    def call_in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` in the runtime's event loop (see :func:`call_in`); nothing if no
        run has executed in a loop yet."""
        if self.loop is not None:
            call_in(self.loop, fn, *args)

    # -- claiming -------------------------------------------------------------------------

    def claim(self) -> Claimed | None:
        """Lease the oldest claimable run of a registered job; None when there is none."""
        names = self.jobs.names
        if not names:
            return None
        now = self.clock()
        lease_until = iso(add_seconds(now, self.lease_duration))
        claimed = self.store.claim(owner=self.worker_id, job_names=names, now=iso(now), lease_until=lease_until)
        if claimed is not None:
            self._lease_until[claimed.run.id] = lease_until
        return claimed

    async def process_one(self) -> bool:
        """Claim one run and execute it now; False if there was nothing to claim."""
        if self.loop is None:
            self.bind_loop()
        claimed = self.claim()
        if claimed is None:
            return False
        await self.execute(claimed)
        return True

    # -- executing a run ------------------------------------------------------------------

    async def execute(self, claimed: Claimed) -> None:
        """Execute a claimed run to its end (see the module docstring)."""
        run = claimed.run
        ctx = RunContext(self, claimed, self.jobs[run.job_name])
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
                worker_id=self.worker_id,
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
            self._on_finished(run.id)

    async def _run_job(self, ctx: RunContext, started: float) -> None:
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
        except StopRequested:
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
        if self._write_end(ctx, self.store.complete_run, output_json=output_json):
            ctx.emit("run:complete", output=json.loads(output_json), duration=time.monotonic() - started)

    async def execute_step(self, ctx: RunContext, name: str, fn: Callable[[], Any]) -> Any:
        """Execute a step that has no stored result, store its result (fenced) and return it."""
        await self.maybe_yield()
        if self.stopping:
            raise StopRequested()
        if ctx.cancel_reason is not None:
            raise asyncio.CancelledError()
        if time.monotonic() >= ctx.lease_deadline:
            self._confirm_lease(ctx)
        index = ctx.next_index
        ctx.next_index += 1
        started_at = self.now()
        ctx.current = StepInFlight(index, name, started_at)
        ctx.emit("step:start", step_name=name, step_index=index)
        t0 = time.monotonic()
        try:
            value = fn()
            if inspect.isawaitable(value):
                value = await value
        except BaseException as exc:
            if not isinstance(exc, _NOT_FAILURES):
                ctx.failure = StepFailure(index, name, started_at, exc)
            raise
        if ctx.cancel_reason is not None:
            # Cancelled while a synchronous step ran: its result is never stored.
            raise asyncio.CancelledError()
        try:
            # Scalars go straight to the encoder; containers are checked for non-string keys
            # and nesting first, in one walk (JSON would turn a key 1 into "1", and
            # {1: "a", "1": "b"} would lose a value). The size is the encoded text's length.
            output_json = (
                to_json(value) if type(value) in SCALARS else check_json(value, "the result", "MAX_STEP_RESULT_BYTES")
            )
            if len(output_json) > MAX_STEP_RESULT_BYTES:
                raise too_large("the result", len(output_json), "MAX_STEP_RESULT_BYTES")
        except ValidationError as err:
            refused = ValidationError(f"step {name!r} returned a value durably cannot store: {err}")
            ctx.failure = StepFailure(index, name, started_at, refused)
            raise refused from None
        except (TypeError, ValueError) as err:
            refused = ValidationError(
                f"step {name!r} returned a value that is not JSON data ({type(value).__name__}: {err}); "
                "return dicts, lists, strings, numbers, booleans or None"
            )
            ctx.failure = StepFailure(index, name, started_at, refused)
            raise refused from None
        if not isinstance(value, _PLAIN):
            # Hand back what a resumed run would get: the value as JSON gives it back.
            value = json.loads(output_json)
        if not self.store.complete_step(
            ctx.lease,
            index=index,
            name=name,
            output_json=output_json,
            started_at=started_at,
            now=self.now(),
        ):
            self._raise_lost(ctx)
        if self._strikes:
            self._strikes.pop(ctx.run_id, None)
        ctx.current = None
        ctx.emit("step:complete", step_name=name, step_index=index, output=value, duration=time.monotonic() - t0)
        return value

    # -- how runs end -----------------------------------------------------------------------

    def _fail(self, ctx: RunContext, exc: BaseException) -> None:
        failure = ctx.failure if ctx.failure is not None and _caused_by(exc, ctx.failure.exc) else None
        error = describe(exc)
        step = None
        if failure is not None:
            step = StepEnd(failure.index, failure.name, "failed", describe(failure.exc), failure.started_at)
        failed_step = step.name if step else None
        if self._write_end(ctx, self.store.fail_run, error=error, failed_step=failed_step, step=step):
            if step is not None:
                ctx.emit("step:fail", step_name=step.name, step_index=step.index, error=step.error)
            ctx.emit("run:fail", error=error, failed_step=failed_step)

    def _write_end(self, ctx: RunContext, write: Callable[..., bool], **values: Any) -> bool:
        """Write how the run ended with ``write`` (``Store.complete_run`` or ``fail_run``),
        fenced by the run's lease, with its buffered progress and logs; True once it is
        written. A failed write is a storage failure (the run is handed back, or failed
        after repeated failures); a refused one means the run was cancelled or taken."""
        try:
            ok = write(ctx.lease, now=self.now(), pending=ctx.pending, preserve_steps=self._preserve_steps, **values)
        except StorageError as exc:
            self._storage_failed(ctx, exc)
            return False
        if not ok:
            self._lost(ctx)
            return False
        ctx.pending.clear()
        return True

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
        current = ctx.current
        step = StepEnd(current.index, current.name, "cancelled", None, current.started_at) if current else None
        try:
            self.store.record_cancelled(
                ctx.lease,
                step=step,
                now=self.now(),
                pending=ctx.pending,
                preserve_steps=self._preserve_steps,
            )
        except StorageError as exc:
            self.report(exc, "storing the cancelled step", ctx)
        if current is not None:
            ctx.emit("step:cancel", step_name=current.name, step_index=current.index)
        if ctx.cancel_reason == "external":
            ctx.emit("run:cancel")  # the canceller was another process; tell our listeners too

    def _release(self, ctx: RunContext) -> None:
        try:
            self.store.release(ctx.lease, now=self.now(), pending=ctx.pending)
        except StorageError as exc:
            self.report(exc, "handing the lease back (the run resumes when the lease expires)", ctx)

    def _cancelled_elsewhere(self, ctx: RunContext) -> bool:
        """After a fenced write changed nothing: was the run cancelled while we held it (or
        else taken by another worker)?"""
        state = self.store.run_state(ctx.run_id)
        return state is not None and state.status == "cancelled" and state.generation == ctx.generation

    def _lost(self, ctx: RunContext) -> None:
        """A fenced write changed nothing: find out whether the run was cancelled or taken."""
        if self._cancelled_elsewhere(ctx):
            ctx.cancel_reason = ctx.cancel_reason or "external"
            self._record_cancel(ctx)
        else:
            self._lease_lost(ctx, "the run's lease is no longer held by this worker")

    def _raise_lost(self, ctx: RunContext) -> None:
        if self._cancelled_elsewhere(ctx):
            ctx.cancel_reason = ctx.cancel_reason or "external"
            raise asyncio.CancelledError()
        ctx.cancel_reason = "lease-lost"
        raise LeaseLostError(
            f"run {ctx.run_id}: this worker lost its lease (generation {ctx.generation}); "
            "the step's result was not stored and another worker owns the run now"
        )

    def _lease_lost(self, ctx: RunContext, why: str) -> None:
        ctx.emit(
            "worker:error", error=f"LeaseLostError: {why}", context="lease lost; nothing more is written for this run"
        )

    def _confirm_lease(self, ctx: RunContext) -> None:
        """Renew the lease now, before a step starts, or raise if it is gone."""
        now = self.clock()
        if self.store.renew(
            ctx.lease,
            now=iso(now),
            lease_until=iso(add_seconds(now, self.lease_duration)),
            pending=None,
        ):
            ctx.lease_deadline = time.monotonic() + self.lease_duration
            return
        self._raise_lost(ctx)

    def _storage_failed(self, ctx: RunContext, exc: StorageError) -> None:
        """The database failed mid-run: nothing half-written (the transaction rolled back).
        Hand the run back so it is retried, by this worker or another; but a run whose
        writes fail time after time (a result too big to store, a disk that stays full) is
        failed with the error rather than retried forever."""
        strikes = self._strikes[ctx.run_id] = self._strikes.get(ctx.run_id, 0) + 1
        if strikes >= MAX_STORAGE_STRIKES and not exc.transient:
            self._strikes.pop(ctx.run_id, None)
            self.report(exc, f"a database write failed {strikes} times in a row; failing the run", ctx)
            error = (
                f"StorageError: {exc} (the database refused this run's writes {strikes} times in a "
                "row, so it was failed instead of retried again; retrigger it once the cause is fixed)"
            )
            failed_step = ctx.current.name if ctx.current else None
            try:
                if self.store.fail_run(ctx.lease, now=self.now(), error=error, failed_step=failed_step):
                    ctx.emit("run:fail", error=error, failed_step=failed_step)
                    return
            except StorageError:
                pass
            self._release(ctx)
            return
        self.report(exc, "a database write failed; the run is handed back and will be retried", ctx)
        self._release(ctx)

    def fail_claimed(self, claimed: Claimed, exc: Exception) -> None:
        """Fail a run whose execution raised out of the runtime itself (fenced: only if this
        worker still holds it). Retried, it would most likely raise again, one lease
        duration later, for ever."""
        run = claimed.run
        error = (
            f"durably could not execute this run ({describe(exc)}); it was failed so that the "
            "worker goes on. Retrigger it once the cause is fixed"
        )
        try:
            if self.store.fail_run(claimed.lease, now=self.now(), error=error):
                self.events.emit("run:fail", run.id, run.job_name, run.labels, error=error, failed_step=None)
        except Exception as err:
            logger.error("durably: failing run %s after an internal error: %r", run.id, err)

    def report(self, exc: BaseException, context: str, ctx: RunContext | None = None) -> None:
        """A failure the worker goes on after: logged, and emitted as ``worker:error``."""
        error = describe(exc)  # never raises, whatever the exception's __str__ does
        logger.error("durably: %s: %s", context, error)
        run = ctx.run if ctx else None
        self.events.emit(
            "worker:error",
            run.id if run else None,
            run.job_name if run else None,
            run.labels if run else None,
            error=error,
            context=context,
        )

    # -- leases, flushes, interruptions -------------------------------------------------------

    def _schedule_renew(self, ctx: RunContext) -> None:
        loop = asyncio.get_running_loop()
        ctx.renew_handle = loop.call_later(self._renew_interval, self._renew, ctx)

    def _renew(self, ctx: RunContext) -> None:
        """Extend the lease (fenced) and write buffered progress and logs; every
        ``lease_renew_interval`` while the run executes. A refused renewal means the run
        was cancelled elsewhere or the lease was taken over: the run is interrupted."""
        ctx.renew_handle = None
        if ctx.ended:
            return
        now = self.clock()
        lease_until = iso(add_seconds(now, self.lease_duration))
        try:
            ok = self.store.renew(ctx.lease, now=iso(now), lease_until=lease_until, pending=ctx.pending)
            cancelled = not ok and self._cancelled_elsewhere(ctx)
        except StorageError as exc:
            self.report(exc, "renewing a lease (will try again)", ctx)
            self._schedule_renew(ctx)
            return
        if ok:
            ctx.pending.clear()
            ctx.lease_deadline = time.monotonic() + self.lease_duration
            ctx.emit(
                "run:lease-renewed",
                worker_id=self.worker_id,
                lease_generation=ctx.generation,
                lease_expires_at=lease_until,
            )
            self._schedule_renew(ctx)
            return
        self.interrupt(ctx, "external" if cancelled else "lease-lost")

    def interrupt(self, ctx: RunContext, reason: str) -> None:
        """Interrupt a run this process executes: ``"user"`` or ``"external"`` (cancelled
        here or elsewhere), ``"stop"`` (the worker stops), ``"lease-lost"``."""
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

    def interrupt_run(self, run_id: str, reason: str) -> None:
        """Interrupt the run if this process executes it; from any thread."""
        ctx = self.active.get(run_id)
        if ctx is not None:
            self.call_in_loop(self.interrupt, ctx, reason)

    def interrupt_all(self, reason: str) -> None:
        """Interrupt every run this process executes (in the runtime's event loop)."""
        for ctx in list(self.active.values()):
            self.interrupt(ctx, reason)

    def schedule_flush(self, ctx: RunContext) -> None:
        """Write the run's buffered progress and logs within ``FLUSH_DELAY`` seconds, unless
        a commit carries them first."""
        if ctx.flush_handle is None:
            loop = asyncio.get_running_loop()
            ctx.flush_handle = loop.call_later(FLUSH_DELAY, self._flush, ctx)

    def _flush(self, ctx: RunContext) -> None:
        ctx.flush_handle = None
        if ctx.pending.empty() or self.active.get(ctx.run_id) is not ctx:
            return
        try:
            if self.store.flush(ctx.lease, now=self.now(), pending=ctx.pending):
                ctx.pending.clear()
        except StorageError as exc:
            self.report(exc, "storing progress and logs (will try again with the next commit)", ctx)

    async def maybe_yield(self) -> None:
        """Give the event loop a turn if the runtime has kept it for YIELD_EVERY seconds.
        Steps that never suspend (quick synchronous bodies) would otherwise hold it for a
        whole run or more, and with it every other task and timer: in the browser, the
        page's requests, a cancel among them."""
        now = time.monotonic()
        if now - self._yielded >= YIELD_EVERY:
            await asyncio.sleep(0)
            self._yielded = time.monotonic()


def call_in(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """Call ``fn(*args)`` in ``loop``: now if this thread runs it, else as soon as that loop
    can (a trigger or a cancel from another thread). Nothing if the loop is closed."""
    if loop.is_closed():
        return
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        fn(*args)
    else:
        loop.call_soon_threadsafe(fn, *args)


def _caused_by(exc: BaseException, origin: BaseException) -> bool:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 50:
        if current is origin:
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False
