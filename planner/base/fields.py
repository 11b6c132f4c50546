"""Options records as Python callers fill them: each field's value converted to its type hint, or refused.

The CLI hands the options records (``ProbeOptions``, ``RunOptions``, ``TuneOptions``, ...) values of
the right types. A notebook hands them what it has: a path as ``str``, a list where a tuple goes, one
card name where a tuple of names goes, ``16.0`` where a whole number goes, ``"16"`` where a number goes.
:func:`normalize_fields` converts the harmless ones to the field's type (a ``str`` path is a ``Path``,
so that ``data / "test_images"`` works later) and refuses the rest in one line naming the field, before
the record's own range checks compare values (``"16" < 2`` is a TypeError that names nothing, and a
string iterated as a tuple of card names is one name per letter).
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import types
import typing
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from planner.base.errors import UserError


def normalize_fields(record: Any) -> None:
    """Convert every field of the frozen dataclass ``record`` to its type hint, in place.

    Converted: ``str`` or path-like to ``Path`` (``~`` expanded, as a shell would); a list, tuple or array
    to a tuple (each item converted); one item where a ``tuple[X, ...]`` goes to a one-item tuple; a
    whole-valued float to ``int``; an integer to ``float``; a mapping's keys and values to its types.
    Types it does not know (``Literal``, records) are left to the record's own checks.

    Raises:
        UserError: a value of another type, naming the record's field, what it takes and what it got.
    """
    hints = _hints(type(record))
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        converted = _convert(value, hints[field.name], f"{type(record).__name__}.{field.name}")
        if converted is not value:
            object.__setattr__(record, field.name, converted)  # the record is frozen; this is its own __init__


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


class _Mismatch(Exception):
    """A value that is not of the hinted type (turned into a UserError naming the field); ``args[0]`` is it."""


def _convert(value: Any, hint: Any, where: str) -> Any:
    try:
        return _as(value, hint)
    except _Mismatch as mismatch:
        bad = mismatch.args[0]
        what = type(bad).__name__ if bad is value else f"{bad!r}: {type(bad).__name__}"
        raise UserError(f"{where} must be {_describe(hint)}, got {value!r} ({what})") from None


def _as(value: Any, hint: Any) -> Any:
    """``value`` as ``hint``; raises _Mismatch when it cannot be."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _as_one_of(value, args)
    if origin is tuple:
        return _as_tuple(value, args)
    if origin is Mapping or hint is Mapping:
        return _as_mapping(value, args)
    if hint is type(None):
        if value is None:
            return value
        raise _Mismatch(value)
    if hint is Path:
        if isinstance(value, str | os.PathLike):
            return Path(value).expanduser()
        raise _Mismatch(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch(value)
    if hint is int:
        return _as_int(value)
    if hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return value if type(value) is float else float(value)
        raise _Mismatch(value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch(value)
    return value  # Literal and the like: the record checks them itself


def _as_one_of(value: Any, args: tuple[Any, ...]) -> Any:
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _as(value, arg)
        except _Mismatch:
            continue
    raise _Mismatch(value)


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise _Mismatch(value)
    if isinstance(value, numbers.Integral):
        return value if type(value) is int else int(value)
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return int(value)
    raise _Mismatch(value)


def _as_tuple(value: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    several = isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping)  # a list, an array
    if len(args) == 2 and args[1] is Ellipsis:
        if not several:
            return (_as(value, args[0]),)  # one card, one size: a tuple of one
        return tuple(_as(item, args[0]) for item in value)
    items = tuple(value) if several else ()
    if len(items) != len(args):
        raise _Mismatch(value)
    return tuple(_as(item, arg) for item, arg in zip(items, args, strict=True))


def _as_mapping(value: Any, args: tuple[Any, ...]) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise _Mismatch(value)
    if not args:
        return value
    key_hint, value_hint = args
    return {_as(key, key_hint): _as(item, value_hint) for key, item in value.items()}


def _describe(hint: Any) -> str:
    """What a hint takes, in words: ``a whole number``, ``a path or None``, ``a string or a list of them``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        *first, last = [_describe(arg) for arg in args]
        return f"{', '.join(first)}{',' if len(first) > 1 else ''} or {last}"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"{_describe(args[0])} or a list of them"
        if len(set(args)) == 1:
            return f"a list of {len(args)} {_PLURALS.get(args[0], _describe(args[0]))}"
        return f"a list of {len(args)}: {', '.join(_describe(arg) for arg in args)}"
    if origin is Mapping or hint is Mapping:
        return f"a dict from {_describe(args[0])} to {_describe(args[1])}" if args else "a dict"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


_NAMES = {type(None): "None", Path: "a path (str or Path)", bool: "True or False", int: "a whole number",
          float: "a number", str: "a string"}
_PLURALS = {int: "whole numbers", float: "numbers", str: "strings", Path: "paths"}
