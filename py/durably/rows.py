"""The columns the store reads, and how a row of them becomes a record.

Each list of columns is written once, here, beside the function that builds the record from
a row of exactly those columns, so the order is kept in one place. The builders never raise
for what a row may hold: a field that cannot be read is replaced and named in the record's
``decode_error`` (an older durably or a hand edit may have stored anything).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from .clock import parse_iso
from .jsondata import loads_stored, read_stored, short
from .models import (
    AttemptRecord,
    Disposition,
    LogRecord,
    Run,
    ScheduleRecord,
    SignalDisposition,
    SignalRecord,
    StepRecord,
    WorkerRecord,
)

# The number of completed steps: counted from the steps table while the run is unfinished
# (a step's commit does not touch the run's row), stored in the row once it has finished.
COMPLETED_STEPS_SQL = (
    "CASE WHEN durably_runs.completed_at IS NULL THEN (SELECT COUNT(*) FROM durably_steps s "
    "WHERE s.run_id = durably_runs.id AND s.status = 'completed') "
    "ELSE durably_runs.completed_steps END"
)

# Every query that builds a Run selects these, from the table under its own name,
# durably_runs, which COMPLETED_STEPS_SQL refers to.
RUN_COLUMNS = (
    "id, job_name, status, input, output, error, failed_step, labels, progress, "
    "created_at, started_at, completed_at, updated_at, idempotency_key, concurrency_key, "
    f"{COMPLETED_STEPS_SQL}, retrigger_of, wake_at, waiting_for, wait_step, attempt, deadline_at, "
    "lease_generation, lease_owner"
)
STEP_COLUMNS = "run_id, name, idx, status, output, error, started_at, completed_at, wake_at"
ATTEMPT_COLUMNS = "run_attempt, attempt, step_name, step_index, error, started_at, finished_at"
SIGNAL_COLUMNS = "run_id, name, signal_id, payload, created_at"
SCHEDULE_COLUMNS = "job_name, cron, timezone, catch_up, last_slot, next_at, updated_at"
LOG_COLUMNS = "id, run_id, step_name, level, message, data, created_at"
WORKER_COLUMNS = "worker_id, host, pid, jobs, version, concurrency, started_at, heartbeat_at"


def run_from_row(row: Sequence[Any], disposition: Disposition | None = None) -> Run:
    """A Run from a row of ``RUN_COLUMNS``."""
    (
        id, job_name, status, input, output, error, failed_step, labels, progress,
        created_at, started_at, completed_at, updated_at, idempotency_key, concurrency_key,
        completed_steps, retrigger_of, wake_at, waiting_for, wait_step, attempt, deadline_at,
        _generation, _owner,
    ) = row  # fmt: skip
    try:
        labels_value = loads_stored(labels)
        if type(labels_value) is not dict:
            raise ValueError("labels are not an object")
        return Run(
            id=id,
            job_name=job_name,
            status=status,
            input=loads_stored(input),
            output=loads_stored(output) if output is not None else None,
            error=error,
            failed_step=failed_step,
            labels=labels_value,
            progress=loads_stored(progress) if progress is not None else None,
            created_at=parse_iso(created_at),  # type: ignore[arg-type]  # NOT NULL in the schema
            started_at=parse_iso(started_at),
            completed_at=parse_iso(completed_at),
            updated_at=parse_iso(updated_at),  # type: ignore[arg-type]  # NOT NULL in the schema
            idempotency_key=idempotency_key,
            concurrency_key=concurrency_key,
            completed_steps=completed_steps,
            retrigger_of=retrigger_of,
            disposition=disposition,
            wake_at=parse_iso(wake_at),
            waiting_for=waiting_for,
            wait_step=wait_step,
            attempt=attempt,
            deadline_at=parse_iso(deadline_at),
        )
    except Exception:  # the fast path assumes a well-formed row; read it field by field
        return _run_from_bad_row(row, disposition)


def generation_of(row: Sequence[Any]) -> int:
    """The lease generation in a row of ``RUN_COLUMNS`` (a Run does not carry it)."""
    return int(row[-2])


def _run_from_bad_row(row: Sequence[Any], disposition: Disposition | None) -> Run:
    problems: list[str] = []

    def value(index: int, name: str, read: Callable[[Any], Any], default: Any = None) -> Any:
        if row[index] is None and default is None:
            return None
        try:
            return read(row[index])
        except Exception as exc:
            problems.append(f"{name} ({type(exc).__name__}: {short(exc)})")
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
        wake_at=value(17, "wake_at", parse_iso),
        deadline_at=value(21, "deadline_at", parse_iso),
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
        waiting_for=row[18],
        wait_step=row[19],
        attempt=row[20],
        disposition=disposition,
        decode_error="the stored " + ", ".join(problems) + " cannot be read" if problems else None,
        **fields_read,
    )


def step_from_row(row: Sequence[Any]) -> StepRecord:
    """A StepRecord from a row of ``STEP_COLUMNS``."""
    run_id, name, index, status, output, error, started_at, completed_at, wake_at = row
    value, problem = read_stored(output, "output")
    started, late = read_time(started_at, "started_at")
    completed, later = read_time(completed_at, "completed_at")
    wake, wake_problem = read_time(wake_at, "wake_at")
    problems = _problems(problem, late, later, wake_problem)
    return StepRecord(run_id, name, index, status, value, error, started, completed, problems, wake)  # type: ignore[arg-type]


def attempt_from_row(row: Sequence[Any]) -> AttemptRecord:
    """An AttemptRecord from a row of ``ATTEMPT_COLUMNS``."""
    run_attempt, attempt, step_name, step_index, error, started_at, finished_at = row
    return AttemptRecord(
        run_attempt=run_attempt,
        attempt=attempt,
        step_name=step_name,
        step_index=step_index,
        error=error,
        started_at=read_time(started_at, "started_at")[0],
        finished_at=read_time(finished_at, "finished_at")[0],
    )


def signal_from_row(row: Sequence[Any], disposition: SignalDisposition) -> SignalRecord:
    """A SignalRecord from a row of ``SIGNAL_COLUMNS``."""
    run_id, name, signal_id, payload, created_at = row
    value, _ = read_stored(payload, "payload")
    return SignalRecord(run_id, name, signal_id, value, read_time(created_at, "created_at")[0], disposition)  # type: ignore[arg-type]


def schedule_from_row(row: Sequence[Any]) -> ScheduleRecord:
    """A ScheduleRecord from a row of ``SCHEDULE_COLUMNS``."""
    job_name, cron, timezone, catch_up, last_slot, next_at, updated_at = row
    return ScheduleRecord(
        job_name=job_name,
        cron=cron,
        timezone=timezone,
        catch_up=catch_up,
        last_slot=read_time(last_slot, "last_slot")[0],
        next_at=read_time(next_at, "next_at")[0],
        updated_at=read_time(updated_at, "updated_at")[0],
    )


def log_from_row(row: Sequence[Any]) -> LogRecord:
    """A LogRecord from a row of ``LOG_COLUMNS``."""
    id, run_id, step_name, level, message, data, created_at = row
    value, problem = read_stored(data, "data")
    created, late = read_time(created_at, "created_at")
    return LogRecord(id, run_id, step_name, level, message, value, created, _problems(problem, late))  # type: ignore[arg-type]


def worker_from_row(row: Sequence[Any]) -> WorkerRecord:
    """A WorkerRecord from a row of ``WORKER_COLUMNS``."""
    worker_id, host, pid, jobs_text, version, concurrency, started_at, heartbeat_at = row
    jobs, _ = read_stored(jobs_text, "jobs")
    return WorkerRecord(
        worker_id=worker_id,
        host=host,
        pid=pid,
        jobs=[j for j in jobs if isinstance(j, str)] if isinstance(jobs, list) else [],
        version=version,
        concurrency=concurrency,
        # An unreadable heartbeat (a hand edit) reads as None: that worker counts as dead.
        started_at=read_time(started_at, "started_at")[0],  # type: ignore[arg-type]
        heartbeat_at=read_time(heartbeat_at, "heartbeat_at")[0],  # type: ignore[arg-type]
    )


def read_time(text: Any, what: str) -> tuple[datetime | None, str | None]:
    """``(timestamp, None)``, or ``(None, why)`` when stored ``text`` is not a timestamp."""
    try:
        return parse_iso(text), None
    except Exception as exc:
        return None, f"the stored {what} cannot be read ({type(exc).__name__}: {short(exc)})"


def _problems(*problems: str | None) -> str | None:
    """The decode problems of one record, joined; None if there are none."""
    found = [p for p in problems if p]
    return "; ".join(found) if found else None
