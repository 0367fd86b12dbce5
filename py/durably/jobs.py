"""Job definitions: the ``@job`` decorator."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, overload

from .errors import ValidationError
from .limits import MAX_NAME_LENGTH
from .schemas import Schema, make_schema

__all__ = ["Job", "job", "check_name", "check_text", "cut_text", "safe_text", "MAX_NAME_LENGTH"]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_name(value: Any, what: str) -> str:
    """Job names, step names and keys: non-empty text without control characters."""
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, got {type(value).__name__}")
    if not value or not value.strip():
        raise ValidationError(f"{what} must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise ValidationError(
            f"{what} is {len(value)} characters long; the limit is {MAX_NAME_LENGTH} (durably.limits.MAX_NAME_LENGTH)"
        )
    if _CONTROL.search(value):
        raise ValidationError(f"{what} {value!r} contains control characters")
    check_text(value, what)
    return value


def check_text(value: str, what: str) -> str:
    """Text that SQLite can store: no lone surrogates (e.g. "\\ud800"), which UTF-8 cannot encode."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            f"{what} {value!r} is not valid Unicode text (it holds a lone surrogate); "
            "use text that can be written as UTF-8"
        ) from None
    return value


def cut_text(value: str, max_bytes: int, what: str, limit: str | None = None) -> str:
    """``value`` if its UTF-8 form fits in ``max_bytes``; else its head (whole characters)
    with a note of what was cut (naming ``limit``, a name in durably.limits, if given).
    Lone surrogates, which UTF-8 cannot encode (a file name that is not UTF-8, read with
    ``os.listdir``), are written as escapes (``\\udcff``): text that is cut is never an error."""
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
        data = value.encode("utf-8")
    if len(data) <= max_bytes:
        return value
    where = f" (durably.limits.{limit})" if limit else ""
    note = f" [cut: {what} was {len(data):,} bytes; the limit is {max_bytes:,}{where}]"
    head = data[: max(0, max_bytes - len(note))].decode("utf-8", "ignore")
    return head + note


def safe_text(value: Any, max_bytes: int) -> str:
    """Text to store whatever it came from (an exception's message): ``str(value)`` even if
    that raises, lone surrogates and NUL escaped, cut to ``max_bytes`` of UTF-8."""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception as exc:  # an exception whose __str__ itself fails
        text = f"<{type(value).__name__} whose message cannot be shown: {type(exc).__name__}>"
    if "\x00" in text:  # storable in SQLite, not in PostgreSQL: the same text on both
        text = text.replace("\x00", "\\x00")
    return cut_text(text, max_bytes, "the error text", "MAX_ERROR_BYTES")


@dataclass(frozen=True)
class Job:
    """A registered job: its name, its ``async`` function and its input/output schemas."""

    name: str
    fn: Callable[..., Awaitable[Any]]
    input_schema: Schema = field(default_factory=Schema, repr=False)
    output_schema: Schema = field(default_factory=Schema, repr=False)

    def __repr__(self) -> str:
        return f"<durably job {self.name!r}>"


@overload
def job(name: Callable[..., Awaitable[Any]]) -> Job: ...
@overload
def job(name: str | None = None, *, input: Any = None, output: Any = None) -> Callable[[Callable[..., Awaitable[Any]]], Job]: ...


def job(name: Any = None, *, input: Any = None, output: Any = None) -> Any:
    """Declare a job: an ``async def fn(step, input)`` made of named steps.

    ``input``/``output`` may be a dataclass (checked field by field against its
    annotations), a pydantic model, or a callable validator. Usable bare (``@job``) or
    with a name (``@job("sync-users")``); the name defaults to the function's name.

    Example::

        @job("sync-users")
        async def sync_users(step, input):
            users = await step.run("fetch", lambda: fetch(input["org"]))
            return {"count": len(users)}
    """
    if callable(name) and not isinstance(name, str):
        return _make(name, None, None, None)
    if name is not None:
        check_name(name, "a job name")

    def decorate(fn: Callable[..., Awaitable[Any]]) -> Job:
        return _make(fn, name, input, output)

    return decorate


def _make(fn: Any, name: str | None, input: Any, output: Any) -> Job:
    if isinstance(fn, Job):
        raise ValidationError(f"{fn!r} is already a job; apply @job once")
    if not inspect.iscoroutinefunction(fn):
        raise ValidationError(
            f"@job needs an 'async def' function taking (step, input); "
            f"{getattr(fn, '__name__', fn)!r} is not a coroutine function"
        )
    job_name = check_name(name or fn.__name__, "a job name")
    return Job(
        name=job_name,
        fn=fn,
        input_schema=make_schema(input, f"the input schema of job {job_name!r}"),
        output_schema=make_schema(output, f"the output schema of job {job_name!r}"),
    )
