"""The stream handshake and session, sans-IO: two machines joined by a fake link."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings

from p2pcluster import AuthenticationError, HandshakeError, MessageTooLarge, ProtocolError
from p2pcluster._proto.envelope import Keyring, derive_key
from p2pcluster._proto.handshake import (
    AES_256_GCM,
    CHACHA20_POLY1305,
    HELLO_SIZE,
    PROOF_SIZE,
    ClientHandshake,
    ServerHandshake,
    Session,
)
from tests.strategies import FUZZ_EXAMPLES, mutate, seeded

SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))
MAX = 1 << 20
CLIENT = b"c" * 16
SERVER = b"s" * 16


def ring(secret: bytes = SECRET, cluster: str = "default") -> Keyring:
    return Keyring.from_secrets([secret], cluster)


def client_of(keyring: Keyring, rng: random.Random, **kw: object) -> ClientHandshake:
    return ClientHandshake(keyring, rng.randbytes, node_id=CLIENT, max_frame=MAX,
                           **kw)  # type: ignore[arg-type]


def server_of(keyring: Keyring, rng: random.Random, **kw: object) -> ServerHandshake:
    return ServerHandshake(keyring, rng.randbytes, node_id=SERVER, max_frame=MAX,
                           **kw)  # type: ignore[arg-type]


def connect(client_ring: Keyring | None = None, server_ring: Keyring | None = None,
            seed: int = 0) -> tuple[Session, Session]:
    rng = random.Random(seed)
    client = client_of(client_ring or ring(), rng)
    server = server_of(server_ring or ring(), rng)
    hello = client.hello()
    assert len(hello) == HELLO_SIZE
    reply = server.receive(hello)
    client_session, proof = client.receive(reply)
    assert len(proof) == PROOF_SIZE
    return client_session, server.finish(proof)


def test_handshake_and_frames_both_ways() -> None:
    c, s = connect()
    s.feed(c.seal(b"ping") + c.seal(b"") + c.seal(b"x" * 70000))
    assert [s.next_payload(), s.next_payload(), s.next_payload()] == [b"ping", b"", b"x" * 70000]
    assert s.next_payload() is None
    c.feed(s.seal(b"pong"))
    assert c.next_payload() == b"pong"


def test_each_side_learns_the_others_node_id_and_keys() -> None:
    key_id = derive_key(SECRET, "default").key_id
    c, s = connect()
    assert (c.origin.node, c.origin.key_id, c.origin.current) == (SERVER, key_id, key_id)
    assert (s.origin.node, s.origin.key_id, s.origin.current) == (CLIENT, key_id, key_id)


def test_a_server_accepts_any_key_it_holds() -> None:
    """Mid-rotation: the client handshakes under an older key the server still accepts; the
    server answers under that key and shows its current one."""
    new_ring = Keyring.from_secrets([OTHER, SECRET], "default")
    old = derive_key(SECRET, "default").key_id
    c, s = connect(ring(SECRET), new_ring)
    assert s.origin.key_id == old and c.origin.key_id == old
    assert c.origin.current == new_ring.primary.key_id
    rng = random.Random(7)
    client = client_of(new_ring, rng, key=new_ring.keys[1])  # a promoted client, old key
    server = server_of(ring(SECRET), rng)
    _, proof = client.receive(server.receive(client.hello()))
    assert server.finish(proof).origin.current == new_ring.primary.key_id


def test_frames_arrive_in_pieces() -> None:
    c, s = connect()
    wire = c.seal(b"a" * 1000) + c.seal(b"b")
    out = []
    for i in range(len(wire)):
        s.feed(wire[i : i + 1])
        while (p := s.next_payload()) is not None:
            out.append(p)
    assert out == [b"a" * 1000, b"b"]


def test_the_server_has_no_session_until_the_client_proves_its_key() -> None:
    rng = random.Random(1)
    client = client_of(ring(), rng)
    server = server_of(ring(), rng)
    reply = server.receive(client.hello())
    session, proof = client.receive(reply)
    with pytest.raises(HandshakeError, match="not a proof"):  # data in place of the proof
        server.finish(session.seal(b"data"))
    with pytest.raises(HandshakeError, match="no hello"):
        server_of(ring(), rng).finish(proof)


def test_the_proof_must_have_its_exact_size() -> None:
    """Before the proof the server reads nothing but its exact size: a length field that
    announces anything else is refused, however large."""
    rng = random.Random(12)
    client = client_of(ring(), rng)
    server = server_of(ring(), rng)
    _, proof = client.receive(server.receive(client.hello()))
    big = (64 << 20).to_bytes(4, "big") + proof[4:]
    with pytest.raises(HandshakeError):
        server.finish(big)
    with pytest.raises(HandshakeError):
        server.finish(proof[:-1])


@pytest.mark.parametrize(("client_ring", "server_ring"), [
    (ring(OTHER), ring()),
    (ring(cluster="lab"), ring(cluster="default")),
])
def test_different_secret_or_cluster_fails_on_the_server(client_ring: Keyring,
                                                         server_ring: Keyring) -> None:
    rng = random.Random(2)
    client = client_of(client_ring, rng)
    with pytest.raises(HandshakeError):
        server_of(server_ring, rng).receive(client.hello())


def test_server_with_different_secret_cannot_fool_the_client() -> None:
    """A server holding another key but answering with our key id fails the client check."""
    rng = random.Random(3)
    client = client_of(ring(), rng)
    hello = client.hello()
    impostor = server_of(ring(OTHER), rng)
    # The impostor cannot open our hello; it makes up a reply with our key id.
    fake_reply = server_of(ring(), rng).receive(hello)
    with pytest.raises(HandshakeError):
        impostor.receive(hello)
    forged = bytearray(fake_reply)
    forged[-1] ^= 1
    with pytest.raises(HandshakeError):
        client.receive(bytes(forged))


def test_reply_for_another_hello_is_rejected() -> None:
    rng = random.Random(4)
    a = client_of(ring(), rng)
    b = client_of(ring(), rng)
    reply_to_b = server_of(ring(), rng).receive(b.hello())
    with pytest.raises(HandshakeError):
        a.receive(reply_to_b)


def test_replayed_client_hello_cannot_establish_a_session() -> None:
    """An eavesdropper replays a captured hello and proof; the fresh session rejects them."""
    rng = random.Random(5)
    client = client_of(ring(), rng)
    server = server_of(ring(), rng)
    hello = client.hello()
    reply = server.receive(hello)
    _, proof = client.receive(reply)
    replayed = server_of(ring(), rng)
    replayed.receive(hello)  # a new server random: new keys
    with pytest.raises(AuthenticationError):
        replayed.finish(proof)


def test_wrong_proof_is_rejected() -> None:
    """An authentic first frame that is not the transcript hash is refused."""
    rng = random.Random(6)
    client = client_of(ring(), rng)
    server = server_of(ring(), rng)
    session, _ = client.receive(server.receive(client.hello()))
    session._send._counter = 0  # re-use frame 0 for a different payload of the proof's size
    with pytest.raises(HandshakeError, match="transcript"):
        server.finish(session.seal(b"not the transcript".ljust(32)))


def test_frames_open_straight_into_a_buffer() -> None:
    c, s = connect()
    value = bytes(range(256)) * 1000
    stream = c.seal(value[:100_000]) + c.seal(value[100_000:])
    dest = bytearray(len(value))
    view = memoryview(dest)
    s.feed(stream[:5000])
    assert s.next_payload_into(view) is None  # the first frame is not all here yet
    s.feed(stream[5000:])
    assert s.next_payload_into(view) == 100_000
    assert s.next_payload_into(view[100_000:]) == len(value) - 100_000
    assert s.next_payload_into(view) is None and s.buffered == 0
    assert dest == value
    s.feed(c.seal(b"small") + c.seal(b"next"))  # frames of either kind, in turn
    assert s.next_payload() == b"small"
    assert s.next_payload_into(view[:4]) == 4 and dest[:4] == b"next"


def test_a_frame_longer_than_the_rest_of_the_value_breaks_the_session() -> None:
    c, s = connect()
    s.feed(c.seal(b"x" * 10))
    with pytest.raises(MessageTooLarge):
        s.next_payload_into(memoryview(bytearray(9)))
    with pytest.raises(MessageTooLarge):
        s.next_payload()


def test_a_tampered_frame_opened_into_a_buffer_breaks_the_session() -> None:
    c, s = connect()
    frame = bytearray(c.seal(b"payload"))
    frame[-1] ^= 0x01
    s.feed(bytes(frame))
    with pytest.raises(AuthenticationError):
        s.next_payload_into(memoryview(bytearray(7)))


def test_tampered_frame_breaks_the_session() -> None:
    c, s = connect()
    frame = bytearray(c.seal(b"payload"))
    frame[10] ^= 0x40
    s.feed(bytes(frame) + c.seal(b"after"))
    with pytest.raises(AuthenticationError):
        s.next_payload()
    with pytest.raises(AuthenticationError):  # a stream cannot resynchronise
        s.next_payload()


def test_reordered_or_replayed_frames_fail() -> None:
    c, s = connect()
    first, second = c.seal(b"1"), c.seal(b"2")
    s.feed(second + first)
    with pytest.raises(AuthenticationError):
        s.next_payload()
    c2, s2 = connect(seed=9)
    frame = c2.seal(b"1")
    s2.feed(frame + frame)
    assert s2.next_payload() == b"1"
    with pytest.raises(AuthenticationError):
        s2.next_payload()


def test_truncated_frame_waits_and_reports_buffered_bytes() -> None:
    c, s = connect()
    frame = c.seal(b"z" * 100)
    s.feed(frame[:-1])
    assert s.next_payload() is None
    assert s.buffered == len(frame) - 1


def test_oversized_frame_length_is_refused_before_buffering() -> None:
    _, s = connect()
    s.feed((MAX + 17).to_bytes(4, "big"))
    with pytest.raises(MessageTooLarge):
        s.next_payload()
    c, _ = connect()
    with pytest.raises(MessageTooLarge):
        c.seal(b"x" * (MAX + 1))


def test_keys_and_directions_differ() -> None:
    c, s = connect()
    assert c.seal(b"same") != s.seal(b"same")
    c1, _ = connect(seed=10)
    c2, _ = connect(seed=11)
    assert c1.seal(b"same") != c2.seal(b"same")


@settings(max_examples=FUZZ_EXAMPLES // 4)
@given(seeded)
def test_fuzz_hello_and_frames(rng: random.Random) -> None:
    """Mutated hellos and frames raise only ProtocolError."""
    client = client_of(ring(), rng)
    server = server_of(ring(), rng)
    hello = client.hello()
    bad_hello = mutate(hello, rng)
    if bad_hello != hello:
        with pytest.raises(ProtocolError):
            server.receive(bad_hello)
    client_session, proof = client.receive(server.receive(hello))
    session = server.finish(proof)
    wire = client_session.seal(rng.randbytes(rng.randint(0, 64)))
    bad = mutate(wire, rng)
    session.feed(bad)
    try:
        while session.next_payload() is not None:
            pass
    except ProtocolError:
        return
    assert bad == wire or len(bad) < len(wire) or session.buffered


@pytest.mark.parametrize(("client_aes", "server_aes", "cipher"), [
    (True, True, AES_256_GCM), (True, False, CHACHA20_POLY1305),
    (False, True, CHACHA20_POLY1305), (False, False, CHACHA20_POLY1305)])
def test_aes_gcm_only_when_both_sides_offer_it(client_aes: bool, server_aes: bool,
                                               cipher: str) -> None:
    rng = random.Random(11)
    client = client_of(ring(), rng, offer_aes=client_aes)
    server = server_of(ring(), rng, offer_aes=server_aes)
    c, proof = client.receive(server.receive(client.hello()))
    s = server.finish(proof)
    assert c.cipher == s.cipher == cipher
    s.feed(c.seal(b"x" * 5000))
    assert s.next_payload() == b"x" * 5000
    c.feed(s.seal(b"pong"))
    assert c.next_payload() == b"pong"


def test_the_offer_is_authenticated() -> None:
    """Flipping the offer in transit fails the hello: nobody without the key can steer the
    cipher (the offer sits in the sealed body, which the transcript also covers)."""
    rng = random.Random(12)
    client = client_of(ring(), rng, offer_aes=True)
    hello = bytearray(client.hello())
    hello[HELLO_SIZE - 17] ^= 0x01  # the offers byte, last before the tag
    with pytest.raises(HandshakeError, match="authentication"):
        server_of(ring(), rng, offer_aes=True).receive(bytes(hello))


def _session_pair(cipher: str, rekey_bytes: int, receiver_rekey: int) -> tuple[Session, Session]:
    a, b = bytes(range(32)), bytes(range(32, 64))
    origin = connect()[0].origin
    return (Session(a, b, max_frame=MAX, origin=origin, cipher=cipher, rekey_bytes=rekey_bytes),
            Session(b, a, max_frame=MAX, origin=origin, cipher=cipher,
                    rekey_bytes=receiver_rekey))


@pytest.mark.parametrize("cipher", [AES_256_GCM, CHACHA20_POLY1305])
def test_each_direction_moves_to_a_new_key_after_rekey_bytes(cipher: str) -> None:
    sender, receiver = _session_pair(cipher, 10_000, 10_000)
    frames = [bytes([i]) * 4000 for i in range(12)]  # a new key after every third frame
    for frame in frames:
        receiver.feed(sender.seal_reusing(frame).tobytes())
        assert receiver.next_payload() == frame
    # A receiver that never rekeys opens the first three frames, then fails on the fourth:
    # the sender really did move to another key.
    sender, stale = _session_pair(cipher, 10_000, 10**12)
    for frame in frames[:3]:
        stale.feed(sender.seal(frame))
        assert stale.next_payload() == frame
    stale.feed(sender.seal(frames[3]))
    with pytest.raises(AuthenticationError):
        stale.next_payload()


@pytest.mark.parametrize("cipher", [AES_256_GCM, CHACHA20_POLY1305])
def test_frames_are_what_protocol_md_says(cipher: str) -> None:
    """A frame is the 4-byte length, then the named AEAD under the direction key with nonce
    0^4 | counter and the length as associated data: another implementation opens it."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    sender, _ = _session_pair(cipher, 10**12, 10**12)
    aead = (AESGCM if cipher == AES_256_GCM else ChaCha20Poly1305)(bytes(range(32)))
    for counter, payload in enumerate([b"first", b"x" * 3000]):
        frame = bytes(sender.seal(payload))
        assert int.from_bytes(frame[:4], "big") == len(payload) + 16
        nonce = bytes(4) + counter.to_bytes(8, "big")
        assert aead.decrypt(nonce, frame[4:], frame[:4]) == payload
