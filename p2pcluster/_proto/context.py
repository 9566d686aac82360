"""What the membership machine lends its parts, the prober and anti-entropy. Sans-IO.

A part owns its own state (the probe in flight, the push-pull schedule, ...) and reaches the
rest of the machine only through a :class:`Context`: it may read the member table, but it
changes a member only by handing an update to :attr:`Context.apply`, which runs it through
the transitions of :mod:`.membership`; and it puts nothing on the wire itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from random import Random
from typing import TYPE_CHECKING, Protocol

from .membership import MemberTable
from .messages import Message, Update
from .outputs import Address, Endpoint

if TYPE_CHECKING:
    from .._config import Config

__all__ = ["Apply", "Context", "Send"]


class Send(Protocol):
    def __call__(self, to: Endpoint, msg: Message, first: Update | None = None) -> None:
        """Queue ``msg`` for node ``to.node`` at ``to.address`` as a datagram, with as much
        queued news piggybacked as fits (``first`` in front: the buddy system's suspicion,
        or a correction)."""


class Apply(Protocol):
    def __call__(self, now: float, update: Update, src: Endpoint | None = None) -> None:
        """Apply ``update``, heard from ``src`` (None: our own conclusion), through the
        transitions; the machine then gossips it, arms timers and reports events."""


@dataclass(frozen=True, slots=True)
class Context:
    """The machine's side of a part. Every callable is synchronous and never blocks."""

    config: Config
    #: The machine's injected generator. Parts draw from it at fixed points, so that the
    #: machine's draws, and with them a seeded simulation, replay bit for bit.
    rng: Random
    table: MemberTable
    #: Statistics, by :class:`~.swim.MachineStatistics` field name; parts add to them.
    counters: dict[str, int]
    #: The machine's one sequence: stream tokens and timer ties. (Probe and relay numbers
    #: are random 64-bit draws from ``rng``, so that an old Ack never matches a new probe.)
    next_seq: Callable[[], int]
    send: Send
    #: Queue a stream request of ``msg`` to ``dst`` (for node ``to``, if the reply must come
    #: from it); returns its token, which comes back with the reply
    #: (``Machine.handle_reply``).
    request: Callable[[Address, Message, bytes | None], int]
    apply: Apply
