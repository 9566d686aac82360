"""The worker pool of a peer: task batches run in worker processes, with crashes contained.

Each worker is a process of its own (``python -m p2pcluster._worker_main``) that reads batch
requests from a pipe and writes the answers to another, in order. The peer may queue a second
request behind the running one (two calls per worker when it has plenty of work): a worker
that finishes a batch starts the next at once, without waiting for the peer's process to be
scheduled, which on a loaded machine makes 0.97 of the ideal throughput for 50 ms tasks
instead of 0.85. Large values cross through shared memory, not the pipe (:mod:`._handoff`).

- **Batches.** :meth:`WorkerPool.run` sends a whole batch to one worker in one round trip, so
  tiny tasks cost microseconds, not a pipe round trip each.
- **Poison tasks.** When a worker dies in a batch, the batch is re-run one task at a time to
  find the culprit; the others complete normally. A task that has killed :data:`MAX_CRASHES`
  workers on its own is ``TaskStatus.POISON`` and is not run again (the crash of the whole
  batch is attributed to no one). Tasks of the batch that ran before the crash run again:
  execution is at least once. A call queued behind the one that crashed is sent again to a
  live worker, without counting a crash.
- **Timeouts.** With ``timeout``, each task runs alone, on a started worker with nothing else
  queued, and its worker is killed when time is up: ``TaskStatus.TIMEOUT``. Killing, rather
  than interrupting the task in a worker that lives on, is the only way to stop C code and to
  be sure no half-updated state survives; the price is a process start-up (0.2 to 1 s), before
  the next timed task's clock starts.
- **Cancellation.** A request cannot be taken back from a pipe: cancelling a call kills its
  worker (the other call queued on it is sent again elsewhere) and a new one starts.
- **Forks.** Each worker leads a process group of its own, and a task's children are in it:
  a kill (timeout, cancellation, the pool's exit) is a ``SIGKILL`` to the whole group. A
  worker is dead when its process exits, whoever still holds its pipes (a child that
  called ``setsid`` escapes the group, but not this).
Lifetime: no worker outlives the ``async with`` of :func:`open_worker_pool`: at exit the
request pipes close, idle workers exit, busy ones are killed. If the peer process is killed,
each worker notices within half a second (its parent changes) and exits, even mid-task.
Ctrl-C: workers start in a session of their own and ignore ``SIGINT``, so a terminal's signal
reaches only the peer, which cancels its calls and kills the busy workers.
The workers put the peer's ``sys.path`` in front of their own, so a module the peer can import
from its working directory or its path, the workers can too, as with ``multiprocessing``.
"""

from __future__ import annotations

import math
import pickle
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from ._fastwrite import write_all
from ._handoff import wire_value
from ._packed import Packed, Payload
from ._poolshare import SharedWires, give_back, mapped_outcomes, off_loop
from ._proto.wiretypes import TaskStatus
from ._refs import FunctionRef
from ._shm import SegmentStock
from ._tasklog import log_task_output
from ._taskoutput import TaskLabels
from ._taskring import TaskRun, task_runs
from ._values import encode_error
from ._workerproc import (
    Call,
    CallTarget,
    Crashed,
    Resend,
    WorkerProcess,
    frame,
    how_it_died,
    read_frame,
    start_worker_process,
)

__all__ = ["MAX_CRASHES", "WORKER_MAIN", "BatchResult", "Outcome", "WorkerPool",
           "WorkerPoolStatistics", "open_worker_pool"]

#: The main module of a worker process.
WORKER_MAIN = "p2pcluster._worker_main"
#: A task that kills this many workers, run alone, is not run again.
MAX_CRASHES = 3
#: Seconds the pool's exit waits for workers to finish before it kills them.
GRACE_PERIOD = 0.5
#: Calls queued on one worker at most (the running one and the next).
MAX_QUEUED = 2
#: Seconds the pool reads a dead worker's pipe for answers it wrote before it exited.
DRAIN = 0.5


