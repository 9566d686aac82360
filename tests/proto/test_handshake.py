"""The stream handshake and session, sans-IO: two machines joined by a fake link."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings

from p2pcluster import AuthenticationError, HandshakeError, MessageTooLarge, ProtocolError
from p2pcluster._proto.envelope import Keyring
from p2pcluster._proto.handshake import HELLO_SIZE, ClientHandshake, ServerHandshake, Session
from tests.strategies import FUZZ_EXAMPLES, mutate, seeded

SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))
MAX = 1 << 20


def ring(secret: bytes = SECRET, cluster: str = "default") -> Keyring:
    return Keyring.from_secrets([secret], cluster)


def connect(client_ring: Keyring | None = None, server_ring: Keyring | None = None,
            seed: int = 0) -> tuple[Session, Session]:
    rng = random.Random(seed)
    client = ClientHandshake(client_ring or ring(), rng.randbytes, max_frame=MAX)
    server = ServerHandshake(server_ring or ring(), rng.randbytes, max_frame=MAX)
    hello = client.hello()
    assert len(hello) == HELLO_SIZE
    server_session, reply = server.receive(hello)
    client_session, proof = client.receive(reply)
    server_session.feed(proof)
    assert server_session.poll_proof()
    return client_session, server_session


def test_handshake_and_frames_both_ways() -> None:
    c, s = connect()
    assert c.established and s.established
    s.feed(c.seal(b"ping") + c.seal(b"") + c.seal(b"x" * 70000))
    assert [s.next_payload(), s.next_payload(), s.next_payload()] == [b"ping", b"", b"x" * 70000]
    assert s.next_payload() is None
    c.feed(s.seal(b"pong"))
    assert c.next_payload() == b"pong"


def test_frames_arrive_in_pieces() -> None:
    c, s = connect()
    wire = c.seal(b"a" * 1000) + c.seal(b"b")
    out = []
    for i in range(len(wire)):
        s.feed(wire[i : i + 1])
        while (p := s.next_payload()) is not None:
            out.append(p)
    assert out == [b"a" * 1000, b"b"]


def test_server_withholds_data_until_the_client_proves_its_key() -> None:
    rng = random.Random(1)
    client = ClientHandshake(ring(), rng.randbytes, max_frame=MAX)
    server_session, reply = ServerHandshake(ring(), rng.randbytes, max_frame=MAX).receive(
        client.hello())
    assert not server_session.established
    assert server_session.next_payload() is None
    session, proof = client.receive(reply)
    server_session.feed(proof + session.seal(b"data"))
    assert server_session.next_payload() == b"data"
    assert server_session.established


@pytest.mark.parametrize(("client_ring", "server_ring"), [
    (ring(OTHER), ring()),
    (ring(cluster="lab"), ring(cluster="default")),
])
def test_different_secret_or_cluster_fails_on_the_server(client_ring: Keyring,
                                                         server_ring: Keyring) -> None:
    rng = random.Random(2)
    client = ClientHandshake(client_ring, rng.randbytes, max_frame=MAX)
    with pytest.raises(HandshakeError):
        ServerHandshake(server_ring, rng.randbytes, max_frame=MAX).receive(client.hello())


def test_server_with_different_secret_cannot_fool_the_client() -> None:
    """A server holding another key but answering with our key id fails the client check."""
    rng = random.Random(3)
    client = ClientHandshake(ring(), rng.randbytes, max_frame=MAX)
    hello = client.hello()
    impostor = ServerHandshake(ring(OTHER), rng.randbytes, max_frame=MAX)
    # The impostor cannot open our hello; it makes up a reply with our key id.
    _, fake_reply = ServerHandshake(ring(), rng.randbytes, max_frame=MAX).receive(hello)
    with pytest.raises(HandshakeError):
        impostor.receive(hello)
    forged = bytearray(fake_reply)
    forged[-1] ^= 1
    with pytest.raises(HandshakeError):
        client.receive(bytes(forged))


def test_reply_for_another_hello_is_rejected() -> None:
    rng = random.Random(4)
    a = ClientHandshake(ring(), rng.randbytes, max_frame=MAX)
    b = ClientHandshake(ring(), rng.randbytes, max_frame=MAX)
    _, reply_to_b = ServerHandshake(ring(), rng.randbytes, max_frame=MAX).receive(b.hello())
    with pytest.raises(HandshakeError):
        a.receive(reply_to_b)


def test_replayed_client_hello_cannot_establish_a_session() -> None:
    """An eavesdropper replays a captured hello and proof; the fresh session rejects them."""
    rng = random.Random(5)
    client = ClientHandshake(ring(), rng.randbytes, max_frame=MAX)
    server = ServerHandshake(ring(), rng.randbytes, max_frame=MAX)
    hello = client.hello()
    _, reply = server.receive(hello)
    _, proof = client.receive(reply)
    replayed, _ = server.receive(hello)  # a new server random: new keys
    replayed.feed(proof)
    with pytest.raises(AuthenticationError):
        replayed.poll_proof()


def test_wrong_proof_is_rejected() -> None:
    """An authentic first frame that is not the transcript hash is refused."""
    rng = random.Random(6)
    client = ClientHandshake(ring(), rng.randbytes, max_frame=MAX)
    server_session, reply = ServerHandshake(ring(), rng.randbytes, max_frame=MAX).receive(
        client.hello())
    session, _ = client.receive(reply)
    session._send_counter = 0  # re-use frame 0 for a different payload
    server_session.feed(session.seal(b"not the transcript"))
    with pytest.raises(HandshakeError):
        server_session.poll_proof()


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
    client = ClientHandshake(ring(), rng.randbytes, max_frame=MAX)
    server = ServerHandshake(ring(), rng.randbytes, max_frame=MAX)
    hello = client.hello()
    bad_hello = mutate(hello, rng)
    if bad_hello != hello:
        with pytest.raises(ProtocolError):
            server.receive(bad_hello)
    session, reply = server.receive(hello)
    client_session, proof = client.receive(reply)
    wire = proof + client_session.seal(rng.randbytes(rng.randint(0, 64)))
    bad = mutate(wire, rng)
    session.feed(bad)
    try:
        while session.next_payload() is not None:
            pass
    except ProtocolError:
        return
    assert bad == wire or len(bad) < len(wire) or session.buffered
