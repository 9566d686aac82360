"""The stream handshake and the framed, encrypted session after it. Sans-IO.

Handshake (each hello is exactly :data:`HELLO_SIZE` bytes, the proof exactly
:data:`PROOF_SIZE`)::

    client -> server  ClientHello = "P2PC" | 0x03 | key id (4) | nonce (12)
                                    | AEAD_psk(nonce, c_random (32) | c_public (32)
                                                      | c_node (16) | c_current (4)
                                                      | c_offers (1),
                                               aad=bytes 0..21)
    server -> client  ServerHello = "P2PS" | 0x03 | key id (4) | nonce (12)
                                    | AEAD_psk(nonce, s_random (32) | s_public (32)
                                                      | s_node (16) | s_current (4)
                                                      | s_offers (1),
                                               aad=bytes 0..21 | SHA-256(ClientHello))
    client -> server  frame 0 of the session: SHA-256(ClientHello | ServerHello)

``psk`` is the stream key of the named key id (ChaCha20-Poly1305), ``c_public``/``s_public``
are ephemeral X25519 keys, ``c_node``/``s_node`` the two peers' node ids, and
``c_current``/``s_current`` the key id each seals with by default (:mod:`.keychoice`), and
``c_offers``/``s_offers`` bit 0 set if that side offers AES-256-GCM for the session (other
bits are zero). The
ServerHello is bound to the ClientHello, so it proves the server holds the key; the client's
first frame, sealed with the fresh session key, proves the client does (a replayed
ClientHello cannot produce it). The transcript covers both node ids, so each side knows the
other's id as surely as it knows the other holds the key: a session's :attr:`Session.origin`
is what the layers above check the ids that messages claim against. The session keys are::

    okm = HKDF-SHA256(salt=psk, ikm=X25519(c, s), info="p2pcluster/v1 session" | transcript, 64)
    client->server key = okm[:32], server->client key = okm[32:]

Before the proof the server accepts nothing but these exact sizes: the hello, then a frame
whose length field says exactly ``PROOF_SIZE - 4``; it never buffers more.

Frames (each direction has its own key and counter, so a nonce never repeats)::

    length (4, big-endian, of what follows) | AEAD(key, nonce=0^4 | counter (8),
                                                   payload, aad=length)

The AEAD is AES-256-GCM if both hellos offer it (CPUs with AES instructions run it about
three times faster), ChaCha20-Poly1305 otherwise; the offers are inside the authenticated,
transcript-bound hellos, so nobody without the key can steer the choice. Each direction
replaces its key after :data:`REKEY_BYTES` of payload (both ends count the same bytes)::

    next key = HKDF-SHA256(salt=none, ikm=key, info="p2pcluster/v3 next key", 32)

which keeps AES-GCM far inside its usage limits on a session that lives for months.

Any failure poisons the session: a stream cannot resynchronise, so the connection is closed.
"""

from __future__ import annotations

import hashlib
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .._errors import AuthenticationError, HandshakeError, MessageTooLarge, ProtocolError
from .envelope import NODE_ID_SIZE, ClusterKey, Entropy, Keyring, Origin
from .inbox import Inbox

__all__ = ["AES_256_GCM", "CHACHA20_POLY1305", "HELLO_SIZE", "PROOF_SIZE", "REKEY_BYTES",
           "ClientHandshake", "ServerHandshake", "Session"]

_CLIENT_MAGIC = b"P2PC"
_SERVER_MAGIC = b"P2PS"
_VERSION = 3
_HELLO_HEAD = struct.Struct(">4sB4s12s")
_BODY = struct.Struct(">32s32s16s4sB")  # random, public key, node id, current key id, offers
_OFFERS_AES = 0x01
#: The session ciphers, by the names :attr:`Session.cipher` gives.
AES_256_GCM = "AES-256-GCM"
CHACHA20_POLY1305 = "ChaCha20-Poly1305"
_AEADS: dict[str, type[AESGCM] | type[ChaCha20Poly1305]] = {
    AES_256_GCM: AESGCM, CHACHA20_POLY1305: ChaCha20Poly1305}
#: Payload bytes a direction seals under one key before both ends move to the next (64 GiB;
#: AES-GCM's usage limits allow far more, but a long-lived link need never approach them).
REKEY_BYTES = 64 * 1024**3
TAG_SIZE = 16
HELLO_SIZE = _HELLO_HEAD.size + _BODY.size + TAG_SIZE
_LENGTH = struct.Struct(">I")
FRAME_OVERHEAD = _LENGTH.size + TAG_SIZE
#: Whether this ``cryptography`` seals and opens into a given buffer (``encrypt_into``, in
#: its recent releases); without it, one more copy per frame.
_INTO = hasattr(ChaCha20Poly1305, "encrypt_into")
_TRANSCRIPT = 32
#: The largest frame :meth:`Session.seal_reusing` seals into its kept buffer, in bytes (the
#: data plane's 1 MiB chunks fit; a larger frame gets a buffer of its own).
REUSED_FRAME = 2 * 1024 * 1024
#: The client's proof: frame 0 of the session, carrying the 32-byte transcript hash.
PROOF_SIZE = FRAME_OVERHEAD + _TRANSCRIPT


