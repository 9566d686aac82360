"""Blobs on a control connection: the values either end sends ahead of the messages that
use them. :class:`Blobs` is the daemon's (a client's arguments, bundles and shared values),
:class:`Incoming` the client's (one result at a time; one of :data:`SEGMENT_SIZE` or more
comes whole in a memfd, where the client's hello says it takes them, and is mapped as the
client's own).

A value over :data:`~._proto.control.INLINE` bytes comes first, as a blob, and a later
message refers to it (:class:`~._proto.control.BlobRef`). It comes one of two ways:

- as :class:`~._proto.control.Chunk` frames after a :class:`~._proto.control.Blob`, which
  :class:`Blobs` assembles into a buffer of the announced size (after checking that size
  against the connection's limit: a refused blob is counted, not kept);
- in shared memory: a :class:`~._proto.control.SegmentBlob` frame with a memfd beside it,
  sealed against resizing and writes (:data:`~._shm.FROZEN`). The daemon maps it read-only
  and cuts it in place (:func:`~._handoff.cut_in_place`): the value's large arrays are
  views of the client's memfd, held as the job's arguments (nobody can change them, so
  they need no sums), sealed to other peers straight from it, and mapped by this peer's
  workers from it. No copy on the daemon's side; the client made one, into the memfd
  (:func:`in_memory`). A large result goes the other way alike, sealed against resizing
  only: the daemon lets go of it once sent, and the client maps it writable
  (:meth:`Incoming.mapped`).
"""

from __future__ import annotations

import mmap
import os
import threading

import trio

from ._errors import P2PClusterError, ProtocolError, too_large
from ._handoff import cut_in_place
from ._limits import descriptors_scarce
from ._packed import ALIGN, OUT_OF_BAND, Packed, Payload, aligned_buffer, first_cut, pieces_of
from ._proto.control import CODEC, Blob, Chunk, Inline, SegmentBlob, Value
from ._shm import FROZEN, Segment, frozen_copy, read_at

__all__ = ["MOST_WAITING", "SEGMENT_SIZE", "Blobs", "InMemory", "Incoming", "Refused",
           "in_memory", "waiting"]

#: Values of this many bytes or more go in shared memory to an end that takes them so:
#: above the daemon's ``inline_value_size`` (256 KiB by default) an argument stays at the
#: daemon until its task runs, and is held as views of the memfd. Smaller ones ride inside
#: the messages that move tasks, copied anyway, so a descriptor and a mapping would cost
#: more than they save (``docs/performance.md``).
SEGMENT_SIZE = 256 * 1024
#: Memfds made and not yet sent that a process keeps at most, each a descriptor: a value
#: submitted past this is copied into memory of its own and goes into a memfd only as it
#: is sent (one more copy), so that a map over thousands of large arrays never runs out of
#: descriptors (many processes may hold 1,024).
MOST_WAITING = 64


class Refused(P2PClusterError):
    """A value the daemon will not store; the job that uses it fails with this reason."""


class _Blob:
    def __init__(self, size: int, refused: str) -> None:
        self.data = bytearray() if refused else bytearray(size)
        self.size, self.filled, self.refused = size, 0, refused


class Blobs:
    """One connection's blobs, by number, until a message consumes them."""

    def __init__(self, limit: int, where: str) -> None:
        self.limit = limit
        self._where = where  #: who refuses (for the error): "peer <name>"
        self._chunked: dict[int, _Blob] = {}
        self._mapped: dict[int, Payload] = {}

    def _refusal(self, size: int) -> str:
        return "" if size <= self.limit else too_large("a value", size, self.limit, self._where)

    def _fresh(self, blob: int) -> None:
        if blob in self._chunked or blob in self._mapped:
            raise ProtocolError(f"blob {blob} announced twice")

    def announce(self, message: Blob) -> None:
        self._fresh(message.blob)
        self._chunked[message.blob] = _Blob(message.size, self._refusal(message.size))

    def chunk(self, chunk: Chunk) -> None:
        blob = self._chunked.get(chunk.blob)
        if blob is None:
            raise ProtocolError(f"a chunk of blob {chunk.blob}, never announced")
        if blob.filled + len(chunk.data) > blob.size:
            raise ProtocolError(f"blob {chunk.blob} runs past its announced size")
        if not blob.refused:
            blob.data[blob.filled:blob.filled + len(chunk.data)] = chunk.data
        blob.filled += len(chunk.data)

    async def adopt(self, message: SegmentBlob, fd: int) -> None:
        """Blob ``message.blob`` in the memfd ``fd`` (ours now: closed here if refused).
        Raises :class:`~p2pcluster.ProtocolError` if the memfd is not sealed
        :data:`~._shm.FROZEN` or not of the announced size."""
        try:
            self._fresh(message.blob)
        except ProtocolError:
            os.close(fd)
            raise
        start, size = message.offset, message.size
        refused = self._refusal(size)
        if refused:
            os.close(fd)
        else:
            try:
                segment = Segment.adopt(fd, start + size, access=mmap.ACCESS_READ,
                                        seals=FROZEN)
            except OSError as exc:  # out of memory maps, say: that job fails, not the rest
                refused = f"{self._where} could not map a value of {size:,} bytes: {exc}"
            else:
                self._mapped[message.blob] = await trio.to_thread.run_sync(
                    _held, segment, start, size)
                return
        blob = self._chunked[message.blob] = _Blob(size, refused)
        blob.filled = size

    def value(self, value: Value) -> Payload:
        """The value ``value`` stands for (a blob is consumed). :class:`Refused` if it was
        over the limit; :class:`~p2pcluster.ProtocolError` if it never came whole."""
        if isinstance(value, Inline):
            return value.data
        mapped = self._mapped.pop(value.blob, None)
        if mapped is not None:
            if len(mapped) != value.size:
                raise ProtocolError(f"blob {value.blob} is not of the size referred to")
            return mapped
        blob = self._chunked.pop(value.blob, None)
        if blob is None or blob.filled != blob.size or blob.size != value.size:
            raise ProtocolError(f"blob {value.blob} was not received whole")
        if blob.refused:
            raise Refused(blob.refused)
        return bytes(blob.data)

    def clear(self) -> None:
        self._chunked.clear()
        self._mapped.clear()


