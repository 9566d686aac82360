"""Receiving a large value straight into the shared memory a worker process will map.

A value another peer sends on a data stream (:func:`~._dataplane.send_value`: the value's
plain CBOR, in sealed frames) is opened frame by frame *into* a memfd
:class:`~._shm.Segment`, with no buffer in between: each frame's plaintext is written once,
where the worker will read it. The segment starts ``pad`` bytes before the value, ``pad``
chosen from the value's first frame so that its first out-of-band array (:mod:`._packed`)
begins at a multiple of :data:`~._packed.ALIGN`; the value is then cut into heads and
buffers that are views of the segment (:func:`~._packed.find_cuts`), and handed to a worker
as it is (:func:`~._handoff.to_ref`). If a later array of the same value is not aligned, the
value is placed in a new segment once more on its way to a worker (:func:`~._handoff.place`):
arrays a worker gets are always aligned.

Arguments land in a segment from the worker pool's :class:`~._shm.SegmentStock` when it
has one of about the size (one an earlier batch's worker has unmapped): its pages are
allocated already, which makes writing them several times faster. Shared values, which
stay, get a new segment.

Small values (under :data:`~._packed.OUT_OF_BAND`), and any value where memfds are missing,
arrive as plain bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

import trio

from ._errors import MessageTooLarge, ProtocolError
from ._handoff import cut_in_place
from ._heldargs import LandingCheck
from ._packed import (
    ALIGN,
    OUT_OF_BAND,
    Payload,
    aligned_buffer,
    first_cut,
)
from ._proto.messages import ArraySum
from ._secure import SecureStream
from ._shm import Segment, SegmentStock, available

__all__ = ["Landed", "Sums", "land", "land_result", "receive_into"]


class Landed(NamedTuple):
    """A received value, as a worker takes it, and the SHA-256 of its bytes if asked for."""

    payload: Payload
    digest: bytes | None


async def receive_into(stream: SecureStream, dest: memoryview,
                       landed: Callable[[int], None] | None = None) -> None:
    """Fill ``dest`` with the payloads of consecutive frames (the caller has checked its
    size against its limit); raises if the stream ends first or the value runs longer.
    ``landed(n)`` is told each time the first ``n`` bytes are in."""
    filled, size = 0, len(dest)
    while filled < size:
        got = await stream.receive_payload_into(dest[filled:])
        if got is None:
            raise ProtocolError(f"the stream closed {size - filled} bytes before the value's end")
        filled += got
        if landed is not None:
            landed(filled)


class _Hashing:
    """The SHA-256 of a value as it lands: a task hashes, in a thread, what has landed
    since it last looked, so the hash keeps pace beside the receiving loop instead of
    following it."""

    def __init__(self, value: memoryview) -> None:
        self.hasher = hashlib.sha256()
        self._value = value
        self._filled = self._hashed = 0
        self._more = trio.Event()

    def landed(self, filled: int) -> None:
        self._filled = filled
        self._more.set()

    async def run(self) -> None:
        while self._hashed < len(self._value):
            await self._more.wait()
            self._more = trio.Event()  # (before reading how far it is: nothing is missed)
            end = self._filled
            await trio.to_thread.run_sync(self.hasher.update, self._value[self._hashed:end])
            self._hashed = end


class Sums(NamedTuple):
    """The owner's sums of a value's arrays from submit, for :func:`land` to check as they
    land (:class:`~._heldargs.LandingCheck`)."""

    kind: int
    spans: Sequence[ArraySum]


class _Watcher(Protocol):
    def landed(self, filled: int) -> None: ...


def _telling(rest: int, *watchers: _Watcher | None) -> Callable[[int], None]:
    """A ``landed`` for :func:`receive_into`, filling from ``rest`` bytes into the value,
    that tells ``watchers`` how many bytes of the value are in."""
    told = [watcher.landed for watcher in watchers if watcher is not None]

    def landed(filled: int) -> None:
        for tell in told:
            tell(rest + filled)

    return landed


async def land(stream: SecureStream, size: int, *, digest: bool = False,
               stock: SegmentStock | None = None, sums: Sums | None = None) -> Landed:
    """A value of ``size`` bytes from ``stream`` (see the module docstring); with
    ``digest``, its SHA-256 too. Its segment comes from ``stock`` if given (a value that
    the workers will let go of soon: arguments). With ``sums``, its arrays are checked as
    they land: :class:`~._heldargs.ArgumentChanged` once it is in, if one differs."""
    if size < OUT_OF_BAND or not available():
        buffer = bytearray(size)
        check = None if sums is None else LandingCheck(memoryview(buffer), *sums)
        await receive_into(stream, memoryview(buffer), _telling(0, check))
        if check is not None:
            check.verify()
        return Landed(bytes(buffer), hashlib.sha256(buffer).digest() if digest else None)
    segment = Segment.create(size + ALIGN) if stock is None else stock.take(size + ALIGN)
    try:
        return await _land(stream, size, segment, digest, sums)
    except BaseExceptionGroup as group:  # the helpers' nursery: say what went wrong
        segment.close()
        raise group.exceptions[0] if len(group.exceptions) == 1 else group from None
    except BaseException:  # (its memory goes with the last view of it)
        segment.close()
        raise


async def _land(stream: SecureStream, size: int, segment: Segment, digest: bool,
                sums: Sums | None) -> Landed:
    async with trio.open_nursery() as nursery:
        if not segment.allocated:  # (one from the stock is, already)
            nursery.start_soon(_allocate, segment)
        first = await stream.receive_payload()
        if first is None:
            raise ProtocolError(f"the stream closed {size} bytes before the value's end")
        if len(first) > size:
            raise MessageTooLarge(f"a value announced as {size} bytes runs longer")
        start = first_cut(memoryview(first))
        pad = 0 if start is None else -start % ALIGN
        value = segment.view[pad:pad + size]
        value[:len(first)] = first
        hashing, rest = _Hashing(value) if digest else None, len(first)
        check = None if sums is None else LandingCheck(value, *sums)
        if hashing is not None:
            nursery.start_soon(hashing.run)
        _telling(0, hashing, check)(rest)
        await receive_into(stream, value[rest:], _telling(rest, hashing, check))
    if check is not None:
        check.verify()
    payload = await trio.to_thread.run_sync(cut_in_place, value, segment, pad)
    return Landed(payload, None if hashing is None else hashing.hasher.digest())


async def _allocate(segment: Segment) -> None:
    """Have the kernel allocate the segment's pages in a thread, ahead of the frames being
    written into them (a new page of shared memory costs more than writing it; a page
    allocated already is not allocated again)."""
    await trio.to_thread.run_sync(segment.allocate)


async def land_result(stream: SecureStream, size: int) -> memoryview:
    """A result of ``size`` bytes from ``stream``, landed in memory the caller will own (a
    writable view of a ``bytearray``, its first large array aligned: see
    :func:`~._packed.aligned_buffer`), since the caller's arrays are views of it, not
    copies."""
    if size == 0:
        return memoryview(bytearray())
    first = await stream.receive_payload()
    if first is None:
        raise ProtocolError(f"the stream closed {size} bytes before the value's end")
    if len(first) > size:
        raise MessageTooLarge(f"a value announced as {size} bytes runs longer")
    value = aligned_buffer(size, first)
    await receive_into(stream, value[len(first):])
    return value
