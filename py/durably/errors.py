"""The errors durably raises: one small hierarchy under :class:`DurablyError`.

Each message says what went wrong and what to do about it. The class name is part of the
contract: the browser host sends it to the page, which rebuilds a JS error of the same name.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DurablyError(Exception):
    """Base class of every error durably raises on purpose."""

    #: The attributes sent along with the name and message (the browser protocol's fields).
    fields: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """The error as plain data, for the browser protocol and the CLI."""
        data: dict[str, Any] = {"name": type(self).__name__, "message": str(self)}
        for name in self.fields:
            data[name] = getattr(self, name)
        return data


class ValidationError(DurablyError, ValueError):
    """Bad input: a job input that does not match its schema, a bad option, a bad key."""


class NotFoundError(DurablyError, LookupError):
    """An unknown run id or job name."""


class ConflictError(DurablyError):
    """The run is in a state that does not allow the operation (e.g. cancel a finished run)."""


class CancelledError(DurablyError):
    """The run was cancelled. Not a subclass of ``asyncio.CancelledError``."""

    fields = ("run_id",)

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


class RunFailedError(DurablyError):
    """The awaited run failed; ``error`` and ``failed_step`` are the run's own."""

    fields = ("run_id", "error", "failed_step")

    def __init__(
        self, message: str, *, run_id: str | None = None, error: str | None = None, failed_step: str | None = None
    ) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.error = error
        self.failed_step = failed_step


class SignalTimeoutError(DurablyError):
    """``step.wait_for_signal(name, timeout=...)`` waited ``timeout`` seconds (counted from the
    first time the run waited for it) and no signal came. Raised in the job, which may catch
    it; a replay raises it again at the same step."""

    fields = ("run_id", "name")

    def __init__(self, message: str, *, run_id: str | None = None, name: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.name = name


class RunTimeoutError(DurablyError):
    """The run passed its deadline (``@job(timeout=...)``, counted from its first start): it
    is failed with this error, naming the step it was in (``failed_step``). The job cannot
    catch its way past it, and job-level retries do not apply."""

    fields = ("run_id", "failed_step")

    def __init__(self, message: str, *, run_id: str | None = None, failed_step: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.failed_step = failed_step


class LeaseLostError(DurablyError):
    """This worker no longer holds the run's lease (it expired and another worker took the
    run, or the run was cancelled): the write was refused and nothing was stored."""


class StorageError(DurablyError):
    """The database refused or failed an operation (disk full, I/O error, locked, ...).

    ``code`` is the engine's error name when the driver knows it: SQLite's (``"SQLITE_FULL"``)
    or PostgreSQL's SQLSTATE (``"23505"``). ``transient`` is set by the driver when the same
    write may succeed if tried again unchanged (SQLite's ``SQLITE_BUSY``; a lost PostgreSQL
    connection): the runtime never counts such a failure towards failing a run.
    """

    fields = ("code",)

    def __init__(self, message: str, *, code: str | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient


class SchemaError(StorageError):
    """The database was written by a newer durably, or is not a durably database.
    It is left untouched."""


class NoWorkerWarning(UserWarning):
    """A trigger-only ``Durably`` created a run of a job that no worker has registered
    lately (``limits.JOB_SEEN_WINDOW``): the run stands, but stays pending until a worker
    that registers the job starts. Often a typo in the job name. A warning, not an error:
    filter it with ``warnings.simplefilter("ignore", durably.NoWorkerWarning)``."""
