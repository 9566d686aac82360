"""What a peer says about itself in its membership metadata (at most 512 bytes).

A CBOR map with short keys: ``w`` worker capacity, ``q`` queued tasks, ``t`` tags, ``v`` the
software version, ``s`` when the peer started (Unix seconds, rounded; left out while 0, which
means unknown: it decides which of two peers of the same name yields, see ``_names.py``),
and the peer's environment: ``y`` its Python (implementation and version, ``CPython
3.11.7``), ``o`` its operating system (``Linux``), ``a`` its architecture (``x86_64``); each
left out while empty. The Python version decides which jobs a peer may take
(:mod:`.eligibility`); about 40 bytes in all.
Decoding is lenient: unknown keys are ignored (a newer peer may add some) and malformed
metadata reads as defaults, since metadata only informs scheduling and naming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from .._errors import ProtocolError
from .codec import decode_cbor

__all__ = ["MAX_META", "NodeMeta"]

MAX_META = 512


@dataclass(frozen=True, slots=True)
class NodeMeta:
    workers: int = 0
    queue: int = 0
    tags: tuple[str, ...] = ()
    version: str = ""
    started: int = 0
    python: str = ""  #: implementation and version: ``CPython 3.11.7``
    system: str = ""  #: ``Linux``, ``Darwin``, ``Windows``
    machine: str = ""  #: ``x86_64``, ``arm64``

    @property
    def python_version(self) -> str | None:
        """The Python version alone (``3.11.7``), or None if the peer did not say."""
        return self.python.rpartition(" ")[2] or None

    def encode(self) -> bytes:
        fields: dict[str, Any] = {"w": self.workers, "q": self.queue, "t": list(self.tags),
                                  "v": self.version}
        if self.started:
            fields["s"] = self.started
        for key, value in (("y", self.python), ("o", self.system), ("a", self.machine)):
            if value:
                fields[key] = value
        data = cbor2.dumps(fields)
        if len(data) > MAX_META:
            raise ValueError(f"metadata needs {len(data)} bytes; the limit is {MAX_META} "
                             "(use fewer or shorter tags)")
        return data

    @classmethod
    def decode(cls, data: bytes) -> NodeMeta:
        try:
            raw: Any = decode_cbor(data) if data else {}
        except ProtocolError:
            return cls()
        if not isinstance(raw, dict):
            return cls()
        workers, queue, tags, version, started = (raw.get(k) for k in "wqtvs")
        return cls(
            workers=_count(workers),
            queue=_count(queue),
            tags=tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
            version=_text(version),
            started=_count(started),
            python=_text(raw.get("y")),
            system=_text(raw.get("o")),
            machine=_text(raw.get("a")),
        )


def _text(value: Any) -> str:
    """A string, or "" for anything else."""
    return value if isinstance(value, str) else ""


def _count(value: Any) -> int:
    """A non-negative int, or 0 for anything else."""
    return value if type(value) is int and value >= 0 else 0
