"""Argument streams kept open between batches, so that a peer that fetches from the same
owner again reuses its stream instead of connecting and handshaking anew.

A peer running a job's tasks fetches each batch's arguments on a data stream
(:mod:`._dataplane`). Where a batch holds one large task (16 MB arrays, say), a stream per
batch was a TCP connection, a handshake (an X25519 exchange on each side) and a receive
buffer grown anew per task: about a tenth of the receiving peer's main thread in the data
benchmark. A stream whose batch ended cleanly is given back here and taken by the next
batch for the same owner, at the same address, within :data:`LINGER` seconds.

The owner waits :data:`~._dataplane.OWNER_LINGER` seconds (longer than :data:`LINGER`)
for the next request before it closes the stream, so a stream taken from here is rarely
one the owner has just closed; if it is, the request fails before a byte of an answer, and
the fetching peer asks again on a new stream (:meth:`~._dataplane.DataPlane.fetch_args`).
"""

from __future__ import annotations

import trio

from ._secure import SecureStream
from ._transport import Address

__all__ = ["LINGER", "MOST", "IdleStreams"]

#: Seconds an idle stream is kept for the next batch (the owner keeps its end longer).
LINGER = 5.0
#: Idle streams kept per owner: one for each batch fetching at once, of which a peer runs
#: ``batches_per_worker`` (2) per worker; a stream given back over this is closed.
MOST = 8

_Key = tuple[bytes, Address]  # the owner's node id and address


class IdleStreams:
    """Idle argument streams by owner. :meth:`take` and :meth:`give` return at once;
    :meth:`serve` closes the streams that waited too long, and all of them when it ends."""

    def __init__(self, *, linger: float = LINGER, most: int = MOST) -> None:
        self._idle: dict[_Key, list[tuple[float, SecureStream]]] = {}
        self._stale: list[SecureStream] = []
        self._linger = linger
        self._most = most

    def __len__(self) -> int:
        return sum(map(len, self._idle.values()))

    def take(self, owner: bytes, address: Address) -> SecureStream | None:
        """The stream to ``owner`` at ``address`` that was given back last, if it has
        waited less than ``linger`` seconds; else None (connect anew)."""
        waiting = self._idle.get((owner, address))
        now = trio.current_time()
        while waiting:
            since, stream = waiting.pop()
            if now - since < self._linger:
                return stream
            self._stale.append(stream)
        return None

    def give(self, owner: bytes, address: Address, stream: SecureStream) -> None:
        """``stream`` carried a whole batch and may carry the next one; if ``most`` streams
        to that owner wait already, it is closed instead (by :meth:`serve`)."""
        waiting = self._idle.setdefault((owner, address), [])
        if len(waiting) < self._most:
            waiting.append((trio.current_time(), stream))
        else:
            self._stale.append(stream)

    async def serve(self) -> None:
        """Close, every ``linger`` seconds, the streams that waited longer or were
        dropped; run until cancelled, then close every stream left."""
        try:
            while True:
                await trio.sleep(self._linger)
                await self._close_stale(trio.current_time() - self._linger)
        finally:
            with trio.CancelScope(shield=True):
                await self._close_stale(float("inf"))

    async def _close_stale(self, before: float) -> None:
        for key, waiting in list(self._idle.items()):
            self._stale.extend(stream for since, stream in waiting if since <= before)
            waiting[:] = [(since, stream) for since, stream in waiting if since > before]
            if not waiting:
                del self._idle[key]
        stale, self._stale = self._stale, []
        for stream in stale:
            with trio.CancelScope() as scope:
                scope.cancel()  # closes the socket at once, without waiting
                await stream.aclose()
