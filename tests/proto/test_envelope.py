"""Datagram envelope: tampering, wrong keys, replays, node-id binding, rotation, fuzzing."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcluster import AuthenticationError, MessageTooLarge, ProtocolError, ReplayError, UnknownKey
from p2pcluster._errors import ClockSkew, Misdirected
from p2pcluster._proto.envelope import (
    DATAGRAM_OVERHEAD,
        DatagramOpener,
    DatagramSealer,
    Keyring,
    derive_key,
)
from tests.strategies import FUZZ_EXAMPLES, mutate, seeded

SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))
NOW = 1_800_000_000.0
A = b"A" * 16  # the sender's node id
B = b"B" * 16  # the receiver's
C = b"C" * 16  # a third peer


def entropy(seed: int = 0) -> random.Random:
    return random.Random(seed)


class Pair:
    """A sealer at node A and an opener at node B; ``seal``/``open`` speak payloads."""

    def __init__(self, sealer: DatagramSealer, opener: DatagramOpener) -> None:
        self.sealer, self.opener = sealer, opener

    def seal(self, payload: bytes, now: float, to: bytes = B) -> bytes:
        return self.sealer.seal(payload, now, to)

    def open(self, data: bytes, now: float) -> bytes:
        return self.opener.open(data, now).payload


def make(secret: bytes = SECRET, cluster: str = "default", *, window: float = 60.0,
         cache: int = 1000) -> tuple[Pair, Pair]:
    ring = Keyring.from_secrets([secret], cluster)
    pair = Pair(DatagramSealer(ring, entropy().randbytes, A),
                DatagramOpener(ring, B, window=window, cache_size=cache, max_size=1400))
    return pair, pair


def test_round_trip_and_overhead() -> None:
    sealer, opener = make()
    data = sealer.seal(b"hello", NOW)
    assert len(data) == 5 + DATAGRAM_OVERHEAD == 5 + 77
    opened = opener.opener.open(data, NOW + 1)
    assert opened.payload == b"hello"
    key_id = derive_key(SECRET, "default").key_id
    assert (opened.origin.node, opened.origin.key_id, opened.origin.current) == (A, key_id,
                                                                                 key_id)


def test_a_datagram_for_another_node_is_misdirected() -> None:
    """Recorded on its way to B, a datagram fails at C (same secret, same address even)."""
    pair, _ = make()
    data = pair.seal(b"for B", NOW)
    ring = Keyring.from_secrets([SECRET], "default")
    at_c = DatagramOpener(ring, C, window=60, cache_size=1000, max_size=1400)
    with pytest.raises(Misdirected):
        at_c.open(data, NOW)


def test_rewriting_the_node_ids_fails_authentication() -> None:
    """Both ids are associated data: rewriting the receiver (to C's) or the sender fails."""
    pair, _ = make()
    data = bytearray(pair.seal(b"x", NOW))
    ring = Keyring.from_secrets([SECRET], "default")
    at_c = DatagramOpener(ring, C, window=60, cache_size=1000, max_size=1400)
    forged = bytearray(data)
    forged[45:61] = C
    with pytest.raises(AuthenticationError):
        at_c.open(bytes(forged), NOW)
    spoofed = bytearray(data)
    spoofed[29:45] = C  # claims another sender
    with pytest.raises(AuthenticationError):
        pair.open(bytes(spoofed), NOW)


def test_node_ids_must_be_16_bytes() -> None:
    ring = Keyring.from_secrets([SECRET], "default")
    with pytest.raises(ValueError, match="16"):
        DatagramSealer(ring, entropy().randbytes, b"short")
    with pytest.raises(ValueError, match="16"):
        DatagramSealer(ring, entropy().randbytes, A).seal(b"", NOW, b"short")


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
    with pytest.raises(ClockSkew, match="clocks") as info:
        opener.open(sealer.seal(b"late", NOW + skew), NOW)
    assert info.value.offset == pytest.approx(skew, abs=0.001)  # the sender's clock minus ours
    assert info.value.sender == A


def test_replay_after_the_window_is_rejected_by_timestamp() -> None:
    sealer, opener = make(window=10)
    data = sealer.seal(b"x", NOW)
    opener.open(data, NOW)
    for later in (NOW + 11, NOW + 1000):  # the nonce is forgotten, the timestamp is too old
        with pytest.raises(ReplayError):
            opener.open(data, later)


def test_nonces_never_repeat() -> None:
    sealer, _ = make()
    nonces = {sealer.seal(b"", NOW)[17:29] for _ in range(5000)}
    assert len(nonces) == 5000


def test_nonce_prefix_changes_when_the_counter_wraps() -> None:
    sealer, _ = make()
    first = sealer.seal(b"", NOW)[17:25]
    sealer.sealer._counter = 2**32
    assert sealer.seal(b"", NOW)[17:25] != first


def test_oversized_datagram_is_rejected() -> None:
    sealer, opener = make()
    with pytest.raises(MessageTooLarge):
        opener.open(sealer.seal(b"z" * 1400, NOW), NOW)


def test_rotation_keyring_accepts_old_and_new() -> None:
    new_ring = Keyring.from_secrets([OTHER, SECRET], "default")  # new current, old accepted
    old, _ = make(SECRET)
    new_sealer = DatagramSealer(new_ring, entropy(1).randbytes, A)
    new_opener = DatagramOpener(new_ring, B, window=60, cache_size=1000, max_size=1400)
    assert new_opener.open(old.seal(b"old", NOW), NOW).payload == b"old"
    assert new_opener.open(new_sealer.seal(b"new", NOW, B), NOW).payload == b"new"
    with pytest.raises(UnknownKey):  # a peer that has not rotated yet cannot read new traffic
        old.open(new_sealer.seal(b"new", NOW, B), NOW)
    # ... unless the rotated peer seals with the key the other still holds:
    old_key = derive_key(SECRET, "default")
    data = new_sealer.seal(b"for the old peer", NOW, B, old_key)
    opened = old.opener.open(data, NOW)
    assert opened.payload == b"for the old peer"
    assert opened.origin.key_id == old_key.key_id  # sealed with the old key,
    assert opened.origin.current == new_ring.primary.key_id  # and shows its current one


def test_a_key_dropped_from_the_ring_is_refused_at_once() -> None:
    both = Keyring.from_secrets([SECRET, OTHER], "default")
    sealer = DatagramSealer(both, entropy().randbytes, A)
    opener = DatagramOpener(both, B, window=60, cache_size=1000, max_size=1400)
    old_key = derive_key(OTHER, "default")
    assert opener.open(sealer.seal(b"1", NOW, B, old_key), NOW).payload == b"1"
    opener.keyring = Keyring.from_secrets([SECRET], "default")  # OTHER revoked
    with pytest.raises(UnknownKey):
        opener.open(sealer.seal(b"2", NOW, B, old_key), NOW)


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
