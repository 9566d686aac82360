"""One name per live peer: a daemon that finds another live peer of its name yields.

Theory of operation
===================

Names are what people read in `p2pcluster members` and in the logs. Membership keys members
by random id and does not mind two of one name, but two live peers called ``lab1`` on two
machines are a mistake (a copied config, two machines with one host name), so
:func:`serve_name_guard` watches membership's events and refuses the duplicate.

Who yields
    Both peers see each other join at about the same time, so both must reach the same
    verdict without talking it over. Each publishes when it started (``NodeMeta.started``,
    Unix seconds, rounded): the later starter yields; on a tie, the one with the larger node
    id. A peer whose start time is unknown (0: an embedded peer, or an older version) makes
    nobody yield, and it runs no guard itself.

What is not a conflict
    A member on this peer's own advertised host: that is its predecessor on this machine (a
    restart; membership declares the old id dead as soon as the new one claims its address),
    or a second peer there, on another port, by choice. A member that is dead or has left is
    not live. A member that is suspect still is: it may yet answer.

Yielding
    The guard raises :class:`~p2pcluster.NameTaken` in the daemon's nursery: the daemon
    stops, its peer leaves the cluster gracefully, and `p2pcluster join` prints the message
    and exits 1. The peer that stays logs a warning once per rival.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import trio

from ._errors import NameTaken
from ._proto.membership import EventKind, Member, MemberEvent
from ._proto.meta import NodeMeta

__all__ = ["must_yield", "rival_start", "serve_name_guard"]

log = logging.getLogger("p2pcluster")
#: The events that can reveal a rival: a new member, new metadata (its start time), a return.
WATCHED = (EventKind.JOIN, EventKind.UPDATE, EventKind.RECOVER)


def rival_start(me: Member, other: Member) -> int | None:
    """When ``other`` started, if it is a live peer of ``me``'s name on another host that
    published its start time; None if it is no rival."""
    if other.id == me.id or other.name != me.name or not other.alive or other.host == me.host:
        return None
    return NodeMeta.decode(other.meta).started or None


def must_yield(me: Member, started: int, other: Member) -> bool:
    """Must ``me``, started at ``started``, give its name up to ``other``? Only to a rival
    that started earlier, or in the same second with a smaller id."""
    theirs = rival_start(me, other)
    return theirs is not None and started > 0 and (started, me.id) > (theirs, other.id)


class Watched(Protocol):
    """What the guard needs: this peer, the members, and their events (a
    :class:`~p2pcluster.Membership` or a :class:`~p2pcluster.Peer`)."""

    @property
    def me(self) -> Member: ...
    def members(self) -> list[Member]: ...
    def subscribe(self) -> trio.MemoryReceiveChannel[MemberEvent]: ...


async def serve_name_guard(membership: Watched, *, started: int | None = None,
                           task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                           ) -> None:
    """Watch for a rival of this peer's name until cancelled; raise
    :class:`~p2pcluster.NameTaken` if this peer must yield (see the module docstring).

    ``started`` is the start time this peer publishes in its metadata (``open_peer``'s
    ``started``); defaults to now (Unix seconds, rounded). Runs in the daemon's nursery;
    started once it has subscribed and checked the members already known.
    """
    started = round(time.time()) if started is None else started
    warned: set[bytes] = set()
    async with membership.subscribe() as events:
        for member in membership.members():
            _check(membership.me, started, member, warned)
        task_status.started()
        async for event in events:
            if event.kind in WATCHED:
                _check(membership.me, started, event.member, warned)


def _check(me: Member, started: int, other: Member, warned: set[bytes]) -> None:
    if must_yield(me, started, other):
        raise NameTaken(f"another live peer is already named {me.name!r} (at {other.host}:"
                        f"{other.port}); choose another --name")
    if rival_start(me, other) is not None and other.id not in warned:
        warned.add(other.id)
        log.warning("peer %s:%d also calls itself %r and will leave: this peer started first",
                    other.host, other.port, me.name)
