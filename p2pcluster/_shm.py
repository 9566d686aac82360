"""Shared memory between a peer, its worker processes and its local clients: memfds.

A :class:`Segment` is an anonymous memory file (``memfd_create``) mapped into this process.
Another process of the same user maps the same pages, without a copy: a worker through
``/proc/<pid>/fd/<fd>`` of the process that holds it (:meth:`Segment.path`), a client or a
daemon through a descriptor passed on the control socket. Nothing is left behind when a
process dies: the memory goes with the last descriptor and mapping.

A segment another process hands over is *sealed* first (``F_SEAL_SHRINK | F_SEAL_GROW``):
its size can no longer change, so mapping it can never fault past its end (SIGBUS), whatever
the other process does. :meth:`Segment.adopt` refuses an unsealed one, or one of another
size than announced. A value a client hands its daemon (:func:`frozen_copy`) is sealed
against writes too (:data:`FROZEN`): the daemon holds it as the job's arguments, so nobody
may change it after ``submit``. A result the daemon hands its client is not: the daemon
lets go of it once sent, and the client maps it writable, its own.

Linux only (``os.memfd_create``); :func:`available` says whether this process has it.
Where it has not, values travel through pipes and sockets instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
from collections.abc import Iterable
from functools import cache

from ._errors import ProtocolError

__all__ = ["FROZEN", "RESIZING", "STEP", "Segment", "SegmentStock", "available",
           "frozen_copy", "read_at"]

_SEALS = getattr(fcntl, "F_SEAL_SHRINK", 0) | getattr(fcntl, "F_SEAL_GROW", 0)
#: The seals of a segment whose size can no longer change (mapping it never faults past its
#: end), whatever its bytes do.
RESIZING = _SEALS
#: The seals of a value whose bytes can no longer change either (and no more seals added).
FROZEN = _SEALS | getattr(fcntl, "F_SEAL_WRITE", 0) | getattr(fcntl, "F_SEAL_SEAL", 0)


@cache
def available() -> bool:
    """Whether memfds and ``/proc/<pid>/fd`` work in this process."""
    if not hasattr(os, "memfd_create") or not hasattr(fcntl, "F_ADD_SEALS"):
        return False
    try:
        fd = os.memfd_create("p2pcluster-probe", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError:
        return False
    try:
        return os.path.exists(f"/proc/{os.getpid()}/fd/{fd}")
    finally:
        os.close(fd)


class Segment:
    """``size`` bytes of memory another process can map. Holds one descriptor until
    :meth:`close` (or garbage collection); the mapping lives as long as views of it do."""

    __slots__ = ("__weakref__", "allocated", "fd", "size", "view")

    def __init__(self, fd: int, size: int, *, access: int = mmap.ACCESS_WRITE) -> None:
        self.fd = -1  # until mapped: a failed mapping leaves ``fd`` to the caller
        self.size = size
        self.allocated = False  #: all its pages allocated already (:meth:`allocate`)
        self.view = memoryview(mmap.mmap(fd, size, access=access)) if size else memoryview(
            bytearray())
        self.fd = fd

    @classmethod
    def create(cls, size: int, name: str = "p2pcluster") -> Segment:
        """A new zero-filled segment, mapped read-write here, its size sealed."""
        fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            return cls(fd, size)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def adopt(cls, fd: int, size: int, *, access: int = mmap.ACCESS_COPY,
              seals: int = _SEALS) -> Segment:
        """Map a segment another process sealed and handed over as ``fd`` (now ours).
        Raises :class:`~p2pcluster.ProtocolError` (and closes ``fd``) if it lacks one of
        ``seals`` (by default those against resizing; :data:`FROZEN`: against writes too),
        or is not ``size`` bytes long."""
        try:
            try:
                held = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
                actual = os.fstat(fd).st_size
            except OSError as exc:  # not a memfd at all
                raise ProtocolError(f"a shared-memory segment that is not one: {exc}") from None
            if held & seals == seals and actual == size:
                if access == mmap.ACCESS_READ:
                    fd = _read_only(fd)
                return cls(fd, size, access=access)
            what = "resizing and writes" if seals & ~_SEALS else "resizing"
            raise ProtocolError(f"a shared-memory segment of {actual} bytes, announced as "  # noqa: TRY301
                                f"{size}, or not sealed against {what}")
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def open(cls, path: str, size: int, *, access: int = mmap.ACCESS_COPY) -> Segment:
        """Map the segment another process holds at ``path`` (``/proc/<pid>/fd/<fd>``)."""
        flags = os.O_RDWR if access == mmap.ACCESS_WRITE else os.O_RDONLY
        return cls.adopt(os.open(path, flags | os.O_CLOEXEC), size, access=access)

    def path(self) -> str:
        """Where another process of this user opens it, while this one holds it."""
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def close(self) -> None:
        """Give up the descriptor; the memory goes once no view of it is left."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def allocate(self) -> None:
        """Have the kernel allocate all its pages now, in one call (blocks: call it where
        waiting is fine, or in a thread). Filling a new segment is faster so than page by
        page, and faster still when another thread allocates ahead of the writes."""
        if self.allocated:  # (a segment used again: walking its pages costs about 1 ms)
            return
        with contextlib.suppress(OSError):  # not supported: the writes allocate them
            os.posix_fallocate(self.fd, 0, self.size)
        self.allocated = True

    def unmap(self) -> bool:
        """Unmap it here if nothing but the segment itself still uses the memory (True);
        else (False) the mapping stays for as long as the views that use it live."""
        mapping = self.view.obj
        try:
            self.view.release()
            if isinstance(mapping, mmap.mmap):
                mapping.close()
        except BufferError:
            return False
        return True

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Segment fd {self.fd}, {self.size:,} bytes>"


