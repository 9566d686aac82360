"""The member records and the store that indexes them. Sans-IO.

This module holds data and indexes, never rules: which update overrides which, and every
other change of a member's status, live in :mod:`.membership`, whose
:class:`~.membership.MemberTable` extends :class:`Roster`. The mutators here are therefore
protected, for that subclass alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from random import Random

from .messages import Alive, Dead, Left, MemberState, MemberStatus, Suspect, Update
from .outputs import Endpoint
from .suspicion import Suspicion

__all__ = ["Entry", "Member", "Roster"]

ALIVE, SUSPECT, DEAD, LEFT = (MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD,
                              MemberStatus.LEFT)


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

    @property
    def endpoint(self) -> Endpoint:
        """Where to send to this member, and its id (which the envelope binds)."""
        return Endpoint((self.host, self.port), self.node)

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


class Roster:
    """All members, ourselves included, by id and by address."""

    def __init__(self, me: Entry) -> None:
        self.me = me
        self._entries: dict[bytes, Entry] = {me.node: me}
        self._by_address: dict[tuple[str, int], bytes] = {(me.host, me.port): me.node}
        # Other members alive or suspect, kept as a list for O(k) random sampling (gossip
        # targets, ping-req helpers) at any cluster size; _position indexes it.
        self._others: list[bytes] = []
        self._position: dict[bytes, int] = {}

    # --- queries --------------------------------------------------------------------------

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

    # --- storage, for MemberTable's transitions -------------------------------------------

    def move_me(self, host: str) -> Update:
        """Our own address changed to ``host``: index it under a new incarnation. Returns
        the Alive to gossip, which tells the others (an Alive carries the address)."""
        self._release_address(self.me)
        self.me.host = host
        self._hold_address(self.me)
        self.me.incarnation += 1
        return self.me.as_update()

    def _add(self, entry: Entry) -> None:
        """Store a member we did not know (its address is claimed separately)."""
        self._entries[entry.node] = entry
        self._track(entry, live=entry.status in (ALIVE, SUSPECT))

    def _remove(self, entry: Entry) -> None:
        """Forget a member that is neither alive nor suspect."""
        del self._entries[entry.node]
        self._release_address(entry)

    def _holder(self, address: tuple[str, int]) -> bytes | None:
        return self._by_address.get(address)

    def _hold_address(self, entry: Entry, *, replace: bool = True) -> None:
        """Index ``entry`` by its address (if free, unless ``replace``)."""
        address = (entry.host, entry.port)
        if replace:
            self._by_address[address] = entry.node
        else:
            self._by_address.setdefault(address, entry.node)

    def _release_address(self, entry: Entry) -> None:
        """Drop the index of ``entry``'s address, if ``entry`` holds it."""
        if self._by_address.get((entry.host, entry.port)) == entry.node:
            del self._by_address[(entry.host, entry.port)]

    def _set_status(self, entry: Entry, status: MemberStatus, now: float) -> None:
        self._track(entry, live=status in (ALIVE, SUSPECT))
        if status != entry.status:
            entry.since = now
        entry.status = status
        if status != SUSPECT:
            entry.suspicion = None

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
