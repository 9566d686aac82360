"""State sync: joining, push-pull anti-entropy, reconnecting to the dead, merging tables.

Every ``push_pull_interval`` (scaled up above 32 members, as memberlist's pushPullScale) the
whole table is exchanged with one random member over a stream, and every
``reconnect_interval`` with one member believed dead, so the halves of a healed partition find
each other. A member a remote table holds dead is only *suspected* here, giving it the chance
to refute; such relayed suspicions never count as independent confirmations. Dead and left
members we never knew are learned as tombstones. The functions below
operate on a :class:`~.swim.MembershipMachine`, whose state they share.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .membership import MemberStatus
from .messages import MemberState, PushPull
from .outputs import Address, StreamRequest

if TYPE_CHECKING:
    from .swim import MembershipMachine

__all__ = ["merge", "periodic_push_pull", "push_pull", "push_pull_interval", "reconnect",
           "retry_seeds"]

ALIVE, SUSPECT, DEAD, LEFT = (MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD,
                              MemberStatus.LEFT)
SEED_RETRY = 2.0  # seconds between join attempts while we know nobody

def push_pull_interval(m: MembershipMachine) -> float:
    """memberlist's pushPullScale: longer above 32 members, to bound the load."""
    n = m.table.live_count
    interval = m.config.push_pull_interval
    if n <= 32:
        return interval
    return interval * (math.ceil(math.log2(n) - math.log2(32)) + 1)

def push_pull(m: MembershipMachine, address: Address, kind: str) -> None:
    token = m.new_request(kind, address)
    msg = PushPull(join=kind == "join", sender=m.me.node, members=m.table.states())
    m._outputs.append(StreamRequest(address, msg, token))
    m._count("push_pulls")

def periodic_push_pull(m: MembershipMachine) -> None:
    live = [e for e in m.table if e is not m.me and e.status == ALIVE]
    if live and not m._left:
        entry = m.rng.choice(live)
        push_pull(m, (entry.host, entry.port), "sync")

def reconnect(m: MembershipMachine, now: float) -> None:
    m.table.purge(now, m.config.dead_retention)
    dead = [e for e in m.table if e.status == DEAD]
    if dead and not m._left:
        entry = m.rng.choice(dead)
        push_pull(m, (entry.host, entry.port), "reconnect")

def retry_seeds(m: MembershipMachine, now: float) -> None:
    if m.table.live_count > 1 or m._left:
        m._next_seed_retry = math.inf
        return
    m.join(now, m._seeds)

def merge(m: MembershipMachine, now: float, members: tuple[MemberState, ...], sender: bytes,
           src: Address) -> None:
    """Apply ``sender``'s table, by :meth:`~.membership.MemberTable.merge`'s rule."""
    for state in members:
        for update in m.table.merge(state, now):
            m._apply(now, update, src)
