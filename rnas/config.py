"""Typed configs: plain dataclasses, built from nested dicts with strict validation.

``from_dict(Cls, data, "warmup")`` rejects unknown keys and wrong types, naming the full key
(``warmup.supernet.channels``), and then runs the dataclass's own ``check()`` if it has one.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from rnas.errors import ConfigError

T = TypeVar("T")


def _check_type(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _check_type(value, option, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} is not {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, typing.get_args(tp)))}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_check_type(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def from_dict(cls: type[T], data: Any, key: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; missing keys take their defaults."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{key or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{key}." if key else ""
        raise ConfigError(f"unknown parameter {where}{unknown[0]} (known: {', '.join(sorted(fields))})")
    kwargs = {name: _check_type(data[name], hints[name], f"{key}.{name}" if key else name)
              for name in fields if name in data}
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except ConfigError as e:
            msg = str(e)
            raise ConfigError(f"{key}.{msg}" if key and not msg.startswith(key) else msg) from None
    return obj


def require(condition: bool, key: str, message: str) -> None:
    """Inside a ``check()``: raise a ConfigError naming ``key`` (relative to the dataclass)."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj)
