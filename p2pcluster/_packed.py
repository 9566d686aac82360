"""A value whose large array data stays out of the CBOR encoder: :class:`Packed`.

A value is one CBOR item. When it holds NumPy arrays of :data:`OUT_OF_BAND` bytes or more,
their data is never copied into (or out of) an encoded buffer: the item is kept as
*heads* and *buffers*, ``head0 buffer0 head1 buffer1 ... headN``, whose concatenation is the
value's ordinary CBOR (each buffer is the content of an RFC 8746 typed-array byte string, and
the head before it ends with that byte string's length). Whoever moves the value sends the
pieces in order; whoever reads it with another CBOR library reads the concatenation. The
pieces' lengths, ``[len(head0), len(buffer0), ..., len(headN)]``, are the value's
:attr:`Packed.layout`: the data streams and the control socket send it ahead of the bytes, so
that a receiver puts each buffer straight where it will stay (``docs/protocol.md``, 3.7).

Decoding turns the heads back into one small CBOR item in which each buffer's byte string is
replaced by its index (an unsigned integer where a byte string belongs: see
:func:`decode_input`); the typed-array tags then take buffer ``i`` itself, without a copy.

A call that uses shared values (:class:`~._shared.Shared`) is encoded as
``[digests, args, kwargs]`` instead of ``[args, kwargs]``; :func:`uses` reads the digests
from the first head without decoding the rest, so that a peer fetches the shared values a
task needs before it runs it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from ._errors import DecodeError

if TYPE_CHECKING:
    from ._shm import Segment

__all__ = [
    "ALIGN", "MAX_BUFFERS", "OUT_OF_BAND", "SPLICED", "SPLICE_BYTES", "Packed", "Payload",
    "Tagged", "as_bytes", "cbor_head", "cut", "decode_input", "find_cuts", "first_cut", "marker",
    "payload_size", "splice", "split_markers", "unpack_flat", "uses", "uses_prefix",
]

#: Arrays of this many bytes or more travel beside the CBOR, never through the encoder.
OUT_OF_BAND = 64 * 1024
#: Buffers of one value at most; arrays past that many travel inside the CBOR.
MAX_BUFFERS = 4096
#: Buffers a receiver places in one block start at multiples of this (cache line).
ALIGN = 64
#: Shared values one call may use at most.
MAX_USES = 64
_DIGEST = 32
_TOKEN = os.urandom(12)  #: markers of this process: 12 random bytes and a 4-byte index
_MARK = struct.Struct(">12sI")


class Tagged:
    """A CBOR tag of ours, to encode (:class:`cbor2.CBORTag` in a value is refused: a task's
    arguments cannot hold tags of their own making)."""

    __slots__ = ("tag", "value")

    def __init__(self, tag: int, value: object) -> None:
        self.tag = tag
        self.value = value


class Packed:
    """A value as heads and out-of-band buffers (see the module docstring).

    ``segment``, if given, is the shared memory that holds every buffer, at ``offsets``: a
    worker process maps it instead of receiving the bytes through its pipe. ``sums``, if
    given, are each buffer's sum when the owner took the value (see :mod:`._heldargs`).
    ``len()`` is the size of the whole encoded value.

    A ``plain`` one holds no large array: it is a value of plain CBOR where it landed in
    ``segment`` (a large byte string, a joblib batch), cut only so that its first bytes are
    at hand (:func:`uses` reads them); it is decoded joined, and reaches a worker whole
    (:class:`~._handoff.FlatRef`), never as buffers a typed array would take.
    """

    __slots__ = ("buffers", "heads", "offsets", "plain", "segment", "size", "sums")

    def __init__(self, heads: Sequence[bytes], buffers: Sequence[memoryview], *,
                 segment: Segment | None = None, offsets: Sequence[int] = (),
                 sums: Sequence[int] = (), plain: bool = False) -> None:
        if len(heads) != len(buffers) + 1:
            raise ValueError("a packed value has one head more than buffers")
        self.heads = tuple(heads)
        self.buffers = tuple(buffers)
        self.segment = segment
        self.offsets = tuple(offsets)
        self.sums = tuple(sums)
        self.plain = plain
        self.size = sum(map(len, self.heads)) + sum(b.nbytes for b in self.buffers)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        where = " in shared memory" if self.segment is not None else ""
        return f"<Packed {self.size:,} bytes, {len(self.buffers)} buffer(s){where}>"

    @property
    def layout(self) -> tuple[int, ...]:
        """The lengths of the pieces: head, buffer, head, ..., head."""
        sizes = [len(self.heads[0])]
        for head, buffer in zip(self.heads[1:], self.buffers, strict=True):
            sizes += [buffer.nbytes, len(head)]
        return tuple(sizes)

    def pieces(self) -> Iterator[memoryview]:
        """The pieces in order (heads and buffers, as flat bytes)."""
        yield memoryview(self.heads[0])
        for head, buffer in zip(self.heads[1:], self.buffers, strict=True):
            yield buffer.cast("B") if buffer.format != "B" or buffer.ndim != 1 else buffer
            yield memoryview(head)

    def flat(self) -> bytes:
        """The value's plain CBOR, in one piece (a copy: for small values, and for readers
        that cannot take the pieces)."""
        return b"".join(self.pieces())


#: A task's arguments or a value, encoded: plain CBOR, or heads and buffers.
Payload = bytes | Packed


def pieces_of(data: bytes | memoryview | Packed) -> Iterator[memoryview]:
    """The bytes of a value, in order: a packed one's pieces, else the value whole."""
    return data.pieces() if isinstance(data, Packed) else iter((memoryview(data),))