def _held(segment: Segment, start: int, size: int) -> Payload:
    """The value at ``start`` in ``segment`` as the daemon holds it (in a thread): cut in
    place, keeping the memfd's descriptor until the value goes; or, where descriptors run
    short (a job of thousands of large arguments, under a low limit on open files), copied
    out as a chunked value would be, and the descriptor closed."""
    view = segment.view[start:start + size]
    if not descriptors_scarce():
        return cut_in_place(view, segment, start)
    segment.close()  # the mapping goes with the view, once copied
    return bytes(view)


def _read_out(fd: int, start: int, size: int) -> memoryview:
    """The value at ``start`` in the memfd ``fd`` (closed here), read into a buffer of the
    caller's own, placed as a chunked one is (:func:`~._packed.aligned_buffer`)."""
    try:
        if os.fstat(fd).st_size != start + size:
            raise ProtocolError("a shared-memory segment not of its announced size")
        first = os.pread(fd, min(size, OUT_OF_BAND), start)  # (to place the buffer by)
        data = aligned_buffer(size, first)
        read_at(fd, data[len(first):], start + len(first))
        return data
    finally:
        os.close(fd)


class Incoming:
    """A blob being received: its bytes so far, or the reason it was refused. The bytes
    are the caller's to keep, placed so that the value's first large array is aligned (see
    :func:`~._packed.aligned_buffer`): its arrays are decoded as views of them."""

    def __init__(self, size: int, refused: str = "") -> None:
        self.data = memoryview(bytearray())
        self.size, self.filled, self.refused = size, 0, refused

    @classmethod
    def mapped(cls, message: SegmentBlob, fd: int, refused: str = "") -> Incoming:
        """A blob the daemon passed whole in a memfd ``fd`` (ours now: closed here), sealed
        against resizing, mapped writable: the caller's arrays are views of it, its own
        (the daemon let go of it once sent). Where descriptors are scarce (a mapping holds
        one while it lives) it is read out into a buffer of the caller's own instead.
        :class:`~p2pcluster.ProtocolError` if the memfd's size could still change, or is
        not the announced one."""
        incoming = cls(message.size, refused)
        incoming.filled = message.size
        if refused:
            os.close(fd)
            return incoming
        start, size = message.offset, message.size
        if descriptors_scarce():
            incoming.data = _read_out(fd, start, size)
            return incoming
        segment = Segment.adopt(fd, start + size, access=mmap.ACCESS_WRITE)
        incoming.data = segment.view[start:start + size]
        segment.close()  # the mapping stays while the views of it live
        return incoming

    def add(self, data: bytes) -> None:
        if self.filled + len(data) > self.size:
            raise ProtocolError("a blob ran past its announced size")
        if self.refused or not data:
            pass  # (a refused blob is counted, not kept)
        elif self.filled:
            self.data[self.filled:self.filled + len(data)] = data
        else:
            self.data = aligned_buffer(self.size, data)
        self.filled += len(data)


_WAITING = [0]  #: InMemory descriptors open in this process
_WAITING_LOCK = threading.Lock()


def waiting() -> int:
    """How many memfds this process made that are not yet sent or dropped."""
    return _WAITING[0]


class InMemory:
    """A frame with a descriptor to pass beside it (a value in a sealed memfd), closed once
    sent, or when the part is dropped unsent."""

    def __init__(self, frame: bytes, fd: int) -> None:
        self.frame = frame
        self.fd = fd
        with _WAITING_LOCK:
            _WAITING[0] += 1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            with _WAITING_LOCK:
                _WAITING[0] -= 1

    def __del__(self) -> None:
        self.close()


def in_memory(blob: int, data: bytes | memoryview | Packed, *, seals: int = FROZEN
              ) -> InMemory:
    """Blob ``blob`` in a new memfd sealed with ``seals`` (a copy of ``data`` as it is
    now), placed so that its first large array starts at a multiple of
    :data:`~._packed.ALIGN` bytes (whoever maps it reads it as it is)."""
    if isinstance(data, Packed):
        start: int | None = len(data.heads[0]) if data.buffers else None
    else:
        start = first_cut(memoryview(data)[:OUT_OF_BAND])
    offset = 0 if start is None else -start % ALIGN
    fd = frozen_copy(pieces_of(data), len(data), offset, seals=seals)
    return InMemory(CODEC.encode(SegmentBlob(blob, len(data), offset)), fd)
