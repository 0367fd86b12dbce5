"""Job input and output schemas: dataclasses, pydantic models, or plain callables.

A schema turns stored JSON into what the job receives (``load``), and what the job gives
(or what a caller triggers with) into JSON-ready data (``dump``). Both raise
``ValidationError`` with a message that names the offending field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import types
import typing
from typing import Any, Callable, Union

from . import limits
from .errors import ValidationError
from .limits import MAX_DEPTH


# One encoder, made once: json.dumps with any option builds a new encoder on every call.
# It escapes every non-ASCII character, so the text it makes is ASCII: its length in
# characters is its size in UTF-8 bytes, and the size limits cost one len().
JSON_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
to_json = JSON_ENCODER.encode

_SCALARS = frozenset((str, int, float, bool, type(None)))
_SIZE_LIMITS = {name: getattr(limits, name) for name in ("MAX_INPUT_BYTES", "MAX_OUTPUT_BYTES", "MAX_STEP_RESULT_BYTES")}


def check_json(value: Any, what: str, limit: str | None) -> str:
    """Serialize ``value`` as JSON text, or raise ValidationError naming ``what``.

    ``limit`` names the size limit in :mod:`durably.limits` (e.g. ``"MAX_INPUT_BYTES"``);
    None leaves the size to the caller.
    Containers may nest at most ``MAX_DEPTH`` deep, checked in the same walk that checks
    object keys: keys must be strings, since JSON would turn ``1`` into ``"1"``, and
    ``{1: "a", "1": "b"}`` would silently lose a value."""
    if type(value) not in _SCALARS:
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
                    f"{what} must be JSON data: object keys must be strings, got the key {_shown(key)} "
                    f"({type(key).__name__})"
                )
            if isinstance(item, (dict, list, tuple)):
                _check_keys(item, what, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, (dict, list, tuple)):
                _check_keys(item, what, depth + 1)


def _shown(value: Any, limit: int = 200) -> str:
    """``repr(value)`` (``str`` for an exception) for a message, whatever its ``__repr__`` or
    ``__str__`` does, cut to ``limit`` characters."""
    try:
        text = str(value) if isinstance(value, BaseException) else repr(value)
    except Exception:
        text = f"<{type(value).__name__} that cannot be shown>"
    return text if len(text) <= limit else text[:limit] + "..."


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
        len(text) >= _DEEP_TEXT and isinstance(value, (dict, list))
        and text.count("[") + text.count("{") > MAX_DEPTH and nested_too_deep(value)
    ):
        raise ValueError(f"it is nested more than {MAX_DEPTH} levels deep (durably.limits.MAX_DEPTH)")
    return value


class Schema:
    """No schema: any JSON value passes through unchanged."""

    def load(self, data: Any, what: str) -> Any:
        return data

    def dump(self, value: Any, what: str) -> Any:
        return value


class DataclassSchema(Schema):
    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.hints = typing.get_type_hints(cls)

    def load(self, data: Any, what: str) -> Any:
        if isinstance(data, self.cls):
            return data
        return _build_dataclass(self.cls, data, what)

    def dump(self, value: Any, what: str) -> Any:
        if isinstance(value, self.cls):
            data = dataclasses.asdict(value)
            _build_dataclass(self.cls, data, what)  # re-check: fields may have been mutated
            return data
        _build_dataclass(self.cls, value, what)
        return value


class PydanticSchema(Schema):
    def __init__(self, cls: type) -> None:
        self.cls = cls

    def load(self, data: Any, what: str) -> Any:
        if isinstance(data, self.cls):
            return data
        try:
            return self.cls.model_validate(data)  # type: ignore[attr-defined]
        except Exception as exc:  # pydantic.ValidationError; pydantic is optional
            raise ValidationError(f"{what} does not match {self.cls.__name__}: {_shown(exc, 4000)}") from None

    def dump(self, value: Any, what: str) -> Any:
        return self.load(value, what).model_dump(mode="json")


class CallableSchema(Schema):
    """A plain validator: called with the data, returns the value to use, raises if bad."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def load(self, data: Any, what: str) -> Any:
        try:
            return self.fn(data)
        except ValidationError:
            raise
        except Exception as exc:
            raise ValidationError(
                f"{what} was rejected by its validator: {type(exc).__name__}: {_shown(exc, 4000)}"
            ) from None

    def dump(self, value: Any, what: str) -> Any:
        return self.load(value, what)


def make_schema(spec: Any, what: str) -> Schema:
    if spec is None:
        return Schema()
    if isinstance(spec, type) and dataclasses.is_dataclass(spec):
        return DataclassSchema(spec)
    if isinstance(spec, type) and hasattr(spec, "model_validate") and hasattr(spec, "model_dump"):
        return PydanticSchema(spec)
    if callable(spec):
        return CallableSchema(spec)
    raise ValidationError(
        f"{what} must be a dataclass, a pydantic model or a callable validator, got {spec!r}"
    )


def _build_dataclass(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ValidationError(f"{path} must be an object with the fields of {cls.__name__}, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValidationError(
            f"{path} has unknown field(s) {', '.join(map(repr, unknown))}; "
            f"{cls.__name__} has: {', '.join(known) or '(no fields)'}"
        )
    kwargs = {}
    for name, f in known.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValidationError(f"{path} is missing the required field {name!r} ({cls.__name__})")
            continue
        kwargs[name] = _convert(data[name], hints.get(name, Any), f"{path}.{name}")
    return cls(**kwargs)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return type(value).__name__


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` (JSON data) against the annotation ``tp``; build nested dataclasses."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union or origin is types.UnionType:
        for arg in args:
            try:
                return _convert(value, arg, path)
            except ValidationError:
                continue
        names = " | ".join(_type_name(a) for a in args)
        raise ValidationError(f"{path} must be {names}, got {_kind(value)}")
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise ValidationError(f"{path} must be one of {', '.join(map(repr, args))}, got {value!r}")
    if tp is type(None) or tp is None:
        if value is None:
            return None
        raise ValidationError(f"{path} must be null, got {_kind(value)}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, path)
    if origin in (list, typing.List, tuple, set, frozenset) or tp in (list, tuple, set, frozenset):
        if not isinstance(value, list):
            raise ValidationError(f"{path} must be a list, got {_kind(value)}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ValidationError(f"{path} must have {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        container = origin or tp
        return items if container in (list, typing.List) else container(items)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValidationError(f"{path} must be an object, got {_kind(value)}")
        val_tp = args[1] if len(args) == 2 else Any
        return {k: _convert(v, val_tp, f"{path}[{k!r}]") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValidationError(f"{path} must be bool, got {_kind(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValidationError(f"{path} must be int, got {_kind(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValidationError(f"{path} must be float, got {_kind(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValidationError(f"{path} must be str, got {_kind(value)}")
    if isinstance(tp, type) and hasattr(tp, "model_validate"):
        return PydanticSchema(tp).load(value, path)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ValidationError(f"{path} must be {tp.__name__}, got {_kind(value)}")
    return value  # an annotation we do not check (TypeVar, forward protocol, ...)


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", None) or str(tp)
