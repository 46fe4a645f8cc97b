"""Settings dataclasses as dicts and as command-line flags.

A frozen config dataclass (`SplitConfig`, `DataSource`, lore_train's
`TrainConfig`) is the one place a setting's name, type, choices (from a
``Literal`` type), default and help (``field(metadata={"help": ...})``) are
written. `add_arguments` derives the flags of a command from it, and
`from_dict` reads back what a results file or checkpoint stored, refusing
keys the dataclass does not have, so a typo or a file from another version
is an error naming the key and the file rather than a silent default.

Field metadata understood here: ``help``; ``flag`` (the option string when it
is not ``--field-name``); ``cli=False`` (no flag: the command sets it itself).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar

from ..errors import DataError

T = TypeVar("T")


def from_dict(cls: type[T], data: Mapping[str, Any], *, source: str = "config") -> T:
    """``cls(**data)``, refusing unknown keys; errors name ``source`` (the file) and the key."""
    if not isinstance(data, Mapping):
        raise DataError(f"{source}: {cls.__name__} must be a JSON object, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise DataError(
            f"{source}: unknown {cls.__name__} key {unknown[0]!r} (known: {', '.join(names)})"
        )
    try:
        return cls(**data)
    except (TypeError, ValueError) as err:
        raise DataError(f"{source}: bad {cls.__name__}: {err}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """The resolved settings of a config dataclass, JSON-ready."""
    return dataclasses.asdict(config)


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    exclude: Iterable[str] = (),
    default_note: str = "",
) -> list[str]:
    """Add one flag per field of ``cls``; return the field names that got one.

    Flags default to "not given" (absent from the namespace), so a caller
    applies only what the user typed on top of a preset or a stored config
    (`given`); the help shows the dataclass default, with ``default_note``
    appended (e.g. "; presets may change it"); a None default is not shown
    (the field's help says what happens when it is not set).
    """
    hints = typing.get_type_hints(cls)
    added = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.metadata.get("cli", True):
            continue
        kind, choices = _flag_type(hints[f.name], f"{cls.__name__}.{f.name}")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = "the data set's own" if default_note == "dataset" else repr(default)
        extra = "" if default_note in ("", "dataset") else default_note
        if default is None and default_note != "dataset":  # the help says what unset means
            suffix = f" (default: not set{extra})" if extra else ""
        else:
            suffix = f" (default: {shown}{extra})"
        help_text = f"{f.metadata.get('help', '')}{suffix}".strip()
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        options: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                                   "help": help_text.replace("%", "%%")}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = kind
            if choices:
                options["choices"] = choices
            else:
                options["metavar"] = flag.lstrip("-").replace("-", "_").upper()
        parser.add_argument(flag, **options)
        added.append(f.name)
    return added


def given(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The settings among ``names`` that were given on the command line."""
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def _flag_type(hint: Any, where: str) -> tuple[type, tuple[Any, ...] | None]:
    """(argparse type, choices) of a field annotation; ``X | None`` is read as X."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{where}: cannot make a flag of {hint}")
        hint = args[0]
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        return type(choices[0]), choices
    if hint in (int, float, str, bool):
        return hint, None
    raise TypeError(f"{where}: cannot make a flag of {hint}")