def _read_only(fd: int) -> int:
    """The same memory through a read-only descriptor (``fd`` closed): a shared mapping
    through a writable one of a memfd sealed against writes fails before Linux 6.7, even
    read-only (the mapping could be made writable later)."""
    reopened = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    os.close(fd)
    return reopened


class SegmentStock:
    """Segments to receive values into again, once no worker maps them any more: their
    pages are allocated already, and a new page of shared memory costs the kernel several
    times what writing it costs (``docs/performance.md``, "Data"). Holds at most ``most``
    segments of ``most_bytes`` in all; a segment is reused for a value of at least half its
    size."""

    def __init__(self, *, most: int = 4, most_bytes: int = 64 * 1024 * 1024) -> None:
        self._free: list[Segment] = []
        self._most = most
        self._most_bytes = most_bytes
        self.reused = 0  #: segments taken from the stock rather than created

    def take(self, size: int) -> Segment:
        """A segment of at least ``size`` bytes: from the stock if one fits, else new (its
        size rounded up to a multiple of :data:`STEP`, so that the next one fits it)."""
        fits = [s for s in self._free if size <= s.size <= 2 * size + STEP]
        if fits:
            segment = min(fits, key=lambda s: s.size)
            self._free.remove(segment)
            self.reused += 1
            return segment
        return Segment.create(-(-size // STEP) * STEP if size >= STEP else size)

    def give(self, segment: Segment) -> None:
        """``segment`` is no longer used by anyone (its last user's word for it): keep it
        for another value, if there is room. A read-only one (a client's value, which its
        job holds still) is never kept: values are received into these."""
        if segment.fd < 0 or segment.view.readonly or any(s is segment for s in self._free):
            return
        held = sum(s.size for s in self._free)
        if len(self._free) < self._most and held + segment.size <= self._most_bytes:
            self._free.append(segment)

    def clear(self) -> None:
        self._free.clear()


#: Sizes of the segments a :class:`SegmentStock` creates are multiples of this.
STEP = 1024 * 1024


def frozen_copy(pieces: Iterable[bytes | memoryview], size: int, offset: int = 0, *,
                seals: int = FROZEN) -> int:
    """A new memfd holding ``pieces`` (``size`` bytes in all) from ``offset`` on, written
    without mapping it (the kernel copies each piece in: one copy) and sealed with
    ``seals`` (:data:`FROZEN`; :data:`RESIZING` for memory the receiver may write): the
    descriptor, the caller's to hand over or close."""
    fd = os.memfd_create("p2pcluster-value", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, offset + size)
        with contextlib.suppress(OSError):  # allocating first is faster; else writes do
            os.posix_fallocate(fd, 0, offset + size)
        _write_at(fd, pieces, offset, size)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_at(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` with the bytes of ``fd`` from ``offset`` on, without mapping it (a
    mapping holds a descriptor while it lives). :class:`~p2pcluster.ProtocolError` if the
    file ends first."""
    done = 0
    while done < len(view):
        count = os.preadv(fd, [view[done:]], offset + done)
        if not count:
            raise ProtocolError("a shared-memory segment ended early")
        done += count


def _write_at(fd: int, pieces: Iterable[bytes | memoryview], offset: int, size: int) -> None:
    position = offset
    for piece in pieces:
        view = memoryview(piece).cast("B")
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], position + done)
        position += done
    if position != offset + size:
        raise ValueError(f"{position - offset} bytes written, {size} announced")
