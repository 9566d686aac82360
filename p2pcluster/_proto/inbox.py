"""A stream's receive buffer: bytes are read straight into it and frames opened from it.

A session's frames arrive over a byte stream; the AEAD needs each sealed frame whole and
contiguous. Appending every read to a ``bytearray`` and cutting opened frames off its front
costs a fresh allocation per read and a copy per byte; for 1 MiB data frames the allocator
maps and faults fresh pages each time, which measured here as much as the cipher itself.
An :class:`Inbox` is one buffer that the socket reads into (:meth:`Inbox.space`, then
:meth:`Inbox.commit`) and the session opens frames from in place (:meth:`Inbox.view`,
:meth:`Inbox.consume`). It grows to hold the largest frame in flight and shrinks back once
it empties after a frame over :data:`KEEP` bytes. Sans-IO.
"""

from __future__ import annotations

__all__ = ["INITIAL", "KEEP", "Inbox"]

#: Capacity of a new inbox, in bytes.
INITIAL = 64 * 1024
#: An empty inbox larger than this (it held a frame over 4 MiB) shrinks back to INITIAL.
KEEP = 4 * 1024 * 1024 + 64 * 1024


class Inbox:
    """Received bytes not yet consumed, at ``buffer[start:end]``."""

    def __init__(self) -> None:
        self._buffer = bytearray(INITIAL)
        self._start = 0
        self._end = 0

    def __len__(self) -> int:
        return self._end - self._start

    @property
    def capacity(self) -> int:
        return len(self._buffer)

    def space(self, most: int, whole: int = 0) -> memoryview:
        """Writable room at the end for up to ``most`` more bytes: at least 1, and enough
        that ``whole`` bytes in all fit from the start of what is held (the frame being
        received, so that it ends up contiguous). Release the view before the next call."""
        held = len(self)
        if max(whole, held + 1) > len(self._buffer):
            grown = bytearray(max(whole, held + most))
            grown[:held] = self._buffer[self._start:self._end]
            self._buffer, self._start, self._end = grown, 0, held
        elif self._end + most > len(self._buffer) and self._start:
            with memoryview(self._buffer) as view:
                view[:held] = view[self._start:self._end]
            self._start, self._end = 0, held
        room = min(most, len(self._buffer) - self._end)
        return memoryview(self._buffer)[self._end:self._end + max(room, 0)]

    def commit(self, count: int) -> None:
        """``count`` bytes were written at the start of the last :meth:`space`."""
        if count < 0 or self._end + count > len(self._buffer):
            raise ValueError(f"cannot commit {count} bytes")
        self._end += count

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` in (for a stream that cannot read into a buffer)."""
        with self.space(len(data), whole=len(self) + len(data)) as room:
            room[:len(data)] = data
        self.commit(len(data))

    def view(self, size: int) -> memoryview:
        """A read-only view of the first ``size`` held bytes; release it before consuming."""
        if size > len(self):
            raise ValueError(f"{size} bytes asked, {len(self)} held")
        return memoryview(self._buffer)[self._start:self._start + size].toreadonly()

    def consume(self, size: int) -> None:
        """Drop the first ``size`` held bytes."""
        if size > len(self):
            raise ValueError(f"{size} bytes consumed, {len(self)} held")
        self._start += size
        if self._start == self._end:
            self._start = self._end = 0
            if len(self._buffer) > KEEP:
                self._buffer = bytearray(INITIAL)
