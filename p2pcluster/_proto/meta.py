"""What a peer says about itself in its membership metadata (at most 512 bytes).

A CBOR map with short keys: ``w`` worker capacity, ``q`` queued tasks, ``t`` tags, ``v`` the
software version. Decoding is lenient: unknown keys are ignored (a newer peer may add some)
and malformed metadata reads as defaults, since metadata only informs scheduling.
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

    def encode(self) -> bytes:
        data = cbor2.dumps({"w": self.workers, "q": self.queue, "t": list(self.tags),
                            "v": self.version})
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
        workers, queue, tags, version = (raw.get(k) for k in ("w", "q", "t", "v"))
        return cls(
            workers=workers if type(workers) is int and workers >= 0 else 0,
            queue=queue if type(queue) is int and queue >= 0 else 0,
            tags=tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
            version=version if isinstance(version, str) else "",
        )
