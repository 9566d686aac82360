"""How the control client's frames leave: in order, from any thread, without a copy of a
large value.

:class:`Outbox` writes a caller's frames straight to the socket when nothing else waits to
go out (no switch to the trio thread: the fast path of a small ``submit``); the writer task
(:meth:`Outbox.serve`) sends the rest, and a large value either in shared memory
(:func:`~._controlblobs.in_memory`: a sealed memfd beside one
:class:`~._proto.control.SegmentBlob` frame, where the daemon takes them; made at submit,
or as it is sent: :class:`Later`) or as a generator
of :class:`~._proto.control.Chunk` frames (:func:`blob_frames`) encoded as the socket takes
them.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import deque
from collections.abc import Iterator
from typing import NamedTuple

import trio

from ._control import FramedStream
from ._controlblobs import MOST_WAITING, SEGMENT_SIZE, InMemory, in_memory, waiting
from ._packed import Payload, as_bytes
from ._proto.control import CHUNK, CODEC, Blob, Chunk

__all__ = ["WRITE_BYTES", "Later", "Outbox", "Part", "Raw", "blob_frames", "value_part"]

LENGTH = struct.Struct(">I")
#: Bytes the writer task gathers into one write of a large value (it stops at the first
#: frame boundary past this).
WRITE_BYTES = 1024 * 1024


class Raw:
    """Bytes already framed: the rest of a write the socket did not take whole."""

    def __init__(self, data: bytes) -> None:
        self.data = data


class Later(NamedTuple):
    """A value copied at submit into memory of its own, to go into a memfd as it is sent
    (past :data:`~._controlblobs.MOST_WAITING` memfds waiting)."""

    blob: int
    data: bytes


#: What goes out: an encoded frame, the rest of a write, a value in shared memory (now or
#: as it is sent), or a generator of frames (a large value, chunk by chunk).
Part = bytes | Raw | InMemory | Later | Iterator[bytes]


class Outbox:
    """What the client sends, in order, from any thread.

    When nothing waits to go out, a caller's frames go straight to the socket, with a
    non-blocking write from the caller's own thread: no switch to the trio thread. What the
    socket does not take at once, and everything queued behind it, the writer task sends.
    """

    def __init__(self, stream: FramedStream) -> None:
        self._stream = stream
        self._fd = stream.stream.socket.fileno()
        self._token = trio.lowlevel.current_trio_token()
        self._queue: deque[Part] = deque()
        self._busy = False  #: the writer task owns the socket
        self._closed = False
        self._wake = trio.Event()

    def put(self, parts: list[Part]) -> None:
        """Send ``parts`` after everything put before (the caller holds the client's lock)."""
        if self._closed:
            raise trio.ClosedResourceError("the connection is closed")
        if not self._busy and all(isinstance(p, bytes) for p in parts):
            data = framed([p for p in parts if isinstance(p, bytes)])
            try:
                written = os.write(self._fd, data)
            except OSError:  # full (EAGAIN), or broken: the writer task meets and reports it
                written = 0
            if written == len(data):
                return
            parts = [Raw(data[written:])]
        self._queue.extend(parts)
        if not self._busy:
            self._busy = True
            self._token.run_sync_soon(self._wake.set)

    def close(self) -> None:
        self._closed = True

    async def serve(self, lock: threading.Lock) -> None:
        """The writer task: send what is queued, in writes of about :data:`WRITE_BYTES`."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while True:
                with lock:
                    if not self._queue:
                        self._busy = False
                        break
                    part = self._queue.popleft()
                await self._send(part)

    async def _send(self, part: Part) -> None:
        if isinstance(part, Raw):
            await self._stream.send_raw(part.data)
        elif isinstance(part, bytes):
            await self._stream.send_frames([part])
        elif isinstance(part, Later):
            try:
                made = await trio.to_thread.run_sync(in_memory, part.blob, part.data)
            except OSError:  # no memfd to be had now (no descriptor, no memory): in chunks
                await self._send_chunks(blob_frames(part.blob, part.data))
            else:
                await self._send(made)
        elif isinstance(part, InMemory):
            try:
                await self._stream.send_frame_with_fd(part.frame, part.fd)
            finally:
                part.close()
        else:
            await self._send_chunks(part)

    async def _send_chunks(self, frames: Iterator[bytes]) -> None:
        batch: list[bytes] = []
        size = 0
        for frame in frames:
            batch.append(frame)
            size += len(frame)
            if size >= WRITE_BYTES:
                await self._stream.send_frames(batch)
                batch, size = [], 0
        await self._stream.send_frames(batch)


def framed(frames: list[bytes]) -> bytes:
    return b"".join(part for frame in frames for part in (LENGTH.pack(len(frame)), frame))


def value_part(blob: int, data: Payload, *, segments: bool) -> Part:
    """Blob ``blob``, a value of :data:`~._controlblobs.SEGMENT_SIZE` bytes or more, as it
    is now: in a sealed memfd (where the daemon takes them, ``segments``), made now or, past
    :data:`~._controlblobs.MOST_WAITING` of them waiting, as it is sent; else in chunks."""
    if not segments or len(data) < SEGMENT_SIZE:
        return blob_frames(blob, as_bytes(data))
    if waiting() < MOST_WAITING:
        return in_memory(blob, data)
    return Later(blob, as_bytes(data))  # descriptors are scarce: into a memfd as it is sent


def blob_frames(blob: int, data: bytes) -> Iterator[bytes]:
    yield CODEC.encode(Blob(blob, len(data)))
    view = memoryview(data)
    for offset in range(0, len(data), CHUNK):
        yield CODEC.encode(Chunk(blob, bytes(view[offset:offset + CHUNK])))
