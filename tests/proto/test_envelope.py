"""Datagram envelope: tampering, wrong keys, replays, rotation, and fuzzing."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcluster import AuthenticationError, MessageTooLarge, ProtocolError, ReplayError, UnknownKey
from p2pcluster._proto.envelope import (
    DATAGRAM_OVERHEAD,
    HEADER_SIZE,
    DatagramOpener,
    DatagramSealer,
    Keyring,
    ReplayWindow,
    derive_key,
)
from tests.strategies import FUZZ_EXAMPLES, mutate, seeded

SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))
NOW = 1_800_000_000.0


def entropy(seed: int = 0) -> random.Random:
    return random.Random(seed)


def make(secret: bytes = SECRET, cluster: str = "default", *, window: float = 60.0,
         cache: int = 1000) -> tuple[DatagramSealer, DatagramOpener]:
    ring = Keyring.from_secrets([secret], cluster)
    return (DatagramSealer(ring, entropy().randbytes),
            DatagramOpener(ring, window=window, cache_size=cache, max_size=1400))


def test_round_trip_and_overhead() -> None:
    sealer, opener = make()
    data = sealer.seal(b"hello", NOW)
    assert len(data) == 5 + DATAGRAM_OVERHEAD == 5 + 41
    assert opener.open(data, NOW + 1) == b"hello"


def test_payload_is_encrypted() -> None:
    sealer, _ = make()
    assert b"secret payload" not in sealer.seal(b"secret payload", NOW)


def test_every_single_bit_flip_is_rejected() -> None:
    sealer, opener = make()
    data = sealer.seal(b"x" * 40, NOW)
    for i in range(len(data) * 8):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(ProtocolError):
            opener.open(bytes(bad), NOW)
    assert opener.open(data, NOW) == b"x" * 40  # the original still opens: nothing recorded


def test_every_truncation_is_rejected() -> None:
    sealer, opener = make()
    data = sealer.seal(b"y" * 20, NOW)
    for n in range(len(data)):
        with pytest.raises(AuthenticationError):
            opener.open(data[:n], NOW)


def test_wrong_secret_is_rejected() -> None:
    sealer, _ = make(OTHER)
    _, opener = make()
    with pytest.raises(UnknownKey):
        opener.open(sealer.seal(b"hi", NOW), NOW)


def test_wrong_cluster_name_is_rejected() -> None:
    sealer, _ = make(cluster="lab")
    _, opener = make(cluster="default")
    with pytest.raises(AuthenticationError):
        opener.open(sealer.seal(b"hi", NOW), NOW)


def test_forged_key_id_still_fails_authentication() -> None:
    """A datagram under another key but claiming our key id fails the AEAD check."""
    sealer, _ = make(OTHER)
    _, opener = make()
    data = bytearray(sealer.seal(b"hi", NOW))
    data[1:5] = derive_key(SECRET, "default").key_id
    with pytest.raises(AuthenticationError) as info:
        opener.open(bytes(data), NOW)
    assert not isinstance(info.value, UnknownKey)


def test_replay_is_rejected() -> None:
    sealer, opener = make()
    data = sealer.seal(b"once", NOW)
    assert opener.open(data, NOW) == b"once"
    with pytest.raises(ReplayError):
        opener.open(data, NOW + 0.5)


@pytest.mark.parametrize("skew", [-61.0, 61.0, -3600.0])
def test_timestamps_outside_the_window_are_rejected(skew: float) -> None:
    sealer, opener = make()
    with pytest.raises(ReplayError, match="clocks"):
        opener.open(sealer.seal(b"late", NOW + skew), NOW)


def test_replay_after_the_window_is_rejected_by_timestamp() -> None:
    sealer, opener = make(window=10)
    data = sealer.seal(b"x", NOW)
    opener.open(data, NOW)
    for later in (NOW + 11, NOW + 1000):  # the nonce is forgotten, the timestamp is too old
        with pytest.raises(ReplayError):
            opener.open(data, later)


def test_full_replay_cache_never_accepts_a_replay() -> None:
    window = ReplayWindow(window=60, capacity=3)
    stamps = [NOW + i for i in range(6)]
    for i, ts in enumerate(stamps):
        window.check(bytes([i]), ts, NOW + 5)
    assert len(window) == 3
    for i, ts in enumerate(stamps):  # forgotten or remembered, all six are refused
        with pytest.raises(ReplayError):
            window.check(bytes([i]), ts, NOW + 5)
    window.check(b"new", NOW + 6, NOW + 6)  # newer traffic still flows


def test_expired_nonces_are_forgotten() -> None:
    window = ReplayWindow(window=10, capacity=1000)
    for i in range(100):
        window.check(i.to_bytes(2, "big"), NOW + i, NOW + i)
    assert len(window) <= 12


def test_nonces_never_repeat() -> None:
    sealer, _ = make()
    nonces = {sealer.seal(b"", NOW)[13:HEADER_SIZE] for _ in range(5000)}
    assert len(nonces) == 5000


def test_nonce_prefix_changes_when_the_counter_wraps() -> None:
    sealer, _ = make()
    first = sealer.seal(b"", NOW)[13:21]
    sealer._counter = 2**32
    assert sealer.seal(b"", NOW)[13:21] != first


def test_oversized_datagram_is_rejected() -> None:
    sealer, opener = make()
    with pytest.raises(MessageTooLarge):
        opener.open(sealer.seal(b"z" * 1400, NOW), NOW)


def test_rotation_keyring_accepts_old_and_new() -> None:
    new_ring = Keyring.from_secrets([OTHER, SECRET], "default")  # new current, old accepted
    old_sealer, old_opener = make(SECRET)
    new_sealer = DatagramSealer(new_ring, entropy(1).randbytes)
    new_opener = DatagramOpener(new_ring, window=60, cache_size=1000, max_size=1400)
    assert new_opener.open(old_sealer.seal(b"old", NOW), NOW) == b"old"
    assert new_opener.open(new_sealer.seal(b"new", NOW), NOW) == b"new"
    with pytest.raises(UnknownKey):  # a peer that has not rotated yet cannot read new traffic
        old_opener.open(new_sealer.seal(b"new", NOW), NOW)


def test_keys_are_distinct_per_secret_cluster_and_purpose() -> None:
    a, b, c = derive_key(SECRET, "x"), derive_key(SECRET, "y"), derive_key(OTHER, "x")
    assert len({a.key_id, b.key_id, c.key_id}) == 3
    assert a.datagram_key != a.stream_psk
    assert "key_id" in repr(a) and a.datagram_key.hex() not in repr(a)


def test_secret_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        derive_key(b"short", "default")


@settings(max_examples=FUZZ_EXAMPLES)
@given(st.binary(max_size=1500))
def test_fuzz_open_arbitrary_bytes(data: bytes) -> None:
    _, opener = make()
    with pytest.raises(ProtocolError):
        opener.open(data, NOW)


@settings(max_examples=FUZZ_EXAMPLES)
@given(seeded)
def test_fuzz_open_mutated_datagrams(rng: random.Random) -> None:
    sealer, opener = make()
    data = sealer.seal(rng.randbytes(rng.randint(0, 200)), NOW)
    bad = mutate(data, rng)
    if bad == data:
        return
    with pytest.raises(ProtocolError):
        opener.open(bad, NOW)
