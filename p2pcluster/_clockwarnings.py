"""When to warn that a peer's clock is off, in bounded memory.

Only an authentic datagram can show a clock offset (its timestamp is authenticated), so a
warning names a real peer and a trustworthy offset. Still, a peer whose clock is off sends
many datagrams a second: :class:`ClockWarnings` allows one warning per sender per interval
and remembers at most :data:`MAX_SENDERS` senders. Unauthenticated traffic is tallied
elsewhere (:mod:`._rejections`).
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["MAX_SENDERS", "ClockWarnings"]

#: Senders whose last clock warning is remembered.
MAX_SENDERS = 1024


class ClockWarnings:
    """When to warn that a sender's clock is off: at most once per ``interval`` seconds per
    sender (monotonic time)."""

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
