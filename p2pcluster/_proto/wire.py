"""The peer-to-peer protocol's codec: every message of ``docs/protocol.md``, in CBOR.

:func:`encode` and :func:`decode` are what the wire (``_secure.py``) and the simulator use;
:func:`update_size` is what the broadcast queue needs to fill a datagram exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cbor2

from .codec import Codec, FieldSpec, compile_encoder, record_specs
from .messages import MESSAGE_CLASSES, PROTOCOL_VERSION, SUPPORTED_VERSIONS, Message

__all__ = ["WIRE", "decode", "encode", "iter_specs", "update_size"]

#: The peer-to-peer protocol's messages (``docs/protocol.md``).
WIRE = Codec(MESSAGE_CLASSES, version=PROTOCOL_VERSION, supported=SUPPORTED_VERSIONS)


def encode(msg: Message) -> bytes:
    """Encode a peer message as CBOR. Does not check limits: :func:`decode` of the result
    does."""
    return WIRE.encode(msg)


def decode(data: bytes | memoryview, *, max_size: int | None = None) -> Message:
    """Decode one peer message; raise :class:`~p2pcluster.ProtocolError` on anything amiss."""
    msg: Message = WIRE.decode(data, max_size=max_size)
    return msg


def iter_specs() -> Iterator[tuple[int, type, tuple[FieldSpec, ...]]]:
    """Every top-level peer message class with its field specs, by type code."""
    return WIRE.iter_specs()


_UPDATE_ENCODER = compile_encoder(
    next(s for s in record_specs(MESSAGE_CLASSES[1]) if s.name == "updates").items
)


def update_size(update: Any) -> int:
    """Bytes one piggybacked membership update takes inside a message's update array."""
    return len(cbor2.dumps(_UPDATE_ENCODER(update)))
