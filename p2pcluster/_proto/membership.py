"""Every state transition of a member, next to SWIM's precedence table. Sans-IO.

Theory of operation
===================

Each member is known by a random 16-byte id, drawn when its process starts, so a restarted
peer is a *new* member even when it keeps its name and address. A member's record
(:class:`~.roster.Entry`) carries its name, address (one port for UDP and TCP), metadata, an
*incarnation* number, and a status: alive, suspect, dead or left. Only the member itself ever
raises its incarnation: to refute a suspicion, or to announce new metadata.

This module decides every change of a record; the machine only carries the consequences
out: it gossips, arms timers, sends, and reports events. The transitions:

Precedence
    News about a member arrives as an update (Alive, Suspect, Dead, Left), piggybacked on
    probes, in gossip, or inside a push-pull table. Whether an update overrides what we hold
    is decided by :data:`PRECEDENCE`, SWIM's rules (Das, Gupta, Motivala, DSN 2002, section
    4.2), with ``i`` the update's incarnation and ``j`` the one we hold:

    =========== ============ ============ ============ ============
    update      held alive   held suspect held dead    held left
    =========== ============ ============ ============ ============
    Alive(i)    i > j        i > j        i > j        i > j
    Suspect(i)  i >= j       i > j  [1]_  never        never
    Dead(i)     i >= j [3]_  i >= j [3]_  never        never
    Left(i)     any i        any i        any i  [2]_  never
    =========== ============ ============ ============ ============

    .. [1] Suspect(i) with i == j while suspect is a *confirmation* (Lifeguard), not a change.
    .. [2] Left is a Dead the member announces about itself; it replaces a Dead so the member
       shows as left, not failed.
    .. [3] The paper lets a Dead override at any incarnation; we follow memberlist instead,
       which ignores a Dead older than what it holds. Such a Dead is stale news the member
       has refuted already: relayed by a peer that was frozen, say. Under the paper's rule it
       declares a live member dead again (the soak's seed 30 did, 23 s after the refutation).

    A Dead overriding an Alive keeps the larger incarnation, so a refutation must exceed
    everything anyone knew. An update about an *unknown* member creates it only if it is an
    Alive (nothing else carries an address). Updates about ourselves are never applied (see
    Refutation). Each change is gossiped on (:func:`news`): the update that made it, or, for a
    predecessor the restart rule declared dead, a Dead signed by us.

Events
    ====================================================== =======
    change                                                 event
    ====================================================== =======
    unknown -> alive                                       join
    alive or suspect -> dead                               fail
    any -> left                                            leave
    alive or suspect -> alive, with name/address/meta new  update
    dead or left -> alive                                  recover
    -> suspect; -> alive with nothing visible new; a ghost none
    ====================================================== =======

Suspicion (Lifeguard)
    ============ ============================================ ===========================
    step         when                                         then
    ============ ============================================ ===========================
    start        a Suspect makes a member suspect             the timeout starts at Max
    confirmation a Suspect at the suspect's incarnation, from the timeout shrinks toward
                 a peer not counted yet, not :data:`RELAYED`  Min; gossip the Suspect
    expiry       the deadline passes, the member still        we declare it Dead
                 suspect at the same incarnation
    refutation   an Alive at a higher incarnation             alive; the suspicion ends
    ============ ============================================ ===========================

Refutation (updates about ourselves)
    ===================== =============== ==================================================
    update about us       after our leave otherwise
    ===================== =============== ==================================================
    Alive                 ignored         ignored
    Suspect(i), i < ours  gossip Left     answer its sender with our Alive (a correction)
    Suspect(i), i >= ours gossip Left     refute: incarnation max(ours, i) + 1, gossip Alive
    Dead(i), Left(i)      gossip Left     refute, at any i
    ===================== =============== ==================================================

Corrections (ours)
    Gossip is probabilistic, so a peer can miss every copy of a refutation and keep its
    suspicion until it expires into a false death. A Suspect(i) about a member we hold alive
    at j > i, once that refutation is :data:`CORRECTION_AGE` gossip rounds old, is answered
    with the refutation, straight to its sender. A sender still inside the refutation's wave
    would hear it within milliseconds anyway.

Restarts and ghosts
    A new id that claims the address of a member we hold alive or suspect proves that one
    of the two processes is gone (one address, one socket): the older one, by the start
    times in their metadata (:mod:`.precedence`), is declared dead at once; without those,
    the one held before.
    An Alive for another id at *our* address is a predecessor of ours, still gossiped about:
    it is recorded dead, as a tombstone, with no event.

Tombstones
    Dead and left members stay in the table for ``dead_retention`` seconds before they are
    purged, so stale gossip cannot bring them back (an Alive must exceed their incarnation).
    A newcomer learns the cluster's tombstones from push-pull tables, so every table agrees.

Push-pull merge
    A remote table's record becomes updates here (:data:`MERGE`). A member the remote holds
    dead is only *suspected* here (memberlist), giving it the chance to refute:

    ============== ======================== ============================================
    remote holds   we hold the member       we do not know it
    ============== ======================== ============================================
    alive(i)       Alive(i), unless alive   Alive(i): it joins
                   at i here already
    suspect(i)     Suspect(i, relayed)      Alive(i), then Suspect(i, relayed)
    dead(i)        Suspect(i, relayed)      learned as a tombstone
    left(i)        Left(i)                  learned as a tombstone
    ============== ======================== ============================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from .messages import Alive, Dead, Left, MemberState, MemberStatus, Suspect, Update
from .precedence import PRECEDENCE, succeeds
from .roster import Entry, Member, Roster
from .suspicion import Suspicion, suspicion_bounds

if TYPE_CHECKING:
    from .._config import Config

__all__ = ["CORRECTION_AGE", "MERGE", "PRECEDENCE", "RELAYED", "Change", "Entry", "EventKind",
           "Member", "MemberEvent", "MemberStatus", "MemberTable", "Refutation", "news"]

ALIVE, SUSPECT, DEAD, LEFT = (MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD,
                              MemberStatus.LEFT)
#: The "by" of a suspicion learned from a table: we do not know who suspected, and a relayed
#: suspicion is not independent evidence, so it never counts as a Lifeguard confirmation.
RELAYED = b""
CORRECTION_AGE = 2  # gossip rounds after which a refutation's wave is over
_STATUS_OF = {Alive: ALIVE, Suspect: SUSPECT, Dead: DEAD, Left: LEFT}


class EventKind(Enum):
    """What a :class:`MemberEvent` reports."""

    JOIN = "join"  #: a member we did not know is alive
    LEAVE = "leave"  #: a member left gracefully
    FAIL = "fail"  #: a member was declared dead
    UPDATE = "update"  #: an alive member changed its metadata, name or address
    RECOVER = "recover"  #: a member we held dead or left is alive again


_EVENT_OF = {SUSPECT: None, DEAD: EventKind.FAIL, LEFT: EventKind.LEAVE}


@dataclass(frozen=True, slots=True)
class MemberEvent:
    kind: EventKind
    member: Member
    time: float


@dataclass(frozen=True, slots=True)
class Change:
    """What :meth:`MemberTable.apply` did. ``event`` is None for internal changes."""

    entry: Entry
    previous: MemberStatus | None
    event: EventKind | None
    confirmation: bool = False  # a Suspect at the held incarnation of a suspect

    @property
    def revived(self) -> bool:
        """The member became alive from unknown, dead or left: it needs probing again."""
        return self.entry.status == ALIVE and self.previous in (None, DEAD, LEFT)


class Refutation(Enum):
    """What an update about ourselves calls for (:meth:`MemberTable.refute`)."""

    IGNORE = "ignore"  #: an Alive: nothing to answer
    REPEAT_LEFT = "repeat-left"  #: we left: gossip that again instead of refuting
    CORRECT = "correct"  #: a suspicion we refuted already: tell its sender our Alive
    REFUTED = "refuted"  #: our incarnation is now above the update's: gossip our Alive


def news(change: Change, update: Update, by: bytes) -> Update | None:
    """What to gossip after ``change``, which ``update`` caused: the update itself when it
    is what changed; for a predecessor the restart rule declared dead, a Dead ``by`` us."""
    entry = change.entry
    if entry.node == update.node and entry.status == _STATUS_OF[type(update)]:
        return update
    if entry.status == DEAD:
        return Dead(entry.node, entry.incarnation, by)
    return None


def _alive(state: MemberState) -> Update:
    return Alive(state.node, state.incarnation, state.name, state.host, state.port, state.meta)


def _relayed(state: MemberState) -> Update:
    return Suspect(state.node, state.incarnation, RELAYED)


def _left(state: MemberState) -> Update:
    return Left(state.node, state.incarnation)


#: (status in a remote table, do we hold the member?) -> the updates that makes here, in
#: order. A dead or left member we do not hold is learned as a tombstone (not in the table).
MERGE: dict[tuple[int, bool], tuple[Callable[[MemberState], Update], ...]] = {
    (ALIVE, True): (_alive,), (ALIVE, False): (_alive,),
    (SUSPECT, True): (_relayed,), (SUSPECT, False): (_alive, _relayed),
    (DEAD, True): (_relayed,), (LEFT, True): (_left,),
}


class MemberTable(Roster):
    """All members, ourselves included, by id; every transition is a method here."""

    # --- precedence, restarts and ghosts --------------------------------------------------

    def apply(self, update: Update, now: float) -> list[Change]:
        """Apply an update about another member by :data:`PRECEDENCE`; return what changed."""
        entry = self.get(update.node)
        if entry is None:
            return self._join(update, now) if isinstance(update, Alive) else []
        if isinstance(update, Suspect) and entry.status == SUSPECT and (
            update.incarnation == entry.incarnation
        ):
            return [Change(entry, SUSPECT, None, confirmation=True)]
        if not PRECEDENCE[type(update), entry.status](update.incarnation, entry.incarnation):
            return []
        previous = entry.status
        entry.updated = now
        if isinstance(update, Alive):
            return self._refresh(entry, update, now)
        self._set_status(entry, _STATUS_OF[type(update)], now)
        entry.incarnation = max(entry.incarnation, update.incarnation)
        return [Change(entry, previous, _EVENT_OF[entry.status])]

    def _join(self, update: Alive, now: float) -> list[Change]:
        ghost = (update.host, update.port) == (self.me.host, self.me.port)
        entry = Entry(update.node, update.name, update.host, update.port, update.meta,
                      update.incarnation, DEAD if ghost else ALIVE, now, updated=now)
        self._add(entry)
        if ghost:  # a predecessor of ours, still gossiped about: a tombstone, no event
            return [Change(entry, None, None)]
        changes = self._claim_address(entry, now)
        if entry.status == DEAD:  # the predecessor of a member we hold: a tombstone too
            return [Change(entry, None, None)]
        changes.append(Change(entry, None, EventKind.JOIN))
        return changes

    def _refresh(self, entry: Entry, update: Alive, now: float) -> list[Change]:
        previous = entry.status
        if (update.host, update.port) == (self.me.host, self.me.port):
            return []  # claims our address: a predecessor of ours, never alive again
        visible = (entry.name, entry.host, entry.port, entry.meta) != (
            update.name, update.host, update.port, update.meta)
        self._release_address(entry)
        entry.name, entry.host, entry.port, entry.meta = (update.name, update.host,
                                                          update.port, update.meta)
        entry.incarnation = update.incarnation
        self._set_status(entry, ALIVE, now)
        changes = self._claim_address(entry, now)
        if entry.status == DEAD:  # the predecessor of a member we hold
            return [Change(entry, previous, None if previous in (DEAD, LEFT) else
                           EventKind.FAIL)]
        if previous in (DEAD, LEFT):
            changes.append(Change(entry, previous, EventKind.RECOVER))
        else:
            changes.append(Change(entry, previous, EventKind.UPDATE if visible else None))
        return changes

    def _claim_address(self, entry: Entry, now: float) -> list[Change]:
        """``entry``, alive, claims its address. A live holder there that started before it
        is gone: declare it dead. If the holder started after it, ``entry`` is the gone
        predecessor: it is recorded dead instead (see :mod:`.precedence`)."""
        old_node = self._holder((entry.host, entry.port))
        old = None if old_node is None or old_node == entry.node else self.get(old_node)
        if old is None or old.status not in (ALIVE, SUSPECT):
            self._hold_address(entry)
            return []
        if not succeeds(entry.meta, old.meta):
            self._set_status(entry, DEAD, now)
            return []
        self._hold_address(entry)
        previous = old.status
        self._set_status(old, DEAD, now)
        return [Change(old, previous, EventKind.FAIL)]

    # --- suspicion ------------------------------------------------------------------------

    def start_suspicion(self, entry: Entry, update: Update, now: float,
                        config: Config) -> Suspicion:
        """``update`` made ``entry`` suspect: start Lifeguard's timeout at Max.

        K, the confirmations that bring it down to Min, is ``suspicion_mult - 2``, or 0
        when fewer than K + 2 members could confirm.
        """
        by = update.by if isinstance(update, Suspect) else self.me.node
        n = self.live_count
        k = config.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        low, high = suspicion_bounds(config.suspicion_mult, config.suspicion_max_timeout_mult,
                                     n, config.probe_interval)
        entry.suspicion = Suspicion(now, by, k=k, minimum=low, maximum=high)
        return entry.suspicion

    def confirm(self, entry: Entry, update: Update) -> bool:
        """For a confirmation :class:`Change`: True if ``update`` is new, independent
        evidence, which has then shortened the suspicion. A relayed suspicion never is."""
        return (isinstance(update, Suspect) and update.by != RELAYED
                and entry.suspicion is not None and entry.suspicion.confirm(update.by))

    def expire(self, node: bytes, incarnation: int, now: float) -> Dead | None:
        """The Dead we declare if our suspicion of ``node`` at ``incarnation`` is due at
        ``now``; None if it was refuted or superseded since, or this deadline is stale."""
        entry = self.get(node)
        if (entry is None or entry.status != SUSPECT or entry.incarnation != incarnation
                or entry.suspicion is None or entry.suspicion.deadline() > now):
            return None
        return Dead(node, incarnation, self.me.node)

    # --- ourselves: refutation, corrections, metadata, leaving ---------------------------

    def refute(self, update: Update) -> Refutation:
        """Refutation: only we raise our incarnation, above anything said about us."""
        me = self.me
        if isinstance(update, Alive):
            return Refutation.IGNORE
        if me.status == LEFT:
            return Refutation.REPEAT_LEFT
        if isinstance(update, Suspect) and update.incarnation < me.incarnation:
            return Refutation.CORRECT
        me.incarnation = max(me.incarnation, update.incarnation) + 1
        return Refutation.REFUTED

    def missed_refutation(self, update: Update, now: float,
                          gossip_interval: float) -> Update | None:
        """The refutation to send to the sender of ``update``, if ``update`` suspects a
        member whose refutation we have held for :data:`CORRECTION_AGE` gossip rounds."""
        held = self.get(update.node)
        if (isinstance(update, Suspect) and held is not None and held.status == ALIVE
                and held.incarnation > update.incarnation
                and now - held.updated >= CORRECTION_AGE * gossip_interval):
            return held.as_update()
        return None

    def publish_meta(self, meta: bytes) -> Update:
        """Our new metadata, under a new incarnation: the Alive to gossip."""
        self.me.meta = meta
        self.me.incarnation += 1
        return self.me.as_update()

    def leave(self, now: float) -> Update:
        """We leave gracefully: our own record becomes left. Returns the Left to gossip."""
        self._set_status(self.me, LEFT, now)
        return Left(self.me.node, self.me.incarnation)

    # --- push-pull and tombstones ---------------------------------------------------------

    def merge(self, state: MemberState, now: float) -> tuple[Update, ...]:
        """The updates that a remote table's record means here, in order, by :data:`MERGE`;
        a dead or left member we never knew is learned as a tombstone instead."""
        held = self.get(state.node)
        if (held is not None and held.incarnation == state.incarnation
                and held.status == state.status == ALIVE):
            return ()  # the common case: nothing new
        if held is None and self.learn_tombstone(state, now):
            return ()
        return tuple(make(state) for make in MERGE.get((state.status, held is not None), ()))

    def learn_tombstone(self, state: MemberState, now: float) -> bool:
        """Record a dead or left member we never knew (from a push-pull), without events."""
        if self.get(state.node) is not None or state.status not in (DEAD, LEFT):
            return False
        entry = Entry(state.node, state.name, state.host, state.port, state.meta,
                      state.incarnation, MemberStatus(state.status), now)
        self._add(entry)
        self._hold_address(entry, replace=False)
        return True

    def purge(self, now: float, retention: float) -> list[Entry]:
        """Forget the dead and left members held for ``retention`` seconds; return them."""
        gone = [e for e in self if e.status in (DEAD, LEFT) and now - e.since >= retention]
        for entry in gone:
            self._remove(entry)
        return gone
