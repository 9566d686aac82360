"""What a sans-IO machine asks its driver to do, and the interface drivers rely on.

A machine never sends or sleeps. Its methods queue outputs, which the driver collects with
``take_outputs()`` and carries out: the trio runner with real sockets, the
:class:`~p2pcluster.testing.Simulation` on a virtual clock. The driver calls ``tick(now)`` at
or after ``next_deadline()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .messages import Message

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class SendDatagram:
    """Send ``msg`` to ``dst`` as one sealed UDP datagram (may be lost)."""

    dst: Address
    msg: Message


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """Open a secure stream to ``dst``, send ``msg``, and hand the one reply back.

    The driver answers with ``handle_reply(now, token, reply)``, where ``reply`` is None if the
    connection, the handshake or the exchange failed.
    """

    dst: Address
    msg: Message
    token: int


Output = SendDatagram | StreamRequest


class Machine(Protocol):
    """The interface drivers use. Every method is synchronous and never blocks."""

    def receive(self, now: float, src: Address, msg: Message) -> None:
        """A datagram ``msg`` arrived from ``src``."""

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
