"""Whom an idle peer robs, and how much a victim gives.

Victim choice is random, weighted by the queue lengths the thief knows of (gossiped in
metadata, refreshed by hints and by the ``queue`` of every grant and result): busy queues
are robbed more often, empty ones never. A thief that knows of no queued task anywhere asks
no one: a workload that fits the free slots causes no steal at all.

A grant is half the victim's surplus (rounded up), capped at the thief's share of all the
queued work the victim knows of, by worker slots, and at least one task if there is a
surplus at all. With one thief this is exactly half; with many thieves at once the cap stops
the first from carrying off half of a job to a place it could move from only once more.

Of the tasks whose move is their last (``max_moves``), a grant carries only what the thief
starts at once (:func:`last_move_cap`): such tasks run wherever they land, and a pile of them
(slow ones, say, when a job's first tasks are its longest) would keep one peer busy while the
others idle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from random import Random

__all__ = ["Surpluses", "choose_victim", "grant_size", "last_move_cap"]


class Surpluses(dict[bytes, int]):
    """Live peer -> its surplus (the queued tasks it would give) as last heard.

    What a peer told this one itself (the ``queue`` of a grant, a hint or a result; or no
    answer to a steal, taken as nothing) is fresher than its gossiped metadata, which it
    publishes at most every ``meta_interval``: metadata saying 0 never lowers a surplus the
    peer told directly (:meth:`published`). A wrong positive costs one steal, whose grant
    tells the truth; a wrong zero leaves an idle thief waiting for the next publication
    while its victim runs the whole queue alone (a third of a second per joblib search,
    seen before this rule)."""

    def __init__(self) -> None:
        super().__init__()
        self._told: set[bytes] = set()  #: peers whose entry they told directly

    def heard(self, peer: bytes, queue: int) -> None:
        """``peer`` itself says its surplus is ``queue`` (ignored for an unknown peer)."""
        if peer in self:
            self[peer] = queue
            self._told.add(peer)

    def published(self, peer: bytes, queue: int) -> None:
        """``peer``'s metadata says ``queue`` (a peer not known yet is added)."""
        if queue or peer not in self._told or not self.get(peer):
            self[peer] = queue
            self._told.discard(peer)

    def forget(self, peer: bytes) -> None:
        self.pop(peer, None)
        self._told.discard(peer)


def choose_victim(rng: Random, queues: Mapping[bytes, int]) -> bytes | None:
    """A peer with queued tasks, chosen with probability in proportion to its queue; None if
    no known peer has any. Draws one number from ``rng`` when there is a choice."""
    candidates = [(peer, q) for peer, q in queues.items() if q > 0]
    if not candidates:
        return None
    pick = rng.random() * sum(q for _, q in candidates)
    for victim, q in candidates:  # noqa: B007 - victim is used after the loop
        pick -= q
        if pick < 0:
            break
    return victim


def grant_size(surplus: int, *, thief_slots: int, total_slots: int, known_work: int) -> int:
    """How many tasks a victim with ``surplus`` tasks to give grants a thief of
    ``thief_slots`` slots, when the victim knows of ``total_slots`` slots in all (its own,
    the thief's, the other peers') and ``known_work`` queued tasks (its surplus included)."""
    if surplus == 0:
        return 0
    share = math.ceil(known_work * thief_slots / max(1, total_slots))
    return max(1, min(math.ceil(surplus / 2), share))


def last_move_cap(thief_slots: int, batches_per_slot: int, batch_size: int) -> int:
    """Tasks of one job a grant may carry on their last move: the batches a thief of
    ``thief_slots`` slots starts at once, ``batch_size`` tasks each (as the victim sizes the
    job's batches)."""
    return max(1, thief_slots) * batches_per_slot * batch_size
