"""The gate before authentication: what an outsider can make a peer spend, bounded.

Anyone who reaches a peer's TCP port can open connections; until a connection's handshake
completes it is an outsider's. The accept loop (:func:`serve_streams`) bounds what they cost:

- **Handshakes in progress** are at most ``max_handshakes`` overall: at the cap the loop
  stops accepting (new connections wait in the kernel's backlog) until one finishes. Of
  those, one source address may have at most ``max_handshakes_per_host``; a further
  connection from it is closed at once, unread. A handshake lasts at most
  ``hello_timeout`` until the hello, ``handshake_timeout`` in all, and reads only the exact
  sizes of the handshake (``_proto/handshake.py``): a few hundred bytes per connection.
- **Running out** of file descriptors or kernel memory (``EMFILE``, ``ENFILE``,
  ``ENOBUFS``, ``ENOMEM``) stops neither the loop nor the peer: it logs one warning (at most
  one per :data:`WARN_EVERY` seconds), backs off (:data:`BACKOFF_FIRST` doubling to
  :data:`BACKOFF_MAX`), and goes on.

A peer's own connects keep to the same per-address cap (:class:`ConnectLimits`), so
another peer never refuses them for being too many at once.
"""

from __future__ import annotations

import errno
import logging
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import trio

from ._transport import Address, StreamListener

__all__ = ["RESOURCE_ERRORS", "AcceptBackoff", "ConnectLimits", "HandshakeGate",
           "serve_streams"]

log = logging.getLogger("p2pcluster.wire")

#: accept() errors that mean "out of resources, for now": wait, and accept again.
T = TypeVar("T")
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 1.0
WARN_EVERY = 60.0


class HandshakeGate:
    """Counts handshakes in progress, overall and by source address."""

    def __init__(self, total: int, per_host: int) -> None:
        self.total = total
        self.per_host = per_host
        self._hosts: Counter[str] = Counter()
        self._in_progress = 0
        self._room = trio.Event()

    @property
    def in_progress(self) -> int:
        return self._in_progress

    async def wait_for_room(self) -> None:
        """Until fewer than ``total`` handshakes are in progress."""
        while self._in_progress >= self.total:
            await self._room.wait()

    def admit(self, host: str) -> bool:
        """Count a handshake from ``host``; False (nothing counted) if it has too many."""
        if self._hosts[host] >= self.per_host:
            return False
        self._hosts[host] += 1
        self._in_progress += 1
        return True

    def release(self, host: str) -> None:
        """A handshake from ``host`` ended, either way."""
        self._hosts[host] -= 1
        if not self._hosts[host]:
            del self._hosts[host]
        self._in_progress -= 1
        self._room.set()
        self._room = trio.Event()


class AcceptBackoff:
    """Waits after an accept() that ran out of resources; warns at most once per
    :data:`WARN_EVERY` seconds."""

    def __init__(self) -> None:
        self._delay = BACKOFF_FIRST
        self._failures = 0
        self._warned = -math.inf

    async def accept(self, accept: Callable[[], Awaitable[T]]) -> T:
        """``await accept()`` until it succeeds, waiting after each failure for want of
        resources (:data:`RESOURCE_ERRORS`); any other error propagates."""
        while True:
            try:
                accepted = await accept()
            except OSError as exc:
                if exc.errno not in RESOURCE_ERRORS:
                    raise
                await self.failed(exc)
                continue
            self.succeeded()
            return accepted

    def succeeded(self) -> None:
        self._delay = BACKOFF_FIRST

    async def failed(self, exc: OSError) -> None:
        self._failures += 1
        now = trio.current_time()
        if now - self._warned >= WARN_EVERY:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            log.warning("cannot accept connections (%s: %s; %d time(s) since the last warning):"
                        " pausing and retrying; if this persists, raise the limit on open files"
                        " (ulimit -n, systemd LimitNOFILE)", name, exc.strerror,
                        self._failures)
            self._warned, self._failures = now, 0
        await trio.sleep(self._delay)
        self._delay = min(BACKOFF_MAX, 2 * self._delay)


class ConnectLimits:
    """Our own handshakes in progress to one address, at most ``per_address`` at once."""

    def __init__(self, per_address: int) -> None:
        self.per_address = per_address
        self._slots: dict[Address, trio.Semaphore] = {}
        self._users: Counter[Address] = Counter()

    @asynccontextmanager
    async def slot(self, dst: Address) -> AsyncIterator[None]:
        semaphore = self._slots.setdefault(dst, trio.Semaphore(self.per_address))
        self._users[dst] += 1
        try:
            async with semaphore:
                yield
        finally:
            self._users[dst] -= 1
            if not self._users[dst]:
                del self._users[dst], self._slots[dst]


Accept = Callable[[trio.abc.Stream, Address], Awaitable[object]]


async def serve_streams(listener: StreamListener, gate: HandshakeGate, serve_one: Accept, *,
                        refused: Callable[[Address], None],
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Accept connections forever; run ``serve_one(stream, src)`` on each in a task of its
    own while ``gate`` has room for it (``refused(src)`` is told of those closed at once).
    ``serve_one`` must call ``gate.release(src[0])`` when the handshake ends."""
    backoff = AcceptBackoff()
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            await gate.wait_for_room()
            stream, src = await backoff.accept(listener.accept)
            if not gate.admit(src[0]):
                refused(src)
                await trio.aclose_forcefully(stream)
                continue
            nursery.start_soon(serve_one, stream, src)
