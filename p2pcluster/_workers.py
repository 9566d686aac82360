"""The worker pool of a peer: task batches run in worker processes, with crashes contained.

Built on trio-parallel: each call runs in a warm worker process, a cancelled call kills its
worker (``kill_on_cancel``), and a worker that dies raises ``BrokenWorkerError`` instead of
hanging. The pool adds what a cluster needs on top:

- **Batches.** :meth:`WorkerPool.run` sends a whole batch to one worker in one round trip, so
  tiny tasks cost microseconds, not a pipe round trip each.
- **Poison tasks.** When a worker dies in a batch, the batch is re-run one task at a time to
  find the culprit; the others complete normally. A task that has killed
  :data:`MAX_CRASHES` workers on its own is ``POISON`` and is not run again. The crash of
  the whole batch is attributed to no one, so every task gets :data:`MAX_CRASHES` tries alone.
  Tasks of the batch that ran before the crash run again: execution is at least once.
- **Timeouts.** With ``timeout``, each task runs alone (a batch cannot be timed per task) and
  its worker is killed when time is up: the outcome is ``TIMEOUT``. Killing, rather than
  interrupting the task inside a worker that lives on, is the only way to stop C code and to
  be sure no half-updated state survives; the price is a process start-up for the next task.
  That start-up (0.2 to 1 s) happens before the next task's clock starts, not within it.

Lifetime: no worker outlives the ``async with`` of :func:`open_worker_pool`. Idle workers
never retire while the pool is open; at exit their pipes close and they exit, and a busy one
is killed when the call that uses it is cancelled. If the peer process itself is killed, each
worker exits when it next reads its closed pipe, so at worst after its current task.

Ctrl-C: trio-parallel sets ``SIGINT`` to ``SIG_IGN`` in every worker before its first job, so
of the ``SIGINT`` a terminal sends to the whole process group only the peer's copy counts. Trio
raises ``KeyboardInterrupt`` in the peer, which cancels the running calls, which kill their
workers; the idle ones exit when the pool closes. Measured with both workers busy in
``time.sleep(30)``: the peer exits 0.1 s after the signal, no worker prints anything and none
is left (``tests/io/test_workers.py`` checks this). The one gap is a worker that is still
starting (spawning Python and importing, 0.2 to 1 s): Python's default handler is in place until
trio-parallel's runs, so such a worker prints a ``KeyboardInterrupt`` traceback as it dies. It
still does not linger. Warming the workers up at open confines this to the pool's first second
and to replacements after a crash or a timeout.

Spawned workers import the main module of the peer process again, as ``__mp_main__``, like any
``multiprocessing`` spawn: a script that opens a pool needs the ``if __name__ == "__main__":``
guard. ``python -m p2pcluster`` and the ``p2pcluster`` command have it. A worker that cannot
start at all (for example because of a missing guard) fails the warm-up, and with it the pool.
"""

from __future__ import annotations

import math
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import trio_parallel

from ._code import FunctionRef
from ._worker import ERROR, OK, encode_error, run_batch, warm_up

__all__ = [
    "ERROR", "OK", "POISON", "TIMEOUT", "MAX_CRASHES",
    "BatchResult", "Outcome", "WorkerPool", "WorkerPoolStatistics", "open_worker_pool",
]

