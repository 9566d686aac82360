"""Which key to seal with toward each peer, so that a key rotation never partitions. Sans-IO.

Every authenticated datagram and handshake tells its receiver two key ids of the sender: the
key it sealed with and the key it seals with by default (its *current* key). Both prove that
the sender holds that key. :class:`KeyChoice` remembers them for each peer (from its latest
authenticated message) and picks, toward a peer:

1. our current key, if the peer is known to hold it, or if we know nothing of the peer;
2. else the first key of our keyring (current first) that the peer is known to hold;
3. else our current key.

A rotation is three steps on every machine (docs/security.md): *add* the new key (accepted,
not used), *promote* it (current), *revoke* the old one. While peers are between steps:

- a promoted peer keeps sealing toward an unpromoted one with the old key the latter still
  shows (rule 2), so it is understood even if the latter was never given the new key;
- once both are promoted, each has shown the other the new key as its current one, and both
  use it (rule 1); so by the time the old key is revoked nobody seals with it any more.

A stream's client does the same for the address it connects to (the node last seen there),
and retries the handshake with its other keys if the server closes the connection at its
hello (as a server does at a key id it does not hold).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

from .envelope import ClusterKey, Keyring, Origin
from .outputs import Address

__all__ = ["MAX_PEERS", "KeyChoice"]

K = TypeVar("K")
V = TypeVar("V")

#: Peers (and addresses) remembered; the least recently heard are forgotten first.
MAX_PEERS = 4096


class KeyChoice:
    """See the module docstring."""

    __slots__ = ("_at", "_held", "capacity")

    def __init__(self, capacity: int = MAX_PEERS) -> None:
        self.capacity = capacity
        self._held: OrderedDict[bytes, frozenset[bytes]] = OrderedDict()  # node -> key ids
        self._at: OrderedDict[Address, bytes] = OrderedDict()  # address -> node last seen

    def heard(self, origin: Origin, address: Address | None = None) -> None:
        """``origin`` authenticated a message (from ``address``, if it is the peer's own)."""
        _put(self._held, origin.node, frozenset((origin.key_id, origin.current)),
             self.capacity)
        if address is not None:
            _put(self._at, address, origin.node, self.capacity)

    def held_by(self, node: bytes) -> frozenset[bytes]:
        """The key ids ``node`` showed it holds in its latest message (none if unknown)."""
        return self._held.get(node, frozenset())

    def node_at(self, address: Address) -> bytes | None:
        return self._at.get(address)

    def knows_host(self, host: str) -> bool:
        """Whether an authentic datagram came from ``host`` (at any port): a peer's."""
        return any(at[0] == host for at in self._at)

    def for_node(self, keyring: Keyring, node: bytes) -> ClusterKey:
        """The key to seal with toward ``node`` (see the module docstring)."""
        held = self._held.get(node)
        if held is None or keyring.primary.key_id in held:
            return keyring.primary
        for key in keyring.keys:
            if key.key_id in held:
                return key
        return keyring.primary

    def for_address(self, keyring: Keyring, address: Address) -> list[ClusterKey]:
        """Keys to try, in order, for a handshake with ``address``: the one for the node last
        seen there, then the rest of the keyring."""
        node = self._at.get(address)
        first = keyring.primary if node is None else self.for_node(keyring, node)
        return [first, *(k for k in keyring.keys if k is not first)]


def _put(table: OrderedDict[K, V], key: K, value: V, capacity: int) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > capacity:
        table.popitem(last=False)
