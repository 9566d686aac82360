"""The replay window of authenticated datagrams: per sender, and safe across clock steps.
Sans-IO.

A datagram carries its sender's node id, a wall-clock timestamp and a nonce, all
authenticated (:mod:`.envelope`). The receiver accepts it only if

1. the timestamp is within ``window`` seconds of its own clock, either way; else it raises
   :class:`~p2pcluster._errors.ClockSkew` with the measured offset (the timestamp is
   authentic, so the offset is the sender's true clock error relative to ours);
2. the nonce was not accepted before from that sender, and the timestamp is above that
   sender's *floor*.

Accepted nonces are remembered, in order of acceptance, until their timestamp leaves the
window or until ``capacity`` nonces (over all senders) are held. Whenever a nonce is
forgotten, for either reason, its sender's floor rises to its timestamp: a replay of anything
forgotten is refused by the floor, whatever either clock does later. A step of the
receiver's clock therefore never reopens the window to old datagrams, and a sender whose
clock runs ahead raises only its own floor, never another sender's.

A sender's floor only ever rises to timestamps it sent more than ``window`` ago (or, under
capacity pressure, to its oldest remembered one), so its own later datagrams stay above it
unless its clock steps back by more than the window. At most ``max_senders`` floors are
kept; the floor of the sender heard least recently is then folded into one shared floor
that applies to senders with none of their own.
"""

from __future__ import annotations

from collections import OrderedDict

from .._errors import ClockSkew, ReplayError

__all__ = ["MAX_SENDERS", "ReplayWindow"]

#: Senders whose floors are kept apart (memory: about 150 bytes each).
MAX_SENDERS = 4096
_NO_FLOOR = float("-inf")


class ReplayWindow:
    """See the module docstring. ``window`` in seconds; ``capacity`` nonces in all."""

    __slots__ = ("_evicted", "_floors", "_seen", "capacity", "max_senders", "window")

    def __init__(self, window: float, capacity: int, max_senders: int = MAX_SENDERS) -> None:
        self.window = window
        self.capacity = capacity
        self.max_senders = max_senders
        #: (sender, nonce) -> timestamp, in order of acceptance
        self._seen: OrderedDict[tuple[bytes, bytes], float] = OrderedDict()
        #: sender -> highest timestamp forgotten; least recently heard first
        self._floors: OrderedDict[bytes, float] = OrderedDict()
        self._evicted = _NO_FLOOR  # the floor of senders whose own was folded away

    def floor(self, sender: bytes) -> float:
        """Timestamps at or below this are refused from ``sender``."""
        return self._floors.get(sender, self._evicted)

    def check(self, sender: bytes, nonce: bytes, stamp: float, now: float) -> None:
        """Record ``nonce`` from ``sender``; raise :class:`ClockSkew` if ``stamp`` is outside
        the window, :class:`ReplayError` if it is a replay."""
        offset = stamp - now
        if abs(offset) > self.window:
            raise ClockSkew(
                f"timestamp is {offset:+.1f} s from our clock, outside the {self.window:g} s "
                "window (are the clocks synchronised?)", offset, sender)
        key = (sender, nonce)
        if stamp <= self.floor(sender) or key in self._seen:
            raise ReplayError("datagram was already received (replay)")
        self._seen[key] = stamp
        self._floors[sender] = self.floor(sender)
        self._floors.move_to_end(sender)
        self._forget(now - self.window)
        while len(self._floors) > self.max_senders:
            _, folded = self._floors.popitem(last=False)
            self._evicted = max(self._evicted, folded)

    def _forget(self, horizon: float) -> None:
        """Forget nonces older than ``horizon`` and beyond capacity; raise their floors."""
        seen, floors = self._seen, self._floors
        while seen:
            (sender, nonce), oldest = next(iter(seen.items()))
            if oldest >= horizon and len(seen) <= self.capacity:
                return
            del seen[sender, nonce]
            if sender in floors:
                floors[sender] = max(floors[sender], oldest)
            else:
                self._evicted = max(self._evicted, oldest)

    @property
    def senders(self) -> int:
        """Senders with a floor of their own."""
        return len(self._floors)

    def __len__(self) -> int:
        return len(self._seen)
