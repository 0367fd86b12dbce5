"""The records the API returns (runs, steps, logs, workers, status) as frozen dataclasses,
and the statuses a run and a step can have.

The status literals are the one source of the statuses: the constants below are read from
them, and tests check the schema's ``CHECK`` constraints against these constants.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal, get_args

from .clock import iso

RunStatus = Literal["pending", "leased", "waiting", "completed", "failed", "cancelled"]
#: A step is stored with the status its run ends with, or ``waiting`` while the run waits at
#: it (a sleep, a signal, the backoff before its next attempt).
StepStatus = Literal["completed", "failed", "cancelled", "waiting"]
Disposition = Literal["created", "idempotent", "coalesced"]
#: What a ``waiting`` run waits for: the backoff before a retry, a durable sleep, a signal.
WaitingFor = Literal["retry", "sleep", "signal"]
#: How ``Durably.signal`` took a signal: ``delivered`` (the run was waiting for it and is
#: due now), ``stored`` (kept until the run waits for that name), ``duplicate`` (the same
#: ``signal_id`` and payload were sent before: nothing changed).
SignalDisposition = Literal["delivered", "stored", "duplicate"]
#: What a schedule does with the slots it missed while no worker ran (``@job(catch_up=...)``).
CatchUp = Literal["latest", "all", "none"]

#: Every status of a run, in the order a run goes through them.
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
#: The statuses of a run that is over; a step that ends a run is stored with one of these.
FINISHED: tuple[RunStatus, ...] = ("completed", "failed", "cancelled")
#: The statuses of a run still to be executed: the others.
ACTIVE: tuple[RunStatus, ...] = tuple(s for s in RUN_STATUSES if s not in FINISHED)
WAITING_FOR: tuple[WaitingFor, ...] = get_args(WaitingFor)
CATCH_UP: tuple[CatchUp, ...] = get_args(CatchUp)


#: Each record class's field names, in order, and those that hold timestamps (annotated
#: ``datetime``): ``dataclasses.fields`` builds its answer on every call, and ``to_dict``
#: runs for every run a page or a CLI reads.
_FIELD_NAMES: dict[type, tuple[tuple[str, ...], tuple[str, ...]]] = {}


class _Record:
    def to_dict(self) -> dict[str, Any]:
        """Plain data (timestamps as ISO-8601 UTC text), for JSON and the browser protocol."""
        cls = type(self)
        known = _FIELD_NAMES.get(cls)
        if known is None:
            all_fields = fields(self)  # type: ignore[arg-type]
            times = tuple(f.name for f in all_fields if str(f.type).startswith("datetime"))
            known = _FIELD_NAMES[cls] = (tuple(f.name for f in all_fields), times)
        names, times = known
        data = {name: getattr(self, name) for name in names}
        for name in times:
            value = data[name]
            if value is not None:
                data[name] = iso(value)
        return data


@dataclass(frozen=True)
class Run(_Record):
    """One execution of a job with one input.

    ``progress`` is ``None`` or ``{"current": int, "total": int | None, "message": str | None}``.
    ``disposition`` is set on the result of ``trigger``: ``"created"`` for a new run,
    ``"idempotent"`` when the idempotency key matched an existing run, ``"coalesced"`` when
    ``coalesce="skip"`` returned the pending run of the same concurrency key.

    ``decode_error`` is None, or says which stored fields could not be read (an older
    durably or a hand edit stored JSON that is invalid, nested deeper than
    ``limits.MAX_DEPTH`` or holding a number that is not finite, or a timestamp that is
    not one): those fields read as None
    (``labels`` as ``{}``) and the rest of the run as stored. A worker that claims such a
    run fails it with this error instead of executing it.

    A ``waiting`` run holds no lease and no worker slot: ``waiting_for`` says what it waits
    for (``"retry"``, ``"sleep"`` or ``"signal"``), ``wait_step`` at which step (the signal's
    name for a signal; None for a job-level retry after the job raised between steps), and
    ``wake_at`` when it is due (None: only a signal wakes it). These three are None unless
    the run is waiting. ``attempt`` is the job-level attempt the run is on (1, then 2 after a
    ``@job(retries=...)`` retry, ...); ``deadline_at`` is set at the run's first start when
    its job has a ``timeout``.
    """

    id: str
    job_name: str
    status: RunStatus
    input: Any
    output: Any
    error: str | None
    failed_step: str | None
    labels: dict[str, str]
    progress: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    idempotency_key: str | None = None
    concurrency_key: str | None = None
    completed_steps: int = 0
    retrigger_of: str | None = None
    disposition: Disposition | None = field(default=None, compare=False)
    decode_error: str | None = None
    wake_at: datetime | None = None
    waiting_for: WaitingFor | None = None
    wait_step: str | None = None
    attempt: int = 1
    deadline_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True)
class AttemptRecord(_Record):
    """One failed attempt of a step (``StepRecord.attempts``) or of a job between steps.

    ``attempt`` counts the step's attempts within the job-level attempt ``run_attempt``
    (both from 1); ``error`` is what the attempt raised, as stored."""

    run_attempt: int
    attempt: int
    step_name: str | None
    step_index: int | None
    error: str
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class StepRecord(_Record):
    """A step of a run, as stored: finished, or ``waiting`` (a sleep, a signal, the backoff
    before its next attempt) until ``wake_at`` (None: until a signal comes). ``attempts``
    are its failed attempts, oldest first (empty when its first attempt succeeded). A step
    whose failure the job caught is listed as ``failed`` with its attempts until a later
    execution of the run completes it."""

    run_id: str
    name: str
    index: int
    status: StepStatus
    output: Any
    error: str | None
    started_at: datetime
    completed_at: datetime | None
    #: None, or why ``output`` or a timestamp (then None) could not be read: see
    #: ``Run.decode_error``.
    decode_error: str | None = None
    wake_at: datetime | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["attempts"] = [a.to_dict() for a in self.attempts]
        return data


@dataclass(frozen=True)
class SignalRecord(_Record):
    """A signal as ``Durably.signal`` stored it (``disposition`` says how it was taken)."""

    run_id: str
    name: str
    signal_id: str
    payload: Any
    created_at: datetime
    disposition: SignalDisposition


@dataclass(frozen=True)
class ScheduleRecord(_Record):
    """A scheduled job as the workers registered it (``durably_schedules``): its cron
    expression, time zone and catch-up policy, the last slot a run was created for and the
    next one (UTC), and when the row last changed."""

    job_name: str
    cron: str
    timezone: str
    catch_up: CatchUp
    last_slot: datetime | None
    next_at: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True)
class LogRecord(_Record):
    """One ``step.log`` line, persisted with its run."""

    id: int
    run_id: str
    step_name: str | None
    level: Literal["info", "warn", "error"]
    message: str
    data: Any
    created_at: datetime
    #: None, or why ``data`` or ``created_at`` (then None) could not be read: see
    #: ``Run.decode_error``.
    decode_error: str | None = None


@dataclass(frozen=True)
class WorkerRecord(_Record):
    """A started worker as it recorded itself in the database (``durably_workers``).

    ``host`` is the machine's name (``"browser"`` for the browser's worker), ``pid`` its
    process id (None in the browser), ``jobs`` the job names it registers, ``version``
    its durably version, ``concurrency`` its ``max_concurrent_runs``. A timestamp that
    cannot be read (a hand edit) is None; such a worker counts as dead."""

    worker_id: str
    host: str
    pid: int | None
    jobs: list[str]
    version: str
    concurrency: int
    started_at: datetime
    heartbeat_at: datetime


@dataclass(frozen=True)
class Status:
    """What ``Durably.status()`` sees in the database at ``checked_at``.

    ``workers``: the live workers (a heartbeat within ``limits.WORKER_STALE_AFTER``) with
    their jobs; ``stale_workers``: those not heard from since, not yet forgotten;
    ``runs``: the number of runs of each status (all six, zeros included);
    ``unhandled``: job name -> its runs due to be executed (pending, or waiting and due),
    for each job that no live worker registers: runs nobody will execute until such a
    worker starts. ``healthy`` is true
    when ``unhandled`` is empty (what ``durably status --check`` checks)."""

    workers: list[WorkerRecord]
    stale_workers: list[WorkerRecord]
    runs: dict[str, int]
    unhandled: dict[str, int]
    checked_at: datetime

    @property
    def healthy(self) -> bool:
        return not self.unhandled

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as the browser's ``getStatus`` and ``durably status --json`` give it."""
        return {
            "workers": [w.to_dict() for w in self.workers],
            "stale_workers": [w.to_dict() for w in self.stale_workers],
            "runs": dict(self.runs),
            "unhandled": dict(self.unhandled),
            "healthy": self.healthy,
            "checked_at": iso(self.checked_at),
        }
