"""Traffic that failed authentication, counted in bounded maps and summed up in one log line
per interval. Pure: the caller passes ``now``.

Anyone on the LAN can send a peer junk, from as many spoofed addresses as they like, so what
the peer keeps about it must not grow with the number of sources, and neither may its log:

- a :class:`RejectionTally` counts per source host, but for at most ``max_sources`` hosts;
  packets from any further host are only added to one overflow count;
- a :class:`RejectionReport` adds tallies up and gives at most one line per ``quiet``
  seconds, whatever came in meanwhile: the total, the number of sources (``64+`` once the
  map overflowed) and the busiest few.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MAX_SOURCES", "RejectionReport", "RejectionTally", "Rejections"]

#: Source hosts counted one by one in a tally; the rest share one count.
MAX_SOURCES = 64
#: Busiest sources named in a report line.
NAMED = 3


@dataclass(frozen=True, slots=True)
class Rejections:
    """What a tally held: counts by host (at most ``MAX_SOURCES``), and the packets from
    hosts it had no room for."""

    hosts: dict[str, int]
    overflow: int = 0

    @property
    def total(self) -> int:
        return sum(self.hosts.values()) + self.overflow

    def __bool__(self) -> bool:
        return self.total > 0


class RejectionTally:
    """Rejected packets and handshakes per source host, bounded (see the module docstring).

    ``tally[host] += n`` works as on a ``Counter``."""

    def __init__(self, max_sources: int = MAX_SOURCES) -> None:
        self.max_sources = max_sources
        self._hosts: dict[str, int] = {}
        self._overflow = 0

    def note(self, host: str, n: int = 1) -> bool:
        """Count ``n`` from ``host``; True if this is the first from it since the last
        :meth:`take` and it has a place of its own (worth a debug line)."""
        count = self._hosts.get(host)
        if count is not None:
            self._hosts[host] = count + n
            return False
        if len(self._hosts) >= self.max_sources:
            self._overflow += n
            return False
        self._hosts[host] = n
        return True

    def __getitem__(self, host: str) -> int:
        return self._hosts.get(host, 0)

    def __setitem__(self, host: str, value: int) -> None:
        self.note(host, value - self[host])

    def add(self, rejections: Rejections) -> None:
        for host, count in rejections.hosts.items():
            self.note(host, count)
        self._overflow += rejections.overflow

    def take(self) -> Rejections:
        """What was counted since the last call; the tally starts again empty."""
        taken = Rejections(self._hosts, self._overflow)
        self._hosts, self._overflow = {}, 0
        return taken


class RejectionReport:
    """Adds tallies up; :meth:`due` gives one summary line at most every ``quiet`` seconds."""

    def __init__(self, quiet: float, max_sources: int = MAX_SOURCES) -> None:
        self.quiet = quiet
        self._pending = RejectionTally(max_sources)
        self._last = -math.inf

    def add(self, rejections: Rejections) -> None:
        self._pending.add(rejections)

    def due(self, now: float) -> str | None:
        """The line to log now, if anything was rejected and the last line is ``quiet``
        seconds old; None otherwise."""
        if now - self._last < self.quiet:
            return None
        pending = self._pending.take()
        if not pending:
            return None
        over = None if self._last == -math.inf else now - self._last
        self._last = now
        return summary(pending, over)


def summary(rejections: Rejections, over: float | None) -> str:
    """One line about ``rejections``, counted over the last ``over`` seconds (None: since
    the start)."""
    sources = len(rejections.hosts)
    plus = "+" if rejections.overflow else ""
    busiest = sorted(rejections.hosts.items(), key=lambda kv: (-kv[1], kv[0]))[:NAMED]
    named = ", ".join(f"{host} x{count}" for host, count in busiest)
    rest = rejections.total - sum(count for _, count in busiest)
    if rest:
        named += f", {rest} from others"
    when = "" if over is None else f" in the last {over:.0f} s"
    return (f"rejected {rejections.total} packet(s) or connection(s) that failed "
            f"authentication{when}, from {sources}{plus} source(s) ({named}): a peer with "
            "another cluster secret or cluster name, or someone probing the port?")
