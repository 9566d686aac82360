"""The link model shared by :class:`Simulation` and :class:`VirtualNetwork`.

Hosts are named by IP-like strings. Every random choice (loss, duplication, jitter) is drawn
from the ``random.Random`` the model is given, so a seed replays the same network.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["LinkConditions", "NetworkModel"]

TCP_SYN_RTO = 1.0  # Linux's initial retransmission timeout for a SYN
TCP_MIN_RTO = 0.2  # and its minimum for data


@dataclass(frozen=True, slots=True)
class LinkConditions:
    """How one direction of a link treats datagrams and stream segments.

    Datagrams are lost, duplicated and delayed as given. Streams never lose or reorder bytes,
    but a lost segment costs a TCP retransmission timeout (see
    :meth:`NetworkModel.stream_delay`).

    ``jitter`` is added uniformly in [0, jitter) per datagram, so datagrams reorder when it
    exceeds their spacing. ``loss`` and ``duplicate`` are probabilities per datagram.
    """

    latency: float = 0.001
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0

    def __post_init__(self) -> None:
        if not (0 <= self.loss <= 1 and 0 <= self.duplicate <= 1):
            raise ValueError("loss and duplicate are probabilities in [0, 1]")
        if self.latency < 0 or self.jitter < 0:
            raise ValueError("latency and jitter must not be negative")


class NetworkModel:
    """Default conditions, per-link overrides, partitions and one-way blocks."""

    def __init__(self, rng: random.Random, default: LinkConditions | None = None) -> None:
        self.rng = rng
        self.default = default or LinkConditions()
        self._links: dict[tuple[str, str], LinkConditions] = {}
        self._blocked: set[tuple[str, str]] = set()
        self._group: dict[str, int] = {}  # host -> partition group; absent = group 0

    def set_link(self, src: str, dst: str, conditions: LinkConditions) -> None:
        """Override the conditions from ``src`` to ``dst`` (one direction)."""
        self._links[src, dst] = conditions

    def conditions(self, src: str, dst: str) -> LinkConditions:
        return self._links.get((src, dst), self.default)

    def block(self, src: str, dst: str) -> None:
        """Drop everything from ``src`` to ``dst`` (not the other way): an asymmetric link."""
        self._blocked.add((src, dst))

    def unblock(self, src: str, dst: str) -> None:
        self._blocked.discard((src, dst))

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the hosts: each group talks only within itself. Unlisted hosts form group 0."""
        self._group = {host: i for i, group in enumerate(groups, 1) for host in group}

    def heal(self) -> None:
        """Undo :meth:`partition` and every :meth:`block`."""
        self._group.clear()
        self._blocked.clear()

    def reachable(self, src: str, dst: str) -> bool:
        if src == dst:
            return True
        if (src, dst) in self._blocked:
            return False
        return self._group.get(src, 0) == self._group.get(dst, 0)

    def datagram_delays(self, src: str, dst: str) -> list[float]:
        """Delays after which copies of one datagram arrive: none (lost), one, or two."""
        if not self.reachable(src, dst):
            return []
        link = self.conditions(src, dst)
        rng = self.rng
        if link.loss and rng.random() < link.loss:
            return []
        copies = 2 if link.duplicate and rng.random() < link.duplicate else 1
        return [link.latency + (rng.random() * link.jitter if link.jitter else 0.0)
                for _ in range(copies)]

    def stream_latency(self, src: str, dst: str) -> float | None:
        """One-way latency of a stream, or None if ``dst`` cannot be reached now."""
        if not (self.reachable(src, dst) and self.reachable(dst, src)):
            return None
        return self.conditions(src, dst).latency

    def stream_delay(self, src: str, dst: str, *, segments: int = 1,
                     rto: float = TCP_MIN_RTO) -> float | None:
        """Time for ``segments`` one-way TCP segments from ``src`` to ``dst`` to get through.

        Streams are reliable, but the link's ``loss`` still costs time: each lost segment waits
        out a retransmission timeout, doubling on every retry, as TCP does (``rto`` is 1 s for
        a SYN, 200 ms for data on Linux). None if ``dst`` cannot be reached now.
        """
        latency = self.stream_latency(src, dst)
        if latency is None:
            return None
        loss = self.conditions(src, dst).loss
        delay = 0.0
        for _ in range(segments):
            timeout = rto
            while loss and self.rng.random() < loss:
                delay += timeout
                timeout *= 2
            delay += latency
        return delay
