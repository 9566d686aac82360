"""Large values between a peer and its worker processes: through shared memory, not the pipe.

A worker's requests and answers are pickles on a pipe (:mod:`._workerproc`). A value with
out-of-band buffers (a :class:`~._packed.Packed`) crosses it as a :class:`SegmentRef`: its
heads, and where its buffers are in a :class:`~._shm.Segment` the sending process holds. The
receiver maps that segment (``/proc/<pid>/fd/<fd>``): no byte of the arrays goes through
the pipe. For a 256 MB value that measured 1.8 s against 11.5 s pickled through the pipe
(``docs/performance.md``, "Data"; one measurement, on a loaded machine).

- **Arguments** a peer received from another peer already sit in a segment (the data plane
  receives into one, :mod:`._landing`): the worker maps it. Arrays of a job owned here (in
  the submitter's memory) are copied into a new segment first, once per call. After a
  batch the worker unmaps the argument segments nothing in it still uses
  (:func:`let_go`) and names them in its answer; the peer may then write new arguments
  into them (:class:`~._shm.SegmentStock`).
- **Shared values** a worker maps once, read-only, and keeps until the peer drops them.
- **Results** the worker copies into a segment of its own and keeps until the peer has
  mapped it and says so (a ``drop`` frame); then the memory belongs to the peer alone.
- **A large value with no large array** (a byte string of megabytes, a pickled joblib
  batch) crosses as a :class:`FlatRef`: its plain CBOR in a segment (the one it landed in,
  when it came from another peer or a daemon's client: :func:`cut_in_place`), which the
  receiver reads in one call (``pread``) instead of through the pipe, where it was
  pickled, copied in pieces and unpickled.

Without memfds (not Linux) a packed value crosses the pipe as its plain CBOR instead.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from ._errors import ProtocolError
from ._limits import descriptors_scarce
from ._packed import ALIGN, Packed, Payload, cut, find_cuts, unpack_flat
from ._proto.wiretypes import TaskStatus
from ._shm import Segment, available, read_at

__all__ = [
    "FLAT_IN_SEGMENT", "PLAIN_HEAD", "FlatRef", "SegmentRef", "WireValue", "aligned",
    "cut_in_place", "flat_size", "let_go", "open_args", "open_ref", "open_results", "place",
    "read_flat", "read_ref", "to_ref", "wire_value",
]


class SegmentRef(NamedTuple):
    """A packed value in another process's segment: heads, and each buffer's place."""

    heads: tuple[bytes, ...]
    path: str  #: ``/proc/<pid>/fd/<fd>`` of the holder
    size: int  #: the segment's size
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    fd: int  #: the holder's descriptor (for its ``drop``)


class FlatRef(NamedTuple):
    """A value's plain CBOR, in another process's segment."""

    path: str  #: ``/proc/<pid>/fd/<fd>`` of the holder
    size: int  #: the segment's size
    fd: int  #: the holder's descriptor (for its ``drop``)
    offset: int  #: where the value starts in the segment
    length: int  #: the value's size


#: What crosses a worker's pipe for one value.
WireValue = bytes | SegmentRef | FlatRef

#: A value with no large array crosses a worker's pipe in a segment from this size on.
FLAT_IN_SEGMENT = 1024 * 1024
#: The first bytes of a plain value kept apart as its head (:class:`~._packed.Packed`,
#: ``plain``): more than the list of shared values a call may begin with.
PLAIN_HEAD = 4096


def aligned(sizes: Sequence[int]) -> tuple[list[int], int]:
    """Offsets for buffers of ``sizes`` placed one after another at :data:`ALIGN`, and the
    total size."""
    offsets, end = [], 0
    for size in sizes:
        offsets.append(end)
        end += -(-size // ALIGN) * ALIGN
    return offsets, end


def place(packed: Packed) -> Packed:
    """``packed`` with its buffers in one segment (itself, if they are already)."""
    if packed.segment is not None:
        return packed
    sizes = [b.nbytes for b in packed.buffers]
    offsets, total = aligned(sizes)
    segment = Segment.create(total)
    segment.allocate()
    for buffer, offset, size in zip(packed.buffers, offsets, sizes, strict=True):
        segment.view[offset:offset + size] = buffer
    return Packed(packed.heads, [segment.view[o:o + n] for o, n in zip(offsets, sizes,
                                                                       strict=True)],
                  segment=segment, offsets=offsets)


def cut_in_place(value: memoryview, segment: Segment, pad: int) -> Payload:
    """The value in ``segment`` at ``pad`` as a worker takes it (run it in a thread: it
    walks the value, and may copy it): in place if every array is aligned, else without a
    segment, to be placed anew on its way to a worker (:func:`to_ref`). With no large array,
    a plain packed value in place from :data:`FLAT_IN_SEGMENT` bytes on (a worker reads it
    from this segment), plain bytes below."""
    cuts = find_cuts(value)
    if not cuts and len(value) >= FLAT_IN_SEGMENT:  # a worker reads it from where it is
        return Packed((bytes(value[:PLAIN_HEAD]), b""), [value[PLAIN_HEAD:]],
                      segment=segment, offsets=[pad + PLAIN_HEAD], plain=True)
    if not cuts:
        return bytes(value)
    packed = cut(value, cuts)
    offsets = [pad + start for start, _ in cuts]
    if any(offset % ALIGN for offset in offsets):
        return packed
    return Packed(packed.heads, packed.buffers, segment=segment, offsets=offsets)


def to_ref(payload: Payload) -> tuple[WireValue, Packed | None]:
    """What to put on the pipe for ``payload``, and the packed value to keep alive (with
    its segment) until the other process has mapped it."""
    if isinstance(payload, Packed) and payload.plain:
        held = payload.segment
        if held is None or held.fd < 0 or not available():
            return to_ref(payload.flat())
        start = payload.offsets[0] - len(payload.heads[0])
        return FlatRef(held.path(), held.size, held.fd, start, len(payload)), payload
    if not isinstance(payload, Packed):
        if len(payload) < FLAT_IN_SEGMENT or not available():
            return payload, None
        flat = Segment.create(len(payload))
        flat.allocate()
        flat.view[:] = payload
        # Kept as a plain packed value, only to live (and to go back to the pool's stock)
        # as the other segments do.
        return FlatRef(flat.path(), flat.size, flat.fd, 0, flat.size), Packed(
            (b"", b""), [flat.view], segment=flat, offsets=[0], plain=True)
    if not available():
        return payload.flat(), None
    placed = place(payload)
    segment = placed.segment
    assert segment is not None
    return SegmentRef(placed.heads, segment.path(), segment.size, placed.offsets,
                      tuple(b.nbytes for b in placed.buffers), segment.fd), placed


def open_ref(value: WireValue, *, access: int = mmap.ACCESS_COPY, keep: bool = False
             ) -> Payload:
    """The value another process put on the pipe, its segment mapped here (``ACCESS_COPY``:
    writable, and writes stay in this process; ``ACCESS_READ`` for shared values). With
    ``keep``, the packed value keeps the segment's descriptor (to hand it on). A
    :class:`FlatRef` is read into bytes of this process's own (:func:`read_flat`), or with
    ``keep`` mapped read-only, as a plain packed value (sealed to another peer straight
    from there, as a large result is)."""
    if isinstance(value, FlatRef):
        return _open_flat(value) if keep else read_flat(value)
    if not isinstance(value, SegmentRef):
        return value
    segment = Segment.open(value.path, value.size, access=access)
    views = [segment.view[o:o + n] for o, n in zip(value.offsets, value.sizes, strict=True)]
    if keep:
        return Packed(value.heads, views, segment=segment, offsets=value.offsets)
    segment.close()  # the mapping stays while the views live; the descriptor is not needed
    return Packed(value.heads, views)


def read_ref(ref: SegmentRef) -> Packed:
    """The value another process put on the pipe, its buffers read into memory of this
    process's own (each at a multiple of :data:`ALIGN` bytes in it): holding it holds no
    descriptor, where a mapping holds one while it lives."""
    offsets, total = aligned(ref.sizes)
    memory = memoryview(bytearray(total))
    with _opened(ref.path, ref.size) as fd:
        for mine, theirs, size in zip(offsets, ref.offsets, ref.sizes, strict=True):
            read_at(fd, memory[mine:mine + size], theirs)
    return Packed(ref.heads, [memory[o:o + n] for o, n in zip(offsets, ref.sizes,
                                                               strict=True)])


@contextlib.contextmanager
def _opened(path: str, size: int) -> Iterator[int]:
    """A descriptor of another process's segment at ``path``, checked to be ``size`` bytes
    long, closed on the way out."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_size != size:
            raise ProtocolError("a shared-memory segment not of its announced size")
        yield fd
    finally:
        os.close(fd)


