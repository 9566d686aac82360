"""Lifeguard's dynamic suspicion timeout.

A suspicion starts with the Max timeout and shrinks toward Min as independent confirmations
arrive (other peers that suspect the same member at the same incarnation), following
memberlist's formula (Lifeguard, arXiv 1707.00788, section IV-B)::

    timeout(C) = max(Min, Max - (Max - Min) * log(C + 1) / log(K + 1))
    Min = suspicion_mult * max(1, log10(N)) * probe_interval
    Max = suspicion_max_timeout_mult * Min
    K   = suspicion_mult - 2, or 0 when fewer than K + 2 peers could confirm

With K = 0 the timeout is Min from the start. When a suspicion starts, is confirmed or
expires is decided in :mod:`.membership`; :class:`SuspicionTimers` only keeps the deadlines.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator

__all__ = ["Suspicion", "SuspicionTimers", "suspicion_bounds"]


def suspicion_bounds(mult: int, max_mult: int, n: int, interval: float) -> tuple[float, float]:
    """(Min, Max) suspicion timeouts for a cluster of ``n`` live members."""
    minimum = mult * max(1.0, math.log10(max(1, n))) * interval
    return minimum, max_mult * minimum


class Suspicion:
    """One member's suspicion: when it started, who confirmed it, and its deadline.

    ``by`` is the first suspecter, already counted. Any other member, this peer included
    (its own probe failing too), confirms at most once.
    """

    __slots__ = ("by", "confirmations", "k", "maximum", "minimum", "seen", "start")

    def __init__(self, start: float, by: bytes, *, k: int, minimum: float,
                 maximum: float) -> None:
        self.start = start
        self.by = by
        self.k = k
        self.minimum = minimum
        self.maximum = maximum
        self.seen = {by}
        #: Independent confirmations so far (not counting the first suspecter).
        self.confirmations = 0

    def confirm(self, by: bytes) -> bool:
        """Record a confirmation from ``by``; True if it is a new, independent one."""
        if by in self.seen or self.confirmations >= self.k:
            return False
        self.seen.add(by)
        self.confirmations += 1
        return True

    def timeout(self) -> float:
        if self.k < 1:
            return self.minimum
        fraction = math.log(self.confirmations + 1) / math.log(self.k + 1)
        return max(self.minimum, self.maximum - (self.maximum - self.minimum) * fraction)

    def deadline(self) -> float:
        return self.start + self.timeout()


class SuspicionTimers:
    """The deadlines of the suspicions we hold, earliest first.

    A confirmation queues the shortened deadline again; the superseded entry stays until it
    is due, so the caller checks each one it gets (``MemberTable.expire``). Ties are broken
    by ``next_seq()``, drawn at each :meth:`watch`.
    """

    __slots__ = ("_heap", "_next_seq")

    def __init__(self, next_seq: Callable[[], int]) -> None:
        self._heap: list[tuple[float, int, bytes, int]] = []
        self._next_seq = next_seq

    def watch(self, deadline: float, node: bytes, incarnation: int) -> None:
        heapq.heappush(self._heap, (deadline, self._next_seq(), node, incarnation))

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> Iterator[tuple[bytes, int]]:
        """(node, incarnation) of each deadline at or before ``now``, removed as it goes."""
        while self._heap and self._heap[0][0] <= now:
            _, _, node, incarnation = heapq.heappop(self._heap)
            yield node, incarnation
