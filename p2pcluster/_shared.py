"""Handles to shared values: what :meth:`Cluster.share` and :meth:`Peer.share` return.

A shared value is named by the SHA-256 of its encoding (heads and buffers in order, see
:mod:`._packed`), so the same bytes shared twice are one value, and a peer that has a value
of that digest cached has exactly that value. A :class:`Shared` handle is small: it
travels inside task arguments as :data:`TAG_HANDLE` ``(digest)``, and the peer that runs the
task puts the value in its place (``docs/jobs.md``, "Shared inputs").
"""

from __future__ import annotations

import hashlib

from ._packed import Packed, Payload

__all__ = ["TAG_HANDLE", "Shared", "changed_since_shared", "digest_of"]

#: Our own tag (unregistered, first-come-first-served range): "p2pH", around a digest.
TAG_HANDLE = 0x70327048


def digest_of(payload: Payload) -> bytes:
    """SHA-256 of an encoded value, piece by piece (no copy of a packed one)."""
    if not isinstance(payload, Packed):
        return hashlib.sha256(payload).digest()
    digest = hashlib.sha256()
    for piece in payload.pieces():
        digest.update(piece)
    return digest.digest()


def changed_since_shared(digest: bytes) -> str:
    """Why a shared value's bytes no longer match its digest: its arrays changed."""
    return (f"the shared value {digest.hex()[:16]} changed after it was shared (its arrays "
            "are read where they are, not copied at share): share a copy (arr.copy()) to "
            "go on changing the original, or share it again once changed, for a new handle")


class Shared:
    """A value shared with the cluster: pass it as a task argument (anywhere inside the
    arguments), and the task receives the value itself.

    Each peer fetches a shared value from the submitting peer once, when it first runs a
    task that uses it, and keeps it while jobs that use it run there. Shared NumPy arrays
    arrive read-only (every task on a peer sees the same memory): copy one (``arr.copy()``)
    to change it. Equal handles (``==``) name the same bytes.
    """

    __slots__ = ("__weakref__", "digest", "size")

    def __init__(self, digest: bytes, size: int) -> None:
        self.digest = digest
        self.size = size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Shared) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return f"<Shared {self.size:,} bytes, sha256 {self.digest.hex()[:16]}>"