def payload_size(payload: Payload) -> int:
    return len(payload)


def as_bytes(payload: Payload) -> bytes:
    """The payload's plain CBOR: itself, or a packed value joined (one copy)."""
    return payload if isinstance(payload, bytes) else payload.flat()


def marker(index: int) -> bytes:
    """The 16 bytes the encoder writes in place of buffer ``index``'s data."""
    return _MARK.pack(_TOKEN, index)


def cbor_head(major: int, n: int) -> bytes:
    """The shortest CBOR head of major type ``major`` with argument ``n``."""
    top = major << 5
    if n < 24:
        return bytes([top | n])
    for code, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([top | code]) + struct.pack(fmt, n)
    raise ValueError(f"{n} does not fit a CBOR head")


def split_markers(data: bytes, buffers: Sequence[memoryview]) -> Packed:
    """Cut an encoding that holds :func:`marker` ``i`` in place of each buffer ``i`` (a
    16-byte byte string) into heads, with each byte string's head set to the real size."""
    heads: list[bytes] = []
    start = 0
    for index, buffer in enumerate(buffers):
        at = data.find(marker(index), start)
        if at < 1 or data[at - 1] != 0x50:  # 0x50: the head of a 16-byte byte string
            raise AssertionError(f"marker {index} of an encoded value is missing")
        heads.append(data[start:at - 1] + cbor_head(2, buffer.nbytes))
        start = at + 16
    heads.append(data[start:])
    return Packed(heads, buffers)


#: :func:`marker` indices from this one on stand for byte strings that :func:`splice` puts
#: back whole once the value is encoded.
SPLICED = 1 << 31
#: Byte strings of this many bytes or more are spliced in after encoding: cbor2 copies one
#: several times as it writes it (0.45 s for 240 MB here, against 0.1 s for one join).
SPLICE_BYTES = 1024 * 1024


def splice(data: bytes, strings: Sequence[bytes]) -> bytes:
    """``data`` with :func:`marker` ``SPLICED + i`` (a 16-byte byte string) replaced by
    the byte string ``strings[i]``, each copied once. The result is plain CBOR: the value
    as the encoder would have written it."""
    parts: list[bytes] = []
    start = 0
    for index, string in enumerate(strings):
        at = data.find(marker(SPLICED + index), start)
        if at < 1 or data[at - 1] != 0x50:  # 0x50: the head of a 16-byte byte string
            raise AssertionError(f"spliced byte string {index} of an encoded value is missing")
        parts += [data[start:at - 1], cbor_head(2, len(string)), string]
        start = at + 16
    parts.append(data[start:])
    return b"".join(parts)


#: Items :func:`unpack_flat` reads at most before it gives up on a value (then it stays
#: plain CBOR: correct, only copied once more).
MAX_WALK = 100_000
_TYPED_ARRAY = range(64, 88)
_TAG_NDARRAY = 0x70327041  #: :data:`._arrays.TAG_NDARRAY` (NumPy is not imported here)


def unpack_flat(data: bytes) -> Payload:
    """A value received as plain CBOR, as a :class:`Packed` whose buffers are the contents
    (views of ``data``, no copy) of its typed arrays of :data:`OUT_OF_BAND` bytes or more:
    so that a worker process maps them instead of copying. ``data`` itself if it holds no
    such array, or is not worth walking (more than :data:`MAX_WALK` items, or malformed:
    the decoder will say so)."""
    if len(data) < OUT_OF_BAND:
        return data
    view = memoryview(data)
    cuts = find_cuts(view)
    return cut(view, cuts) if cuts else data


def find_cuts(view: memoryview) -> list[tuple[int, int]]:
    """``(start, size)`` of each typed array's content of :data:`OUT_OF_BAND` bytes or more
    in the plain CBOR ``view``: none if it holds no such array, or is not worth walking
    (see :func:`unpack_flat`)."""
    cuts: list[tuple[int, int]] = []
    try:
        end = _walk(view, 0, cuts, [MAX_WALK], 0)
    except (IndexError, ValueError, RecursionError):
        return []
    return cuts if end == len(view) else []


