"""Each flag declared once: on the settings field it fills, with its default and help.

::

    @dataclass(frozen=True, kw_only=True)
    class AgentSettings:
        port: int = flag(3100, "HTTP port (0 picks a free one)", parse=port_number)
        log: LogSettings = field(default_factory=LogSettings, metadata=nested())

:func:`add_flags` builds a subcommand's arguments from a settings class (fields of base
classes and of settings marked :func:`nested` included); :func:`from_flags` builds the settings
from what argparse parsed. The flag is ``--`` plus the field name with ``-`` for ``_``
unless ``name`` says otherwise; a ``bool`` default makes a ``--NAME``/``--no-NAME`` pair.

Validation lives beside the declarations: a rule about one flag's value is its ``parse``
function (argparse runs it, so a bad value is a usage error naming the flag); a rule
about the world (a file exists) is its ``check``, run when the settings are made, so
parsing alone never looks at the filesystem; a rule between flags is the settings
class's ``__post_init__``. Both raise :class:`SettingsError`, which names the flags.

Flags Kiam has but we do not use are listed in a settings class's ``IGNORED_FLAGS``: they
are accepted so an existing deployment's arguments keep working, and :func:`ignored_given`
names the ones a command line used, for a warning.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kiam.common.durations import format_duration, parse_duration

_FLAG = "kiam.flag"
_NESTED = "kiam.nested"
_FILL = "kiam.fill"


class SettingsError(ValueError):
    """Settings that cannot work together; the message names the flags."""


@dataclass(frozen=True, kw_only=True)
class Flag:
    help: str
    name: str = ""
    """The flag without ``--``; empty: the field's name with ``-`` for ``_``."""
    aliases: tuple[str, ...] = ()
    parse: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    env: str = ""
    """An environment variable whose value, when set, replaces the default."""
    repeat: bool = False
    """The flag may be given several times; the field holds a tuple (the default when
    never given)."""
    metavar: str | None = None
    check: Callable[[str, Any], None] | None = None
    """A rule about the world rather than the text (a file exists), checked with the flag's
    name and value when the settings are made, not while parsing; raises SettingsError."""
    positional: bool = False
    """An optional positional argument (``kiam explain NAMESPACE/POD``) instead of
    ``--NAME``."""


@dataclass(frozen=True, kw_only=True)
class Ignored:
    """A Kiam flag accepted and ignored; ``reason`` says why, in the warning."""

    name: str
    reason: str
    boolean: bool = False
    hidden: bool = False


def flag(default: Any, help: str, **options: Any) -> Any:
    """A settings field filled by a flag (``options``: see :class:`Flag`)."""
    return dataclasses.field(default=default, metadata={_FLAG: Flag(help=help, **options)})


def required_flag(help: str, **options: Any) -> Any:
    """A settings field filled by a flag that must be given."""
    return dataclasses.field(metadata={_FLAG: Flag(help=help, **options)})