def _hello(magic: bytes, key: ClusterKey, body: bytes, *, extra_aad: bytes,
           entropy: Entropy) -> bytes:
    head = _HELLO_HEAD.pack(magic, _VERSION, key.key_id, entropy(12))
    return head + ChaCha20Poly1305(key.stream_psk).encrypt(head[9:], body, head + extra_aad)


def _body(entropy: Entropy, private: X25519PrivateKey, node_id: bytes, current: bytes,
          offer_aes: bool) -> bytes:
    if len(node_id) != NODE_ID_SIZE:
        raise ValueError(f"node ids are {NODE_ID_SIZE} bytes, not {len(node_id)}")
    return _BODY.pack(entropy(32), private.public_key().public_bytes_raw(), node_id, current,
                      _OFFERS_AES if offer_aes else 0)


def _cipher(ours: bool, theirs: bool) -> str:
    return AES_256_GCM if ours and theirs else CHACHA20_POLY1305


def _open_hello(magic: bytes, keyring: Keyring, hello: bytes, extra_aad: bytes
                ) -> tuple[ClusterKey, bytes, Origin, bool]:
    """Return (key, peer public key, origin, whether the peer offers AES-256-GCM) of a
    hello, or raise :class:`HandshakeError`."""
    if len(hello) != HELLO_SIZE:
        raise HandshakeError(f"hello of {len(hello)} bytes, expected {HELLO_SIZE}")
    got_magic, version, key_id, nonce = _HELLO_HEAD.unpack_from(hello)
    if got_magic != magic or version != _VERSION:
        raise HandshakeError(f"not a p2pcluster v{_VERSION} handshake")
    try:
        key = keyring.lookup(key_id)
    except ProtocolError:
        raise HandshakeError(f"peer uses key id {key_id.hex()}, which we do not hold") from None
    head = hello[: _HELLO_HEAD.size]
    try:
        body = ChaCha20Poly1305(key.stream_psk).decrypt(nonce, hello[_HELLO_HEAD.size :],
                                                        head + extra_aad)
    except InvalidTag:
        raise HandshakeError("hello failed authentication: wrong key or cluster") from None
    _, public, node, current, offers = _BODY.unpack(body)
    return key, public, Origin(node, key_id, current), bool(offers & _OFFERS_AES)


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
    """The connecting side, node ``node_id``, under ``key`` (default: the keyring's
    current key), offering AES-256-GCM if ``offer_aes``. ``hello()`` first, then
    ``receive(server_hello)``."""

    def __init__(self, keyring: Keyring, entropy: Entropy, *, node_id: bytes,
                 max_frame: int, key: ClusterKey | None = None, offer_aes: bool = False
                 ) -> None:
        self._keyring = keyring
        self._private = X25519PrivateKey.from_private_bytes(entropy(32))
        self.key = key or keyring.primary
        body = _body(entropy, self._private, node_id, keyring.primary.key_id, offer_aes)
        self._hello = _hello(_CLIENT_MAGIC, self.key, body, extra_aad=b"", entropy=entropy)
        self._max_frame = max_frame
        self._offer_aes = offer_aes

    def hello(self) -> bytes:
        return self._hello

    def receive(self, server_hello: bytes) -> tuple[Session, bytes | bytearray]:
        """The session and its first frame (the proof), to be sent at once."""
        key, public, origin, aes = _open_hello(_SERVER_MAGIC, self._keyring, server_hello,
                                               hashlib.sha256(self._hello).digest())
        if key.key_id != self.key.key_id:
            raise HandshakeError("the server answered under another key")
        transcript = hashlib.sha256(self._hello + server_hello).digest()
        send_key, recv_key = _session_keys(key.stream_psk, self._private, public, transcript)
        session = Session(send_key, recv_key, max_frame=self._max_frame, origin=origin,
                          cipher=_cipher(self._offer_aes, aes))
        return session, session.seal(transcript)