@dataclass(frozen=True, slots=True)
class Outcome:
    """One task's ``TaskStatus``, CBOR payload (a large one packed), and run (if any)."""
    status: int
    payload: Payload
    run: TaskRun | None = None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcomes of a batch, in order, and the seconds the workers spent on it. A batch
    cut short by its time limit has fewer outcomes than tasks: those of the first ones."""

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

    def __init__(self, slots: int, cache_root: Path, nursery: trio.Nursery, *,
                 label_output: bool = False) -> None:
        self.slots = slots
        self._label_output = label_output
        self._cache_root = str(cache_root)
        self._nursery = nursery
        self._workers: list[WorkerProcess] = []
        self._shared = SharedWires()  #: shared values, in shared memory for the workers
        self.segments = SegmentStock()  #: argument segments no worker maps any more
        self._changed = trio.Event()
        self._closing = False
        self._batches = self._tasks = self._crashes = self._timeouts = self._poisoned = 0

    def statistics(self) -> WorkerPoolStatistics:
        idle = sum(1 for w in self._workers if w.alive and w.ready and not w.pending)
        return WorkerPoolStatistics(self.slots, idle, self._batches, self._tasks,
                                    self._crashes, self._timeouts, self._poisoned)

    async def run(
        self, ref: FunctionRef, payloads: Sequence[Payload], *, timeout: float | None = None,
        max_result: int = 2**62, limit_where: str = "this peer", time_limit: float | None = None,
        labels: TaskLabels | None = None, shared: Mapping[bytes, Payload] | None = None,
    ) -> BatchResult:
        """Run ``ref`` once per payload (each from :func:`~._values.encode_call`), in order.

        Up to two calls per worker are queued; more wait for room. Cancelling a call kills
        the worker that has it. A result that encodes to more than ``max_result`` bytes (the
        limit of ``limit_where``) fails its task instead (:func:`~._worker_main.run_batch`).
        Once ``time_limit`` seconds of the batch have run, it stops after its current task;
        the result then has outcomes for the first tasks only. ``labels`` (the job, a task id
        per payload) label what each task prints in the log, if the pool was opened with
        ``label_output``. ``shared`` holds the shared values the calls use, by digest.
        """
        labels = labels if self._label_output else None
        self._batches += 1
        target = CallTarget(ref.to_wire(), max_result, limit_where, time_limit, shared or {})
        if timeout is None and len(payloads) > 1:
            try:
                answer = await self._call(target, payloads, labels, alone=False)
                assert answer is not None  # no timeout, so an answer
                self._tasks += len(answer[0])
                return BatchResult(*answer)
            except Crashed:
                self._crashes += 1  # the culprit is unknown: run them one by one
        outcomes: list[Outcome] = []
        seconds = 0.0
        for i, payload in enumerate(payloads):
            outcome, spent = await self._run_alone(
                target, payload, None if labels is None else labels.one(i), timeout)
            outcomes.append(outcome)
            seconds += spent
            if time_limit is not None and seconds >= time_limit:
                break
        self._tasks += len(outcomes)
        return BatchResult(outcomes, seconds)

    async def _run_alone(self, target: CallTarget, payload: Payload, labels: TaskLabels | None,
                         timeout: float | None) -> tuple[Outcome, float]:
        last = ""
        for _ in range(MAX_CRASHES):
            try:
                answer = await self._call(target, [payload], labels,
                                          alone=timeout is not None, timeout=timeout)
            except Crashed as exc:
                self._crashes += 1
                last = str(exc)
                continue
            if answer is None:
                assert timeout is not None
                self._timeouts += 1
                return Outcome(TaskStatus.TIMEOUT, encode_error(
                    "TimeoutError", f"the task exceeded its timeout of {timeout:g} s")), timeout
            (outcome,), seconds = answer
            return outcome, seconds
        self._poisoned += 1
        message = (f"the task crashed its worker process {MAX_CRASHES} times (last: {last}); "
                   "not retried again")
        return Outcome(TaskStatus.POISON, encode_error("PoisonTask", message)), 0.0

    async def _call(self, target: CallTarget, payloads: Sequence[Payload],
                    labels: TaskLabels | None, *, alone: bool,
                    timeout: float | None = None) -> tuple[list[Outcome], float] | None:
        """Run one request on a worker; None if ``timeout`` ran out (the worker is killed).

        A timed call's clock starts once it has a started worker to itself.
        """
        placed: list[Packed | None] = []  #: alive (with their segments) until the call ends
        wires = await off_loop(lambda: [wire_value(p, placed) for p in payloads],
                               sum(map(len, payloads)))
        request = target.request(self._cache_root, wires, labels)
        while True:
            await self._shared.ready(target.shared)
            worker = await self._pick(alone)
            # From here to the write, no checkpoint: calls reach the pipe in pending's order.
            shares = self._shared.for_worker(worker.shared, target.shared)
            call = Call(request)
            worker.pending.append(call)
            with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
                try:
                    await write_all(worker.send.fileno(), worker.send.send_all, worker.lock,
                                    (frame(("share", shares)) if shares else b"") + request)
                    await call.done.wait()
                except BaseException:
                    if not call.done.is_set():
                        worker.kill()  # a request cannot be taken back from the pipe
                        with trio.CancelScope(shield=True):
                            await worker.process.wait()  # reaped before the caller goes on
                    raise
            if scope.cancelled_caught:
                return None
            if isinstance(call.error, Resend):
                continue
            if call.error is not None:
                raise call.error
            raw, seconds, runs, released = call.result
            give_back(self.segments, placed, released)
            outcomes = await mapped_outcomes(worker, raw, encode_error)
            ran = task_runs(runs, worker.slot, len(outcomes))
            return [Outcome(s, p, r) for (s, p), r in zip(outcomes, ran, strict=True)], seconds

    async def drop_shared(self, digests: Sequence[bytes]) -> None:
        """Every worker forgets these shared values (their memory goes with the last)."""
        await self._shared.drop(self._workers, digests)

    async def _pick(self, alone: bool) -> WorkerProcess:
        """The live worker with the fewest calls queued (for ``alone``: a started one with
        none), waiting for one if need be."""
        while True:
            live = [w for w in self._workers if w.alive and not w.killed]
            if alone:
                live = [w for w in live if w.ready and not w.pending]
            else:
                live = [w for w in live if len(w.pending) < MAX_QUEUED]
            if live:
                return min(live, key=lambda w: (len(w.pending), not w.ready))
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _spawn(self) -> None:
        if self._closing:
            return
        worker = await start_worker_process(WORKER_MAIN, label_output=self._label_output)
        worker.slot = min(set(range(len(self._workers) + 1)) - {w.slot for w in self._workers})
        self._workers.append(worker)
        self._nursery.start_soon(self._serve_worker, worker)
        paths = [p for p in sys.path if p]
        try:
            async with worker.lock:
                await worker.send.send_all(frame(paths))
        except BaseException:
            worker.kill()
            raise
        if self.closing():  # the pool closed while this worker started
            await worker.send.aclose()
        self._notify()

    def closing(self) -> bool:
        return self._closing

    async def start(self) -> None:
        """Spawn the pool's workers; each comes up in the background (a call sent before it is
        up waits in its pipe)."""
        for _ in range(self.slots):
            await self._spawn()

    async def _serve_worker(self, worker: WorkerProcess) -> None:
        """Read the worker's answers in order; when it dies, fail or resend its calls and
        start another (unless the pool is closing)."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_exit, worker, nursery.cancel_scope)
                for name, stream in worker.outputs():
                    nursery.start_soon(log_task_output, stream, name, worker.process.pid)
                await self._read_answers(worker)
                _drain(nursery.cancel_scope)
        except BaseException:  # cancelled: the pool is going away (Ctrl-C, an error)
            worker.kill()
            raise
        finally:
            worker.alive = False
            with trio.CancelScope(shield=True):
                if worker.process.returncode is None:  # its pipe ended, DRAIN ago: done for
                    worker.kill_group()
                await worker.process.wait()
                worker.kill_group()  # what its tasks forked goes with it
                await worker.send.aclose()
                await worker.receive.aclose()
                for _, stream in worker.outputs():
                    await stream.aclose()
            how = how_it_died(worker.process.returncode)
            first = True
            while worker.pending:
                call = worker.pending.popleft()
                crashed = first and not worker.killed
                call.finish(error=Crashed(how) if crashed else Resend())
                first = False
            self._workers.remove(worker)
            if not self._closing:
                self._nursery.start_soon(self._spawn)
            self._notify()

    async def _read_answers(self, worker: WorkerProcess) -> None:
        """Hand the worker's answers to its calls, in order, until its pipe ends or breaks."""
        buffer = bytearray()
        while True:
            try:
                answer = await read_frame(worker.receive, buffer)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                    pickle.UnpicklingError, EOFError):
                return
            if answer is None:
                return
            if answer == "ready":
                worker.ready = True
            elif worker.pending:
                worker.pending.popleft().finish(answer)
            self._notify()

    async def _watch_exit(self, worker: WorkerProcess, reading: trio.CancelScope) -> None:
        """A worker is dead when its process exits, not when its pipe ends: a child that a
        task forked may hold the pipe open. On exit, no call goes to it any more; kill the
        group and give the reader :data:`DRAIN` seconds for what it wrote before it died."""
        await worker.process.wait()
        worker.alive = False
        self._notify()
        worker.kill_group()
        _drain(reading)

    async def aclose(self) -> None:
        """Stop every worker: each idle one exits on EOF; any still busy after
        :data:`GRACE_PERIOD` is killed."""
        self._closing = True
        for worker in list(self._workers):
            with trio.CancelScope(shield=True):
                await worker.send.aclose()  # an idle worker exits on EOF
        with trio.move_on_after(GRACE_PERIOD) as scope:
            scope.shield = True
            for worker in list(self._workers):
                await worker.process.wait()
        for worker in list(self._workers):
            worker.kill()


def _drain(reading: trio.CancelScope) -> None:
    reading.deadline = min(reading.deadline, trio.current_time() + DRAIN)


@asynccontextmanager
async def open_worker_pool(workers: int, cache_root: Path, *, label_output: bool = False
                           ) -> AsyncIterator[WorkerPool]:
    """Start ``workers`` worker processes; stop them all when the block exits.

    The workers start in the background: the pool is usable at once, and requests sent
    before a worker is up wait in its pipe. With ``label_output`` (a daemon), what tasks
    print goes to the log, each line labelled (:mod:`._taskoutput`); without, the workers
    write to this process's stdout and stderr.
    """
    if workers < 0:
        raise ValueError(f"a worker pool cannot have {workers} workers")
    async with trio.open_nursery() as nursery:
        pool = WorkerPool(workers, cache_root, nursery, label_output=label_output)
        await pool.start()
        try:
            yield pool
        finally:
            await pool.aclose()

