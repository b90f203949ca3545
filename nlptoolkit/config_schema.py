"""Turn plain YAML data into typed dataclasses, with errors that point at the key.

A recipe section is described by a dataclass; :func:`build` checks a mapping
against it (unknown keys, wrong types, missing keys, out-of-range numbers) and
reports the first problem as one line: ``file:line: dotted.key: what, and the fix``.
Tasks describe their own recipe section the same way, so plugin options get
the same checks for free.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, Literal, Mapping, Optional, Union, get_args, get_origin, get_type_hints

from nlptoolkit.errors import NlptkError, did_you_mean

# Integers beyond this are never meaningful in a recipe and would only make
# torch fail deep inside (a batch of 10**20 sequences, say).
MAX_INT = 2**31 - 1


class Locator:
    """Knows where each dotted key came from: a line of the recipe file, or ``--set``."""

    def __init__(self, file: Optional[str], lines: Optional[Dict[str, Any]] = None) -> None:
        self.file = file
        self.lines: Dict[str, Any] = lines or {}

    def error(self, key: str, message: str) -> NlptkError:
        origin = self.lines.get(key)
        # Fall back to the nearest parent key that we know the line of.
        probe = key
        while origin is None and "." in probe:
            probe = probe.rsplit(".", 1)[0]
            origin = self.lines.get(probe)
        if origin == "--set":
            prefix = f"--set {key}: "
        elif self.file and origin:
            prefix = f"{self.file}:{origin}: {key}: " if key else f"{self.file}:{origin}: "
        elif self.file:
            prefix = f"{self.file}: {key}: " if key else f"{self.file}: "
        else:
            prefix = f"{key}: " if key else ""
        return NlptkError(prefix + message)


def describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is Union:
        return " or ".join(type_name(a) for a in get_args(tp) if a is not type(None)) + " (or null)"
    if origin in (list, typing.List):
        return "a list"
    if origin in (dict, typing.Dict):
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def build(cls: type, raw: Any, key: str, where: Locator) -> Any:
    """Check ``raw`` against dataclass ``cls`` and return an instance."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise where.error(key, f"expected a mapping of keys, got {describe(raw)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for name in raw:
        if name not in fields:
            sub = f"{key}.{name}" if key else str(name)
            raise where.error(
                sub,
                f"unknown key '{name}'{did_you_mean(name, fields)}; "
                f"allowed here: {', '.join(fields)}",
            )
    kwargs = {}
    for name, f in fields.items():
        sub = f"{key}.{name}" if key else name
        if name in raw:
            kwargs[name] = convert(hints[name], raw[name], sub, where, f.metadata)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise where.error(sub, f"missing required key '{name}' ({type_name(hints[name])}); add it to the recipe")
    return cls(**kwargs)


def convert(tp: Any, value: Any, key: str, where: Locator, meta: Mapping = {}) -> Any:
    """Check one value against a type annotation, converting where it is safe."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key, where)
    if origin is Union:
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None and type(None) in get_args(tp):
            return None
        if len(options) == 1:
            return convert(options[0], value, key, where, meta)
        for option in options:
            try:
                return convert(option, value, key, where, meta)
            except NlptkError:
                continue
        raise where.error(key, f"expected {type_name(tp)}, got {describe(value)}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise where.error(key, f"expected one of {', '.join(repr(a) for a in allowed)}, got {describe(value)}{did_you_mean(value, allowed)}")
        return value
    if origin in (list, typing.List):
        if not isinstance(value, list):
            raise where.error(key, f"expected a list, got {describe(value)}")
        (item,) = get_args(tp) or (Any,)
        return [convert(item, v, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin in (dict, typing.Dict):
        if not isinstance(value, Mapping):
            raise where.error(key, f"expected a mapping, got {describe(value)}")
        _, item = get_args(tp) or (str, Any)
        return {str(k): convert(item, v, f"{key}.{k}", where) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise where.error(key, f"expected true or false, got {describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise where.error(key, f"expected an integer, got {describe(value)}")
        return check_range(value, key, where, meta)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `2e-3` as a string; accept it as a number
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise where.error(key, f"expected a number, got {describe(value)}")
        if value != value or value in (float("inf"), float("-inf")):
            raise where.error(key, f"expected a finite number, got {value}")
        return check_range(float(value), key, where, meta)
    if tp is str:
        if not isinstance(value, str):
            raise where.error(key, f"expected a string, got {describe(value)}; quote it in the YAML if you meant text")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # a bug in a schema, not user input


def check_range(value: Any, key: str, where: Locator, meta: Mapping) -> Any:
    low, high = meta.get("min"), meta.get("max", MAX_INT)
    if low is not None and value < low:
        raise where.error(key, f"must be at least {low}, got {value}")
    if high is not None and value > high:
        raise where.error(key, f"must be at most {high}, got {value}")
    return value


def at_least(low: float, default: Any = dataclasses.MISSING, high: Optional[float] = None) -> Any:
    """A dataclass field with a lower (and optional upper) bound checked by :func:`build`."""
    meta = {"min": low}
    if high is not None:
        meta["max"] = high
    return dataclasses.field(default=default, metadata=meta)


def to_plain(obj: Any) -> Any:
    """Dataclasses to plain dicts, for saving in the run folder and in checkpoints."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    return obj
