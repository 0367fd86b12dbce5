"""JSON data as durably stores it: every value checked and encoded once on its way in, and
stored text decoded (and checked again) on its way out.

The encoder escapes every non-ASCII character, so the text it makes is ASCII: its length in
characters is its size in UTF-8 bytes, and a size limit costs one ``len()``.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

from . import limits
from .errors import ValidationError
from .limits import MAX_DEPTH
from .validation import shown

# One encoder, made once: json.dumps with any option builds a new encoder on every call.
JSON_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
to_json = JSON_ENCODER.encode

#: The types whose values need no key or depth check on their way to JSON.
SCALARS: frozenset[type] = frozenset((str, int, float, bool, type(None)))
_SIZE_LIMITS = {
    name: getattr(limits, name)
    for name in ("MAX_INPUT_BYTES", "MAX_OUTPUT_BYTES", "MAX_STEP_RESULT_BYTES", "MAX_SIGNAL_BYTES")
}


def check_json(value: Any, what: str, limit: str | None) -> str:
    """Serialize ``value`` as JSON text, or raise ValidationError naming ``what``.

    ``limit`` names the size limit in :mod:`durably.limits` (e.g. ``"MAX_INPUT_BYTES"``);
    None leaves the size to the caller.
    Containers may nest at most ``MAX_DEPTH`` deep, checked in the same walk that checks
    object keys: keys must be strings, since JSON would turn ``1`` into ``"1"``, and
    ``{1: "a", "1": "b"}`` would silently lose a value."""
    if type(value) not in SCALARS:
        _check_keys(value, what, 1)
    try:
        text = to_json(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} must be JSON data (dict, list, str, int, float, bool, None): {exc}") from None
    if limit is not None and len(text) > _SIZE_LIMITS[limit]:
        raise too_large(what, len(text), limit)
    return text


def too_large(what: str, size: int, limit: str) -> ValidationError:
    """The error for a JSON value of ``size`` bytes over the limit named ``limit``."""
    return ValidationError(
        f"{what} is {size:,} bytes as JSON; the limit is {getattr(limits, limit):,} "
        f"(durably.limits.{limit}). Store large data elsewhere and pass a reference"
    )


def _check_keys(value: Any, what: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValidationError(
            f"{what} is nested more than {MAX_DEPTH} levels deep (lists and objects inside one "
            f"another; durably.limits.MAX_DEPTH), or contains itself; flatten it"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(
                    f"{what} must be JSON data: object keys must be strings, got the key {shown(key)} "
                    f"({type(key).__name__})"
                )
            if isinstance(item, (dict, list, tuple)):
                _check_keys(item, what, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, (dict, list, tuple)):
                _check_keys(item, what, depth + 1)


def nested_too_deep(value: Any) -> bool:
    """True if decoded JSON ``value`` nests containers more than ``MAX_DEPTH`` deep. A loop,
    not recursion, so it answers for any depth json.loads could build."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


# The shortest JSON text that nests deeper than MAX_DEPTH: one more pair of brackets.
_DEEP_TEXT = 2 * (MAX_DEPTH + 1)


def too_many_digits(what: str) -> ValidationError:
    """The error for JSON text with an integer longer than Python reads (``json`` raises a
    plain ValueError for it, not a JSONDecodeError)."""
    return ValidationError(
        f"{what} holds an integer of more than {sys.get_int_max_str_digits()} digits, more than "
        "Python reads; send such a number as a string"
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"it holds {name}, which is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(f"it holds the number {text[:40]}, too large for a float")
    return value


# Strict decoders: NaN and Infinity are not JSON, and a literal such as 1e999 decodes to
# an infinite float; strict JSON (the browser host's replies) cannot encode either again.
# A custom parse_float costs a Python call per float, so it is used only for texts that
# hold an exponent of three digits or a run of 300 digits, the only ways to overflow.
_STRICT = json.JSONDecoder(parse_constant=_no_constant)
_STRICT_FLOATS = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)
_MAYBE_HUGE = re.compile(r"[eE][+]?[0-9]{3}|[0-9]{300}")


def loads_stored(text: Any) -> Any:
    """Decode JSON text read from the database. Raises ValueError if it is not JSON, holds
    a number that is not finite (NaN, Infinity, 1e999) or nests deeper than ``MAX_DEPTH``
    (an older durably, or a hand edit, may have stored it), so every value durably hands
    out can be encoded again anywhere. Nesting is walked only when the text is long enough
    and holds enough brackets to exceed the limit: a short value costs one ``len()``, a
    long one two ``str.count`` calls."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    value = (_STRICT_FLOATS if _MAYBE_HUGE.search(text) else _STRICT).decode(text)
    if (
        len(text) >= _DEEP_TEXT
        and isinstance(value, (dict, list))
        and text.count("[") + text.count("{") > MAX_DEPTH
        and nested_too_deep(value)
    ):
        raise ValueError(f"it is nested more than {MAX_DEPTH} levels deep (durably.limits.MAX_DEPTH)")
    return value


def read_stored(text: Any, what: str) -> tuple[Any, str | None]:
    """``(value, None)``, or ``(None, why)`` when stored JSON ``text`` cannot be read."""
    if text is None:
        return None, None
    try:
        return loads_stored(text), None
    except Exception as exc:
        return None, f"the stored {what} cannot be read ({type(exc).__name__}: {short(exc)})"


def short(exc: BaseException) -> str:
    """An exception's message, cut to 200 characters for another message."""
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


def parse_json(text: str, what: str, hint: str = "") -> Any:
    """JSON text a caller sent (the CLI's INPUT_JSON, the page's params), decoded; or
    ``ValidationError`` naming ``what`` (``hint`` is added to the message)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{what} is not valid JSON ({exc}){hint}") from None
    except ValueError:  # an integer too long to read
        raise too_many_digits(what) from None
    except RecursionError:
        raise ValidationError(
            f"{what} is nested too deep to read; JSON values may nest at most {MAX_DEPTH} levels "
            "(durably.limits.MAX_DEPTH)"
        ) from None
