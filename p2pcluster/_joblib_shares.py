"""Large pickle buffers that batches repeat, sent once per peer as shared values.

Every batch of a ``GridSearchCV`` holds the same ``X`` and ``y``: pickled alone, each batch
would carry them again (1.3 MB per batch for the digits data set), to be encrypted, sent,
decrypted and written to a worker every time. :class:`BufferShares` looks at each
out-of-band buffer of a batch (:func:`._joblib_needs.dumps_noting_modules`) of at least
:data:`SHARE_MIN` bytes and names it by the SHA-256 of its bytes. The first time a buffer is
seen it travels in its batch as before; from the second time on, it is shared with the
cluster (:meth:`Cluster.share <p2pcluster.Cluster.share>`: each peer fetches it once, over the
same authenticated, encrypted channel, and its workers keep it in memory) and the batch
carries a small handle in its place, which the worker's peer replaces with the bytes before
:func:`._joblib_task.run_pickled` sees them. So a buffer that only one batch holds (a chunk
of a ``Parallel`` over chunks) costs one hash and is never kept; one that batches repeat
crosses each link once.

The values shared stay with the cluster as long as it is open (the embedded peer, or the
connection to the daemon), as with ``Cluster.share``: at most one copy of each distinct
buffer, and at most :data:`SHARE_BUDGET` bytes in all, so that a long session of searches
over ever new data does not grow without end (past the budget, repeated buffers travel in
their batches, as they did before this module).
"""

from __future__ import annotations

import collections
import hashlib
import threading
from collections.abc import Sequence

from ._cluster import Cluster
from ._packed import MAX_USES
from ._shared import Shared

__all__ = ["SHARE_BUDGET", "SHARE_MIN", "BufferShares"]

#: Bytes from which a buffer is named, and shared once it repeats.
SHARE_MIN = 32 * 1024

#: A buffer of a pickle: a view of an array's memory, or a copy.
Buffer = memoryview | bytes

#: Bytes of buffers one cluster's batches share at most (the owner keeps each while the
#: cluster is open); past them, repeated buffers travel in their batches.
SHARE_BUDGET = 512 * 1024 * 1024

#: Digests of buffers seen once, remembered (the most recent) to spot a repeat.
SEEN_MAX = 4096


class BufferShares:
    """Handles of the repeated buffers of one cluster's batches (thread safe). It holds no
    reference to the cluster, which the caller passes each time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: dict[bytes, Shared] = {}
        self._seen: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._bytes = 0  #: of the buffers shared so far

    def swap(self, cluster: Cluster, head: bytes, buffers: Sequence[Buffer]
             ) -> list[bytes | Shared]:
        """``head`` and its ``buffers`` as the parts of a batch: each buffer that repeated
        replaced by its handle (at most :data:`~._packed.MAX_USES` distinct ones), the
        others copied into bytes."""
        out: list[bytes | Shared] = [head]
        used: set[Shared] = set()
        for part in buffers:
            room = len(used) < MAX_USES  # a call names at most MAX_USES shared values
            size = part.nbytes if isinstance(part, memoryview) else len(part)
            handle = self.handle(cluster, part) if room and size >= SHARE_MIN else None
            if handle is not None:
                used.add(handle)
            out.append(bytes(part) if handle is None else handle)
        return out

    def handle(self, cluster: Cluster, part: Buffer) -> Shared | None:
        """The handle of ``part`` once it has been seen before; None the first time."""
        digest = hashlib.sha256(part).digest()
        with self._lock:
            handle = self._handles.get(digest)
            if handle is not None:
                return handle
            if digest not in self._seen:
                self._seen[digest] = None
                if len(self._seen) > SEEN_MAX:
                    self._seen.popitem(last=False)
                return None
            size = part.nbytes if isinstance(part, memoryview) else len(part)
            if self._bytes + size > SHARE_BUDGET:
                return None
            self._bytes += size  # counted now, so that two threads cannot both pass
        handle = cluster.share(bytes(part))  # outside the lock: a round trip to the peer
        with self._lock:
            self._seen.pop(digest, None)
            self._handles[digest] = handle
        return handle