def nested(*, omit: tuple[str, ...] = (), fill: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metadata of a field holding another settings class (its annotation), whose
    flags the command gets too, but not those of the fields named in ``omit`` (which keep
    their defaults, or take their value from ``fill``: an omitted field without a default
    must be filled)::

        log: LogSettings = field(default_factory=LogSettings, metadata=nested())
    """
    return {_NESTED: omit, _FILL: dict(fill or {})}


def _nested(cls: type[Any], item: dataclasses.Field[Any]) -> tuple[type[Any], tuple[str, ...]]:
    inner: type[Any] = typing.get_type_hints(cls)[item.name]
    return inner, item.metadata[_NESTED]


def _fields(cls: type[Any], omit: tuple[str, ...] = ()) -> Iterator[dataclasses.Field[Any]]:
    for item in dataclasses.fields(cls):
        if item.name not in omit:
            yield item


def _name(item: dataclasses.Field[Any], spec: Flag) -> str:
    return spec.name or item.name.replace("_", "-")


def _dest(item: dataclasses.Field[Any], spec: Flag) -> str:
    return _name(item, spec).replace("-", "_")


def add_flags(
    parser: argparse.ArgumentParser, cls: type[Any], *, omit: tuple[str, ...] = ()
) -> None:
    """Add the flags that fill ``cls`` (and the settings nested in it) to ``parser``,
    and the flags it ignores."""
    _add_fields(parser, cls, omit)
    for ignored in _ignored(cls):
        parser.add_argument(
            f"--{ignored.name}",
            action=argparse.BooleanOptionalAction if ignored.boolean else "store",
            default=None,
            dest=_ignored_dest(ignored),
            metavar=None if ignored.boolean else "VALUE",
            help=argparse.SUPPRESS if ignored.hidden else f"ignored: {ignored.reason}",
        )


def _add_fields(parser: argparse.ArgumentParser, cls: type[Any], omit: tuple[str, ...]) -> None:
    for item in _fields(cls, omit):
        if _NESTED in item.metadata:
            inner, inner_omit = _nested(cls, item)
            _add_fields(parser, inner, inner_omit)
            continue
        spec: Flag = item.metadata[_FLAG]
        if spec.positional:
            parser.add_argument(
                _dest(item, spec), nargs="?", default=item.default, help=spec.help,
                metavar=spec.metavar,
            )
            continue
        names = [f"--{_name(item, spec)}", *(f"--{alias}" for alias in spec.aliases)]
        options: dict[str, Any] = {"dest": _dest(item, spec), "help": _help(item, spec)}
        if item.default is dataclasses.MISSING:
            options["required"] = True
        elif isinstance(item.default, bool):
            options.update(action=argparse.BooleanOptionalAction, default=item.default)
        elif spec.repeat:
            options.update(action="append", default=None)
        else:
            default = os.environ.get(spec.env, item.default) if spec.env else item.default
            options["default"] = default
        if spec.parse is not None:
            options["type"] = spec.parse
        if spec.choices is not None:
            options["choices"] = spec.choices
        if spec.metavar is not None:
            options["metavar"] = spec.metavar
        parser.add_argument(*names, **options)


def _help(item: dataclasses.Field[Any], spec: Flag) -> str:
    default = item.default
    if default is dataclasses.MISSING or default == "" or default is False or spec.repeat:
        return spec.help
    if spec.parse in (duration, positive_duration):
        default = format_duration(default)
    elif default is True:
        default = "on"
    return f"{spec.help} (default {default})"


def from_flags(
    cls: type[Any],
    ns: argparse.Namespace,
    *,
    omit: tuple[str, ...] = (),
    fill: dict[str, Any] | None = None,
) -> Any:
    """The settings ``cls`` from what ``add_flags``' arguments parsed (the fields named in
    ``omit`` from ``fill`` or their defaults).

    Raises :class:`SettingsError` when the values do not work together.
    """
    values: dict[str, Any] = {name: value for name, value in (fill or {}).items() if name in omit}
    for item in _fields(cls, omit):
        if _NESTED in item.metadata:
            inner, inner_omit = _nested(cls, item)
            values[item.name] = from_flags(inner, ns, omit=inner_omit, fill=item.metadata[_FILL])
            continue
        spec: Flag = item.metadata[_FLAG]
        value = getattr(ns, _dest(item, spec))
        if spec.check is not None:
            spec.check(f"--{_name(item, spec)}", value)
        if spec.repeat:
            value = tuple(value) if value else item.default
        values[item.name] = value
    return cls(**values)


def ignored_given(cls: type[Any], ns: argparse.Namespace) -> list[Ignored]:
    """The ignored flags of ``cls`` the command line used."""
    return [item for item in _ignored(cls) if getattr(ns, _ignored_dest(item), None) is not None]


def _ignored(cls: type[Any]) -> list[Ignored]:
    found: list[Ignored] = []
    for item in dataclasses.fields(cls):
        if _NESTED in item.metadata:
            found += _ignored(_nested(cls, item)[0])
    for base in reversed(cls.__mro__):
        found += base.__dict__.get("IGNORED_FLAGS", ())
    return found


def _ignored_dest(ignored: Ignored) -> str:
    return "ignored_" + ignored.name.replace("-", "_")


# ---------------------------------------------------------------- value rules


def _usage(message: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(message)


def duration(text: str) -> float:
    """A Go duration (``500ms``, ``15m``) in seconds."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise _usage(str(exc)) from None


def positive_duration(text: str) -> float:
    seconds = duration(text)
    if seconds <= 0:
        raise _usage(f"{text!r}: must be positive")
    return seconds


def at_least(minimum: int) -> Callable[[str], int]:
    """A whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise _usage(f"{text!r}: not a whole number") from None
        if number < minimum:
            raise _usage(f"{text!r}: must be at least {minimum}")
        return number

    return parse


def port_number(text: str) -> int:
    number = at_least(0)(text)
    if number > 65535:
        raise _usage(f"{text!r}: must be 0-65535 (0 picks a free port)")
    return number


def regexp(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise _usage(f"invalid regular expression {text!r}: {exc}") from None
    return text


def existing_file(name: str, path: str) -> None:
    """A ``check``: ``path`` names a file."""
    if not os.path.isfile(path):
        raise SettingsError(f"{name} {path}: no such file")


def url(text: str) -> str:
    """A base URL, without the trailing ``/`` paths are joined to."""
    return text.rstrip("/")
