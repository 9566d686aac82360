"""Which key a peer seals with toward each other peer during a rotation."""

from __future__ import annotations

from p2pcluster._proto.envelope import Keyring, Origin
from p2pcluster._proto.keychoice import KeyChoice

OLD, NEW = bytes(range(32)), bytes(range(1, 33))
A, B = b"A" * 16, b"B" * 16


def ring(*secrets: bytes) -> Keyring:
    return Keyring.from_secrets(list(secrets), "default")


def test_current_key_toward_an_unknown_peer() -> None:
    keys = ring(NEW, OLD)
    assert KeyChoice().for_node(keys, A) is keys.primary


def test_a_promoted_peer_seals_with_the_key_an_unpromoted_peer_shows() -> None:
    promoted, behind = ring(NEW, OLD), ring(OLD)
    choice = KeyChoice()
    old = behind.primary.key_id
    choice.heard(Origin(A, old, old))  # A sealed with OLD, its current key is OLD
    assert choice.for_node(promoted, A).key_id == old
    # Once A promotes NEW too, it shows NEW as current: we switch to it.
    choice.heard(Origin(A, old, promoted.primary.key_id))
    assert choice.for_node(promoted, A) is promoted.primary


def test_a_peer_that_shows_none_of_our_keys_gets_our_current_one() -> None:
    choice = KeyChoice()
    choice.heard(Origin(A, b"????", b"????"))
    keys = ring(NEW, OLD)
    assert choice.for_node(keys, A) is keys.primary


def test_handshake_keys_start_with_the_one_for_the_node_last_seen_there() -> None:
    promoted = ring(NEW, OLD)
    old = ring(OLD).primary.key_id
    choice = KeyChoice()
    assert choice.for_address(promoted, ("10.0.0.2", 7946)) == list(promoted.keys)
    choice.heard(Origin(A, old, old), ("10.0.0.2", 7946))
    assert choice.node_at(("10.0.0.2", 7946)) == A
    tried = choice.for_address(promoted, ("10.0.0.2", 7946))
    assert [k.key_id for k in tried] == [old, promoted.primary.key_id]


def test_memory_is_bounded() -> None:
    choice = KeyChoice(capacity=8)
    for i in range(100):
        choice.heard(Origin(bytes([i]) * 16, b"k", b"k"), (f"10.0.0.{i}", 1))
    assert choice.held_by(bytes([99]) * 16) == frozenset({b"k"})
    assert choice.held_by(bytes([0]) * 16) == frozenset()
    assert choice.node_at(("10.0.0.0", 1)) is None


def test_a_host_is_known_once_an_authentic_datagram_came_from_it_at_any_port() -> None:
    choice = KeyChoice()
    assert not choice.knows_host("10.0.0.2")
    choice.heard(Origin(A, b"k", b"k"))  # heard over a stream: no address of its own
    assert not choice.knows_host("10.0.0.2")
    choice.heard(Origin(A, b"k", b"k"), ("10.0.0.2", 7946))
    assert choice.knows_host("10.0.0.2") and not choice.knows_host("10.0.0.20")
