"""The checks of what callers pass in: names, ids, labels, text, numbers and durations.

Each check returns the value it accepts (converted where that is its job) or raises
:class:`ValidationError` saying what is wrong, naming the limit in :mod:`durably.limits`
where one applies. They run before anything is written, so a refused call changes nothing.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from .errors import ValidationError
from .limits import (
    MAX_ERROR_BYTES,
    MAX_FILTER_VALUES,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    MAX_NAME_LENGTH,
    MAX_RETENTION,
    MAX_TIMEOUT,
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_GOOD_NAME = re.compile(f"[^\\x00-\\x1f\\x7f\\ud800-\\udfff]{{1,{MAX_NAME_LENGTH}}}")
_RETAIN = re.compile(r"^([1-9][0-9]*)([dhm])$")
_RETAIN_UNITS = {"d": 86400, "h": 3600, "m": 60}

# -- text -------------------------------------------------------------------------------------


def check_name(value: Any, what: str) -> str:
    """Job names, step names and keys: non-empty text without control characters."""
    # Every step checks its name: one regular expression passes a good one (not only
    # whitespace, no control characters, no lone surrogates, within the length limit).
    if type(value) is str and _GOOD_NAME.fullmatch(value) is not None and not value.isspace():
        return value
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
    """Text that every engine can store: no lone surrogates (e.g. "\\ud800"), which UTF-8
    cannot encode, and no NUL ("\\x00"), which PostgreSQL's text cannot hold."""
    if "\x00" in value:
        raise ValidationError(
            f"{what} {value!r} holds a NUL character (\\x00), which PostgreSQL cannot store; "
            "durably refuses it on every engine"
        )
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
    ``os.listdir``), are written as escapes (``\\udcff``), and NUL, which PostgreSQL cannot
    store, as ``\\x00`` (on every engine): text that is cut is never an error."""
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
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
    return cut_text(text, max_bytes, "the error text", "MAX_ERROR_BYTES")


def shown(value: Any, limit: int = 200) -> str:
    """``repr(value)`` (``str`` for an exception) for a message, whatever its ``__repr__`` or
    ``__str__`` does, cut to ``limit`` characters."""
    try:
        text = str(value) if isinstance(value, BaseException) else repr(value)
    except Exception:
        text = f"<{type(value).__name__} that cannot be shown>"
    return text if len(text) <= limit else text[:limit] + "..."


def describe(exc: BaseException) -> str:
    """``"Type: message"`` as stored for a failed run or step: never raises, and fits in
    ``MAX_ERROR_BYTES`` (an exception's message can be anything, of any size)."""
    name = type(exc).__name__[:200]
    return f"{name}: {safe_text(exc, MAX_ERROR_BYTES - len(name) - 2)}"


# -- what identifies runs -----------------------------------------------------------------------


def check_id(run_id: Any) -> str:
    """A run id: non-empty text of at most ``MAX_NAME_LENGTH`` characters."""
    if not isinstance(run_id, str) or not run_id:
        raise ValidationError(f"a run id must be a non-empty string, got {run_id!r}")
    if len(run_id) > MAX_NAME_LENGTH:
        raise ValidationError(
            f"a run id is at most {MAX_NAME_LENGTH} characters (durably.limits.MAX_NAME_LENGTH), "
            f"got one of {len(run_id)}"
        )
    return check_text(run_id, "the run id")


def check_labels(labels: Any) -> dict[str, str]:
    """None (no labels) or a dict of label keys to text values; returns a copy."""
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise ValidationError(f"labels must be a dict of strings to strings, got {type(labels).__name__}")
    if len(labels) > MAX_LABELS:
        raise ValidationError(
            f"a run may carry at most {MAX_LABELS} labels (durably.limits.MAX_LABELS), got {len(labels)}"
        )
    for key, value in labels.items():
        check_name(key, "a label key")
        if not isinstance(value, str):
            raise ValidationError(f"label {key!r} must have a string value, got {type(value).__name__}")
        if len(value) > MAX_LABEL_VALUE:
            raise ValidationError(
                f"label {key!r} is {len(value)} characters long; the limit is {MAX_LABEL_VALUE} "
                "(durably.limits.MAX_LABEL_VALUE)"
            )
        check_text(value, f"the value of label {key!r}")
    return dict(labels)


def as_list(value: Any, what: str) -> list[str] | None:
    """A filter given as one string or a list of them: None, or the list."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        if len(value) > MAX_FILTER_VALUES:
            raise ValidationError(
                f"{what} takes at most {MAX_FILTER_VALUES} values (durably.limits.MAX_FILTER_VALUES), got {len(value)}"
            )
        return list(value)
    raise ValidationError(f"{what} must be a string or a list of strings, got {value!r}")


# -- numbers and durations ----------------------------------------------------------------------


def seconds_option(name: str, value: Any, maximum: float, limit: str, *, zero: bool = False) -> float:
    """A duration option: a finite number of seconds above 0 (or from 0, with ``zero``)
    and at most ``maximum``, the limit named ``limit`` in durably.limits."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (0 <= value if zero else 0 < value)
        or not value <= maximum
    ):
        low = "from 0" if zero else "above 0"
        raise ValidationError(
            f"{name} must be a number of seconds {low} and at most {maximum:,.0f} (durably.limits.{limit}), "
            f"got {value!r}"
        )
    return float(value)


