"""`Config`: every tunable of a peer, documented, with LAN and local presets.

Pure: no I/O except :meth:`Config.from_toml`, which reads the file it is given. Times are float
seconds everywhere. Each field's ``metadata["doc"]`` states its trade-off and its default;
``docs/config.md`` is generated from it (``python scripts/gen_config_docs.py``) and a test keeps
the two in step.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from ._errors import ConfigError

__all__ = ["Config"]

ENV_PREFIX = "P2PCLUSTER_"


def _doc(default: Any, doc: str, unit: str = "") -> Any:
    return field(default=default, metadata={"doc": " ".join(doc.split()), "unit": unit})


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything a peer can tune. Start from :meth:`lan` (the default) or :meth:`local`.

    Build variants with :func:`dataclasses.replace` or :meth:`load`; a Config is immutable and
    validated on creation (:class:`~p2pcluster.ConfigError`).
    """

    cluster: str = _doc("default", """
        Cluster name. Peers only talk to peers of the same name: the keys are derived from the
        secret *and* the name, so one secret can serve several separate clusters.""")
    secret_file: str | None = _doc(None, """
        Path of the secret file. None means the per-user default
        ($XDG_CONFIG_HOME/p2pcluster/secret). The file must not be readable by group or others.
        P2PCLUSTER_SECRET (the secret itself) takes precedence over any file.""")
    bind_address: str = _doc("0.0.0.0", """
        Address the UDP and TCP sockets bind to. 0.0.0.0 listens on every interface; a specific
        address limits the peer to one network.""")
    port: int = _doc(7946, """
        UDP and TCP port (the same number for both). 0 picks a free port, which then must be
        learned through discovery or a seed.""")
    max_datagram_size: int = _doc(1400, """
        Largest UDP datagram sent, envelope included, in bytes. 1400 fits an Ethernet MTU with
        room for IP and UDP headers and tunnels; larger risks IP fragmentation and loss,
        smaller carries fewer piggybacked updates per packet. Allowed: 512 to 1400.""", "bytes")
    max_frame_size: int = _doc(64 * 1024 * 1024, """
        Largest stream frame accepted, in bytes (64 MiB). Bounds the memory a peer may make us
        allocate; task arguments and results larger than this must be split.""", "bytes")
    replay_window: float = _doc(60.0, """
        A datagram whose timestamp is further than this from our wall clock is dropped, and
        nonces are remembered this long. Smaller is stricter but needs better-synchronised
        clocks: peers whose clocks differ by more than this cannot talk (run NTP).""", "s")
    replay_cache_size: int = _doc(200_000, """
        Most nonces remembered for replay detection. When full, the oldest are forgotten and
        anything older is refused, so it must cover replay_window at the peak packet rate
        (memory: about 100 bytes each).""")
    handshake_timeout: float = _doc(5.0, """
        Time allowed to connect a stream and finish its handshake. Longer tolerates loaded
        peers; shorter fails faster on unreachable ones.""", "s")

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (bool(self.cluster) and len(self.cluster.encode()) <= 63,
             "cluster must be 1 to 63 bytes"),
            (0 <= self.port <= 65535, "port must be 0..65535"),
            (512 <= self.max_datagram_size <= 1400, "max_datagram_size must be 512..1400"),
            (64 * 1024 <= self.max_frame_size <= 2**31, "max_frame_size must be 64 KiB..2 GiB"),
            (self.replay_window > 0, "replay_window must be positive"),
            (self.replay_cache_size >= 1000, "replay_cache_size must be at least 1000"),
            (self.handshake_timeout > 0, "handshake_timeout must be positive"),
        ]
        errors = [msg for ok, msg in checks if not ok]
        if errors:
            raise ConfigError("invalid Config: " + "; ".join(errors))

    # --- presets --------------------------------------------------------------------------

    @classmethod
    def lan(cls, **changes: Any) -> Self:
        """The default: peers on one LAN segment, sub-millisecond to few-millisecond links."""
        return cls(**changes)

    @classmethod
    def local(cls, **changes: Any) -> Self:
        """Every peer on this machine, over loopback: tighter timeouts, no exposure."""
        base: dict[str, Any] = {"bind_address": "127.0.0.1", "handshake_timeout": 1.0}
        return cls(**(base | changes))

    # --- loading --------------------------------------------------------------------------

    @classmethod
    def load(cls, *, preset: str = "lan", toml: str | Path | None = None,
             environ: Mapping[str, str] | None = None, **changes: Any) -> Self:
        """The preset, then the TOML file, then ``P2PCLUSTER_*`` variables, then ``changes``."""
        presets = {"lan": cls.lan, "local": cls.local}
        if preset not in presets:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(presets)}")
        config = presets[preset]()
        if toml is not None:
            config = config.with_toml(toml)
        config = config.with_env(os.environ if environ is None else environ)
        return dataclasses.replace(config, **changes) if changes else config

    def with_env(self, environ: Mapping[str, str]) -> Self:
        """A copy with every ``P2PCLUSTER_<FIELD>`` variable of ``environ`` applied."""
        changes = {}
        for f in dataclasses.fields(self):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                changes[f.name] = _parse_text(f.name, _hints()[f.name], raw)
        return dataclasses.replace(self, **changes)

    def with_toml(self, path: str | Path) -> Self:
        """A copy with the keys of a TOML file applied (top level or a [p2pcluster] table)."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        data = data.get("p2pcluster", data)
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown keys {unknown}; valid keys: {sorted(known)}")
        changes = {k: _check_value(k, _hints()[k], v) for k, v in data.items()}
        return dataclasses.replace(self, **changes)

    @classmethod
    def describe(cls) -> list[tuple[str, str, Any, str, str]]:
        """(name, type, default, unit, doc) for every field, in declaration order."""
        hints = _hints()
        return [(f.name, _type_name(hints[f.name]), f.default, f.metadata["unit"],
                 f.metadata["doc"]) for f in dataclasses.fields(cls)]


def _hints() -> dict[str, Any]:
    return typing.get_type_hints(Config)


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _base_type(hint: Any) -> tuple[type, bool]:
    """(type, optional) of a field hint such as ``float`` or ``str | None``."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return inner, True
    return hint, False


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _parse_text(name: str, hint: Any, raw: str) -> Any:
    base, optional = _base_type(hint)
    text = raw.strip()
    if optional and text.lower() in ("", "none"):
        return None
    if base is bool and text.lower() in _TRUE + _FALSE:
        return text.lower() in _TRUE
    if base is not bool:
        try:
            return base(text)
        except ValueError:
            pass
    raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {_type_name(hint)}")


def _check_value(name: str, hint: Any, value: Any) -> Any:
    base, optional = _base_type(hint)
    if value is None and optional:
        return None
    if base is float and type(value) is int:
        return float(value)
    if type(value) is not base:
        raise ConfigError(f"config key {name!r} must be {_type_name(hint)}, got {value!r}")
    return value


def render_markdown() -> str:
    """docs/config.md, generated from the field docs."""
    lines = ["# Configuration reference", "",
             "Generated from `p2pcluster/_config.py` by `python scripts/gen_config_docs.py`.",
             "Every field can be set in a TOML file (top level or a `[p2pcluster]` table), or",
             "by an environment variable `P2PCLUSTER_<FIELD>` (upper case).", ""]
    lan, local = Config.lan(), Config.local()
    for name, type_name, default, unit, doc in Config.describe():
        lines.append(f"## `{name}`: {type_name}" + (f" ({unit})" if unit else ""))
        lines.append("")
        lines.append(doc)
        lines.append("")
        lines.append(f"Default (LAN): `{getattr(lan, name)!r}`. Local preset: "
                     f"`{getattr(local, name)!r}`." if getattr(lan, name) != getattr(local, name)
                     else f"Default: `{default!r}`.")
        lines.append("")
    return "\n".join(lines)