def first_cut(start: memoryview) -> int | None:
    """Where the first out-of-band array's content begins, read from the first bytes of a
    value only (None if they do not reach one)."""
    cuts: list[tuple[int, int]] = []
    with contextlib.suppress(IndexError, ValueError, RecursionError):
        _walk(start, 0, cuts, [MAX_WALK], 0)
    return cuts[0][0] if cuts else None


def aligned_buffer(size: int, first: bytes | memoryview) -> memoryview:
    """A writable view of ``size`` new bytes that a value's caller will own (its arrays
    are views of it: :func:`~._jobs.unpack`), starting with ``first``, the value's first
    bytes: placed so that its first large array starts at a multiple of :data:`ALIGN`
    bytes, if ``first`` reaches it. A later array may fall unaligned: the decoder copies
    such an array (:func:`~._arrays.decode_tag`)."""
    start = first_cut(memoryview(first)) if size >= OUT_OF_BAND else None
    buffer = bytearray(size + ALIGN)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    pad = 0 if start is None else -(base + start) % ALIGN
    value = memoryview(buffer)[pad:pad + size]
    value[:len(first)] = first
    return value


def cut(view: memoryview, cuts: Sequence[tuple[int, int]]) -> Packed:
    """The value ``view`` as heads (copied: they are small) and buffers (views of it)."""
    heads, buffers, pos = [], [], 0
    for start, size in cuts:
        heads.append(bytes(view[pos:start]))
        buffers.append(view[start:start + size])
        pos = start + size
    heads.append(bytes(view[pos:]))
    return Packed(heads, buffers)


def _walk(view: memoryview, pos: int, cuts: list[tuple[int, int]], budget: list[int],
          context: int) -> int:
    """Skip the item at ``pos``; record the typed-array byte strings to cut. ``context`` 1:
    this item is a typed array's content; 2: it is a :data:`_TAG_NDARRAY`'s list."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError("too many items")
    first = view[pos]
    major, info = first >> 5, first & 31
    start = pos
    pos += 1
    if info >= 28:
        raise ValueError("indefinite length or reserved")
    size = 0 if info < 24 else 1 << (info - 24)
    n = info if info < 24 else int.from_bytes(view[pos:pos + size], "big")
    pos += size
    if major in (0, 1, 7):
        return pos
    if major in (2, 3):
        if major == 2 and context == 1 and n >= OUT_OF_BAND and (
                bytes(view[start:pos]) == cbor_head(2, n)):
            cuts.append((pos, n))
        if pos + n > len(view):
            raise ValueError("truncated")
        return pos + n
    if major == 6:
        inner = 1 if n in _TYPED_ARRAY else 2 if n == _TAG_NDARRAY else 0
        return _walk(view, pos, cuts, budget, inner)
    for index in range(n if major == 4 else 2 * n):
        pos = _walk(view, pos, cuts, budget, 1 if context == 2 and index == 3 else 0)
    return pos


def decode_input(heads: Sequence[bytes], sizes: Sequence[int]) -> bytes:
    """One CBOR item made of the heads, each buffer's byte string replaced by its index."""
    if len(heads) != len(sizes) + 1:
        raise DecodeError("a packed value has one head more than buffers")
    parts: list[bytes] = []
    for index, (head, size) in enumerate(zip(heads, sizes, strict=False)):
        tail = cbor_head(2, size)
        if not head.endswith(tail):
            raise DecodeError(f"buffer {index} of a value does not follow a byte string head "
                              f"of its size ({size} bytes)")
        parts += [head[:len(head) - len(tail)], cbor_head(0, index)]
    parts.append(heads[-1])
    return b"".join(parts)


def uses_prefix(digests: Sequence[bytes]) -> bytes:
    """The start of a call that uses shared values: ``[digests, args, kwargs]`` begins with
    the array head and the digests; the encoded ``args`` and ``kwargs`` follow."""
    return cbor_head(4, 3) + cbor_head(4, len(digests)) + b"".join(
        cbor_head(2, len(d)) + d for d in digests)


def uses(payload: Payload) -> tuple[bytes, ...]:
    """The digests of the shared values a call uses (none for ``[args, kwargs]``), read from
    its first bytes; a malformed list raises :class:`~p2pcluster.DecodeError`."""
    head = payload.heads[0] if isinstance(payload, Packed) else payload
    if head[:1] != b"\x83":
        return ()
    count = head[1] - 0x80 if 0x80 <= head[1] < 0x98 else -1
    offset = 2
    if head[1] == 0x98:
        count, offset = head[2], 3
    if not 0 <= count <= MAX_USES:
        raise DecodeError("a call's list of shared values is malformed or too long")
    digests = []
    entry = 2 + _DIGEST
    for i in range(count):
        at = offset + i * entry
        if head[at:at + 2] != b"\x58\x20" or len(head) < at + entry:
            raise DecodeError("a call's list of shared values is malformed")
        digests.append(bytes(head[at + 2:at + entry]))
    return tuple(digests)
