"""The shared values of a worker pool, placed in shared memory once for all its workers.

Each shared value a batch uses is put in one read-only segment (:mod:`._handoff`) the first
time a batch needs it, in a thread (hundreds of megabytes take a while to copy); every
worker maps that same segment, so the pages are in memory once however many workers use
them, and decodes the value once. :meth:`SharedWires.drop` lets go of the segment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import trio

from ._handoff import WireValue, wire_value
from ._packed import Packed, Payload

__all__ = ["SharedWires"]

#: Values of this many bytes or more are placed in a thread.
IN_THREAD = 4 * 1024 * 1024


class SharedWires:
    """Shared values by digest, ready for a worker's pipe."""

    def __init__(self) -> None:
        self._wires: dict[bytes, tuple[WireValue, Packed | None]] = {}
        self._placing = trio.Lock()

    async def ready(self, shared: Mapping[bytes, Payload]) -> None:
        """Place the values of ``shared`` not placed yet (one batch at a time does)."""
        if all(d in self._wires for d in shared):
            return
        async with self._placing:
            missing = {d: p for d, p in shared.items() if d not in self._wires}
            size = sum(map(len, missing.values()))
            if size >= IN_THREAD:
                placed = await trio.to_thread.run_sync(_place, missing)
            else:
                placed = _place(missing)
            self._wires.update(placed)

    def for_worker(self, have: set[bytes], digests: Iterable[bytes]) -> dict[bytes, WireValue]:
        """What a worker that ``have`` these digests lacks of ``digests`` (now marked as
        had: call right before the write)."""
        new = {d: self._wires[d][0] for d in digests if d not in have and d in self._wires}
        have.update(new)
        return new

    def drop(self, digests: Iterable[bytes]) -> None:
        for digest in digests:
            self._wires.pop(digest, None)


def _place(values: Mapping[bytes, Payload]) -> dict[bytes, tuple[WireValue, Packed | None]]:
    placed: dict[bytes, tuple[WireValue, Packed | None]] = {}
    for digest, payload in values.items():
        kept: list[Packed | None] = []
        placed[digest] = (wire_value(payload, kept), kept[0])
    return placed
