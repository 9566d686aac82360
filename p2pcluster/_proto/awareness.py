"""Lifeguard's local health multiplier (LHM).

A saturating score in [0, max]. It rises when *this* peer shows signs of being the slow one
(a probe that got no ack, a ping-req whose helpers sent no nack, having to refute a suspicion
about itself) and falls with every successful probe. Probe interval and timeout are multiplied
by (score + 1), so a slow peer slows its own judgement instead of accusing healthy peers.
"""

from __future__ import annotations

__all__ = ["Awareness"]


class Awareness:
    __slots__ = ("max", "score")

    def __init__(self, maximum: int) -> None:
        self.max = maximum
        self.score = 0

    def apply(self, delta: int) -> None:
        """Add ``delta``, saturating at 0 and ``max``."""
        self.score = min(self.max, max(0, self.score + delta))

    def scale(self, duration: float) -> float:
        """``duration`` stretched by the current health: ``duration * (score + 1)``."""
        return duration * (self.score + 1)
