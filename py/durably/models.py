"""Records returned by the API: runs, steps and logs, as frozen dataclasses."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

from .clock import iso, parse_iso

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
    return Run(
        id=row[0],
        job_name=row[1],
        status=row[2],
        input=json.loads(row[3]),
        output=json.loads(row[4]) if row[4] is not None else None,
        error=row[5],
        failed_step=row[6],
        labels=json.loads(row[7]),
        progress=json.loads(row[8]) if row[8] is not None else None,
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