class ServerHandshake:
    """The accepting side, node ``node_id``, offering AES-256-GCM if ``offer_aes``:
    ``receive(client_hello)`` gives the reply to send, ``finish(proof)`` the session once
    the client's proof checks out."""

    def __init__(self, keyring: Keyring, entropy: Entropy, *, node_id: bytes,
                 max_frame: int, offer_aes: bool = False) -> None:
        self._keyring = keyring
        self._entropy = entropy
        self._node_id = node_id
        self._max_frame = max_frame
        self._offer_aes = offer_aes
        self._pending: tuple[bytes, bytes, bytes, Origin, str] | None = None

    def receive(self, client_hello: bytes) -> bytes:
        """The ServerHello answering ``client_hello``; :class:`HandshakeError` if it is not
        an authentic hello under a key we hold."""
        key, public, origin, aes = _open_hello(_CLIENT_MAGIC, self._keyring, client_hello,
                                               b"")
        private = X25519PrivateKey.from_private_bytes(self._entropy(32))
        body = _body(self._entropy, private, self._node_id, self._keyring.primary.key_id,
                     self._offer_aes)
        reply = _hello(_SERVER_MAGIC, key, body,
                       extra_aad=hashlib.sha256(client_hello).digest(), entropy=self._entropy)
        transcript = hashlib.sha256(client_hello + reply).digest()
        recv_key, send_key = _session_keys(key.stream_psk, private, public, transcript)
        self._pending = (send_key, recv_key, transcript, origin, _cipher(self._offer_aes, aes))
        return reply

    def finish(self, proof: bytes) -> Session:
        """The session, given exactly :data:`PROOF_SIZE` bytes from the client."""
        if self._pending is None:
            raise HandshakeError("no hello yet")
        send_key, recv_key, transcript, origin, cipher = self._pending
        if len(proof) != PROOF_SIZE or _LENGTH.unpack_from(proof)[0] != PROOF_SIZE - 4:
            raise HandshakeError("the client's first frame is not a proof")
        session = Session(send_key, recv_key, max_frame=self._max_frame, origin=origin,
                          cipher=cipher)
        session.feed(proof)
        if session.next_payload() != transcript:
            raise HandshakeError("client proof does not match the transcript")
        return session


class _Direction:
    """One direction of a session: its AEAD under the current key, the next frame's nonce,
    and the payload bytes left before the key is replaced."""

    __slots__ = ("_cls", "_counter", "_key", "_left", "_rekey_bytes", "aead")

    def __init__(self, cipher: str, key: bytes, rekey_bytes: int) -> None:
        self._cls = _AEADS[cipher]
        self._key = key
        self.aead = self._cls(key)
        self._counter = 0
        self._left = self._rekey_bytes = rekey_bytes

    def nonce(self) -> bytes:
        return bytes(4) + self._counter.to_bytes(8, "big")

    def done(self, size: int) -> None:
        """A frame of ``size`` payload bytes was sealed or opened under :meth:`nonce`."""
        self._counter += 1
        self._left -= size
        if self._left <= 0:
            self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                             info=b"p2pcluster/v3 next key").derive(self._key)
            self.aead = self._cls(self._key)
            self._left = self._rekey_bytes


