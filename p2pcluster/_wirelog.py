"""What the wire says about traffic it refuses: bounded tallies and rate-limited warnings.

Refused traffic costs an outsider nothing to send, so nothing here grows with it: the
tally of unauthenticated traffic keeps at most :data:`MAX_HOSTS` addresses (the rest are
counted together), and clock warnings, which only authentic datagrams can cause, are kept
for at most :data:`MAX_SENDERS` senders. Each summary or warning is one log line, at most
once per interval.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

__all__ = ["ClockWarnings", "Rejected", "RejectionTally"]

#: Addresses tallied one by one between two summaries; others are counted together.
MAX_HOSTS = 64
#: Senders whose last clock warning is remembered.
MAX_SENDERS = 1024
#: Addresses a summary names.
SHOWN = 5


@dataclass(frozen=True, slots=True)
class Rejected:
    """Unauthenticated traffic refused since the last summary: ``packets`` datagrams and
    connections in all, from ``hosts`` addresses (at least: past :data:`MAX_HOSTS`, new
    addresses are counted in ``others``), the most active first in ``top``."""

    packets: int = 0
    hosts: int = 0
    others: int = 0
    top: tuple[tuple[str, int], ...] = ()

    def __bool__(self) -> bool:
        return self.packets > 0

    def describe(self) -> str:
        """One log line."""
        shown = ", ".join(f"{host} x{count:,}" for host, count in self.top)
        more = "+" if self.others else ""
        return (f"refused {self.packets:,} packet(s) or connection(s) that failed "
                f"authentication, from {self.hosts:,}{more} address(es) ({shown}"
                f"{', ...' if self.hosts > len(self.top) or self.others else ''}): a peer with "
                "another cluster secret or cluster name, or traffic from outside the cluster")


class RejectionTally:
    """Counts refused traffic by source address, in bounded memory."""

    __slots__ = ("_counts", "_others", "_packets")

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._others = 0
        self._packets = 0

    def note(self, host: str) -> None:
        self._packets += 1
        if host in self._counts or len(self._counts) < MAX_HOSTS:
            self._counts[host] += 1
        else:
            self._others += 1

    def take(self) -> Rejected:
        """What was noted since the last call, and start over."""
        rejected = Rejected(self._packets, len(self._counts), self._others,
                            tuple(self._counts.most_common(SHOWN)))
        self._counts, self._others, self._packets = Counter(), 0, 0
        return rejected


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
