"""Data streams: values too large for a work message, moved between peers in sealed chunks.

Two kinds of stream, each opened for one purpose and closed after it (``docs/protocol.md``):

- **Arguments.** A peer about to run tasks whose arguments stayed at the job's owner sends
  :class:`FetchArgs`; the owner answers each task with a :class:`ValueHeader` and the bytes.
  The fetching peer checks the size against its own ``max_value_size`` *before* it reads a
  byte of the value, and fails that task (naming both sizes and the setting) if it is over.
- **Results.** A peer whose task returned a large result sends :class:`PushResult` and the
  bytes; the owner checks the size against its limit before reading them, and answers
  :class:`ResultAck`.

A value goes out as frames of at most :data:`CHUNK` bytes, each sealed on its own, so memory
on both sides is the value plus one chunk, and TCP's flow control paces the sender to the
receiver: a slow receiver never makes a sender buffer more than a chunk.
"""

from __future__ import annotations

from ._errors import MessageTooLarge, ProtocolError
from ._secure import SecureStream

__all__ = ["CHUNK", "receive_value", "send_value", "skip_value"]

#: Bytes per data frame: large enough that sealing costs little per byte, small enough that
#: a frame in flight costs little memory.
CHUNK = 1024 * 1024


async def send_value(stream: SecureStream, data: bytes | bytearray | memoryview) -> None:
    """Send ``data`` as consecutive frames of at most :data:`CHUNK` bytes."""
    view = memoryview(data)
    for offset in range(0, len(view), CHUNK):
        await stream.send_payload(view[offset:offset + CHUNK])


async def receive_value(stream: SecureStream, size: int) -> bytearray:
    """Read a value of exactly ``size`` bytes sent by :func:`send_value` (the caller has
    already checked ``size`` against its limit)."""
    value = bytearray(size)
    filled = 0
    while filled < size:
        chunk = await stream.receive_payload()
        if chunk is None:
            raise ProtocolError(f"the stream closed {size - filled} bytes before the value's end")
        if filled + len(chunk) > size:
            raise MessageTooLarge(f"a value announced as {size} bytes runs longer")
        value[filled:filled + len(chunk)] = chunk
        filled += len(chunk)
    return value


async def skip_value(stream: SecureStream, size: int) -> None:
    """Read and drop a value of ``size`` bytes (one chunk in memory at a time)."""
    left = size
    while left > 0:
        chunk = await stream.receive_payload()
        if chunk is None:
            raise ProtocolError("the stream closed inside a value")
        left -= len(chunk)

