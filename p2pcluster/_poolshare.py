"""The shared values of a worker pool, placed in shared memory once for all its workers.

Each shared value a batch uses is put in one read-only segment (:mod:`._handoff`) the first
time a batch needs it, in a thread (hundreds of megabytes take a while to copy); every
worker maps that same segment, so the pages are in memory once however many workers use
them, and decodes the value once. :meth:`SharedWires.drop` lets go of the segment. Also
here: the worker pool's frames that get no answer (:func:`tell`), and mapping the large
results a worker answers with (:func:`mapped_outcomes`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import trio

from ._fastwrite import write_all
from ._handoff import WireValue, flat_size, open_results, wire_value
from ._packed import Packed, Payload
from ._shm import SegmentStock
from ._workerproc import WorkerProcess, frame

__all__ = ["SharedWires", "mapped_outcomes", "off_loop", "tell"]
T = TypeVar("T")

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

    async def drop(self, workers: Iterable[WorkerProcess], digests: Sequence[bytes]) -> None:
        """Let go of these values, here and in every worker that has them."""
        for digest in digests:
            self._wires.pop(digest, None)
        for worker in list(workers):
            if worker.shared.intersection(digests):
                worker.shared.difference_update(digests)
                await tell(worker, ("drop", [], list(digests)))


def _place(values: Mapping[bytes, Payload]) -> dict[bytes, tuple[WireValue, Packed | None]]:
    placed: dict[bytes, tuple[WireValue, Packed | None]] = {}
    for digest, payload in values.items():
        kept: list[Packed | None] = []
        placed[digest] = (wire_value(payload, kept), kept[0])
    return placed


async def off_loop(fn: Callable[[], T], size: int) -> T:
    """``fn()``, in a thread when it handles ``size`` bytes or more (placing hundreds of
    megabytes in shared memory takes a while: the trio loop must not wait for it)."""
    return await trio.to_thread.run_sync(fn) if size >= IN_THREAD else fn()


async def mapped_outcomes(worker: WorkerProcess, raw: list[tuple[int, WireValue]],
                          error: Callable[[str, str], bytes]) -> list[tuple[int, Payload]]:
    """A worker's answer, each large result mapped here; then the worker may let go of
    them (:func:`~._handoff.open_results`)."""
    outcomes, mapped = await off_loop(lambda: open_results(raw, error), flat_size(raw))
    if mapped:
        await tell(worker, ("drop", mapped, []))
    return outcomes


async def tell(worker: WorkerProcess, message: tuple[Any, ...]) -> None:
    """A frame the worker takes between batches and does not answer (if it lives)."""
    if worker.alive and not worker.killed:
        # if it died, what it held went with it
        with contextlib.suppress(OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            await write_all(worker.send.fileno(), worker.send.send_all, worker.lock,
                            frame(message))


def give_back(stock: SegmentStock, placed: Iterable[Packed | None], released: Iterable[int]
              ) -> None:
    """A call was answered: the segments of its arguments that the worker unmapped (by
    descriptor, ``released``) go back to ``stock`` (the pool sends an answered call's
    arguments to no worker again, and those of a call never answered stay with the dead
    worker's, until they are dropped)."""
    unmapped = set(released)
    for packed in placed:
        if packed is not None and packed.segment is not None and (
                packed.segment.fd in unmapped):
            stock.give(packed.segment)
