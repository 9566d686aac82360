"""What a peer says about itself in its membership metadata (at most 512 bytes).

A CBOR map with short keys: ``w`` worker capacity, ``q`` queued tasks, ``t`` tags, ``v`` the
software version, ``s`` when the peer started (Unix seconds, rounded; left out while 0, which
means unknown: it decides which of two peers of the same name yields, see ``_names.py``),
and the peer's environment: ``y`` its Python (implementation and version, ``CPython
3.11.7``), ``o`` its operating system (``Linux``), ``a`` its architecture (``x86_64``); each
left out while empty. The Python version decides which jobs a peer may take
(:mod:`.eligibility`); about 40 bytes in all.
``c``, ``m`` and ``l`` are what the peer uses (:class:`Usage`): CPU percent of the machine,
KiB resident in the peer and its workers, and the load average times 100, all integers
(about 15 bytes); left out until first measured, and dropped rather than going over the
limit (tags come first).
Decoding is lenient: unknown keys are ignored (a newer peer may add some) and malformed
metadata reads as defaults, since metadata only informs scheduling and naming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from .._errors import ProtocolError
from .codec import decode_cbor

__all__ = ["MAX_META", "NodeMeta", "Usage"]

MAX_META = 512


@dataclass(frozen=True, slots=True)
class Usage:
    """What a peer uses, sampled every ``Config.usage_interval``: ``cpu`` percent of all the
    machine's cores (0 to 100), ``rss`` KiB resident in the peer's process and its workers,
    ``load`` the machine's 1-minute load average."""

    cpu: float
    rss: int
    load: float

    def differs(self, published: Usage | None) -> bool:
        """Is this sample news worth a membership update, next to the one ``published``?

        Each publication reaches every peer, so small moves stay quiet: 5 points of CPU,
        5% (and 1 MiB) of memory, 0.1 and 10% of load.
        """
        if published is None:
            return True
        return (abs(self.cpu - published.cpu) >= 5
                or abs(self.rss - published.rss) >= max(1024, published.rss / 20)
                or abs(self.load - published.load) >= max(0.1, published.load / 10))


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
    usage: Usage | None = None

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
        if self.usage is not None:
            usage = self.usage
            fields |= {"c": min(100, max(0, round(usage.cpu))), "m": max(0, usage.rss),
                       "l": max(0, round(usage.load * 100))}
            with_usage = cbor2.dumps(fields)
            data = with_usage if len(with_usage) <= MAX_META else data
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
            usage=_usage(raw),
        )


def _text(value: Any) -> str:
    """A string, or "" for anything else."""
    return value if isinstance(value, str) else ""


def _usage(raw: dict[Any, Any]) -> Usage | None:
    cpu, rss, load = (raw.get(k) for k in "cml")
    if not all(type(v) is int and v >= 0 for v in (cpu, rss, load)):
        return None
    return Usage(float(_count(cpu)), _count(rss), _count(load) / 100)


def _count(value: Any) -> int:
    """A non-negative int, or 0 for anything else."""
    return value if type(value) is int and value >= 0 else 0