def _check_bounds(ref: FlatRef) -> None:
    if not 0 <= ref.offset <= ref.offset + ref.length <= ref.size:
        raise ProtocolError("a value outside its shared-memory segment")


def _open_flat(ref: FlatRef) -> Packed:
    _check_bounds(ref)
    if ref.length < PLAIN_HEAD:
        raise ProtocolError("a plain value smaller than its head")
    segment = Segment.open(ref.path, ref.size, access=mmap.ACCESS_READ)
    view = segment.view[ref.offset:ref.offset + ref.length]
    return Packed((bytes(view[:PLAIN_HEAD]), b""), [view[PLAIN_HEAD:]], segment=segment,
                  offsets=[ref.offset + PLAIN_HEAD], plain=True)


def read_flat(ref: FlatRef) -> bytes:
    """The value of a :class:`FlatRef`, read in one copy, without mapping its segment."""
    with _opened(ref.path, ref.size) as fd:
        _check_bounds(ref)
        data = os.pread(fd, ref.length, ref.offset)
        if len(data) == ref.length:
            return data
        memory = bytearray(ref.length)  # a read is at most 2 GiB less a page on Linux
        read_at(fd, memoryview(memory), ref.offset)
        return bytes(memory)


def open_args(wires: Sequence[WireValue]) -> tuple[list[Payload], dict[int, list[Segment]]]:
    """A batch's arguments, each segment mapped here (copy-on-write), and their mappings by
    the peer's descriptor: after the batch, :func:`let_go` unmaps those no task kept. A
    :class:`FlatRef`'s segment is read, not mapped: it is let go of at once."""
    payloads: list[Payload] = []
    segments: dict[int, list[Segment]] = {}
    for wire in wires:
        if isinstance(wire, FlatRef):
            payloads.append(read_flat(wire))
            segments.setdefault(wire.fd, [])
            continue
        if not isinstance(wire, SegmentRef):
            payloads.append(wire)
            continue
        segment = Segment.open(wire.path, wire.size, access=mmap.ACCESS_COPY)
        segment.close()  # the mapping stays; the descriptor is not needed
        segments.setdefault(wire.fd, []).append(segment)
        payloads.append(Packed(wire.heads, [segment.view[o:o + n] for o, n in zip(
            wire.offsets, wire.sizes, strict=True)]))
    return payloads, segments


