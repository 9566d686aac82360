"""The member table and every state transition of a member. Sans-IO.

Theory of operation
===================

Each member is known by a random 16-byte id, drawn when its process starts, so a restarted
peer is a *new* member even when it keeps its name and address. A member's record carries its
name, address (one port for UDP and TCP), metadata, an *incarnation* number, and a status:
alive, suspect, dead or left. Only the member itself ever raises its incarnation: to refute a
suspicion, or to announce new metadata.

News about a member arrives as an update (Alive, Suspect, Dead, Left), piggybacked on probes,
in gossip, or inside a push-pull table. Whether an update overrides what we hold is decided by
:data:`PRECEDENCE`, SWIM's rules (Das, Gupta, Motivala, DSN 2002, section 4.2), with ``i`` the
update's incarnation and ``j`` the one we hold:

=========== ============ ============ ============ ============
update      held alive   held suspect held dead    held left
=========== ============ ============ ============ ============
Alive(i)    i > j        i > j        i > j        i > j
Suspect(i)  i >= j       i > j  [1]_  never        never
Dead(i)     any i        any i        never        never
Left(i)     any i        any i        any i  [2]_  never
=========== ============ ============ ============ ============

.. [1] Suspect(i) with i == j while suspect is a *confirmation* (Lifeguard), not a change.
.. [2] Left is a Dead the member announces about itself; it replaces a Dead so the member
   shows as left, not failed.

A Dead overriding an Alive keeps the larger incarnation, so a refutation must exceed
everything anyone knew. An update about an *unknown* member creates it only if it is an Alive
(nothing else carries an address). Updates about ourselves are never applied: the caller
refutes them (section "refutation" in :mod:`.node`).

Restarts and ghosts
    A new id that claims the address of a member we hold alive or suspect proves that
    member's process is gone (one address, one socket): the old id is declared dead at once.
    Dead and left members stay in the table, as tombstones, for ``dead_retention`` seconds, so
    stale gossip about them cannot bring them back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from random import Random

from .messages import Alive, Dead, Left, MemberState, MemberStatus, Suspect, Update
from .suspicion import Suspicion

__all__ = [
    "PRECEDENCE",
    "Change",
    "EventKind",
    "Member",
    "MemberEvent",
    "MemberStatus",
    "MemberTable",
]

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


#: (update type, held status) -> does the update override? See the module docstring.
PRECEDENCE: dict[tuple[type, MemberStatus], Rule] = {
    (Alive, ALIVE): _newer, (Alive, SUSPECT): _newer, (Alive, DEAD): _newer,
    (Alive, LEFT): _newer,
    (Suspect, ALIVE): _at_least, (Suspect, SUSPECT): _newer, (Suspect, DEAD): _never,
    (Suspect, LEFT): _never,
    (Dead, ALIVE): _any, (Dead, SUSPECT): _any, (Dead, DEAD): _never, (Dead, LEFT): _never,
    (Left, ALIVE): _any, (Left, SUSPECT): _any, (Left, DEAD): _any, (Left, LEFT): _never,
}
_STATUS_OF = {Alive: ALIVE, Suspect: SUSPECT, Dead: DEAD, Left: LEFT}


class EventKind(Enum):
    """What a :class:`MemberEvent` reports."""

    JOIN = "join"  #: a member we did not know is alive
    LEAVE = "leave"  #: a member left gracefully
    FAIL = "fail"  #: a member was declared dead
    UPDATE = "update"  #: an alive member changed its metadata, name or address
    RECOVER = "recover"  #: a member we held dead or left is alive again


@dataclass(frozen=True, slots=True)
class Member:
    """A snapshot of one member. ``since`` is when its status last changed (our clock)."""

    id: bytes
    name: str
    host: str
    port: int
    incarnation: int
    status: MemberStatus
    meta: bytes
    since: float

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def alive(self) -> bool:
        """Alive or suspect: still counted as a member."""
        return self.status in (ALIVE, SUSPECT)


@dataclass(frozen=True, slots=True)
class MemberEvent:
    kind: EventKind
    member: Member
    time: float


@dataclass(slots=True)
class Entry:
    """The mutable record behind a :class:`Member`."""

    node: bytes
    name: str
    host: str
    port: int
    meta: bytes
    incarnation: int
    status: MemberStatus
    since: float
    suspicion: Suspicion | None = None
    updated: float = 0.0  # when the record last changed in any way (our clock)

    def snapshot(self) -> Member:
        return Member(self.node, self.name, self.host, self.port, self.incarnation,
                      self.status, self.meta, self.since)

    def state(self) -> MemberState:
        return MemberState(self.node, self.incarnation, self.name, self.host, self.port,
                           self.meta, int(self.status))

    def as_update(self) -> Update:
        """The update that conveys this record."""
        if self.status == ALIVE:
            return Alive(self.node, self.incarnation, self.name, self.host, self.port, self.meta)
        if self.status == SUSPECT:
            by = self.suspicion.by if self.suspicion else self.node
            return Suspect(self.node, self.incarnation, by)
        if self.status == DEAD:
            return Dead(self.node, self.incarnation, self.node)
        return Left(self.node, self.incarnation)


@dataclass(frozen=True, slots=True)
class Change:
    """What :meth:`MemberTable.apply` did. ``event`` is None for internal changes."""

    entry: Entry
    previous: MemberStatus | None
    event: EventKind | None
    confirmation: bool = False  # a Suspect at the held incarnation of a suspect


class MemberTable:
    """All members, ourselves included, by id. Only :meth:`apply` changes other members."""

    def __init__(self, me: Entry) -> None:
        self.me = me
        self._entries: dict[bytes, Entry] = {me.node: me}
        self._by_address: dict[tuple[str, int], bytes] = {(me.host, me.port): me.node}
        # Other members alive or suspect, kept as a list for O(k) random sampling (gossip
        # targets, ping-req helpers) at any cluster size; _position indexes it.
        self._others: list[bytes] = []
        self._position: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def get(self, node: bytes) -> Entry | None:
        return self._entries.get(node)

    def at_address(self, address: tuple[str, int]) -> Entry | None:
        node = self._by_address.get(address)
        return None if node is None else self._entries[node]

    @property
    def live_count(self) -> int:
        """Members alive or suspect, ourselves included: the N of the formulas."""
        return len(self._others) + (self.me.status in (ALIVE, SUSPECT))

    def sample_live(self, rng: Random, k: int) -> list[Entry]:
        """Up to ``k`` distinct other members, alive or suspect, chosen at random."""
        chosen = rng.sample(self._others, min(k, len(self._others)))
        return [self._entries[node] for node in chosen]

    def _track(self, entry: Entry, live: bool) -> None:
        """Keep ``_others`` in step with ``entry`` being live or not."""
        if entry is self.me:
            return
        position = self._position.get(entry.node)
        if live and position is None:
            self._position[entry.node] = len(self._others)
            self._others.append(entry.node)
        elif not live and position is not None:
            last = self._others.pop()
            if last != entry.node:  # move the last into the hole
                self._others[position] = last
                self._position[last] = position
            del self._position[entry.node]

    def apply(self, update: Update, now: float) -> list[Change]:
        """Apply an update about another member by :data:`PRECEDENCE`; return what changed."""
        entry = self._entries.get(update.node)
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
        event = {SUSPECT: None, DEAD: EventKind.FAIL, LEFT: EventKind.LEAVE}
        return [Change(entry, previous, event[entry.status])]

    def _join(self, update: Alive, now: float) -> list[Change]:
        ghost = (update.host, update.port) == (self.me.host, self.me.port)
        entry = Entry(update.node, update.name, update.host, update.port, update.meta,
                      update.incarnation, DEAD if ghost else ALIVE, now, updated=now)
        self._entries[entry.node] = entry
        if ghost:  # a predecessor of ours, still gossiped about: a tombstone, no event
            return [Change(entry, None, None)]
        self._track(entry, live=True)
        changes = self._claim_address(entry, now)
        changes.append(Change(entry, None, EventKind.JOIN))
        return changes

    def _refresh(self, entry: Entry, update: Alive, now: float) -> list[Change]:
        previous = entry.status
        if (update.host, update.port) == (self.me.host, self.me.port):
            return []  # claims our address: a predecessor of ours, never alive again
        visible = (entry.name, entry.host, entry.port, entry.meta) != (
            update.name, update.host, update.port, update.meta)
        if self._by_address.get((entry.host, entry.port)) == entry.node:
            del self._by_address[(entry.host, entry.port)]
        entry.name, entry.host, entry.port, entry.meta = (update.name, update.host,
                                                          update.port, update.meta)
        entry.incarnation = update.incarnation
        self._set_status(entry, ALIVE, now)
        changes = self._claim_address(entry, now)
        if previous in (DEAD, LEFT):
            changes.append(Change(entry, previous, EventKind.RECOVER))
        else:
            changes.append(Change(entry, previous, EventKind.UPDATE if visible else None))
        return changes

    def _claim_address(self, entry: Entry, now: float) -> list[Change]:
        """``entry`` now owns its address; a live predecessor there is gone: declare it dead."""
        address = (entry.host, entry.port)
        old_node = self._by_address.get(address)
        self._by_address[address] = entry.node
        old = None if old_node is None or old_node == entry.node else self._entries[old_node]
        if old is None or old.status not in (ALIVE, SUSPECT):
            return []
        previous = old.status
        self._set_status(old, DEAD, now)
        return [Change(old, previous, EventKind.FAIL)]

    def learn_tombstone(self, state: MemberState, now: float) -> bool:
        """Record a dead or left member we never knew (from a push-pull), without events.

        A newcomer learns the cluster's tombstones, so stale gossip cannot resurrect those
        ids at the newcomer either, and every table agrees.
        """
        if state.node in self._entries or state.status not in (DEAD, LEFT):
            return False
        self._entries[state.node] = Entry(state.node, state.name, state.host, state.port,
                                          state.meta, state.incarnation,
                                          MemberStatus(state.status), now)
        self._by_address.setdefault((state.host, state.port), state.node)
        return True

    def _set_status(self, entry: Entry, status: MemberStatus, now: float) -> None:
        self._track(entry, live=status in (ALIVE, SUSPECT))
        if status != entry.status:
            entry.since = now
        entry.status = status
        if status != SUSPECT:
            entry.suspicion = None

    def set_own_status(self, status: MemberStatus, now: float) -> None:
        self._set_status(self.me, status, now)

    def purge(self, now: float, retention: float) -> list[Entry]:
        """Forget dead and left members older than ``retention``; return them."""
        gone = [e for e in self._entries.values()
                if e.status in (DEAD, LEFT) and now - e.since >= retention]
        for entry in gone:
            del self._entries[entry.node]
            if self._by_address.get((entry.host, entry.port)) == entry.node:
                del self._by_address[(entry.host, entry.port)]
        return gone

    def snapshot(self) -> list[Member]:
        return [e.snapshot() for e in self._entries.values()]

    def states(self) -> tuple[MemberState, ...]:
        return tuple(e.state() for e in self._entries.values())

    def checksum(self) -> str:
        """A digest of every member's id, incarnation, status, name, address and metadata."""
        digest = hashlib.sha256()
        for e in sorted(self._entries.values(), key=lambda e: e.node):
            digest.update(repr((e.node, e.incarnation, int(e.status), e.name, e.host, e.port,
                                e.meta)).encode())
        return digest.hexdigest()
