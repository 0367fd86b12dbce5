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
    SchemaError,
    StorageError,
    ValidationError,
)
from .events import EVENT_FIELDS, EVENT_TYPES, Event
from .jobs import Job, job
from .models import LogRecord, Run, Status, StepRecord, WorkerRecord
from .steps import Step

__version__ = "0.1.0"

__all__ = [
    "Durably",
    "job",
    "Job",
    "Step",
    "Run",
    "StepRecord",
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
    "LeaseLostError",
    "StorageError",
    "SchemaError",
    "NoWorkerWarning",
]