POISON = 2
TIMEOUT = 3
#: A task that kills this many workers, run alone, is not run again.
MAX_CRASHES = 3
#: Seconds the pool's exit waits for idle workers to exit before it kills them.
GRACE_PERIOD = 5.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """One task's result: ``status`` is OK, ERROR, POISON or TIMEOUT; ``payload`` is CBOR."""

    status: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcomes of a batch, in order, and the seconds the workers spent on it."""

    outcomes: list[Outcome]
    worker_seconds: float


@dataclass(frozen=True, slots=True)
class WorkerPoolStatistics:
    """Counters since the pool opened. ``crashes`` counts dead workers, whoever killed them;
    ``idle_workers`` is the number of started workers waiting for a batch right now."""

    slots: int
    idle_workers: int
    batches: int
    tasks: int
    crashes: int
    timeouts: int
    poisoned: int


class WorkerPool:
    """Runs batches on ``slots`` worker processes. Create it with :func:`open_worker_pool`."""

    def __init__(self, ctx: Any, slots: int, cache_root: Path) -> None:
        self.slots = slots
        self._ctx = ctx
        self._limiter = trio.CapacityLimiter(slots)
        self._cache_root = str(cache_root)
        self._batches = self._tasks = self._crashes = self._timeouts = self._poisoned = 0

    def statistics(self) -> WorkerPoolStatistics:
        return WorkerPoolStatistics(
            self.slots, self._ctx.statistics().idle_workers, self._batches, self._tasks,
            self._crashes, self._timeouts, self._poisoned,
        )

    async def run(
        self, ref: FunctionRef, payloads: Sequence[bytes], *, timeout: float | None = None
    ) -> BatchResult:
        """Run ``ref`` once per payload (each from :func:`~._code.encode_call`), in order.

        Waits for a free worker; callers should keep at most ``slots`` calls running.
        Cancelling the call kills the worker that runs it.
        """
        self._batches += 1
        self._tasks += len(payloads)
        wire = ref.to_wire()
        if timeout is None and len(payloads) > 1:
            try:
                outcomes, seconds = await self._call(wire, payloads)
                return BatchResult(outcomes, seconds)
            except trio_parallel.BrokenWorkerError:
                self._crashes += 1  # the culprit is unknown: run them one by one
        results = [await self._run_alone(wire, p, timeout) for p in payloads]
        return BatchResult([o for o, _ in results], sum(s for _, s in results))

    async def _warm_up(self) -> None:
        await self._ctx.run_sync(warm_up, kill_on_cancel=True, limiter=self._limiter)

    async def _call(
        self, wire: tuple[Any, ...], payloads: Sequence[bytes]
    ) -> tuple[list[Outcome], float]:
        raw, seconds = await self._ctx.run_sync(
            run_batch, self._cache_root, wire, list(payloads),
            kill_on_cancel=True, limiter=self._limiter,
        )
        return [Outcome(status, payload) for status, payload in raw], seconds

    async def _run_alone(
        self, wire: tuple[Any, ...], payload: bytes, timeout: float | None
    ) -> tuple[Outcome, float]:
        last = ""
        for _ in range(MAX_CRASHES):
            if timeout is not None and not self._ctx.statistics().idle_workers:
                await self._warm_up()  # start a worker before the clock does
            try:
                with trio.move_on_after(math.inf if timeout is None else timeout):
                    (outcome,), seconds = await self._call(wire, [payload])
                    return outcome, seconds
            except trio_parallel.BrokenWorkerError as exc:
                self._crashes += 1
                last = _how_it_died(exc)
                continue
            assert timeout is not None  # only the timeout can cancel the scope
            self._timeouts += 1
            return Outcome(TIMEOUT, encode_error(
                "TimeoutError", f"the task exceeded its timeout of {timeout:g} s")), timeout
        self._poisoned += 1
        message = (f"the task crashed its worker process {MAX_CRASHES} times (last: {last}); "
                   "not retried again")
        return Outcome(POISON, encode_error("PoisonTask", message)), 0.0


def _how_it_died(exc: BaseException) -> str:
    """"exit code 1" or "killed by SIGSEGV", from the process trio-parallel attaches."""
    code = next((getattr(a, "exitcode", None) for a in exc.args if hasattr(a, "exitcode")), None)
    if code is None:
        return "the worker died"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@asynccontextmanager
async def open_worker_pool(workers: int, cache_root: Path) -> AsyncIterator[WorkerPool]:
    """Start ``workers`` worker processes; stop them all when the block exits.

    The workers start in the background: the pool is usable at once, and a batch that comes
    before the warm-up ends waits for the first worker to be ready, no longer than it would
    have taken to start one itself.
    """
    if workers < 1:
        raise ValueError(f"a worker pool needs at least one worker, got {workers}")
    async with trio_parallel.open_worker_context(
        idle_timeout=math.inf, grace_period=GRACE_PERIOD
    ) as ctx:
        pool = WorkerPool(ctx, workers, cache_root)
        async with trio.open_nursery() as nursery:
            for _ in range(workers):
                nursery.start_soon(pool._warm_up)
            try:
                yield pool
            finally:
                nursery.cancel_scope.cancel()
