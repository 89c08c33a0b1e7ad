"""Config machinery shared by every part: frozen dataclasses filled from YAML dicts.

One YAML file holds the sections `engine:`, `train:` and `eval:`; each part parses its own
section into its frozen dataclass with `from_dict`. Defaults live in code; unknown keys are
errors naming the key, the section and the known keys; bad values raise `ConfigError`
(a `ValueError`) naming the field and the value. Nested dataclasses nest in YAML.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import SynthvoxError

__all__ = [
    "ConfigError",
    "SECTIONS",
    "from_dict",
    "to_dict",
    "replace",
    "read_config_file",
    "stable_hash",
    "require",
    "require_range",
]

SECTIONS = ("engine", "train", "eval")

T = TypeVar("T")


class ConfigError(SynthvoxError, ValueError):
    """A config key or value is wrong; the message names it and says what is allowed."""


def require(cond: bool, message: str) -> None:
    """Raise ConfigError(message) unless `cond` (use in `__post_init__`)."""
    if not cond:
        raise ConfigError(message)


def require_range(name: str, value: tuple[float, float] | list[float], lo: float | None = None, hi: float | None = None) -> None:
    """Check a (min, max) pair: two numbers, min <= max, inside [lo, hi] when given."""
    require(
        isinstance(value, (tuple, list)) and len(value) == 2,
        f"{name} must be a pair [min, max], got {value!r}",
    )
    a, b = value
    require(a <= b, f"{name} = {list(value)}: min {a} > max {b}; swap them")
    if lo is not None:
        require(a >= lo, f"{name} = {list(value)}: min must be >= {lo}")
    if hi is not None:
        require(b <= hi, f"{name} = {list(value)}: max must be <= {hi}")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where} must have {len(args)} items, got {list(value)!r}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where} = {value!r} is not one of {list(allowed)}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build the frozen dataclass `cls` from `data`; unknown keys and bad values raise."""
    data = dict(data or {})
    prefix = f"{where}." if where else ""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(prefix + k for k in unknown)}; "
            f"known keys{' of ' + where if where else ''}: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if where and not str(e).startswith(where.split(".")[-1]) and not str(e).startswith(where):
            raise ConfigError(f"{where}: {e}") from None
        raise


def to_dict(obj: Any) -> Any:
    """A JSON/YAML-able dict of a (nested) dataclass; tuples become lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def replace(obj: T, overrides: dict[str, Any], where: str = "") -> T:
    """A copy of `obj` with `overrides` (dotted keys allowed, e.g. 'ensemble.min_shapes') applied and validated."""
    data = to_dict(obj)
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise ConfigError(f"unknown config key {key!r}")
            node = node[p]
        node[parts[-1]] = value
    return from_dict(type(obj), data, where)


def read_config_file(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """Read a YAML config into {section: dict}; unknown sections and non-mappings are errors."""
    if path is None:
        return {s: {} for s in SECTIONS}

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist; pass an existing YAML file or omit --config")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {p} must be a mapping with sections {list(SECTIONS)}")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"config file {p}: unknown section(s) {unknown}; allowed: {list(SECTIONS)}")
    out = {}
    for s in SECTIONS:
        sec = raw.get(s) or {}
        if not isinstance(sec, dict):
            raise ConfigError(f"config file {p}: section {s!r} must be a mapping, got {sec!r}")
        out[s] = sec
    return out


def stable_hash(obj: Any) -> str:
    """sha256 hex of the canonical JSON of `obj` (dataclasses allowed)."""
    blob = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
