"""Receiving a large value straight into the shared memory a worker process will map.

A value another peer sends on a data stream (:func:`~._dataplane.send_value`: the value's
plain CBOR, in sealed frames) is opened frame by frame *into* a memfd
:class:`~._shm.Segment`, with no buffer in between: each frame's plaintext is written once,
where the worker will read it. The segment starts ``pad`` bytes before the value, ``pad``
chosen from the value's first frame so that its first out-of-band array (:mod:`._packed`)
begins at a multiple of :data:`~._packed.ALIGN`; the value is then cut into heads and
buffers that are views of the segment (:func:`~._packed.find_cuts`), and handed to a worker
as it is (:func:`~._handoff.to_ref`). If a later array of the same value is not aligned, the
value is placed in a new segment once more (:func:`~._handoff.place`): arrays a worker gets
are always aligned.

Small values (under :data:`~._packed.OUT_OF_BAND`), and any value where memfds are missing,
arrive as plain bytes.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from ._errors import MessageTooLarge, ProtocolError
from ._handoff import place
from ._packed import ALIGN, OUT_OF_BAND, Packed, Payload, cut, find_cuts, first_cut
from ._secure import SecureStream
from ._shm import Segment, available

__all__ = ["Landed", "land", "receive_into"]


class Landed(NamedTuple):
    """A received value, as a worker takes it, and the SHA-256 of its bytes if asked for."""

    payload: Payload
    digest: bytes | None


async def receive_into(stream: SecureStream, dest: memoryview,
                       hasher: hashlib._Hash | None = None) -> None:
    """Fill ``dest`` with the payloads of consecutive frames (the caller has checked its
    size against its limit); raises if the stream ends first or the value runs longer.
    ``hasher`` is updated with each frame as it arrives (while the next one is on its way,
    rather than all at the end)."""
    filled, size = 0, len(dest)
    while filled < size:
        got = await stream.receive_payload_into(dest[filled:])
        if got is None:
            raise ProtocolError(f"the stream closed {size - filled} bytes before the value's end")
        if hasher is not None:
            hasher.update(dest[filled:filled + got])
        filled += got


async def land(stream: SecureStream, size: int, *, digest: bool = False) -> Landed:
    """A value of ``size`` bytes from ``stream`` (see the module docstring); with
    ``digest``, its SHA-256 too."""
    hasher = hashlib.sha256() if digest else None
    if size < OUT_OF_BAND or not available():
        buffer = bytearray(size)
        await receive_into(stream, memoryview(buffer), hasher)
        return Landed(bytes(buffer), None if hasher is None else hasher.digest())
    first = await stream.receive_payload()
    if first is None:
        raise ProtocolError(f"the stream closed {size} bytes before the value's end")
    if len(first) > size:
        raise MessageTooLarge(f"a value announced as {size} bytes runs longer")
    if hasher is not None:
        hasher.update(first)
    start = first_cut(memoryview(first))
    pad = 0 if start is None else -start % ALIGN
    segment = Segment.create(pad + size)
    value = segment.view[pad:pad + size]
    value[:len(first)] = first
    await receive_into(stream, value[len(first):], hasher)
    return Landed(_cut(value, segment, pad), None if hasher is None else hasher.digest())


def _cut(value: memoryview, segment: Segment, pad: int) -> Payload:
    """The value in ``segment`` at ``pad`` as a worker takes it: in place if every array
    is aligned, else placed anew; plain bytes if it holds no large array."""
    cuts = find_cuts(value)
    if not cuts:
        return bytes(value)
    packed = cut(value, cuts)
    offsets = [pad + start for start, _ in cuts]
    if any(offset % ALIGN for offset in offsets):
        return place(packed)
    return Packed(packed.heads, packed.buffers, segment=segment, offsets=offsets)
