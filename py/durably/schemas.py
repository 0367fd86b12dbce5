"""Job input and output schemas: dataclasses, pydantic models, or plain callables.

A schema turns stored JSON into what the job receives (``load``), and what the job gives
(or what a caller triggers with) into JSON-ready data (``dump``). Both raise
``ValidationError`` with a message that names the offending field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Union, cast

from .errors import ValidationError
from .validation import shown


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
            data = dataclasses.asdict(cast(Any, value))
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
            raise ValidationError(f"{what} does not match {self.cls.__name__}: {shown(exc, 4000)}") from None

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
                f"{what} was rejected by its validator: {type(exc).__name__}: {shown(exc, 4000)}"
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
    raise ValidationError(f"{what} must be a dataclass, a pydantic model or a callable validator, got {spec!r}")


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
    if origin in (list, list, tuple, set, frozenset) or tp in (list, tuple, set, frozenset):
        if not isinstance(value, list):
            raise ValidationError(f"{path} must be a list, got {_kind(value)}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ValidationError(f"{path} must have {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        items = [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        container = origin or tp
        return items if container in (list, list) else container(items)
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
