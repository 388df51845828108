"""Frozen, validated configs: unknown keys and values of the wrong type fail loudly, naming the key and the
config; the resolved config is saved with each result (and hashed into its identity, ``identity``)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key that does not exist or a value of the wrong type; the message names both."""


def from_dict(cls: type[T], values: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``values``, each value checked against its field's type.

    An unknown key or a value that does not fit raises ``ConfigError`` naming it and the known keys.
    Lists become tuples where the field is a tuple, a single value becomes a 1-tuple, ints are accepted
    for floats and numbers for strings (``--set model=7b`` and ``--set lr=1`` mean what they say)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    checked = {key: _coerce(value, hints[key], f"{where}: {key}") for key, value in values.items()}
    try:
        return cls(**checked)
    except TypeError as e:                 # a required field is missing
        raise ConfigError(f"{where}: {e}; valid keys: {', '.join(sorted(fields))}") from None
    except ValueError as e:                # the config's own validation (``__post_init__``) refused a value
        raise ConfigError(f"{where}: {e}") from None


def override(cfg: T, where: str = "config", **changes: Any) -> T:
    """``dataclasses.replace`` that names the config and the key when a key or a value is wrong."""
    return from_dict(type(cfg), {**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}, **changes}, where)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} expects {_name(annotation)}, got {value!r}")
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else (value,)
        item_type = args[0] if args else Any
        return tuple(_coerce(v, item_type, where) for v in items)
    if origin in (dict, list):
        if not isinstance(value, origin):
            raise ConfigError(f"{where} expects {_name(annotation)}, got {value!r}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise ConfigError(f"{where} expects {_name(annotation)}, got {value!r} ({type(value).__name__})")


def _name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["steps=10", "lr=1e-3", "methods=lora,miss"]`` -> typed dict (int, float, bool, list, str, None)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not KEY=VALUE")
        key, raw = pair.split("=", 1)
        if not key:
            raise ConfigError(f"override {pair!r} has no key")
        out[key] = _parse_value(raw)
    return out


def _parse_value(raw: str) -> Any:
    if "," in raw:
        return tuple(_parse_value(v) for v in raw.split(",") if v)
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    if raw.lower() in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw
