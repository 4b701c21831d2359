"""Flags, environment and a TOML file, all generated from :mod:`livenotify.config`.

:func:`specs` walks the fields of :class:`~livenotify.config.Config` (and the
nested :class:`~livenotify.config.Limits`) once; :func:`add_arguments`,
:func:`load` and :func:`describe` use what it finds. Precedence: flags >
environment > file > defaults. Every bad value raises :class:`SettingError`,
whose text is one line naming where the value came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .config import Config, Setting

#: The environment variable naming the config file (the ``--config`` flag wins).
CONFIG_ENV = "LIVENOTIFY_CONFIG"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class SettingError(Exception):
    """A bad setting; ``str()`` is one line for the operator."""


@dataclass(frozen=True, slots=True)
class Spec:
    """One setting as the outside world sees it."""

    #: Attribute path from :class:`Config`: ``("limits", "rate_per_second")``.
    path: tuple[str, ...]
    #: ``int``, ``float``, ``str``, ``str?`` (``None`` allowed), ``bool``,
    #: ``list`` (a tuple of strings) or ``enum``.
    kind: str
    default: Any
    meta: Setting
    enum: type[StrEnum] | None = None

    @property
    def flag(self) -> str:
        return self.meta.flag or "--" + self.path[-1].replace("_", "-")

    @property
    def key(self) -> str:
        """The file key: the flag name with ``_`` for ``-``."""
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        return "LIVENOTIFY_" + self.key.upper()

    @property
    def is_switch(self) -> bool:
        return self.kind == "bool"


def _kind(tp: Any) -> tuple[str, type[StrEnum] | None]:
    if isinstance(tp, type) and issubclass(tp, StrEnum):
        return "enum", tp
    if tp in (int, float, str, bool):
        return tp.__name__, None
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple and args[:1] == (str,):
        return "list", None
    if str in args and type(None) in args:
        return "str?", None
    raise TypeError(f"no setting kind for {tp!r}")


def specs(cls: type[Any] = Config, prefix: tuple[str, ...] = ()) -> list[Spec]:
    """Every setting of ``cls``, nested dataclasses flattened, in declaration order."""
    hints = typing.get_type_hints(cls)
    out: list[Spec] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(specs(typing.cast(type[Any], tp), (*prefix, f.name)))
            continue
        meta = f.metadata.get("setting")
        if meta is False:
            continue
        if meta is None:  # a plain field: exposed with what can be derived
            meta = Setting(help="")
        default = f.default if f.default is not dataclasses.MISSING else None
        kind, enum = _kind(tp)
        out.append(Spec((*prefix, f.name), kind, default, meta, enum))
    return out


def _number(spec: Spec, value: float) -> None:
    lo, hi = spec.meta.lo, spec.meta.hi
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        shown = f"{_fmt(lo)}..{_fmt(hi)}"
        raise ValueError(f"{_fmt(value)} is out of range {shown}")


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _finish(spec: Spec, value: Any) -> Any:
    """Range, choices and the custom check, on a value of the right type."""
    if spec.kind in ("int", "float"):
        _number(spec, value)
    if spec.kind == "enum":
        assert spec.enum is not None
        try:
            value = spec.enum(str(value).lower())
        except ValueError:
            allowed = ", ".join(m.value for m in spec.enum)
            raise ValueError(f"{value!r} is not one of {allowed}") from None
    if spec.meta.choices is not None:
        match = [c for c in spec.meta.choices if c.lower() == str(value).lower()]
        if not match:
            raise ValueError(f"{value!r} is not one of {', '.join(spec.meta.choices)}")
        value = match[0]
    if spec.meta.check is not None:
        value = spec.meta.check(value)
    return value


def from_text(spec: Spec, text: str) -> Any:
    """The field value for ``text`` given as a flag or environment value."""
    raw = text.strip()
    if spec.kind == "int":
        try:
            return _finish(spec, int(raw))
        except ValueError as exc:
            if raw.lstrip("+-").isdigit():
                raise
            raise ValueError(f"{text!r} is not an integer") from exc
    if spec.kind == "float":
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{text!r} is not a finite number")
        return _finish(spec, value)
    if spec.kind == "bool":
        low = raw.lower()
        if low not in _TRUE | _FALSE:
            raise ValueError(f"{text!r} is not a switch value (1/0, true/false, yes/no)")
        on = low in _TRUE
        return _finish(spec, not on if spec.meta.invert else on)
    if spec.kind == "list":
        return _finish(spec, tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip())))
    if spec.kind == "str?" and not raw:
        return None
    return _finish(spec, text)


def from_toml(spec: Spec, value: Any) -> Any:
    """The field value for ``value`` read from the TOML file."""
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not an integer")
        return _finish(spec, value)
    if spec.kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{value!r} is not a number")
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        return _finish(spec, float(value))
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not true or false")
        return _finish(spec, not value if spec.meta.invert else value)
    if spec.kind == "list":
        if isinstance(value, str):
            return from_text(spec, value)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{value!r} is not a list of strings")
        return _finish(spec, tuple(dict.fromkeys(v.strip() for v in value if v.strip())))
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return from_text(spec, value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; absent flags stay absent from the namespace."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"TOML file of settings, keys as the flags with _ (env {CONFIG_ENV})",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective settings and where each came from, then exit",
    )
    for spec in specs():
        shown = _show_default(spec)
        extra = f"; range {_fmt(spec.meta.lo)}..{_fmt(spec.meta.hi)}" if _ranged(spec) else ""
        if spec.is_switch:
            parser.add_argument(
                spec.flag,
                dest=spec.key,
                action="store_const",
                const="1",
                default=argparse.SUPPRESS,
                help=f"{spec.meta.help} (env {spec.env}=1)",
            )
            continue
        if spec.enum is not None:
            extra += "; " + " or ".join(m.value for m in spec.enum)
        parser.add_argument(
            spec.flag,
            dest=spec.key,
            metavar=_METAVARS.get(spec.kind, "TEXT"),
            default=argparse.SUPPRESS,
            help=f"{spec.meta.help} (default {shown}; env {spec.env}{extra})",
        )


_METAVARS = {"int": "N", "float": "NUM", "list": "A,B", "enum": "NAME"}


def _ranged(spec: Spec) -> bool:
    return spec.meta.lo is not None or spec.meta.hi is not None


def _show_default(spec: Spec) -> str:
    value = spec.default
    if value is None or value == ():
        return "none"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, StrEnum):
        return value.value
    return str(value)


def _read_file(path: str) -> dict[str, Any]:
    try:
        with Path(path).open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise SettingError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingError(f"{path}: {exc}") from None


def load(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> tuple[Config, dict[str, str]]:
    """The :class:`Config` from flags, environment and file; and each value's origin.

    Origins are ``default``, ``file <path>``, ``env <NAME>`` or ``flag <--flag>``.
    """
    env = os.environ if environ is None else environ
    all_specs = specs()
    values: dict[tuple[str, ...], Any] = {}
    origins: dict[str, str] = {s.key: "default" for s in all_specs}
    path = getattr(args, "config", None) or env.get(CONFIG_ENV) or None
    if path is not None:
        by_key = {s.key: s for s in all_specs}
        for key, raw in _read_file(path).items():
            spec = by_key.get(key)
            if spec is None:
                raise SettingError(f"{path}: unknown key {key!r}")
            try:
                values[spec.path] = from_toml(spec, raw)
            except ValueError as exc:
                raise SettingError(f"{path}: {key}: {exc}") from None
            origins[key] = f"file {path}"
    for spec in all_specs:
        raw_env = env.get(spec.env)
        if raw_env is None:
            continue
        try:
            values[spec.path] = from_text(spec, raw_env)
        except ValueError as exc:
            raise SettingError(f"{spec.env}: {exc}") from None
        origins[spec.key] = f"env {spec.env}"
    for spec in all_specs:
        raw_flag = getattr(args, spec.key, None)
        if raw_flag is None:
            continue
        try:
            values[spec.path] = from_text(spec, raw_flag)
        except ValueError as exc:
            raise SettingError(f"{spec.flag}: {exc}") from None
        origins[spec.key] = f"flag {spec.flag}"
    return _build(Config, (), values), origins


def _build(cls: type[Any], prefix: tuple[str, ...], values: Mapping[tuple[str, ...], Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        path = (*prefix, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(typing.cast(type[Any], hints[f.name]), path, values)
        elif path in values:
            kwargs[f.name] = values[path]
    return cls(**kwargs)


def value_of(config: Config, spec: Spec) -> Any:
    """The value of ``spec`` in ``config``."""
    obj: Any = config
    for part in spec.path:
        obj = getattr(obj, part)
    return obj


def mask_url(url: str) -> str:
    """``redis://:secret@host/0`` as ``redis://:***@host/0``: safe to log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and not isinstance(value, StrEnum):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def describe(config: Config, origins: Mapping[str, str]) -> list[str]:
    """``--print-config``: one TOML line per setting, its origin as a comment.

    A setting that is unset (``None``) is shown commented out; secrets are
    masked (a broker URL keeps everything but its password).
    """
    lines = []
    for spec in specs():
        value = value_of(config, spec)
        if spec.kind == "bool" and spec.meta.invert:
            value = not value
        origin = origins.get(spec.key, "default")
        if value is None:
            lines.append(f"# {spec.key} = (unset)  # {origin}")
            continue
        if spec.meta.secret:
            value = mask_url(value) if "://" in str(value) else "***"
        lines.append(f"{spec.key} = {_toml_value(value)}  # {origin}")
    return lines


def names(all_specs: Sequence[Spec] | None = None) -> list[str]:
    """Every flag, for tests and documentation."""
    return [s.flag for s in (all_specs or specs())]


def _range_text(spec: Spec) -> str:
    if _ranged(spec):
        return f"{_fmt(spec.meta.lo)}..{_fmt(spec.meta.hi)}"
    if spec.enum is not None:
        return " / ".join(f"`{m.value}`" for m in spec.enum)
    if spec.meta.choices is not None:
        return " / ".join(f"`{c}`" for c in spec.meta.choices)
    return ""


def markdown_table() -> str:
    """The README's table of settings (``python -m livenotify.settings``)."""
    rows = [
        "| flag | environment | file key | default | range | |",
        "|---|---|---|---|---|---|",
    ]
    for spec in specs():
        default = "" if spec.is_switch else f"`{_show_default(spec)}`"
        rows.append(
            f"| `{spec.flag}` | `{spec.env}` | `{spec.key}` | {default} | {_range_text(spec)} "
            f"| {spec.meta.help} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
