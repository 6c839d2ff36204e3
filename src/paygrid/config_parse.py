"""How a raw value (a flag's, an environment variable's string, a TOML file's value) becomes a
typed setting, and how the configuration file is read; config.py says which settings exist."""

from __future__ import annotations

import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

CONFIG_TABLE = "paygrid"
MAX_CONFIG_BYTES = 1 << 20
Check = Callable[[Any], str | None]  # None when the value is fine, else what is wrong


class ConfigError(ValueError):
    """A setting that cannot be used; the message names its source (flag, variable, or file
    and key)."""


def read_config_file(path: Path, known: set[str]) -> dict[str, object]:
    """A TOML file with one ``[paygrid]`` table whose keys are setting names (any case)."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
        with path.open("rb") as f:
            document = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key in document:
        if key != CONFIG_TABLE:
            raise ConfigError(f"{path}: unknown key {key!r}: settings go in a [paygrid] table")
    table = document.get(CONFIG_TABLE, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {CONFIG_TABLE} must be a table ([paygrid])")
    values: dict[str, object] = {}
    for key, value in table.items():
        name = key.lower()
        if name not in known:
            raise ConfigError(f"{path}: [{CONFIG_TABLE}] unknown key {key!r}")
        if name in values:
            raise ConfigError(f"{path}: [{CONFIG_TABLE}] {name} is given twice")
        values[name] = value
    return values


def parse(source: str, raw: object, tp: Any, metadata: Mapping[str, Any]) -> Any:
    shown = "(hidden)" if metadata.get("secret") else repr(raw)
    try:
        value = "" if metadata.get("empty") and raw == "" else _coerce(raw, tp)
    except ValueError as exc:
        raise ConfigError(f"{source} = {shown}: {exc}") from None
    check: Check | None = metadata.get("check")
    problem = check(value) if check is not None and value is not None else None
    if problem:
        raise ConfigError(f"{source} = {shown}: {problem}")
    return value


def _coerce(raw: object, tp: Any) -> Any:
    """``raw`` (a string from the environment, a TOML value, or a typed flag) as ``tp``."""
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType) and type(None) in args:
        if raw == "":
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(raw, inner)
    if typing.get_origin(tp) is tuple:
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, list | tuple):
            raise ValueError("not a list")
        return tuple(_coerce(str(item).strip(), args[0]) for item in items if str(item).strip())
    parse = _SCALARS.get(tp)
    if parse is None:
        raise TypeError(f"settings of type {tp} are not supported")
    return parse(raw)


def _str(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError("not a string")
    if not raw:
        raise ValueError("must not be empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise ValueError("contains a control character")
    return raw


def _int(raw: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lstrip("+-").isdigit() and raw.isascii():
        return int(raw)
    raise ValueError("not an integer")


def _float(raw: object) -> float:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("not a number") from None
    else:
        raise ValueError("not a number")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return value


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE + _FALSE:
        return raw.strip().lower() in _TRUE
    raise ValueError(f"not a boolean ({'/'.join(_TRUE)} or {'/'.join(_FALSE)})")


def _path(raw: object) -> Path:
    if isinstance(raw, Path):
        return raw
    return Path(_str(raw))


_SCALARS: dict[object, Callable[[object], object]] = {
    str: _str,
    int: _int,
    float: _float,
    bool: _bool,
    Path: _path,
}
