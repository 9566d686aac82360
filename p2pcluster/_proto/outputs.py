"""What a sans-IO machine asks its driver to do, and the interface drivers rely on.

A machine never sends or sleeps. Its methods queue outputs, which the driver collects with
``take_outputs()`` and carries out: the trio runner with real sockets, the
:class:`~p2pcluster.testing.Simulation` on a virtual clock. The driver calls ``tick(now)`` at
or after ``next_deadline()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from .messages import Message

Address = tuple[str, int]


class Endpoint(NamedTuple):
    """A peer as an authenticated message showed it: where it sent from, and its node id."""

    address: Address
    node: bytes


@dataclass(frozen=True, slots=True)
class SendDatagram:
    """Send ``msg`` to ``dst`` as one sealed UDP datagram (may be lost), for node ``to``:
    the envelope binds that id, so another peer at ``dst`` (one restarted with a new id)
    drops it."""

    dst: Address
    msg: Message
    to: bytes


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """Open a secure stream to ``dst``, send ``msg``, and hand the one reply back.

    The driver answers with ``handle_reply(now, token, reply)``, where ``reply`` is None if the
    connection, the handshake or the exchange failed.
    """

    dst: Address
    msg: Message
    token: int
    #: The node id the reply must come from (the stream's authenticated peer), if it
    #: matters: a probe's target. None accepts whoever answers at ``dst`` (a seed).
    to: bytes | None = None


Output = SendDatagram | StreamRequest


class Machine(Protocol):
    """The interface drivers use. Every method is synchronous and never blocks."""

    @property
    def node_id(self) -> bytes:
        """This machine's node id (its datagrams' sender id)."""

    def receive(self, now: float, src: Address, msg: Message, sender: bytes) -> None:
        """A datagram ``msg`` arrived from ``src``, sent by node ``sender`` (authenticated
        by the envelope)."""

    def handle_request(self, now: float, src: Address, msg: Message) -> Message | None:
        """A stream request arrived; return the reply (None closes the stream unanswered)."""

    def handle_reply(self, now: float, token: int, reply: Message | None) -> None:
        """The reply to our :class:`StreamRequest` ``token`` (None: it failed)."""

    def tick(self, now: float) -> None:
        """Do whatever is due at ``now``."""

    def next_deadline(self) -> float | None:
        """When ``tick`` next has work, or None."""

    def take_outputs(self) -> list[Output]:
        """Return and forget the queued outputs."""
