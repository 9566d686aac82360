"""Which news about a member wins: SWIM's precedence table, and the rule for two processes
at one address. Sans-IO; :mod:`.membership` applies both (its docstring has the tables).

One address, one process
    Two member ids that claim the same address are two processes of one peer, one started
    after the other (one address is one socket). The newer one owns the address and the
    older one is gone. Which is newer is told by the start time a daemon publishes in its
    metadata (``s``, Unix seconds; both processes ran on the same machine, so one clock
    orders them). Without it on both sides, or with equal times (a restart within the same
    second), the id we heard of *last* is taken as the newer one. That fallback is wrong when
    a stale Alive for a dead predecessor is relayed late (in a push-pull table, say): the
    start times are what keep such a relay from declaring the live successor dead.
"""

from __future__ import annotations

from collections.abc import Callable

from .messages import Alive, Dead, Left, MemberStatus, Suspect
from .meta import NodeMeta

__all__ = ["PRECEDENCE", "Rule", "succeeds"]

ALIVE, SUSPECT, DEAD, LEFT = (MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD,
                              MemberStatus.LEFT)
Rule = Callable[[int, int], bool]


def _newer(i: int, j: int) -> bool:
    return i > j


def _at_least(i: int, j: int) -> bool:
    return i >= j


def _any(i: int, j: int) -> bool:
    return True


def _never(i: int, j: int) -> bool:
    return False


#: (update type, held status) -> does the update override? See :mod:`.membership`.
PRECEDENCE: dict[tuple[type, MemberStatus], Rule] = {
    (Alive, ALIVE): _newer, (Alive, SUSPECT): _newer, (Alive, DEAD): _newer,
    (Alive, LEFT): _newer,
    (Suspect, ALIVE): _at_least, (Suspect, SUSPECT): _newer, (Suspect, DEAD): _never,
    (Suspect, LEFT): _never,
    (Dead, ALIVE): _at_least, (Dead, SUSPECT): _at_least, (Dead, DEAD): _never,
    (Dead, LEFT): _never,
    (Left, ALIVE): _any, (Left, SUSPECT): _any, (Left, DEAD): _any, (Left, LEFT): _never,
}


def succeeds(claimant_meta: bytes, holder_meta: bytes) -> bool:
    """Is the process that claims an address (``claimant_meta``) the successor of the one
    we hold there (``holder_meta``)? False only when both published their start times and
    the claimant's is the earlier: it is a predecessor, gossiped about late."""
    claimant = NodeMeta.decode(claimant_meta).started
    holder = NodeMeta.decode(holder_meta).started
    return not (claimant and holder and claimant < holder)
