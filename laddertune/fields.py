"""Configuration fields: how each option is declared once (type, default, bounds, choices, flag name, help) and
checked, for every configuration of the package (LadderConfig, the methods' options, the run's sections).

A field is a plain dataclass field; its annotation gives its type and its attribute docstring its help text.
:func:`opt` adds what the annotation cannot say (``minimum``, ``choices``, another ``flag`` name, a command-line
parser or default) in the field's metadata, and :func:`check_fields` checks every field against its declaration,
so a new option needs one line here and nowhere else. Each check raises a one-line :class:`ConfigError` naming
the field; ``bool`` is never taken for an integer.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable, Iterable

from .errors import ConfigError

RECORD = "record"  # filled in by the library (a checkpoint's backbone name...), not an option
SETTING = "setting"  # an option of configuration files only, without a flag


def opt(
    default=dataclasses.MISSING,
    *,
    minimum: float | None = None,
    choices: tuple | None = None,
    flag: str | None = None,
    kind: str | None = None,
    cli_default=dataclasses.MISSING,
    parse: Callable[[str], object] | None = None,
    metavar: str | None = None,
    positive: bool = False,
    fraction: bool = False,
    aliases: tuple[str, ...] | None = None,
    default_factory=dataclasses.MISSING,
):
    """A dataclass field with its declaration in the metadata.

    Args:
        minimum: the smallest allowed value of a number.
        positive: a number > 0; fraction: a number in [0, 1).
        choices: the allowed values.
        flag: the option's name on the command line and in configuration files when it is not the field's
            (``attn_implementation`` is ``--attn``).
        kind: :data:`RECORD` (filled in, not an option) or :data:`SETTING` (configuration files only).
        cli_default: the command line's default when it differs from the library's.
        parse: turns the command-line text into a value (``--epochs paper``).
        metavar: the placeholder shown in ``--help``.
        aliases: other names of the option (flags and configuration files); files are written with its name.
    """
    meta = {
        k: v
        for k, v in dict(
            minimum=minimum, choices=choices, flag=flag, kind=kind, parse=parse, metavar=metavar,
            positive=positive or None, fraction=fraction or None, aliases=aliases,
        ).items()
        if v is not None
    }  # fmt: skip
    if cli_default is not dataclasses.MISSING:
        meta["cli_default"] = cli_default
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def record(default=None):
    """A field the library fills in (never an option)."""
    return opt(default, kind=RECORD)


def option_name(f: dataclasses.Field) -> str:
    """The name of a field's option (command line and configuration files)."""
    return f.metadata.get("flag", f.name)


def options_of(cls) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are options (records left out)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("kind") != RECORD]


def field_types(cls) -> dict[str, object]:
    """The resolved annotations of a dataclass's fields."""
    return typing.get_type_hints(cls)


def _unwrap_optional(tp) -> tuple[object, bool]:
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), type(None) in args
    return tp, False


def check_fields(obj) -> None:
    """Check (and normalise) every field of dataclass ``obj`` against its annotation and metadata.

    Normalises: a path-like given for a string field becomes its string; ``"1,2,3"`` for a list of integers
    becomes ``[1, 2, 3]``; a list given for a tuple becomes a tuple.
    """
    types_ = field_types(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        tp, optional = _unwrap_optional(types_[f.name])
        if value is None:
            if not optional:
                raise ConfigError(f"{f.name} must not be None")
            continue
        meta = f.metadata
        if meta.get("fraction") and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"{f.name} must be in [0, 1){' or None' if optional else ''}, got {value!r}")
        value = _check_type(f.name, value, tp)
        if "choices" in meta and value not in meta["choices"]:
            raise ConfigError(
                f"{f.name} must be one of {', '.join(map(str, meta['choices']))}; got {value!r}"
            )
        if "minimum" in meta and value < meta["minimum"]:
            kind = "an integer" if tp is int else "a number"
            raise ConfigError(f"{f.name} must be {kind} >= {meta['minimum']}, got {value!r}")
        if meta.get("positive") and not value > 0:
            raise ConfigError(f"{f.name} must be a positive number, got {value!r}")
        if meta.get("fraction") and not 0 <= value < 1:
            raise ConfigError(f"{f.name} must be in [0, 1){' or None' if optional else ''}, got {value!r}")
        object.__setattr__(obj, f.name, value)


def _check_type(name: str, value, tp):
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    elif tp is float:
        check_number(name, value, allow_negative=True)
    elif tp is str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
    elif typing.get_origin(tp) in (list, tuple):
        item = typing.get_args(tp)[0]
        if isinstance(value, str) and item is int:
            value = parse_int_list(value, name)
        if isinstance(value, str | bytes | dict) or not isinstance(value, Iterable):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        value = list(value)
        for x in value:
            ok = (isinstance(x, int) and not isinstance(x, bool)) if item is int else isinstance(x, item)
            if not ok:
                raise ConfigError(f"{name} must be a list of {item.__name__}, got {value!r}")
        value = tuple(value) if typing.get_origin(tp) is tuple else value
    return value


def parse_int_list(text: str, what: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]``; raises ConfigError naming ``what`` otherwise."""
    try:
        return [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers such as 1,2,3; got {text!r}") from None


def check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_number(name: str, value, positive: bool = False, allow_negative: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or (value < 0 and not allow_negative) or (positive and value <= 0):
        what = "positive" if positive else "finite" if allow_negative else "non-negative"
        raise ConfigError(f"{name} must be a {what} number, got {value!r}")


def check_bool(name: str, value, optional: bool = False) -> None:
    if not (isinstance(value, bool) or (optional and value is None)):
        raise ConfigError(f"{name} must be true or false{' (or None)' if optional else ''}, got {value!r}")


def check_optional_int(name: str, value, minimum: int) -> None:
    if value is not None:
        check_int(name, value, minimum)


def check_optional_str(name: str, value) -> None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string or None, got {value!r}")


def check_fraction(name: str, value, optional: bool = False) -> None:
    """A probability in [0, 1)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ConfigError(f"{name} must be in [0, 1){' or None' if optional else ''}, got {value!r}")
