"""Keys and the datagram envelope: AEAD seal/open, bound to both node ids. Sans-IO.

Keys
    A cluster secret is 32 random bytes. For each cluster name it yields, by HKDF-SHA256
    (salt ``b"p2pcluster/v1"``, info ``b"p2pcluster/v1 " + purpose + b"\\x00" + name``), three
    values: a 4-byte public *key id* (purpose ``key-id``), the datagram key (``datagram``), and
    the stream pre-shared key (``stream``). A different secret or a different cluster name gives
    unrelated keys, so its traffic fails authentication.

Datagram layout (big-endian), envelope version 2::

    0   1   envelope version (2)
    1   4   key id: the key that seals this datagram
    5   4   the sender's current key id (it seals with it unless it knows the receiver
            lacks it): once authenticated, proof that the sender holds that key
    9   8   sender timestamp, milliseconds since the Unix epoch
    17  12  nonce: 8-byte random sender prefix + 4-byte counter
    29  16  sender node id
    45  16  receiver node id
    61  n   ChaCha20-Poly1305 ciphertext of the payload, then its 16-byte tag;
            the associated data is bytes 0..61

Both node ids are authenticated: a datagram recorded on its way to one peer fails at every
other (its receiver id is not theirs), and the sender's id keys its replay state
(:mod:`.replay`) and the choice of key toward it (:mod:`.keychoice`).

A receiver checks, in this order: the size, the envelope version, the key id, the AEAD, the
receiver id (an authentic datagram for another id is
:class:`~p2pcluster._errors.Misdirected`: it reached a peer that restarted at an address the
sender still knows, or it was recorded on its way to another peer), then the timestamp and
the nonce (:class:`~.replay.ReplayWindow`). Only then is the payload decoded, by the caller.

Nothing here reads a clock or a random source: callers pass ``now`` (wall-clock seconds) and an
``entropy`` function.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .._errors import AuthenticationError, MessageTooLarge, Misdirected, UnknownKey
from .replay import ReplayWindow

__all__ = [
    "DATAGRAM_OVERHEAD",
    "NODE_ID_SIZE",
    "ClusterKey",
    "DatagramOpener",
    "DatagramSealer",
    "Entropy",
    "Keyring",
    "Opened",
    "Origin",
    "derive_key",
]

Entropy = Callable[[int], bytes]
SECRET_SIZE = 32
#: Node ids in the envelope and the handshake are exactly this long (p2pcluster draws 16
#: random bytes per run).
NODE_ID_SIZE = 16
ENVELOPE_VERSION = 2
_HEADER = struct.Struct(">B4s4sQ12s16s16s")
HEADER_SIZE = _HEADER.size
_NONCE = slice(17, 29)
TAG_SIZE = 16
DATAGRAM_OVERHEAD = HEADER_SIZE + TAG_SIZE
_SALT = b"p2pcluster/v1"


def _hkdf(secret: bytes, purpose: bytes, cluster: str, length: int = 32) -> bytes:
    info = b"p2pcluster/v1 " + purpose + b"\x00" + cluster.encode()
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=info).derive(secret)


@dataclass(frozen=True, slots=True, repr=False)
class ClusterKey:
    """The keys one secret gives for one cluster name. ``repr`` shows only the key id."""

    key_id: bytes
    datagram_key: bytes
    stream_psk: bytes

    def __repr__(self) -> str:
        return f"ClusterKey(key_id={self.key_id.hex()})"


def derive_key(secret: bytes, cluster: str) -> ClusterKey:
    """Derive the keys of ``cluster`` from a 32-byte ``secret``."""
    if len(secret) != SECRET_SIZE:
        raise ValueError(f"a cluster secret is {SECRET_SIZE} bytes, not {len(secret)}")
    return ClusterKey(
        key_id=_hkdf(secret, b"key-id", cluster, 4),
        datagram_key=_hkdf(secret, b"datagram", cluster),
        stream_psk=_hkdf(secret, b"stream", cluster),
    )


class Keyring:
    """The keys a peer holds: the current one first, then others it still accepts.

    A peer seals with its current key, except toward a peer known to lack it
    (:mod:`.keychoice`); it accepts every key of the ring. A key not in the ring is refused.
    """

    __slots__ = ("_aeads", "keys")

    def __init__(self, keys: Sequence[ClusterKey]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        self.keys = tuple(keys)
        self._aeads = {k.key_id: ChaCha20Poly1305(k.datagram_key) for k in reversed(self.keys)}

    @classmethod
    def from_secrets(cls, secrets: Sequence[bytes], cluster: str) -> Keyring:
        """A keyring whose current key comes from ``secrets[0]``."""
        return cls([derive_key(s, cluster) for s in secrets])

    @property
    def primary(self) -> ClusterKey:
        """The current key."""
        return self.keys[0]

    @property
    def key_ids(self) -> tuple[bytes, ...]:
        """The ids of the keys held, the current one first."""
        return tuple(k.key_id for k in self.keys)

    def holds(self, key_id: bytes) -> bool:
        return key_id in self._aeads

    def lookup(self, key_id: bytes) -> ClusterKey:
        """The key with ``key_id``; raise :class:`UnknownKey` if there is none."""
        for key in self.keys:
            if key.key_id == key_id:
                return key
        raise UnknownKey(f"unknown key id {key_id.hex()}")

    def datagram_aead(self, key_id: bytes) -> ChaCha20Poly1305:
        try:
            return self._aeads[key_id]
        except KeyError:
            raise UnknownKey(f"unknown key id {key_id.hex()}") from None


class Origin(NamedTuple):
    """Who sent an authenticated datagram or opened a session, and the keys it showed."""

    node: bytes  #: its node id
    key_id: bytes  #: the key it sealed (or handshook) with
    current: bytes  #: the key id it seals with by default


class Opened(NamedTuple):
    """An authentic, fresh datagram: its payload (not yet decoded) and who sent it."""

    payload: bytes
    origin: Origin


def _check_id(node: bytes, what: str) -> None:
    if len(node) != NODE_ID_SIZE:
        raise ValueError(f"{what} is {len(node)} bytes; node ids are {NODE_ID_SIZE}")


class DatagramSealer:
    """Seals payloads from node ``node_id``, with nonces that never repeat.

    ``keyring`` may be replaced at any time (a rotation)."""

    __slots__ = ("_counter", "_entropy", "_prefix", "keyring", "node_id")

    def __init__(self, keyring: Keyring, entropy: Entropy, node_id: bytes) -> None:
        _check_id(node_id, "our node id")
        self.keyring = keyring
        self.node_id = node_id
        self._entropy = entropy
        self._prefix = entropy(8)
        self._counter = 0

    def _next_nonce(self) -> bytes:
        if self._counter > 0xFFFFFFFF:
            self._prefix, self._counter = self._entropy(8), 0
        nonce = self._prefix + self._counter.to_bytes(4, "big")
        self._counter += 1
        return nonce

    def seal(self, payload: bytes, now: float, to: bytes, key: ClusterKey | None = None
             ) -> bytes:
        """The datagram carrying ``payload`` to node ``to``, stamped with wall-clock time
        ``now``, sealed under ``key`` (default: the current key)."""
        _check_id(to, "the receiver's node id")
        ring = self.keyring
        key = key or ring.primary
        header = _HEADER.pack(ENVELOPE_VERSION, key.key_id, ring.primary.key_id,
                              int(now * 1000), self._next_nonce(), self.node_id, to)
        return header + ring.datagram_aead(key.key_id).encrypt(header[_NONCE], payload, header)


class DatagramOpener:
    """Authenticates, decrypts and replay-checks the datagrams sent to node ``node_id``.

    ``keyring`` may be replaced at any time: a key dropped from it is refused at once."""

    __slots__ = ("keyring", "max_size", "node_id", "replay")

    def __init__(self, keyring: Keyring, node_id: bytes, *, window: float, cache_size: int,
                 max_size: int) -> None:
        _check_id(node_id, "our node id")
        self.keyring = keyring
        self.node_id = node_id
        self.max_size = max_size
        self.replay = ReplayWindow(window, cache_size)

    def open(self, datagram: bytes, now: float) -> Opened:
        """The payload of ``datagram`` and its origin, or a
        :class:`~p2pcluster.ProtocolError` (see the module docstring for the order)."""
        if len(datagram) > self.max_size:
            raise MessageTooLarge(f"datagram of {len(datagram)} bytes exceeds {self.max_size}")
        if len(datagram) < DATAGRAM_OVERHEAD:
            raise AuthenticationError(f"datagram of {len(datagram)} bytes is truncated")
        version, key_id, current, millis, nonce, sender, receiver = _HEADER.unpack_from(datagram)
        if version != ENVELOPE_VERSION:
            raise AuthenticationError(f"unknown envelope version {version}")
        aead = self.keyring.datagram_aead(key_id)
        try:
            payload = aead.decrypt(nonce, datagram[HEADER_SIZE:], datagram[:HEADER_SIZE])
        except InvalidTag:
            raise AuthenticationError("datagram failed authentication") from None
        if receiver != self.node_id:
            raise Misdirected(f"datagram for node {receiver.hex()[:8]}, not us")
        self.replay.check(sender, nonce, millis / 1000, now)
        return Opened(payload, Origin(sender, key_id, current))