def count_option(name: str, value: Any, low: int, high: int, limit: str | None = None) -> int:
    """An integer option from ``low`` to ``high`` (the limit named ``limit``, if any)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        where = f" (durably.limits.{limit})" if limit else ""
        raise ValidationError(f"{name} must be an integer from {low} to {high:,}{where}, got {value!r}")
    return value


def check_timeout(value: Any, name: str = "timeout", *, zero: bool = False) -> float | None:
    """None (wait without end), or a finite number of seconds up to ``MAX_TIMEOUT``."""
    if value is None:
        return None
    return seconds_option(name, value, MAX_TIMEOUT, "MAX_TIMEOUT", zero=zero)


def parse_retention(value: Any) -> timedelta:
    """``"30d"``, ``"12h"``, ``"15m"`` (m = minutes) -> timedelta; anything else is rejected."""
    match = _RETAIN.match(value) if isinstance(value, str) and len(value) <= 20 else None
    if match is None:
        raise ValidationError(f"retain_runs must look like '30d', '12h' or '15m' (days, hours, minutes), got {value!r}")
    seconds = int(match.group(1)) * _RETAIN_UNITS[match.group(2)]
    if seconds > MAX_RETENTION:
        raise ValidationError(
            f"retain_runs is at most {int(MAX_RETENTION // 86400)}d (durably.limits.MAX_RETENTION), got {value!r}"
        )
    return timedelta(seconds=seconds)


def purge_cutoff(older_than: Any, now: datetime) -> datetime:
    """``purge_runs``'s ``older_than``: an age (a ``timedelta``) before ``now``, or an aware
    cut-off ``datetime``; returns the cut-off."""
    if isinstance(older_than, timedelta):
        if older_than < timedelta(0):
            raise ValidationError(f"older_than must not be negative, got {older_than}")
        if older_than.total_seconds() > MAX_RETENTION:
            raise ValidationError(
                f"older_than is an age of at most {int(MAX_RETENTION // 86400)} days "
                f"(durably.limits.MAX_RETENTION), got {older_than}"
            )
        try:
            return now - older_than
        except OverflowError:  # an age reaching back before year 1 (a clock set oddly)
            raise ValidationError(f"older_than reaches back before the year 1: {older_than} before {now}") from None
    if isinstance(older_than, datetime):
        if older_than.tzinfo is None:
            raise ValidationError("older_than must be timezone-aware (e.g. datetime.now(timezone.utc))")
        return older_than
    raise ValidationError(f"older_than must be a timedelta or a datetime, got {older_than!r}")
