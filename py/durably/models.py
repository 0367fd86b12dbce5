"""Records returned by the API: runs, steps and logs, as frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

from .clock import iso, parse_iso
from .schemas import loads_stored

RunStatus = Literal["pending", "leased", "completed", "failed", "cancelled"]
StepStatus = Literal["completed", "failed", "cancelled"]
Disposition = Literal["created", "idempotent", "coalesced"]

FINISHED: tuple[str, ...] = ("completed", "failed", "cancelled")
ACTIVE: tuple[str, ...] = ("pending", "leased")


def _plain(value: Any) -> Any:
    return iso(value) if isinstance(value, datetime) else value


class _Record:
    def to_dict(self) -> dict[str, Any]:
        """Plain data (timestamps as ISO-8601 UTC text), for JSON and the browser protocol."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class Run(_Record):
    """One execution of a job with one input.

    ``progress`` is ``None`` or ``{"current": int, "total": int | None, "message": str | None}``.
    ``disposition`` is set on the result of ``trigger``: ``"created"`` for a new run,
    ``"idempotent"`` when the idempotency key matched an existing run, ``"coalesced"`` when
    ``coalesce="skip"`` returned the pending run of the same concurrency key.

    ``decode_error`` is None, or says which stored fields could not be read (an older
    durably or a hand edit stored JSON that is invalid, nested deeper than
    ``limits.MAX_DEPTH`` or holding a number that is not finite, or a timestamp that is not one): those fields read as None
    (``labels`` as ``{}``) and the rest of the run as stored. A worker that claims such a
    run fails it with this error instead of executing it.
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

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


# The number of completed steps: counted from the steps table while the run is unfinished
# (a step's commit does not touch the run's row), stored in the row once it has finished.
COMPLETED_STEPS_SQL = (
    "CASE WHEN durably_runs.completed_at IS NULL THEN (SELECT COUNT(*) FROM durably_steps s "
    "WHERE s.run_id = durably_runs.id AND s.status = 'completed') "
    "ELSE durably_runs.completed_steps END"
)

# Column order shared by every query that builds a Run (see Store). Every such query reads
# the table under its own name, durably_runs, which COMPLETED_STEPS_SQL refers to.
RUN_COLUMNS = (
    "id, job_name, status, input, output, error, failed_step, labels, progress, "
    "created_at, started_at, completed_at, updated_at, idempotency_key, concurrency_key, "
    f"{COMPLETED_STEPS_SQL}, retrigger_of, lease_generation, lease_owner"
)


def run_from_row(row: tuple, disposition: Disposition | None = None) -> Run:
    """A Run from a row of ``RUN_COLUMNS``. Never raises for what a row may hold: fields
    that cannot be read are replaced and named in ``decode_error``."""
    try:
        input = loads_stored(row[3])
        labels = loads_stored(row[7])
        if type(labels) is not dict:
            raise ValueError("labels are not an object")
        return Run(
            id=row[0],
            job_name=row[1],
            status=row[2],
            input=input,
            output=loads_stored(row[4]) if row[4] is not None else None,
            error=row[5],
            failed_step=row[6],
            labels=labels,
            progress=loads_stored(row[8]) if row[8] is not None else None,
            created_at=parse_iso(row[9]),  # type: ignore[arg-type]
            started_at=parse_iso(row[10]),
            completed_at=parse_iso(row[11]),
            updated_at=parse_iso(row[12]),  # type: ignore[arg-type]
            idempotency_key=row[13],
            concurrency_key=row[14],
            completed_steps=row[15],
            retrigger_of=row[16],
            disposition=disposition,
        )
    except Exception:  # the fast path assumes a well-formed row; read it field by field
        return _run_from_bad_row(row, disposition)


def _run_from_bad_row(row: tuple, disposition: Disposition | None) -> Run:
    problems: list[str] = []

    def value(index: int, name: str, read: Any, default: Any = None) -> Any:
        if row[index] is None and default is None:
            return None
        try:
            return read(row[index])
        except Exception as exc:
            problems.append(f"{name} ({type(exc).__name__}: {_short(exc)})")
            return default

    def labels(text: Any) -> dict[str, str]:
        found = loads_stored(text)
        if type(found) is not dict or not all(type(v) is str for v in found.values()):
            raise ValueError("not an object of strings")
        return found

    fields_read = dict(
        input=value(3, "input", loads_stored),
        output=value(4, "output", loads_stored),
        labels=value(7, "labels", labels, {}),
        progress=value(8, "progress", loads_stored),
        created_at=value(9, "created_at", parse_iso),
        started_at=value(10, "started_at", parse_iso),
        completed_at=value(11, "completed_at", parse_iso),
        updated_at=value(12, "updated_at", parse_iso),
    )
    return Run(
        id=row[0],
        job_name=row[1],
        status=row[2],
        error=row[5],
        failed_step=row[6],
        idempotency_key=row[13],
        concurrency_key=row[14],
        completed_steps=row[15],
        retrigger_of=row[16],
        disposition=disposition,
        decode_error="the stored " + ", ".join(problems) + " cannot be read" if problems else None,
        **fields_read,
    )


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


def read_time(text: Any, what: str) -> tuple[datetime | None, str | None]:
    """``(timestamp, None)``, or ``(None, why)`` when stored ``text`` is not a timestamp."""
    try:
        return parse_iso(text), None
    except Exception as exc:
        return None, f"the stored {what} cannot be read ({type(exc).__name__}: {_short(exc)})"


def read_stored(text: Any, what: str) -> tuple[Any, str | None]:
    """``(value, None)``, or ``(None, why)`` when stored JSON ``text`` cannot be read."""
    if text is None:
        return None, None
    try:
        return loads_stored(text), None
    except Exception as exc:
        return None, f"the stored {what} cannot be read ({type(exc).__name__}: {_short(exc)})"


@dataclass(frozen=True)
class StepRecord(_Record):
    """A finished step of a run, as stored."""

    run_id: str
    name: str
    index: int
    status: StepStatus
    output: Any
    error: str | None
    started_at: datetime
    completed_at: datetime
    #: None, or why ``output`` or a timestamp (then None) could not be read: see
    #: ``Run.decode_error``.
    decode_error: str | None = None


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
    ``runs``: the number of runs of each status (all five, zeros included);
    ``unhandled``: job name -> its pending runs, for each job that no live worker
    registers: runs nobody will execute until such a worker starts. ``healthy`` is true
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


def worker_from_row(row: tuple) -> WorkerRecord:
    jobs, _ = read_stored(row[3], "jobs")
    return WorkerRecord(
        worker_id=row[0],
        host=row[1],
        pid=row[2],
        jobs=[j for j in jobs if isinstance(j, str)] if isinstance(jobs, list) else [],
        version=row[4],
        concurrency=row[5],
        # An unreadable heartbeat (a hand edit) reads as None: that worker counts as dead.
        started_at=read_time(row[6], "started_at")[0],  # type: ignore[arg-type]
        heartbeat_at=read_time(row[7], "heartbeat_at")[0],  # type: ignore[arg-type]
    )
