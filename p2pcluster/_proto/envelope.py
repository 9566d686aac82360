"""Keys and the datagram envelope: AEAD seal/open and the replay window. Sans-IO.

Keys
    A cluster secret is 32 random bytes. For each cluster name it yields, by HKDF-SHA256
    (salt ``b"p2pcluster/v1"``, info ``b"p2pcluster/v1 " + purpose + b"\\x00" + name``), three
    values: a 4-byte public *key id* (purpose ``key-id``), the datagram key (``datagram``), and
    the stream pre-shared key (``stream``). A different secret or a different cluster name gives
    unrelated keys, so its traffic fails authentication.

Datagram layout (big-endian)::

    0   1   envelope version (1)
    1   4   key id
    5   8   sender timestamp, milliseconds since the Unix epoch
    13  12  nonce: 8-byte random sender prefix + 4-byte counter
    25  n   ChaCha20-Poly1305 ciphertext of the payload, then its 16-byte tag;
            the associated data is bytes 0..25

Replay protection
    The receiver refuses a timestamp further than ``window`` seconds from its own clock, and
    remembers the nonces it accepted within the window. When its cache is full it forgets the
    oldest and refuses anything not newer than what it forgot, so a replay is never accepted.

Nothing here reads a clock or a random source: callers pass ``now`` (wall-clock seconds) and an
``entropy`` function.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .._errors import AuthenticationError, MessageTooLarge, ReplayError, UnknownKey

__all__ = [
    "DATAGRAM_OVERHEAD",
    "ClusterKey",
    "DatagramOpener",
    "DatagramSealer",
    "Entropy",
    "Keyring",
    "derive_key",
]

Entropy = Callable[[int], bytes]
SECRET_SIZE = 32
ENVELOPE_VERSION = 1
_HEADER = struct.Struct(">B4sQ12s")
HEADER_SIZE = _HEADER.size
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
    """The current key, which seals, plus older keys still accepted during a rotation."""

    __slots__ = ("_aeads", "keys")

    def __init__(self, keys: Sequence[ClusterKey]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        self.keys = tuple(keys)
        self._aeads = {k.key_id: ChaCha20Poly1305(k.datagram_key) for k in reversed(self.keys)}

    @classmethod
    def from_secrets(cls, secrets: Sequence[bytes], cluster: str) -> Keyring:
        """A keyring whose primary key comes from ``secrets[0]``."""
        return cls([derive_key(s, cluster) for s in secrets])

    @property
    def primary(self) -> ClusterKey:
        return self.keys[0]

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


class DatagramSealer:
    """Seals payloads under the keyring's primary key, with nonces that never repeat."""

    __slots__ = ("_counter", "_entropy", "_prefix", "keyring")

    def __init__(self, keyring: Keyring, entropy: Entropy) -> None:
        self.keyring = keyring
        self._entropy = entropy
        self._prefix = entropy(8)
        self._counter = 0

    def _next_nonce(self) -> bytes:
        if self._counter > 0xFFFFFFFF:
            self._prefix, self._counter = self._entropy(8), 0
        nonce = self._prefix + self._counter.to_bytes(4, "big")
        self._counter += 1
        return nonce

    def seal(self, payload: bytes, now: float) -> bytes:
        """The datagram carrying ``payload``, stamped with wall-clock time ``now``."""
        key_id = self.keyring.primary.key_id
        header = _HEADER.pack(ENVELOPE_VERSION, key_id, int(now * 1000), self._next_nonce())
        return header + self.keyring.datagram_aead(key_id).encrypt(header[13:], payload, header)


class ReplayWindow:
    """Remembers accepted nonces for ``window`` seconds, at most ``capacity`` of them."""

    __slots__ = ("_floor", "_seen", "capacity", "window")

    def __init__(self, window: float, capacity: int) -> None:
        self.window = window
        self.capacity = capacity
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._floor = float("-inf")  # timestamps at or below this were possibly forgotten

    def check(self, nonce: bytes, stamp: float, now: float) -> None:
        """Record ``nonce``; raise :class:`ReplayError` if it is stale or was seen."""
        if abs(stamp - now) > self.window:
            raise ReplayError(
                f"timestamp is {stamp - now:+.1f} s from our clock, outside the "
                f"{self.window:g} s window (are the clocks synchronised?)"
            )
        if stamp <= self._floor or nonce in self._seen:
            raise ReplayError("datagram was already received (replay)")
        seen = self._seen
        seen[nonce] = stamp
        horizon = now - self.window
        while seen:
            oldest_nonce, oldest = next(iter(seen.items()))
            if oldest >= horizon and len(seen) <= self.capacity:
                break
            del seen[oldest_nonce]
            if oldest >= horizon:  # forgotten while still inside the window
                self._floor = max(self._floor, oldest)

    def __len__(self) -> int:
        return len(self._seen)


class DatagramOpener:
    """Authenticates, decrypts and replay-checks datagrams."""

    __slots__ = ("keyring", "max_size", "replay")

    def __init__(
        self, keyring: Keyring, *, window: float, cache_size: int, max_size: int
    ) -> None:
        self.keyring = keyring
        self.max_size = max_size
        self.replay = ReplayWindow(window, cache_size)

    def open(self, datagram: bytes, now: float) -> bytes:
        """The payload of ``datagram``, or a :class:`~p2pcluster.ProtocolError`."""
        if len(datagram) > self.max_size:
            raise MessageTooLarge(f"datagram of {len(datagram)} bytes exceeds {self.max_size}")
        if len(datagram) < DATAGRAM_OVERHEAD:
            raise AuthenticationError(f"datagram of {len(datagram)} bytes is truncated")
        version, key_id, millis, nonce = _HEADER.unpack_from(datagram)
        if version != ENVELOPE_VERSION:
            raise AuthenticationError(f"unknown envelope version {version}")
        aead = self.keyring.datagram_aead(key_id)
        try:
            payload = aead.decrypt(nonce, datagram[HEADER_SIZE:], datagram[:HEADER_SIZE])
        except InvalidTag:
            raise AuthenticationError("datagram failed authentication") from None
        self.replay.check(nonce, millis / 1000, now)
        return payload
