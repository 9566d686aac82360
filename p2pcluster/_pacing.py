"""Warnings about one peer at a time, paced, in bounded memory.

Some warnings are about what an authenticated peer did: its clock is off (its datagrams fall
outside the replay window; the timestamp is authenticated, so the offset can be trusted), or
it sent a work message in another node's name. Such a peer repeats itself many times a
second: :class:`Pacer` allows one warning per peer per interval and remembers at most
:data:`MAX_SENDERS` peers. Unauthenticated traffic is tallied elsewhere (:mod:`._rejections`).
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["MAX_SENDERS", "Pacer"]

#: Senders whose last clock warning is remembered.
MAX_SENDERS = 1024


class Pacer:
    """When to warn about a peer: at most once per ``interval`` seconds per peer (monotonic
    time)."""

    __slots__ = ("_last", "interval")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: OrderedDict[bytes, float] = OrderedDict()

    def due(self, sender: bytes, now: float) -> bool:
        """True if a warning about ``sender`` is due at ``now`` (and note that it is given)."""
        last = self._last.get(sender)
        if last is not None and now - last < self.interval:
            return False
        self._last[sender] = now
        self._last.move_to_end(sender)
        while len(self._last) > MAX_SENDERS:
            self._last.popitem(last=False)
        return True