class Session:
    """Seals outgoing frames and opens incoming ones; feed it bytes as they arrive.

    ``origin`` is the peer: its node id, the session's key id, the peer's current key id.
    ``cipher`` is :data:`AES_256_GCM` or :data:`CHACHA20_POLY1305`; each direction moves to
    its next key after ``rekey_bytes`` of payload."""

    def __init__(self, send_key: bytes, recv_key: bytes, *, max_frame: int,
                 origin: Origin, cipher: str = CHACHA20_POLY1305,
                 rekey_bytes: int = REKEY_BYTES) -> None:
        self._send = _Direction(cipher, send_key, rekey_bytes)
        self._recv = _Direction(cipher, recv_key, rekey_bytes)
        self.cipher = cipher
        self._inbox = Inbox()
        self._outbox = bytearray()
        self._broken: ProtocolError | None = None
        self.max_frame = max_frame
        self.origin = origin

    def seal(self, payload: bytes | bytearray | memoryview) -> bytes | bytearray:
        """One frame carrying ``payload`` (encrypted straight into the frame: one copy)."""
        if len(payload) > self.max_frame:
            raise MessageTooLarge(f"frame of {len(payload)} bytes exceeds {self.max_frame}")
        length = _LENGTH.pack(len(payload) + TAG_SIZE)
        if not _INTO:
            sealed = length + self._send.aead.encrypt(self._send.nonce(), payload, length)
            self._send.done(len(payload))
            return sealed
        frame = bytearray(_LENGTH.size + len(payload) + TAG_SIZE)
        self._seal_into(length, payload, frame)
        return frame

    def seal_reusing(self, payload: bytes | bytearray | memoryview) -> memoryview:
        """As :meth:`seal`, but into a buffer the session keeps and reuses for frames up to
        :data:`REUSED_FRAME` bytes: the view is valid only until the next call. A stream
        that sends each frame whole before sealing the next saves an allocation per frame
        (for large frames, fresh pages the kernel must fault in)."""
        size = _LENGTH.size + len(payload) + TAG_SIZE
        if size > REUSED_FRAME or not _INTO:
            return memoryview(self.seal(payload))
        if len(payload) > self.max_frame:
            raise MessageTooLarge(f"frame of {len(payload)} bytes exceeds {self.max_frame}")
        if len(self._outbox) < size:
            self._outbox = bytearray(max(size, min(2 * len(self._outbox), REUSED_FRAME)))
        self._seal_into(_LENGTH.pack(len(payload) + TAG_SIZE), payload, self._outbox)
        return memoryview(self._outbox)[:size]

    def _seal_into(self, length: bytes, payload: bytes | bytearray | memoryview,
                   frame: bytearray) -> None:
        frame[:_LENGTH.size] = length
        with memoryview(frame) as view, \
                view[_LENGTH.size:_LENGTH.size + len(payload) + TAG_SIZE] as sealed:
            self._send.aead.encrypt_into(self._send.nonce(), payload, length, sealed)
        self._send.done(len(payload))

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the stream (a copy; see :meth:`receive_space`)."""
        self._inbox.append(data)

    def receive_space(self, most: int) -> memoryview:
        """Room to read up to ``most`` bytes from the stream straight into the session's
        buffer (no copy); say how many arrived with :meth:`received`, and release the view
        first. The buffer grows to hold the whole frame being received."""
        size = self.next_size()  # bounds-checked before anything is sized by it
        whole = 0 if size is None else _LENGTH.size + size + TAG_SIZE
        return self._inbox.space(most, whole)

    def received(self, count: int) -> None:
        """``count`` bytes were read into the last :meth:`receive_space`."""
        self._inbox.commit(count)

    def next_size(self) -> int | None:
        """The payload size of the next frame, once its length field is here (None before);
        raises if that length is out of bounds."""
        if self._broken is not None:
            raise type(self._broken)(*self._broken.args)
        size = self._peek_size()
        if size is not None and (size > self.max_frame or size < 0):
            self._broken = MessageTooLarge(f"frame length {size + TAG_SIZE} is out of bounds")
            raise self._broken
        return size

    def _peek_size(self) -> int | None:
        """The payload size the next frame's length field gives (unchecked), None before."""
        if len(self._inbox) < _LENGTH.size:
            return None
        with self._inbox.view(_LENGTH.size) as head:
            length: int = _LENGTH.unpack_from(head)[0]
        return length - TAG_SIZE

    def next_payload(self) -> bytes | None:
        """The next complete payload, None if more bytes are needed; raises on tampering."""
        size = self.next_size()
        if size is None or len(self._inbox) < _LENGTH.size + size + TAG_SIZE:
            return None
        return self._open(size, None)

    def next_payload_into(self, dest: memoryview) -> int | None:
        """Open the next complete frame straight into the start of ``dest`` (a writable
        buffer of bytes) and return its payload size; None if more bytes are needed.
        Raises :class:`~p2pcluster.MessageTooLarge` if the payload is longer than
        ``dest``, and on tampering."""
        size = self.next_size()
        if size is None or len(self._inbox) < _LENGTH.size + size + TAG_SIZE:
            return None
        if size > len(dest):
            self._broken = MessageTooLarge(f"a frame of {size} bytes where {len(dest)} remain "
                                           "of the value")
            raise self._broken
        self._open(size, dest[:size])
        return size

    def _open(self, size: int, dest: memoryview | None) -> bytes | None:
        """Open the frame of ``size`` payload bytes at the buffer's start (into ``dest``,
        or as new bytes) and drop it from the buffer."""
        nonce, aead = self._recv.nonce(), self._recv.aead
        end = _LENGTH.size + size + TAG_SIZE
        try:
            with self._inbox.view(end) as view, view[:_LENGTH.size] as aad, \
                    view[_LENGTH.size:end] as sealed:
                if dest is None:
                    payload: bytes | None = aead.decrypt(nonce, sealed, aad)
                elif _INTO:
                    payload = None
                    aead.decrypt_into(nonce, sealed, aad, dest)
                else:
                    payload = None
                    dest[:] = aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            self._broken = AuthenticationError("frame failed authentication")
            raise self._broken from None
        self._recv.done(size)
        self._inbox.consume(end)
        return payload

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed (a partial frame at end of stream)."""
        return len(self._inbox)