def let_go(segments: dict[int, list[Segment]]) -> list[int]:
    """Unmap the argument segments nothing here uses any more (call once the batch's
    payloads and values are gone); the peer's descriptors of those unmapped. A segment a
    task kept a view of (a global, a cache) stays mapped, and is not named: the peer then
    never writes into it again."""
    return [fd for fd, mappings in segments.items() if all([m.unmap() for m in mappings])]


def wire_value(payload: Payload, placed: list[Packed | None]) -> WireValue:
    """A value for the pipe, its large arrays in shared memory wherever it came from (a
    value received as plain CBOR is cut first: :func:`~._packed.unpack_flat`); what must
    stay alive until the worker has mapped it goes in ``placed``."""
    wire, kept = to_ref(unpack_flat(payload) if isinstance(payload, bytes) else payload)
    placed.append(kept)
    return wire


def open_results(raw: Sequence[tuple[int, WireValue]], error: Callable[[str, str], bytes]
                 ) -> tuple[list[tuple[int, Payload]], list[int]]:
    """A worker's outcomes with each large result mapped here (keeping its descriptor; read
    into memory of its own instead where descriptors are scarce, :func:`read_ref`), and
    the worker's descriptors of those, which it may now close. A result whose segment is
    gone (the worker died right after answering) becomes an error made by ``error``."""
    outcomes: list[tuple[int, Payload]] = []
    mapped = []
    for status, wire in raw:
        try:
            outcomes.append((status, _read(wire) if isinstance(wire, SegmentRef | FlatRef)
                             and descriptors_scarce() else open_ref(wire, keep=True)))
        except (OSError, ProtocolError) as exc:
            outcomes.append((TaskStatus.ERROR, error(
                "OSError", f"the result was lost with its worker process: {exc}")))
        if isinstance(wire, SegmentRef | FlatRef):
            mapped.append(wire.fd)
    return outcomes, mapped


def _read(wire: SegmentRef | FlatRef) -> Payload:
    """The value read into memory of this process's own, holding no descriptor."""
    return read_ref(wire) if isinstance(wire, SegmentRef) else read_flat(wire)


def flat_size(raw: Sequence[tuple[int, WireValue]]) -> int:
    """The bytes :func:`open_results` reads for these outcomes (those of FlatRefs)."""
    return sum(wire.length for _, wire in raw if isinstance(wire, FlatRef))
