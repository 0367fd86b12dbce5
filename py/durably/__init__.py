"""durably: durable Python jobs made of named steps, committed to SQLite.

Each finished step is committed, so a job interrupted by a closed tab, a reload or a
killed process resumes at its first unfinished step and never re-runs a finished one.
The same package runs on CPython (``sqlite3``) and in the browser (Pyodide + SQLite WASM).
"""

from .app import Durably
from .errors import (
    CancelledError,
    ConflictError,
    DurablyError,
    LeaseLostError,
    NotFoundError,
    NoWorkerWarning,
    RunFailedError,
    RunTimeoutError,
    SchemaError,
    SignalTimeoutError,
    StorageError,
    ValidationError,
)
from .events import EVENT_FIELDS, EVENT_TYPES, Event
from .jobs import Job, job
from .models import AttemptRecord, LogRecord, Run, ScheduleRecord, SignalRecord, Status, StepRecord, WorkerRecord
from .retries import Retry
from .steps import Step

__version__ = "0.1.0"

__all__ = [
    "Durably",
    "job",
    "Job",
    "Retry",
    "Step",
    "Run",
    "StepRecord",
    "AttemptRecord",
    "SignalRecord",
    "ScheduleRecord",
    "LogRecord",
    "Status",
    "WorkerRecord",
    "Event",
    "EVENT_TYPES",
    "EVENT_FIELDS",
    "DurablyError",
    "NotFoundError",
    "ValidationError",
    "ConflictError",
    "CancelledError",
    "RunFailedError",
    "RunTimeoutError",
    "SignalTimeoutError",
    "LeaseLostError",
    "StorageError",
    "SchemaError",
    "NoWorkerWarning",
]
