"""The piggyback queue: membership updates waiting to ride on outgoing datagrams.

Each update is sent at most ``retransmit_mult * ceil(log10(N + 1))`` times (SWIM's lambda log N;
after that, it has missed only about N^-(2 lambda - 2) members), least-sent first and, among
equals, newest first (memberlist's order). A newer update about a node replaces the queued one:
only the latest news about a node is worth bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .messages import Update
from .wire import update_size

__all__ = ["BroadcastQueue", "retransmit_limit"]

_SMALLEST_UPDATE = 20  # bytes: stop looking once less than this is left


def retransmit_limit(mult: int, n: int) -> int:
    return mult * max(1, math.ceil(math.log10(n + 1)))


@dataclass(slots=True)
class _Item:
    update: Update
    size: int


class BroadcastQueue:
    __slots__ = ("_buckets", "_count", "mult")

    def __init__(self, retransmit_mult: int) -> None:
        self.mult = retransmit_mult
        self._buckets: list[dict[bytes, _Item]] = [{}]  # index: times sent so far
        self._count: dict[bytes, int] = {}  # node id -> bucket index

    def __len__(self) -> int:
        return len(self._count)

    def add(self, update: Update) -> None:
        """Queue ``update``, replacing any queued update about the same node."""
        self.discard(update.node)
        self._buckets[0][update.node] = _Item(update, update_size(update))
        self._count[update.node] = 0

    def discard(self, node: bytes) -> None:
        count = self._count.pop(node, None)
        if count is not None:
            del self._buckets[count][node]

    def select(self, budget: int, n: int, first: Update | None = None) -> list[Update]:
        """Updates worth at most ``budget`` bytes, counting each as sent once.

        ``first`` (the buddy system's suspicion of a ping's target, or a correction) goes
        first if it fits; it is not counted as a transmission, and queued news about the same
        node stays queued.
        """
        limit = retransmit_limit(self.mult, n)
        chosen: list[Update] = []
        skip = None
        if first is not None:
            size = update_size(first)
            if size <= budget:
                chosen.append(first)
                budget -= size
                skip = first.node  # queued news about the same node would contradict it
        picked: list[tuple[int, bytes]] = []
        for count, bucket in enumerate(self._buckets):
            if budget < _SMALLEST_UPDATE:
                break
            for node in reversed(bucket):
                item = bucket[node]
                if item.size <= budget and node != skip:
                    picked.append((count, node))
                    chosen.append(item.update)
                    budget -= item.size
                    if budget < _SMALLEST_UPDATE:
                        break
        for count, node in reversed(picked):  # oldest first, so buckets stay in age order
            self._promote(count, node, limit)
        return chosen

    def _promote(self, count: int, node: bytes, limit: int) -> None:
        item = self._buckets[count].pop(node)
        if count + 1 >= limit:
            del self._count[node]
            return
        if len(self._buckets) <= count + 1:
            self._buckets.append({})
        self._buckets[count + 1][node] = item
        self._count[node] = count + 1
