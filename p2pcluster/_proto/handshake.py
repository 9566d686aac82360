"""The stream handshake and the framed, encrypted session after it. Sans-IO.

Handshake (both hellos are exactly :data:`HELLO_SIZE` bytes)::

    client -> server  ClientHello = "P2PC" | 0x01 | key id (4) | nonce (12)
                                    | AEAD_psk(nonce, c_random (32) | c_public (32),
                                               aad=bytes 0..21)
    server -> client  ServerHello = "P2PS" | 0x01 | key id (4) | nonce (12)
                                    | AEAD_psk(nonce, s_random (32) | s_public (32),
                                               aad=bytes 0..21 | SHA-256(ClientHello))
    client -> server  frame 0 of the session: SHA-256(ClientHello | ServerHello)

``psk`` is the stream key of the named key id (ChaCha20-Poly1305), ``c_public``/``s_public``
are ephemeral X25519 keys. The ServerHello is bound to the ClientHello, so it proves the server
holds the key; the client's first frame, sealed with the fresh session key, proves the client
does (a replayed ClientHello cannot produce it). The session keys are::

    okm = HKDF-SHA256(salt=psk, ikm=X25519(c, s), info="p2pcluster/v1 session" | transcript, 64)
    client->server key = okm[:32], server->client key = okm[32:]

Frames (each direction has its own key and counter, so a nonce never repeats)::

    length (4, big-endian, of what follows) | ChaCha20-Poly1305(key, nonce=0^4 | counter (8),
                                                              payload, aad=length)

Any failure poisons the session: a stream cannot resynchronise, so the connection is closed.
"""

from __future__ import annotations

import hashlib
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .._errors import AuthenticationError, HandshakeError, MessageTooLarge, ProtocolError
from .envelope import Entropy, Keyring

__all__ = ["HELLO_SIZE", "ClientHandshake", "ServerHandshake", "Session"]

_CLIENT_MAGIC = b"P2PC"
_SERVER_MAGIC = b"P2PS"
_VERSION = 1
_HELLO_HEAD = struct.Struct(">4sB4s12s")
_BODY = 64
TAG_SIZE = 16
HELLO_SIZE = _HELLO_HEAD.size + _BODY + TAG_SIZE
_LENGTH = struct.Struct(">I")
FRAME_OVERHEAD = _LENGTH.size + TAG_SIZE


def _hello(magic: bytes, psk_id: bytes, psk: bytes, body: bytes, *, extra_aad: bytes,
           entropy: Entropy) -> bytes:
    head = _HELLO_HEAD.pack(magic, _VERSION, psk_id, entropy(12))
    return head + ChaCha20Poly1305(psk).encrypt(head[9:], body, head + extra_aad)


def _open_hello(magic: bytes, keyring: Keyring, hello: bytes, extra_aad: bytes
                ) -> tuple[bytes, bytes, bytes]:
    """Return (key id, psk, body) of a hello, or raise :class:`HandshakeError`."""
    if len(hello) != HELLO_SIZE:
        raise HandshakeError(f"hello of {len(hello)} bytes, expected {HELLO_SIZE}")
    got_magic, version, key_id, nonce = _HELLO_HEAD.unpack_from(hello)
    if got_magic != magic or version != _VERSION:
        raise HandshakeError("not a p2pcluster v1 handshake")
    try:
        psk = keyring.lookup(key_id).stream_psk
    except ProtocolError:
        raise HandshakeError(f"peer uses key id {key_id.hex()}, which we do not hold") from None
    head = hello[: _HELLO_HEAD.size]
    try:
        body = ChaCha20Poly1305(psk).decrypt(nonce, hello[_HELLO_HEAD.size :], head + extra_aad)
    except InvalidTag:
        raise HandshakeError("hello failed authentication: wrong key or cluster") from None
    return key_id, psk, body


def _session_keys(psk: bytes, private: X25519PrivateKey, peer_public: bytes,
                  transcript: bytes) -> tuple[bytes, bytes]:
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # a low-order point: the peer is broken or hostile
        raise HandshakeError(f"bad ephemeral key: {exc}") from None
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=psk,
               info=b"p2pcluster/v1 session" + transcript).derive(shared)
    return okm[:32], okm[32:]


