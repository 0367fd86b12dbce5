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
* the lease was lost (expired and taken over): nothing more is written;
* the run waits (a retry's backoff, ``step.sleep``, ``step.wait_for_signal``): the wait is
  stored with the step it waits at, the run gives its slot back (status ``waiting``) and the
  job is unwound; a worker's claim resumes it when it is due, replaying its stored steps;
* the run passes its deadline (``@job(timeout=...)``): it fails with ``RunTimeoutError``,
  naming the step it was in.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .clock import Clock, add_seconds, iso, now_text, parse_iso
from .errors import LeaseLostError, RunTimeoutError, SignalTimeoutError, StorageError, ValidationError
from .events import EventBus
from .jobs import JobRegistry
from .jsondata import SCALARS, check_json, loads_stored, to_json, too_large
from .limits import MAX_STEP_RESULT_BYTES
from .retries import Retry
from .settings import Settings
from .steps import RunContext, Step, StepFailure, StepInFlight, Suspension
from .store import Claimed, NewAttempt, StepEnd, Store, StoredStep, WaitingStep
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
#: How long a run claimed past its deadline may take to replay its stored steps before the
#: deadline's timer interrupts it (the step it waited in fails it first, naming that step).
PAST_DEADLINE_GRACE = 1.0

_PLAIN = (str, int, float, bool, type(None))


class StopRequested(BaseException):
    """Raised at a step boundary when the worker is stopping. A BaseException so that a
    job's ``except Exception`` does not swallow it."""


class WaitRequested(BaseException):
    """Raised once the run's wait is stored (a retry's backoff, a sleep, a signal), to unwind
    the job: the run is over in this process until a worker claims it again. A
    BaseException so that a job's ``except Exception`` does not swallow it."""


# What a step body may raise that is not the step failing: the run is stopped, cancelled
# or interrupted, and ends some other way (see Runtime._run_job).
_NOT_FAILURES = (StopRequested, WaitRequested, asyncio.CancelledError, KeyboardInterrupt, GeneratorExit)
# Failures that another attempt cannot change: a replay raises them again at once. A
# ValidationError is durably refusing what the run gave it (its input or output, a step
# name used twice, a step result it cannot store): another attempt would be refused the
# same way, after running the refused step's body again.
_NOT_RETRIED = (RunTimeoutError, SignalTimeoutError, ValidationError)


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
        #: ``iso(clock())``, with a faster formatter for the system clock.
        self.now = now_text(clock)
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
        # The one renewal timer (see _schedule_renew) and the loop it was set in.
        self._renew_timer: asyncio.TimerHandle | None = None
        self._renew_timer_loop: asyncio.AbstractEventLoop | None = None
        self._renew_timer_at = 0.0

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

    async def execute(self, claimed: Claimed, claim_next: bool = False) -> Claimed | None:
        """Execute a claimed run to its end (see the module docstring).

        ``claim_next``: when the job completes, claim the next run in the completion's
        transaction (``Store.complete_run_and_claim``: one commit instead of two for a
        worker that goes straight on) and return it, now leased to this worker, for the
        caller to execute (or hand back with ``release_claimed``). None otherwise."""
        run = claimed.run
        ctx = RunContext(self, claimed, self.jobs[run.job_name])
        ctx.claim_next = claim_next
        ctx.task = asyncio.current_task()
        self.active[run.id] = ctx
        # Renewal is a timer callback, not a task: the store is synchronous, and a task
        # costs several turns of the event loop to start and cancel (each ~0.15 ms in
        # Pyodide), which a short run would pay for nothing.
        self._schedule_renew(ctx)
        started = time.monotonic()
        try:
            lease_until = self._lease_until.pop(run.id, None)
            if self.events.wants("run:leased"):
                ctx.emit(
                    "run:leased",
                    worker_id=self.worker_id,
                    lease_generation=ctx.generation,
                    lease_expires_at=lease_until,
                    resumed_steps=len(ctx.done),
                )
            await self._run_job(ctx, started)
        except BaseException:
            if ctx.next_claimed is not None:  # claimed, but nobody will execute it now
                self.release_claimed(ctx.next_claimed)
                ctx.next_claimed = None
            raise
        finally:
            ctx.ended = True
            if ctx.deadline_handle is not None:
                ctx.deadline_handle.cancel()
            ctx.renew_at = None  # the shared renewal timer skips it from now on
            if ctx.flush_handle is not None:
                ctx.flush_handle.cancel()
            self.active.pop(run.id, None)
            self._on_finished(run.id)
        return ctx.next_claimed

    def release_claimed(self, claimed: Claimed) -> None:
        """Hand back a run claimed for this worker that it will not execute (it stops)."""
        self._lease_until.pop(claimed.run.id, None)
        try:
            self.store.release(claimed.lease, now=self.now(), pending=None)
        except StorageError as exc:
            self.report(exc, "handing a claimed run back (it resumes when its lease expires)")

    async def _run_job(self, ctx: RunContext, started: float) -> None:
        job = ctx.job
        try:
            if ctx.run.decode_error is not None:
                raise ValidationError(
                    f"run {ctx.run_id} cannot be executed: {ctx.run.decode_error}. Delete it and "
                    "trigger a new run with a good input"
                )
            if job.timeout is not None or ctx.deadline is not None:
                self._start_deadline(ctx)
            value = job.input_schema.load(ctx.run.input, f"the input of run {ctx.run_id}")
            result = await job.fn(Step(ctx), value)
            if ctx.suspended is not None:
                raise WaitRequested()  # the job caught it: the run waits all the same
            if ctx.cancel_reason is not None:
                raise asyncio.CancelledError()
            if ctx.deadline is not None:
                self.check_deadline(ctx, None)
            data = job.output_schema.dump(result, f"the output of job {job.name!r}")
            output_json = check_json(data, f"the output of job {job.name!r}", "MAX_OUTPUT_BYTES")
        except WaitRequested:
            self._waiting(ctx)
            return
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
            if ctx.suspended is not None:  # it waits: whatever unwinding the job raised is moot
                self._waiting(ctx)
                return
            self._fail(ctx, exc)
            return
        if ctx.claim_next and not self.stopping and self.jobs.names:
            completed = self._complete_and_claim(ctx, output_json)
        else:
            completed = self._write_end(ctx, self.store.complete_run, output_json=output_json)
        if completed and self.events.wants("run:complete"):
            ctx.emit("run:complete", output=json.loads(output_json), duration=time.monotonic() - started)

    def _complete_and_claim(self, ctx: RunContext, output_json: str) -> bool:
        """``_write_end`` of a completed run, with the claim of the next run in the same
        commit (kept in ``ctx.next_claimed``); a failed write is a storage failure, as
        there."""
        now = self.clock()
        lease_until = iso(add_seconds(now, self.lease_duration))
        try:
            ok, claimed = self.store.complete_run_and_claim(
                ctx.lease,
                now=iso(now),
                output_json=output_json,
                pending=ctx.pending,
                preserve_steps=self._preserve_steps,
                owner=self.worker_id,
                job_names=self.jobs.names,
                lease_until=lease_until,
            )
        except StorageError as exc:
            self._storage_failed(ctx, exc)
            return False
        if not ok:
            self._lost(ctx)
            return False
        ctx.pending.clear()
        if claimed is not None:
            self._lease_until[claimed.run.id] = lease_until
            ctx.next_claimed = claimed
        return True

    def _step_boundary(self, ctx: RunContext) -> None:
        """What every step checks before it starts (after ``maybe_yield``): stop, cancel, a
        wait already stored, and a lease that may have lapsed. Synchronous: a step's hot
        path pays no extra coroutine for it."""
        if self.stopping:
            raise StopRequested()
        if ctx.cancel_reason is not None:
            raise asyncio.CancelledError()
        if ctx.suspended is not None:
            raise WaitRequested()
        if time.monotonic() >= ctx.lease_deadline:
            self._confirm_lease(ctx)

    async def execute_step(
        self,
        ctx: RunContext,
        name: str,
        fn: Callable[[], Any],
        retries: Retry | None = None,
        timeout: float | None = None,
        stored: StoredStep | None = None,
    ) -> Any:
        """Execute a step that has no stored result, store its result (fenced) and return it.
        ``stored`` is the step's row if it has one (it waited for a retry): the step keeps
        its index. A failed attempt is recorded; with ``retries`` left the run waits for the
        next one (``WaitRequested``), else the error goes on to the job."""
        await self.maybe_yield()
        # _step_boundary(ctx), written out: this is every step's path.
        if self.stopping:
            raise StopRequested()
        if ctx.cancel_reason is not None:
            raise asyncio.CancelledError()
        if ctx.suspended is not None:
            raise WaitRequested()
        if time.monotonic() >= ctx.lease_deadline:
            self._confirm_lease(ctx)
        if stored is None:
            index = ctx.next_index
            ctx.next_index += 1
        else:
            index = stored.index
        started_at = self.now()
        if ctx.deadline is not None:
            self.check_deadline(ctx, StepInFlight(index, name, started_at))
        ctx.current = StepInFlight(index, name, started_at)
        wants = self.events.wants
        if wants("step:start"):
            ctx.emit("step:start", step_name=name, step_index=index)
        t0 = time.monotonic()
        try:
            value = fn()
            # A plain value (most synchronous steps) is not awaitable: skip isawaitable's ABC check.
            if type(value) not in SCALARS and inspect.isawaitable(value):
                if timeout is None:
                    value = await value
                else:
                    value = await _with_timeout(value, timeout, name)
        except BaseException as exc:
            if not isinstance(exc, _NOT_FAILURES):
                ctx.failure = StepFailure(index, name, started_at, exc)
                if ctx.timed_out is None:
                    self._step_failed(ctx, ctx.failure, retries)
            raise
        if ctx.cancel_reason is not None:
            # Cancelled while a synchronous step ran: its result is never stored.
            raise asyncio.CancelledError()
        if ctx.deadline is not None:
            self.check_deadline(ctx, ctx.current)
        try:
            # Scalars go straight to the encoder; containers are checked for non-string keys
            # and nesting first, in one walk (JSON would turn a key 1 into "1", and
            # {1: "a", "1": "b"} would lose a value). The size is the encoded text's length.
            kind = type(value)
            output_json = (
                str(value)  # an int's JSON text (bool is another type)
                if kind is int
                else to_json(value)
                if kind in SCALARS
                else check_json(value, "the result", "MAX_STEP_RESULT_BYTES")
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
        if stored is None:
            ok = self.store.complete_step(
                ctx.lease,
                index=index,
                name=name,
                output_json=output_json,
                started_at=started_at,
                now=self.now(),
            )
        else:
            ok = self.store.finish_step(
                ctx.lease,
                index=index,
                name=name,
                status="completed",
                output_json=output_json,
                error=None,
                started_at=started_at,
                now=self.now(),
                attempt=True,
            )
        if not ok:
            self._raise_lost(ctx)
        if self._strikes:
            self._strikes.pop(ctx.run_id, None)
        ctx.current = None
        if wants("step:complete"):
            ctx.emit("step:complete", step_name=name, step_index=index, output=value, duration=time.monotonic() - t0)
        return value

    def _step_failed(self, ctx: RunContext, failure: StepFailure, retries: Retry | None) -> None:
        """Record a step's failed attempt; with ``retries`` left (and the error worth one),
        emit ``step:retry`` and make the run wait for the next attempt (raises
        ``WaitRequested``). Otherwise return: the error goes on to the job."""
        name, exc = failure.name, failure.exc
        attempt = self.store.count_attempts(ctx.run_id, name, ctx.attempt) + 1
        failure.attempt = attempt
        failure.max_attempts = retries.max_attempts if retries is not None else None
        error = describe(exc)
        record = NewAttempt(ctx.attempt, attempt, name, failure.index, error, failure.started_at, self.now())
        if not self.store.record_attempt(ctx.lease, record):
            self._raise_lost(ctx)
        if retries is None or attempt >= retries.max_attempts:
            return
        if isinstance(exc, _NOT_RETRIED) or not retries.retries(exc):
            failure.max_attempts = attempt  # not worth another: this one was the last
            return
        delay = retries.delay(attempt)
        now = self.clock()
        wake_at = iso(add_seconds(now, delay))
        ctx.emit("step:retry", step_name=name, step_index=failure.index, attempt=attempt, delay=delay, error=error)
        ctx.current = None
        ctx.failure = None
        self.suspend(
            ctx,
            "retry",
            wake_at,
            name,
            WaitingStep(failure.index, name, failure.started_at, wake_at),
        )

    # -- runs that wait -----------------------------------------------------------------------

    def suspend(
        self,
        ctx: RunContext,
        waiting_for: str,
        wake_at: str | None,
        wait_step: str | None,
        step: WaitingStep | None,
        next_attempt: bool = False,
    ) -> None:
        """Store the run's wait (``Store.wait``; due at ``wake_at``, or at the run's deadline
        if that is earlier) and unwind the job with ``WaitRequested``."""
        run_wake = _earliest(wake_at, iso(ctx.deadline) if ctx.deadline is not None else None)
        if not self.store.wait(
            ctx.lease,
            now=self.now(),
            waiting_for=waiting_for,
            wake_at=run_wake,
            wait_step=wait_step,
            step=step,
            pending=ctx.pending,
            next_attempt=next_attempt,
        ):
            self._raise_lost(ctx)
        ctx.pending.clear()
        ctx.suspended = Suspension(waiting_for, wait_step, run_wake)
        raise WaitRequested()

    def _waiting(self, ctx: RunContext) -> None:
        wait = ctx.suspended
        assert wait is not None
        ctx.emit("run:wait", waiting_for=wait.waiting_for, wait_step=wait.wait_step, wake_at=wait.wake_at)

    async def sleep_step(
        self,
        ctx: RunContext,
        name: str,
        stored: StoredStep | None,
        *,
        seconds: float | None = None,
        until: datetime | None = None,
    ) -> None:
        """``step.sleep``/``step.sleep_until``: complete the step if its wake-up time (stored
        with it the first time) has come, else make the run wait until then."""
        if stored is not None and stored.status == "completed":
            return
        await self.maybe_yield()
        self._step_boundary(ctx)
        now = self.clock()
        started_at = iso(now)
        if stored is not None and stored.wake_at is not None:
            index, wake = stored.index, parse_iso(stored.wake_at)
        else:
            index = ctx.next_index if stored is None else stored.index
            if stored is None:
                ctx.next_index += 1
            wake = add_seconds(now, seconds) if seconds is not None else until
        assert wake is not None
        if ctx.deadline is not None:
            self.check_deadline(ctx, StepInFlight(index, name, started_at))
        if stored is None:
            ctx.emit("step:start", step_name=name, step_index=index)
        if wake <= now:
            if stored is None:
                ok = self.store.complete_step(
                    ctx.lease, index=index, name=name, output_json="null", started_at=started_at, now=iso(now)
                )
            else:
                ok = self.store.finish_step(
                    ctx.lease,
                    index=index,
                    name=name,
                    status="completed",
                    output_json="null",
                    error=None,
                    started_at=started_at,
                    now=iso(now),
                )
            if not ok:
                self._raise_lost(ctx)
            ctx.emit("step:complete", step_name=name, step_index=index, output=None, duration=0.0)
            return
        wake_at = iso(wake)
        self.suspend(ctx, "sleep", wake_at, name, WaitingStep(index, name, started_at, wake_at))

    async def signal_step(self, ctx: RunContext, name: str, stored: StoredStep | None, timeout: float | None) -> Any:
        """``step.wait_for_signal``: the signal's payload once it came (stored as the step's
        result); ``SignalTimeoutError`` once the wait's deadline passed (stored too, so a
        replay raises it again); else the run waits for the signal."""
        if stored is not None and stored.status == "completed":
            return loads_stored(stored.output_json)
        if stored is not None and stored.status == "failed":
            exc = SignalTimeoutError(_after_colon(stored.error), run_id=ctx.run_id, name=name)
            ctx.failure = StepFailure(stored.index, name, self.now(), exc)
            raise exc
        await self.maybe_yield()
        self._step_boundary(ctx)
        now = self.clock()
        started_at = iso(now)
        if stored is not None:
            index, deadline = stored.index, stored.wake_at
        else:
            index = ctx.next_index
            ctx.next_index += 1
            deadline = None if timeout is None else iso(add_seconds(now, timeout))
            ctx.emit("step:start", step_name=name, step_index=index)
        if ctx.deadline is not None:
            self.check_deadline(ctx, StepInFlight(index, name, started_at))
        message = (
            f"run {ctx.run_id} waited for signal {name!r} until {deadline} (its timeout) and none came"
            if deadline is not None
            else ""
        )
        run_wake = _earliest(deadline, iso(ctx.deadline) if ctx.deadline is not None else None)
        found = self.store.await_signal(
            ctx.lease,
            step=WaitingStep(index, name, started_at, deadline),
            run_wake_at=run_wake,
            timeout_error=f"SignalTimeoutError: {message}",
            now=iso(now),
            pending=ctx.pending,
        )
        if found.outcome == "lost":
            self._raise_lost(ctx)
        ctx.pending.clear()
        if found.outcome == "received":
            payload = loads_stored(found.payload_json)
            ctx.emit("step:complete", step_name=name, step_index=index, output=payload, duration=0.0)
            return payload
        if found.outcome == "timeout":
            exc = SignalTimeoutError(message, run_id=ctx.run_id, name=name)
            ctx.failure = StepFailure(index, name, started_at, exc)
            ctx.emit("step:fail", step_name=name, step_index=index, error=found.error)
            raise exc
        ctx.suspended = Suspension("signal", name, run_wake)
        raise WaitRequested()

    # -- deadlines ------------------------------------------------------------------------------

    def _start_deadline(self, ctx: RunContext) -> None:
        """At the run's start: know its deadline (the first start plus the job's timeout,
        stored at that first start) and arm a timer that interrupts the step in flight."""
        if ctx.deadline is None:
            timeout = ctx.job.timeout
            started = ctx.run.started_at
            assert timeout is not None and started is not None
            deadline = add_seconds(started, timeout)
            if not self.store.set_deadline(ctx.lease, deadline_at=iso(deadline), now=self.now()):
                self._raise_lost(ctx)
            ctx.deadline = deadline
        delay = (ctx.deadline - self.clock()).total_seconds()
        if delay <= 0:
            # Claimed past its deadline (it woke at it): the replay reaches the step the run
            # waited in, whose check fails the run naming that step, whatever the machine's
            # speed. The timer only catches a job that awaits something outside its steps.
            delay = PAST_DEADLINE_GRACE
        loop = asyncio.get_running_loop()
        ctx.deadline_handle = loop.call_later(delay, self._deadline_passed, ctx)

    def _timeout_error(self, ctx: RunContext, step: StepInFlight | None) -> RunTimeoutError:
        deadline = ctx.deadline
        assert deadline is not None
        where = f"in step {step.name!r}" if step is not None else "after its last step"
        timeout = ctx.job.timeout
        since = f" ({timeout:g} s after its first start)" if timeout is not None else ""
        return RunTimeoutError(
            f"run {ctx.run_id} of job {ctx.run.job_name!r} passed its deadline {iso(deadline)}{since} {where}",
            run_id=ctx.run_id,
            failed_step=step.name if step is not None else None,
        )

    def check_deadline(self, ctx: RunContext, step: StepInFlight | None) -> None:
        """Raise ``RunTimeoutError`` (and remember it: the run fails whatever the job does
        next) if the run's deadline has passed; ``step`` is the step it is in."""
        if ctx.timed_out is None:
            assert ctx.deadline is not None
            if self.clock() < ctx.deadline:
                return
            ctx.timed_out = self._timeout_error(ctx, step)
            if step is not None:
                ctx.failure = StepFailure(step.index, step.name, step.started_at, ctx.timed_out)
        raise ctx.timed_out

    def _deadline_passed(self, ctx: RunContext) -> None:
        ctx.deadline_handle = None
        if ctx.ended or ctx.timed_out is not None or ctx.suspended is not None:
            return
        if ctx.deadline is not None and self.clock() < ctx.deadline:  # the timer ran early
            delay = (ctx.deadline - self.clock()).total_seconds()
            ctx.deadline_handle = asyncio.get_running_loop().call_later(delay, self._deadline_passed, ctx)
            return
        current = ctx.current
        ctx.timed_out = self._timeout_error(ctx, current)
        if current is not None:
            ctx.failure = StepFailure(current.index, current.name, current.started_at, ctx.timed_out)
        self.interrupt(ctx, "timeout")

    # -- how runs end -----------------------------------------------------------------------

    def _fail(self, ctx: RunContext, exc: BaseException) -> None:
        """The job raised (or passed its deadline): retry the run if its job's ``retries``
        allow, else fail it, storing the step that raised."""
        if ctx.timed_out is not None:
            exc = ctx.timed_out
        failure = ctx.failure if ctx.failure is not None and _caused_by(exc, ctx.failure.exc) else None
        policy = ctx.job.retries
        if (
            policy is not None
            and ctx.attempt < policy.max_attempts
            and policy.retries(exc)
            and not isinstance(exc, _NOT_RETRIED)
            and ctx.run.decode_error is None
        ):
            self._retry_run(ctx, exc, failure, policy)
            return
        error = describe(exc)
        if failure is not None and failure.max_attempts is not None and failure.attempt is not None:
            error += f" (attempt {failure.attempt} of {failure.max_attempts})"
        if policy is not None and policy.max_attempts > 1 and not isinstance(exc, _NOT_RETRIED):
            error += f" (run attempt {ctx.attempt} of {policy.max_attempts})"
        step = None
        if failure is not None:
            step = StepEnd(failure.index, failure.name, "failed", describe(failure.exc), failure.started_at)
        failed_step = step.name if step else None
        if self._write_end(ctx, self.store.fail_run, error=error, failed_step=failed_step, step=step):
            if step is not None:
                ctx.emit("step:fail", step_name=step.name, step_index=step.index, error=step.error)
            ctx.emit("run:fail", error=error, failed_step=failed_step)

    def _retry_run(self, ctx: RunContext, exc: BaseException, failure: StepFailure | None, policy: Retry) -> None:
        """A job-level retry: record the attempt (a step's was recorded when it failed), and
        make the run wait for its next attempt, which replays it from its first unfinished
        step (the failed step included)."""
        error = describe(exc)
        delay = policy.delay(ctx.attempt)
        wake_at = iso(add_seconds(self.clock(), delay))
        try:
            if failure is None:
                # This execution began when the run was claimed: the claim set updated_at.
                attempt = NewAttempt(ctx.attempt, ctx.attempt, None, None, error, iso(ctx.run.updated_at), self.now())
                if not self.store.record_attempt(ctx.lease, attempt):
                    self._lost(ctx)
                    return
            step = None if failure is None else WaitingStep(failure.index, failure.name, failure.started_at, wake_at)
            ctx.emit(
                "run:retry",
                attempt=ctx.attempt,
                delay=delay,
                error=error,
                failed_step=failure.name if failure is not None else None,
            )
            self.suspend(ctx, "retry", wake_at, step.name if step else None, step, next_attempt=True)
        except WaitRequested:
            self._waiting(ctx)
        except LeaseLostError as err:
            self._lease_lost(ctx, str(err))
        except asyncio.CancelledError:
            self._record_cancel(ctx)
        except StorageError as err:
            self._storage_failed(ctx, err)

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
        elif reason == "timeout":
            self._fail(ctx, ctx.timed_out or asyncio.CancelledError())
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
        """Renew the run's lease ``lease_renew_interval`` from now. One timer serves every
        run, set for the renewal due first: a run that ends before its renewal costs no
        timer of its own to set and cancel (in Pyodide each is a call into JS)."""
        loop = asyncio.get_running_loop()
        due = ctx.renew_at = loop.time() + self._renew_interval
        self._set_renew_timer(loop, due)

    def _set_renew_timer(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        """Make the renewal timer fire at ``due`` at the latest."""
        timer = self._renew_timer
        if timer is not None:
            if self._renew_timer_loop is loop and self._renew_timer_at <= due:
                return  # it fires first, and sets itself again for the later renewals
            timer.cancel()
        # call_later, not call_at: Pyodide's loop refuses a time already past ("Can't
        # schedule in the past"), which a renewal due while the loop was busy is.
        self._renew_timer = loop.call_later(max(0.0, due - loop.time()), self._renew_due)
        self._renew_timer_loop = loop
        self._renew_timer_at = due

    def _renew_due(self) -> None:
        """The renewal timer: renew each run whose renewal is due, then set the timer for
        the next one (none when no run executes)."""
        self._renew_timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for ctx in list(self.active.values()):
            due = ctx.renew_at
            if due is not None and due <= now and not ctx.ended:
                self._renew(ctx)
        later = [ctx.renew_at for ctx in self.active.values() if ctx.renew_at is not None and not ctx.ended]
        if later:
            self._set_renew_timer(loop, min(later))

    def _renew(self, ctx: RunContext) -> None:
        """Extend the lease (fenced) and write buffered progress and logs; every
        ``lease_renew_interval`` while the run executes. A refused renewal means the run
        was cancelled elsewhere or the lease was taken over: the run is interrupted."""
        ctx.renew_at = None
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
        here or elsewhere), ``"stop"`` (the worker stops), ``"lease-lost"``, ``"timeout"``
        (its deadline passed)."""
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


async def _with_timeout(awaitable: Any, timeout: float, name: str) -> Any:
    """Await a step's body for at most ``timeout`` seconds; past it the body is cancelled and
    the attempt fails with ``TimeoutError`` naming the step."""
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            return await awaitable
    except TimeoutError:
        if scope.expired():  # ours, not one the body raised itself
            raise TimeoutError(
                f"step {name!r} took longer than its timeout ({timeout:g} s) and was cancelled"
            ) from None
        raise


def _earliest(a: str | None, b: str | None) -> str | None:
    """The earlier of two stored timestamps (text order is time order); None is no time."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _after_colon(error: str | None) -> str:
    """A stored ``"Type: message"`` error's message."""
    return (error or "").partition(": ")[2] or (error or "")


def _caused_by(exc: BaseException, origin: BaseException) -> bool:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 50:
        if current is origin:
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False
