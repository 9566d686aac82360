"""Slots: the tasks that turn the stealing machine's batches into work for the worker pool.

A peer runs ``batches_per_worker`` runners per worker process. Each takes a batch from the
machine (the machine decides how many may be out, and how large each is), brings what the
batch needs (its code from the job's owner, large arguments that stayed there, the shared
values its arguments name), runs it in
the pool, and hands the results and the worker seconds spent back to the machine. A runner
with nothing to take waits until the work service wakes one (:meth:`Slots.wake`).

A batch of a job that is cancelled, finished or orphaned is stopped (:meth:`Slots.stop`):
the pool kills the worker running it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, NoReturn

import trio

from ._codeship import CodeShipping, CodeUnavailable
from ._dataplane import DataPlane
from ._errors import ProtocolError, ValueTooLarge
from ._heldargs import HeldResults
from ._packed import Packed, Payload, as_bytes, uses
from ._pool import Outcome, WorkerPool
from ._proto.messages import JobSpec, TaskItem, TaskResult, TaskStatus
from ._proto.stealing import StealingMachine
from ._proto.workevents import Batch
from ._refs import FunctionRef
from ._sharing import SharedValues
from ._taskoutput import TaskLabels
from ._taskring import TaskLog
from ._values import decode_value, encode_error
from ._worker_main import NUMPY_UNAVAILABLE

__all__ = ["Ran", "Slots"]


class Ran(NamedTuple):
    """What came of a batch: results of the tasks that ran (or failed before running), the
    worker seconds spent (None if it did not run), the tasks it did not start because it
    reached its time limit, and the payloads of large results kept as the worker placed
    them (in shared memory), by task id: their results' payloads are empty. The job takes
    those of a job owned here from ``landed`` (:class:`~._heldargs.HeldResults`); the
    stealing machine hands the others back in a :class:`~._proto.workevents.PushValue`."""

    results: list[TaskResult]
    seconds: float | None
    unstarted: list[TaskItem]
    held: dict[int, Packed]


class Slots:
    """The runners of a peer. ``flush()`` is the work service's: call it after every change
    to the machine. ``name_of(peer)`` names a peer (for messages about limits). Large
    results of jobs owned here go to them through ``landed``. Every task that runs in a
    worker is recorded in ``tasks``."""

    def __init__(self, machine: StealingMachine, pool: WorkerPool, code: CodeShipping,
                 data: DataPlane, shared: SharedValues, *, flush: Callable[[], None],
                 name_of: Callable[[bytes], str], max_value_size: int,
                 landed: HeldResults, tasks: TaskLog | None = None) -> None:
        self._tasks = tasks or TaskLog()
        self._landed = landed
        self._machine = machine
        self._pool = pool
        self._code = code
        self._data = data
        self._shared = shared
        self._flush = flush
        self._name_of = name_of
        self._limit = max_value_size
        self._idle = trio.lowlevel.ParkingLot()  #: runners with nothing to take
        self._running: dict[bytes, set[trio.CancelScope]] = {}

    def wake(self) -> None:
        """One waiting runner tries to take a batch (if any runner waits)."""
        if self._idle:
            self._idle.unpark()

    def stop(self, job: bytes) -> None:
        """Stop every batch of ``job`` that runs here."""
        for scope in self._running.get(job, ()):
            scope.cancel()

    async def serve(self, runners: int) -> NoReturn:
        """Run ``runners`` runners until cancelled (none: a peer with no worker)."""
        async with trio.open_nursery() as nursery:
            for _ in range(runners):
                nursery.start_soon(self._runner)
            await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _runner(self) -> None:
        while True:
            batch = self._machine.take(trio.current_time())
            self._flush()
            if batch is None:
                await self._idle.park()
                continue
            await self._run(batch)

    async def _run(self, batch: Batch) -> None:
        job = batch.spec.job
        scope = trio.CancelScope()
        self._running.setdefault(job, set()).add(scope)
        ran = Ran([], None, [], {})
        try:
            with scope:
                ran = await self._execute(batch)
        finally:
            running = self._running.get(job)
            if running is not None:
                running.discard(scope)
                if not running:
                    del self._running[job]
            own = batch.spec.owner == self._machine.node_id  # (its results go to the job)
            with self._landed.holding(job, ran.held if own else {}):
                self._machine.finished(trio.current_time(), batch, ran.results, ran.seconds,
                                       ran.unstarted, held=None if own else ran.held)
                if any(map(_lacks_numpy, ran.results)):  # the rest of the job goes elsewhere
                    self._machine.decline(trio.current_time(), job)
                self._flush()

    async def _execute(self, batch: Batch) -> Ran:
        """Bring what the batch needs and run it."""
        spec = batch.spec
        try:
            await self._code.ensure(spec)
        except CodeUnavailable as exc:
            error = encode_error("CodeUnavailable", str(exc))
            return Ran([TaskResult(item.id, TaskStatus.ERROR, error) for item in batch.items],
                       None, [], {})
        items, payloads, failed = await self._data.fetch_args(spec, batch.items,
                                                              self._pool.segments)
        if not items:
            return Ran(failed, None, [], {})
        shared, unshared = await self._shared_values(spec, items, payloads)
        if unshared:
            return Ran(failed + unshared, None, [], {})
        ref = FunctionRef(spec.module, spec.qualname, spec.code, spec.includes)
        limit, where = self._result_limit(spec)
        labels = TaskLabels(spec.job.hex()[:8], [item.id for item in items])
        ran = await self._pool.run(ref, payloads, timeout=spec.timeout,
                                   max_result=limit, limit_where=where,
                                   time_limit=batch.time_limit, shared=shared, labels=labels)
        results, held = self._results(items, ran.outcomes)
        for item, outcome in zip(items, ran.outcomes, strict=False):
            if outcome.run is not None:
                self._tasks.record(spec, item.id, outcome.status, outcome.run)
        return Ran(failed + results, ran.worker_seconds, items[len(ran.outcomes):], held)

    def _results(self, items: list[TaskItem], outcomes: list[Outcome]
                 ) -> tuple[list[TaskResult], dict[int, Packed]]:
        """The batch's results for the machine. A large packed one stays as the worker
        placed it (its arrays in shared memory): pushed to a job owned elsewhere, it is
        sealed from there; a job owned here decodes it in place. The rest are joined into
        plain CBOR."""
        inline = self._machine.policy.inline_limit
        results: list[TaskResult] = []
        held: dict[int, Packed] = {}
        for item, outcome in zip(items, outcomes, strict=False):
            payload = outcome.payload
            if isinstance(payload, Packed) and len(payload) > inline:
                held[item.id] = payload
                results.append(TaskResult(item.id, outcome.status, b""))
            else:
                results.append(TaskResult(item.id, outcome.status, as_bytes(payload)))
        return results, held

    async def _shared_values(self, spec: JobSpec, items: list[TaskItem], payloads: list[Payload]
                             ) -> tuple[dict[bytes, Payload], list[TaskResult]]:
        """The shared values the tasks use; or, if they cannot be had, each task's error."""
        try:
            digests = {d for payload in payloads for d in uses(payload)}
            return (await self._shared.ensure(spec, digests) if digests else {}), []
        except (ProtocolError, ValueTooLarge) as exc:
            error = encode_error(type(exc).__name__, str(exc))
            return {}, [TaskResult(item.id, TaskStatus.ERROR, error) for item in items]

    def _result_limit(self, spec: JobSpec) -> tuple[int, str]:
        """The largest result a task of ``spec`` may return, and whose limit that is."""
        me = self._machine.node_id
        if self._limit < spec.max_value_size:
            return self._limit, f"peer {self._name_of(me)}, which ran the task"
        owner = "this peer" if spec.owner == me else f"peer {self._name_of(spec.owner)}"
        return spec.max_value_size, f"{owner}, which owns the job"


def _lacks_numpy(result: TaskResult) -> bool:
    """The task failed because its values hold arrays and this peer has no NumPy."""
    if result.status != TaskStatus.ERROR or len(result.payload) > 64 * 1024:
        return False
    try:
        info = decode_value(result.payload)
    except Exception:  # not ours to judge: the owner reports it
        return False
    return isinstance(info, dict) and info.get("type") == NUMPY_UNAVAILABLE
