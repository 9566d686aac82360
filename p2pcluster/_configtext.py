"""A :class:`~._config.Config` field's value from text (an environment variable) or from TOML,
checked against the field's type hint: ``int``, ``float``, ``bool``, ``str``, ``X | None`` and
``tuple[str, ...]`` (comma-separated in text, a list in TOML).
"""

from __future__ import annotations

import types
import typing
from typing import Any

from ._errors import ConfigError

__all__ = ["ENV_PREFIX", "check_value", "parse_text", "type_name"]

#: Environment variables that set Config fields: ``P2PCLUSTER_<FIELD>``.
ENV_PREFIX = "P2PCLUSTER_"


def type_name(hint: Any) -> str:
    """How a type hint reads in messages and docs: ``float``, ``str | None``."""
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(type, optional) of a field hint such as ``float`` or ``str | None``."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return inner, True
    return hint, False


def _is_str_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_text(name: str, hint: Any, raw: str) -> Any:
    """The value of ``raw``, the text of the environment variable of field ``name``."""
    base, optional = _base_type(hint)
    text = raw.strip()
    if optional and text.lower() in ("", "none"):
        return None
    if _is_str_tuple(base):
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if base is bool and text.lower() in _TRUE + _FALSE:
        return text.lower() in _TRUE
    if base is not bool:
        try:
            return base(text)
        except ValueError:
            pass
    raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {type_name(hint)}")


def check_value(name: str, hint: Any, value: Any) -> Any:
    """``value`` (from TOML) for field ``name``, if it has the field's type (an int passes
    for a float)."""
    base, optional = _base_type(hint)
    if value is None and optional:
        return None
    if base is float and type(value) is int:
        return float(value)
    if _is_str_tuple(base):
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"config key {name!r} must be a list of strings, got {value!r}")
    if type(value) is not base:
        raise ConfigError(f"config key {name!r} must be {type_name(hint)}, got {value!r}")
    return value