class ClientHandshake:
    """The connecting side. ``hello()`` first, then ``receive(server_hello)``."""

    def __init__(self, keyring: Keyring, entropy: Entropy, *, max_frame: int) -> None:
        self._keyring = keyring
        self._private = X25519PrivateKey.from_private_bytes(entropy(32))
        key = keyring.primary
        body = entropy(32) + self._private.public_key().public_bytes_raw()
        self._hello = _hello(_CLIENT_MAGIC, key.key_id, key.stream_psk, body,
                             extra_aad=b"", entropy=entropy)
        self._max_frame = max_frame

    def hello(self) -> bytes:
        return self._hello

    def receive(self, server_hello: bytes) -> tuple[Session, bytes]:
        """The session and its first frame (the proof), to be sent at once."""
        _, psk, body = _open_hello(_SERVER_MAGIC, self._keyring, server_hello,
                                   hashlib.sha256(self._hello).digest())
        transcript = hashlib.sha256(self._hello + server_hello).digest()
        send_key, recv_key = _session_keys(psk, self._private, body[32:], transcript)
        session = Session(send_key, recv_key, max_frame=self._max_frame)
        return session, session.seal(transcript)


class ServerHandshake:
    """The accepting side. ``receive(client_hello)`` gives the session and the reply.

    The session swallows the client's first frame and checks it; until then its
    :attr:`Session.established` is false and it returns no payload.
    """

    def __init__(self, keyring: Keyring, entropy: Entropy, *, max_frame: int) -> None:
        self._keyring = keyring
        self._entropy = entropy
        self._max_frame = max_frame

    def receive(self, client_hello: bytes) -> tuple[Session, bytes]:
        key_id, psk, body = _open_hello(_CLIENT_MAGIC, self._keyring, client_hello, b"")
        private = X25519PrivateKey.from_private_bytes(self._entropy(32))
        reply_body = self._entropy(32) + private.public_key().public_bytes_raw()
        reply = _hello(_SERVER_MAGIC, key_id, psk, reply_body,
                       extra_aad=hashlib.sha256(client_hello).digest(), entropy=self._entropy)
        transcript = hashlib.sha256(client_hello + reply).digest()
        recv_key, send_key = _session_keys(psk, private, body[32:], transcript)
        session = Session(send_key, recv_key, max_frame=self._max_frame, expect_proof=transcript)
        return session, reply


class Session:
    """Seals outgoing frames and opens incoming ones; feed it bytes as they arrive."""

    def __init__(self, send_key: bytes, recv_key: bytes, *, max_frame: int,
                 expect_proof: bytes | None = None) -> None:
        self._send = ChaCha20Poly1305(send_key)
        self._recv = ChaCha20Poly1305(recv_key)
        self._send_counter = 0
        self._recv_counter = 0
        self._buffer = bytearray()
        self._proof = expect_proof
        self._broken: ProtocolError | None = None
        self.max_frame = max_frame

    @property
    def established(self) -> bool:
        """True once the peer has proven it holds the key."""
        return self._proof is None

    def seal(self, payload: bytes | bytearray | memoryview) -> bytes:
        """One frame carrying ``payload``."""
        if len(payload) > self.max_frame:
            raise MessageTooLarge(f"frame of {len(payload)} bytes exceeds {self.max_frame}")
        nonce = bytes(4) + self._send_counter.to_bytes(8, "big")
        self._send_counter += 1
        length = _LENGTH.pack(len(payload) + TAG_SIZE)
        return length + self._send.encrypt(nonce, payload, length)

    def feed(self, data: bytes) -> None:
        """Append bytes received from the stream."""
        self._buffer += data

    def next_payload(self) -> bytes | None:
        """The next complete payload, None if more bytes are needed; raises on tampering."""
        if not self.poll_proof():
            return None
        return self._next_frame()

    def poll_proof(self) -> bool:
        """(Server side) check the client's proof once it has arrived; True when done."""
        if self._proof is None:
            return True
        payload = self._next_frame()
        if payload is None:
            return False
        if payload != self._proof:
            self._broken = HandshakeError("client proof does not match the transcript")
            raise self._broken
        self._proof = None
        return True

    def _next_frame(self) -> bytes | None:
        if self._broken is not None:
            raise type(self._broken)(*self._broken.args)
        buf = self._buffer
        if len(buf) < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(buf)
        if length > self.max_frame + TAG_SIZE or length < TAG_SIZE:
            self._broken = MessageTooLarge(f"frame length {length} is out of bounds")
            raise self._broken
        if len(buf) < _LENGTH.size + length:
            return None
        nonce = bytes(4) + self._recv_counter.to_bytes(8, "big")
        try:
            payload = self._recv.decrypt(nonce, bytes(buf[4 : 4 + length]), bytes(buf[:4]))
        except InvalidTag:
            self._broken = AuthenticationError("frame failed authentication")
            raise self._broken from None
        self._recv_counter += 1
        del buf[: 4 + length]
        return payload

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed (a partial frame at end of stream)."""
        return len(self._buffer)
