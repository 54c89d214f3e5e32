"""Declared fields: each configuration field states its range or choices once, on the field.

Every field of a method's Params and of the configuration dataclasses is made with one of
`integer`, `number`, `choice`, `one_of`, `names`, `flag`, `text` or `free`, which record a `Rule` in the
field's metadata; `problems` checks an instance against its fields' rules and `coerce` turns a
JSON value into a field's annotated type. A field made without a rule is a test failure
(tests/test_fields.py), so a new parameter cannot silently go unchecked. TensorFlow-free.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, Callable

RULE = "rule"


@dataclasses.dataclass(frozen=True)
class Range:
    """An int or a finite float in an interval (ends closed unless flagged open)."""

    kind: type
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def problem(self, value: Any) -> str | None:
        ends = (f"{end:d}" if self.kind is int else f"{end:g}" for end in (self.low, self.high))
        interval = f"{'(' if self.low_open else '['}{', '.join(ends)}{')' if self.high_open else ']'}"
        what = "an integer" if self.kind is int else "a finite number"
        numeric = int if self.kind is int else (int, float)
        if (isinstance(value, bool) or not isinstance(value, numeric) or not math.isfinite(value)
                or value < self.low or value > self.high
                or (self.low_open and value == self.low) or (self.high_open and value == self.high)):
            return f"must be {what} in {interval}, got {value!r}"
        return None


@dataclasses.dataclass(frozen=True)
class Choices:
    """One of a fixed set of values."""

    options: tuple[Any, ...]

    def problem(self, value: Any) -> str | None:
        if value not in self.options:
            shown = (repr(option) if option == "" else str(option) for option in self.options)
            return f"must be one of {', '.join(shown)}, got {value!r}"
        return None


@dataclasses.dataclass(frozen=True)
class Names:
    """Distinct names among `options`, separated by commas (e.g. FitNet's taps "stage1,stage3")."""

    options: tuple[str, ...]

    def problem(self, value: Any) -> str | None:
        items = value.split(",") if isinstance(value, str) else []
        if not items or len(set(items)) != len(items) or not set(items) <= set(self.options):
            return f"must be distinct names among {', '.join(self.options)} separated by commas, got {value!r}"
        return None


@dataclasses.dataclass(frozen=True)
class OfType:
    """Any value of a type: flags, paths, free text, mappings checked elsewhere."""

    kind: type | tuple[type, ...]

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, self.kind) or (self.kind is not bool and isinstance(value, bool)):
            return f"must be {_type_name(self.kind)}, got {value!r}"
        return None


Rule = typing.Union[Range, Choices, Names, OfType]


def _field(default: Any, rule: Rule, default_factory: Callable[[], Any] | None = None, optional: bool = False) -> Any:
    metadata = {RULE: rule, "optional": optional}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def integer(default: Any, low: int, high: int, optional: bool = False) -> Any:
    """An int in [low, high] (`optional`: None is allowed too)."""
    return _field(default, Range(int, low, high), optional=optional)


def number(default: Any, low: float, high: float, low_open: bool = False, high_open: bool = False,
           optional: bool = False) -> Any:
    """A finite float in the interval (an int is taken as a float)."""
    return _field(default, Range(float, low, high, low_open, high_open), optional=optional)


def choice(default: Any, *others: Any) -> Any:
    """`default` or one of `others`."""
    return _field(default, Choices((default, *others)))


def one_of(options: tuple[Any, ...], default: Any = dataclasses.MISSING) -> Any:
    """One of `options`; a default outside them must be replaced (a required choice)."""
    return _field(default, Choices(tuple(options)))


def names(default: str, options: tuple[str, ...]) -> Any:
    return _field(default, Names(tuple(options)))


def flag(default: bool) -> Any:
    return _field(default, OfType(bool))


def text(default: str = "") -> Any:
    """Free text (a path, a URI, a description)."""
    return _field(default, OfType(str))


def free(kind: type | tuple[type, ...], default: Any = dataclasses.MISSING,
         default_factory: Callable[[], Any] | None = None, optional: bool = False) -> Any:
    """A value of `kind` whose content is checked by its class's own cross-field checks."""
    return _field(default, OfType(kind), default_factory=default_factory, optional=optional)


def rule_of(field: dataclasses.Field) -> Rule | None:
    return field.metadata.get(RULE)


def problems(instance: Any, label: Callable[[str], str] = str) -> list[str]:
    """What is wrong with each field of a dataclass instance, by its rule: "<label(name)> must be ..."."""
    found = []
    for field in dataclasses.fields(instance):
        rule = rule_of(field)
        value = getattr(instance, field.name)
        optional = field.metadata.get("optional")
        if rule is None or (value is None and optional):
            continue
        problem = rule.problem(value)
        if problem:
            found.append(f"{label(field.name)} {problem.replace('must be ', 'must be null or ', 1) if optional else problem}")
    return found


def coerce(value: Any, annotation: Any) -> Any:
    """A JSON value as the annotated type (ints as floats, "a,b" as a tuple); ValueError("expected ...")."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return coerce(value, next(a for a in args if a is not type(None)))
    if origin is tuple:
        if isinstance(value, str):  # `--set x=0.5,0.75`: each item parsed like a whole value
            value = [json_or_text(item.strip()) for item in value.split(",") if item.strip()]
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {value!r}")
        return tuple(coerce(item, args[0]) for item in value)
    if origin in (dict, typing.Mapping) or annotation is dict:
        if not isinstance(value, dict):
            raise ValueError(f"expected an object, got {value!r}")
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is bool and not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    if annotation in (int, float) and (isinstance(value, bool) or not isinstance(value, annotation)):
        raise ValueError(f"expected {'an integer' if annotation is int else 'a number'}, got {value!r}")
    if not isinstance(value, annotation):
        raise ValueError(f"expected {_type_name(annotation)}, got {value!r}")
    return value


def json_or_text(raw: str) -> Any:
    """A command-line value: JSON where it parses (numbers, lists, null), else the text itself."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "an object",
             list: "a list", tuple: "a list"}
    named = (words.get(k, getattr(k, "__name__", str(k))) for k in kinds)
    return " or ".join(dict.fromkeys(named))  # (tuple, list): "a list", once


def parse(cls: type, values: Any, label: Callable[[str], str], owner: str) -> Any:
    """Builds dataclass `cls` from a mapping: unknown keys, wrong types and out-of-range values are
    ValueErrors that name `owner` and the field."""
    if not isinstance(values, typing.Mapping):
        raise ValueError(f"{owner}: parameters must be an object of name: value, got {values!r}")
    hints = typing.get_type_hints(cls)  # resolved: modules use `from __future__ import annotations`
    known = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{owner}: unknown parameter(s) {unknown}; valid: {sorted(known) or 'none'}")
    parsed = {}
    for key, value in values.items():
        try:
            parsed[key] = coerce(value, hints[key])
        except ValueError as error:
            raise ValueError(f"{label(key)}: {error}") from None
    instance = cls(**parsed)
    found = problems(instance, label)
    if found:
        raise ValueError("; ".join(found))
    return instance
