"""The replay window: per-sender floors, clock steps, capacity, and the measured offset."""

from __future__ import annotations

import pytest

from p2pcluster._errors import ClockSkew, ReplayError
from p2pcluster._proto.replay import ReplayWindow

NOW = 1_800_000_000.0
A, B, C = b"A" * 16, b"B" * 16, b"C" * 16


def nonce(i: int) -> bytes:
    return i.to_bytes(12, "big")


def test_a_nonce_is_accepted_once_per_sender() -> None:
    window = ReplayWindow(window=60, capacity=1000)
    window.check(A, nonce(1), NOW, NOW)
    with pytest.raises(ReplayError, match="replay"):
        window.check(A, nonce(1), NOW, NOW + 1)
    window.check(B, nonce(1), NOW, NOW)  # the same nonce from another sender is not a replay


@pytest.mark.parametrize("skew", [-301.0, 300.5, 61.0, -61.0])
def test_outside_the_window_gives_the_measured_offset(skew: float) -> None:
    window = ReplayWindow(window=60, capacity=1000)
    with pytest.raises(ClockSkew, match="outside the 60 s window") as info:
        window.check(A, nonce(1), NOW + skew, NOW)
    assert info.value.offset == skew
    assert info.value.sender == A
    assert len(window) == 0  # nothing recorded


def test_full_cache_never_accepts_a_replay() -> None:
    window = ReplayWindow(window=60, capacity=3)
    stamps = [NOW + i for i in range(6)]
    for i, ts in enumerate(stamps):
        window.check(A, nonce(i), ts, NOW + 5)
    assert len(window) == 3
    for i, ts in enumerate(stamps):  # forgotten or remembered, all six are refused
        with pytest.raises(ReplayError):
            window.check(A, nonce(i), ts, NOW + 5)
    window.check(A, nonce(99), NOW + 6, NOW + 6)  # newer traffic still flows


def test_expired_nonces_are_forgotten_and_replays_still_refused() -> None:
    window = ReplayWindow(window=10, capacity=1000)
    for i in range(100):
        window.check(A, nonce(i), NOW + i, NOW + i)
    assert len(window) <= 12
    for i in range(100):
        with pytest.raises(ReplayError):
            window.check(A, nonce(i), NOW + i, NOW + i + 5)


def test_a_step_of_our_clock_back_does_not_reopen_the_window() -> None:
    """Our clock steps back by 50 s: datagrams forgotten as expired are back inside the window
    by their timestamp, but their sender's floor still refuses them."""
    window = ReplayWindow(window=10, capacity=1000)
    for i in range(60):
        window.check(A, nonce(i), NOW + i, NOW + i)
    stepped = NOW + 59 - 50
    for i in range(0, 50):
        if abs(NOW + i - stepped) <= 10:
            with pytest.raises(ReplayError):
                window.check(A, nonce(i), NOW + i, stepped)
    window.check(A, nonce(1000), NOW + 59.5, NOW + 59.5)  # A's new traffic still flows


def test_one_senders_floor_never_blocks_another() -> None:
    """A sender whose clock runs 9 s ahead raises only its own floor."""
    window = ReplayWindow(window=10, capacity=2)
    for i in range(5):  # A, ahead, fills the cache and is forgotten under capacity
        window.check(A, nonce(i), NOW + 9 + i * 0.1, NOW + i * 0.1)
    assert window.floor(A) >= NOW + 9
    window.check(B, nonce(1), NOW + 0.5, NOW + 0.5)  # B's on-time datagram is accepted
    assert window.floor(B) < NOW


def test_floors_are_bounded_and_folded() -> None:
    window = ReplayWindow(window=10, capacity=1000, max_senders=4)
    for i in range(10):
        window.check(bytes([i]) * 16, nonce(i), NOW + i, NOW + i)
    assert window.senders == 4
    # Senders whose floor was folded away share one floor: still never a replay.
    for i in range(10):
        with pytest.raises(ReplayError):
            window.check(bytes([i]) * 16, nonce(i), NOW + i, NOW + 11)
    assert window.floor(C) <= NOW + 9
