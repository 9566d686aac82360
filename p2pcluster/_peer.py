"""`open_peer`: a whole peer in one trio task tree — membership, discovery, the stealing
machine, the work links, and the worker processes — and the trio-native job API.

The stealing machine (:mod:`._proto.stealing`) decides; this module carries out:

- **Slots.** Two runner tasks per worker process take batches from the machine (the second
  only while the queue is long, so the next batch waits in the worker's pipe); each fetches the
  job's code from its owner if this peer lacks it, runs its batch in the pool, and hands the
  results back. A batch holds ``chunksize`` tasks, or as many as fill about
  :data:`TARGET_BATCH` seconds by the task times measured so far (one task, until the first
  measurement): 10,000 no-op tasks cost a few dozen round trips to a worker, and 64 tasks of
  50 ms are handed out one by one, so none waits behind another.
- **Links.** Work messages to a peer go in order over one handshaken stream per destination,
  opened on first use and closed when the peer leaves or fails. A grant that could not be
  sent is handed back to the machine.
- **Membership.** Joins, failures and metadata updates become ``peer_up``/``peer_down``/
  ``peer_queue``; this peer publishes its surplus in its metadata, at most every
  :data:`META_INTERVAL` seconds.
- **Jobs.** A job submitted here is owned here: :class:`Job` collects its results (first
  result per task) and ends when every task has one, when it is cancelled, or when the
  submitter's scope is cancelled (``async with`` cancels its job on exit).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ._bundles import CodeBundle
from ._codecache import CodeCache
from ._config import Config
from ._dataplane import receive_value, send_value, skip_value
from ._discovery import Discovered, serve_discovery
from ._errors import P2PClusterError, ProtocolError, too_large
from ._jobs import CodeRegistry, JobRequest, JobResult, encode_map_args, unpack
from ._membership import Membership, serve_membership
from ._netutil import choose_interface
from ._pool import WorkerPool, WorkerPoolStatistics, open_worker_pool
from ._proto.envelope import Keyring
from ._proto.membership import EventKind, Member
from ._proto.messages import (
    WORK_MESSAGES,
    AckStatus,
    Code,
    FetchArgs,
    FetchCode,
    JobSpec,
    Message,
    PushResult,
    ResultAck,
    Results,
    StealGrant,
    TaskItem,
    TaskResult,
    TaskStatus,
    ValueHeader,
)
from ._proto.meta import NodeMeta
from ._proto.policy import WorkPolicy
from ._proto.stealing import (
    Batch,
    JobDropped,
    JobFinished,
    PushValue,
    ResultsReady,
    StealingMachine,
    StealingStatistics,
)
from ._refs import FunctionRef
from ._secret import load_secrets
from ._secure import SecureStream
from ._transport import Address
from ._values import encode_call, encode_error
from ._version import __version__

__all__ = ["Job", "Peer", "PeerStatistics", "open_peer"]

log = logging.getLogger("p2pcluster.peer")

#: Seconds a leaving peer waits for its last work messages (its jobs' CancelJobs) to go out.
LINK_DRAIN = 0.5
#: Seconds allowed to fetch a code bundle from a job's owner.
FETCH_TIMEOUT = 30.0
#: Times a work message lost with a broken link is sent again on a new one.
LINK_RETRIES = 1
#: Attempts to push a large result to its owner, and the pause between them.
PUSH_ATTEMPTS = 3
PUSH_PAUSE = 0.5


class CodeUnavailable(P2PClusterError):
    """A job's code could not be fetched from its owner."""


@dataclass(frozen=True, slots=True)
class PeerStatistics:
    """What a peer has done: scheduling counters and worker-pool counters."""

    stealing: StealingStatistics
    workers: WorkerPoolStatistics
    jobs_owned: int


class Job:
    """A job owned by this peer: its results as they arrive, and its end.

    Listeners get each batch of new results (first results only, as :class:`JobResult`),
    in the peer's trio thread; a listener must not block. The job keeps no results itself:
    whoever consumes them holds them. ``done`` and ``per_peer`` count finished tasks.
    """

    def __init__(self, cancel: Callable[[Job], None], spec: JobSpec, total: int,
                 started: float = 0.0) -> None:
        self._cancel = cancel
        self.spec = spec
        self.total = total
        self.started = started
        self.done = 0
        self.per_peer: Counter[str] = Counter()
        self.finished = trio.Event()
        self.cancelled = False
        self.listeners: list[Callable[[list[JobResult]], None]] = []
        self.on_finish: list[Callable[[], None]] = []

    @property
    def id(self) -> bytes:
        return self.spec.job

    def finish(self) -> None:
        """(The peer) the job is over: wake its waiters and call ``on_finish``."""
        if self.finished.is_set():
            return
        self.finished.set()
        for callback in self.on_finish:
            try:
                callback()
            except Exception:
                log.exception("an end listener of job %s failed", self.id.hex()[:8])

    def cancel(self) -> None:
        """Stop the job everywhere (within a round trip); results that arrive are ignored."""
        if not self.finished.is_set():
            self.cancelled = True
            self._cancel(self)

    async def wait(self) -> None:
        await self.finished.wait()

    def deliver(self, batch: list[JobResult]) -> None:
        """(The peer) hand new results to the listeners."""
        self.done += len(batch)
        self.per_peer.update(result.peer for result in batch)
        for listener in list(self.listeners):
            try:
                listener(batch)
            except Exception:  # one consumer's bug must not take the peer (and others' jobs) down
                log.exception("a listener of job %s failed; it gets no more results",
                              self.id.hex()[:8])
                self.listeners.remove(listener)


class Peer:
    """A running peer. Get one with :func:`open_peer`.

    The trio-native API: :meth:`run` one call, :meth:`map` a function over iterables,
    :meth:`as_completed` to get ``(index, value)`` pairs as tasks finish. Task functions must
    be module-level functions (see ``docs/jobs.md``); arguments and results travel as CBOR.
    """

    def __init__(self, config: Config, membership: Membership, pool: WorkerPool,
                 cache: CodeCache, *, registry: CodeRegistry, nursery: trio.Nursery,
                 started: int = 0) -> None:
        self.config = config
        self.membership = membership
        self.pool = pool
        self.cache = cache
        self.registry = registry
        self._nursery = nursery
        self.machine = StealingMachine(membership.machine.node_id, pool.slots,
                                       random.Random(int.from_bytes(os.urandom(8), "big")),
                                       WorkPolicy.from_config(config))
        self._addresses: dict[bytes, Address] = {}
        self._names: dict[bytes, str] = {membership.me.id: membership.me.name}
        self._links: dict[bytes, trio.MemorySendChannel[tuple[Message, int]]] = {}
        self._gone: set[bytes] = set()  #: peers membership declared dead or left
        self._jobs: dict[bytes, Job] = {}
        self._running: dict[bytes, set[trio.CancelScope]] = {}
        self._bundles: dict[str, CodeBundle] = {}
        self._fetching: dict[str, trio.Event] = {}
        self._idle = trio.lowlevel.ParkingLot()  #: runners waiting for a batch
        self._deadline: float | None = None
        self._deadline_changed = trio.Event()
        self._surplus_changed = trio.Event()
        self._published = 0
        #: How this peer chose its address, in words (for logs).
        self.where = ""
        #: When this peer started (Unix seconds; 0 if it does not say), in its metadata.
        self.started = started

    # --- public -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.membership.me.name

    @property
    def node_id(self) -> bytes:
        return self.membership.machine.node_id

    def members(self) -> list[Member]:
        """The member table, this peer included."""
        return self.membership.members()

    def statistics(self) -> PeerStatistics:
        return PeerStatistics(self.machine.statistics(), self.pool.statistics(),
                              len(self._jobs))

    async def run(self, fn: Callable[..., Any], /, *args: Any, timeout: float | None = None,
                  **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on some peer and return its value (or raise its
        :class:`~p2pcluster.TaskError`). ``timeout`` limits the task, in seconds."""
        request = self.registry.request(fn, [encode_call(args, kwargs)], timeout=timeout,
                                        max_value_size=self.config.max_value_size)
        async with self.open_job(request) as job:
            results = _collect(job)
            await job.wait()
        return unpack(*results[0][1:])

    async def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
                  timeout: float | None = None, chunksize: int | None = None) -> list[Any]:
        """``[fn(*xs) for xs in zip(*iterables)]``, across the cluster, in order.

        The first task error is raised (after the job is cancelled). ``timeout`` is per task.
        """
        request = self.registry.request(fn, encode_map_args(iterables), timeout=timeout,
                                        chunksize=chunksize,
                                        max_value_size=self.config.max_value_size)
        async with self.open_job(request) as job:
            failed = trio.Event()
            results = _collect(job)

            def check(batch: list[JobResult]) -> None:
                if any(result.status for result in batch):
                    failed.set()

            job.listeners.append(check)
            async with trio.open_nursery() as nursery:
                async def watch() -> None:
                    await failed.wait()
                    nursery.cancel_scope.cancel()
                nursery.start_soon(watch)
                await job.wait()
                nursery.cancel_scope.cancel()
            first_error = next((i for i in sorted(results) if results[i].status), None)
            if first_error is not None:
                unpack(*results[first_error][1:])
        return [unpack(*results[i][1:]) for i in range(job.total)]

    async def as_completed(self, fn: Callable[..., Any], *iterables: Iterable[Any],
                           timeout: float | None = None, chunksize: int | None = None
                           ) -> AsyncGenerator[tuple[int, Any], None]:
        """Yield ``(index, value)`` as tasks finish; a task error is raised when reached.

        Use ``async with contextlib.aclosing(peer.as_completed(...)) as results:``; leaving
        early cancels the rest of the job.
        """
        request = self.registry.request(fn, encode_map_args(iterables), timeout=timeout,
                                        chunksize=chunksize,
                                        max_value_size=self.config.max_value_size)
        send, receive = trio.open_memory_channel[JobResult](math.inf)
        async with self.open_job(request) as job:
            def forward(batch: list[JobResult]) -> None:
                for item in batch:
                    send.send_nowait(item)
            job.listeners.append(forward)
            for _ in range(job.total):
                result = await receive.receive()
                yield result.task, unpack(*result[1:])

    @asynccontextmanager
    async def open_job(self, request: JobRequest) -> AsyncIterator[Job]:
        """Own a job while the block runs; leaving the block early cancels it."""
        job = self.submit(request)
        try:
            yield job
        finally:
            job.cancel()

    def meta(self, surplus: int = 0) -> NodeMeta:
        """What this peer publishes about itself, with ``surplus`` tasks to give."""
        return NodeMeta(self.pool.slots, surplus, self.config.tags, __version__, self.started)

    def peer_name(self, node_id: bytes) -> str:
        """The name of the member with ``node_id`` (its id's prefix if unknown)."""
        return self._names.get(node_id, node_id.hex()[:8])

    def holders(self, job: bytes) -> dict[int, bytes]:
        """For a job owned here: unfinished task index -> the peer believed to hold it."""
        return self.machine.holders(job)

    def submit(self, request: JobRequest, *, max_value_size: int | None = None) -> Job:
        """Own a new job and queue its tasks here (the caller must end or cancel it).

        ``max_value_size`` lowers this peer's limit on the job's results (a client that
        takes less)."""
        for digest, bundle in request.bundles.items():
            self._bundles[digest] = bundle
            if not self.cache.has(digest):
                self.cache.store(bundle)
        ref = request.ref
        spec = JobSpec(os.urandom(16), self.node_id, ref.module, ref.qualname, ref.job,
                       ref.includes, request.timeout, request.chunksize,
                       min(self.config.max_value_size, max_value_size or 2**62))
        job = Job(self._cancel, spec, len(request.payloads), trio.current_time())
        self._jobs[spec.job] = job
        self.machine.submit(trio.current_time(), spec, enumerate(request.payloads))
        self._flush()
        return job

    # --- the machine's driver ---------------------------------------------------------------

    def _cancel(self, job: Job) -> None:
        self.machine.cancel(trio.current_time(), job.id)
        self._flush()

    def _flush(self) -> None:
        machine = self.machine
        self._carry_out()
        for event in machine.take_events():
            if isinstance(event, ResultsReady):
                job = self._jobs.get(event.job)
                if job is not None:
                    name = self.peer_name(event.peer)
                    job.deliver([JobResult(r.id, r.status, r.payload, name)
                                 for r in event.results])
            elif isinstance(event, JobFinished):
                job = self._jobs.pop(event.job, None)
                if job is not None:
                    job.finish()
                self._stop_running(event.job)
            elif isinstance(event, JobDropped):
                job = self._jobs.pop(event.job, None)
                if job is not None:
                    job.finish()
                self._stop_running(event.job)
                if job is None:
                    log.debug("dropped job %s: %s", event.job.hex()[:8], event.reason)
        if machine.surplus() != self._published:
            self._surplus_changed.set()
        if self._idle and machine.peek() is not None:  # one waiting runner can take some
            self._idle.unpark()
        if machine.next_deadline() != self._deadline:
            self._deadline = machine.next_deadline()
            self._deadline_changed.set()
            self._deadline_changed = trio.Event()

    def _carry_out(self) -> None:
        for out in self.machine.take_outputs():
            if isinstance(out, PushValue):
                self._nursery.start_soon(self._push, out)
            else:
                self._send(out.dst, out.msg)

    def _stop_running(self, job: bytes) -> None:
        for scope in self._running.get(job, ()):
            scope.cancel()

    def _send(self, dst: bytes, msg: Message, attempt: int = 0) -> None:
        link = self._links.get(dst)
        if link is None:
            address = self._addresses.get(dst)
            if address is None:
                log.debug("no address for peer %s; dropped %s", dst.hex()[:8],
                          type(msg).__name__)
                self._undeliverable(dst, msg, "its address is unknown")
                return
            link, receive = trio.open_memory_channel[tuple[Message, int]](math.inf)
            self._links[dst] = link
            self._nursery.start_soon(self._link, dst, address, link, receive)
        link.send_nowait((msg, attempt))

    def _undeliverable(self, dst: bytes, msg: Message, why: str) -> None:
        """A work message that could not be sent. A grant's tasks come back here; results
        are lost, which the owner repairs (our holding reports stop naming those tasks)."""
        if isinstance(msg, StealGrant):
            self.machine.grant_failed(trio.current_time(), msg)
        elif isinstance(msg, Results):
            log.warning("could not deliver %d result(s) of job %s to peer %s (%s): %s; its "
                        "owner will run those tasks again", len(msg.results), msg.job.hex()[:8],
                        self._names.get(dst, dst.hex()[:8]), self._where(dst), why)

    def _where(self, peer: bytes) -> str:
        address = self._addresses.get(peer)
        return f"{address[0]}:{address[1]}" if address else "address unknown"

    async def _link(self, dst: bytes, address: Address,
                    link: trio.MemorySendChannel[tuple[Message, int]],
                    receive: trio.MemoryReceiveChannel[tuple[Message, int]]) -> None:
        current: tuple[Message, int] | None = None
        why = "the link closed"
        try:
            with trio.fail_after(2 * self.config.handshake_timeout):
                stream = await self.membership.wire.connect(address)
            async with stream:
                async for item in receive:
                    current = item
                    await stream.send(item[0])
                    current = None
        except (OSError, ProtocolError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            why = str(exc) or type(exc).__name__
            log.debug("work link to %s:%d failed: %s", *address, why)
        finally:
            if self._links.get(dst) is link:
                del self._links[dst]
            receive.close()
            self._relink(dst, self._unsent(current, receive), why)

    @staticmethod
    def _unsent(current: tuple[Message, int] | None,
                receive: trio.MemoryReceiveChannel[tuple[Message, int]]
                ) -> list[tuple[Message, int]]:
        lost = [current] if current is not None else []
        while True:
            try:
                lost.append(receive.receive_nowait())
            except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
                return lost

    def _relink(self, dst: bytes, lost: list[tuple[Message, int]], why: str) -> None:
        """Send what a broken link did not deliver again on a new one (once), unless the
        peer is gone; what still fails is undeliverable."""
        for msg, attempt in lost:
            if attempt < LINK_RETRIES and dst in self._addresses and dst not in self._gone:
                self._send(dst, msg, attempt + 1)
            else:
                self._undeliverable(dst, msg, why)
        if lost:
            self._flush()

    async def _drain_links(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until every queued work message has been sent."""
        with trio.move_on_after(timeout):
            while any(link.statistics().current_buffer_used for link in self._links.values()):
                await trio.sleep(0.005)

    async def _serve_stream(self, stream: SecureStream, first: Message) -> None:
        msg: Message | None = first
        while msg is not None:
            if isinstance(msg, FetchCode):
                bundle = self._bundles.get(msg.digest)
                await stream.send(Code(msg.digest, bundle.encode() if bundle else b""))
            elif isinstance(msg, FetchArgs):
                await self._serve_args(stream, msg)
                return
            elif isinstance(msg, PushResult):
                await self._take_pushed(stream, msg)
                return
            elif isinstance(msg, WORK_MESSAGES):
                self.machine.receive(trio.current_time(), msg)
                self._flush()
            else:
                return
            msg = await stream.receive()

    async def _timer(self) -> None:
        while True:
            deadline = self.machine.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._deadline_changed.wait()
            now = trio.current_time()
            if deadline is not None and now >= deadline:
                self.machine.tick(now)
                self._flush()

    async def _follow_membership(self, task_status: trio.TaskStatus[None]) -> None:
        async with self.membership.subscribe() as events:
            now = trio.current_time()
            for member in self.membership.members():
                if member.alive and member.id != self.node_id:
                    self._peer_up(now, member)
            self._flush()
            task_status.started()
            async for event in events:
                member = event.member
                if event.kind in (EventKind.JOIN, EventKind.RECOVER, EventKind.UPDATE):
                    self._peer_up(trio.current_time(), member)
                elif event.kind in (EventKind.FAIL, EventKind.LEAVE):
                    self._gone.add(member.id)
                    self.machine.peer_down(trio.current_time(), member.id)
                    link = self._links.pop(member.id, None)
                    if link is not None:
                        link.close()
                self._flush()

    def _peer_up(self, now: float, member: Member) -> None:
        self._gone.discard(member.id)
        self._addresses[member.id] = member.address
        self._names[member.id] = member.name
        meta = NodeMeta.decode(member.meta)
        self.machine.peer_up(now, member.id, meta.queue, max(1, meta.workers))

    async def _publish_meta(self) -> None:
        last = -math.inf
        while True:
            await self._surplus_changed.wait()
            self._surplus_changed = trio.Event()
            await trio.sleep_until(last + self.config.meta_interval)
            surplus = self.machine.surplus()
            if surplus != self._published:
                self._published = surplus
                last = trio.current_time()
                self.membership.set_meta(self.meta(surplus).encode())

    # --- slots ------------------------------------------------------------------------------

    async def _runner(self) -> None:
        """Take batches and run them. While the queue holds at least two tasks per worker,
        up to two batches per worker are out (the second waits in the worker's pipe,
        so a worker that finishes one starts the next at once); once it is shorter, one per
        worker, so that the last tasks stay stealable by idle peers."""
        while True:
            batch = self.machine.take(trio.current_time())
            self._flush()
            if batch is None:
                await self._idle.park()
                continue
            await self._run_batch(batch)

    async def _run_batch(self, batch: Batch) -> None:
        spec = batch.spec
        scope = trio.CancelScope()
        self._running.setdefault(spec.job, set()).add(scope)
        results: list[TaskResult] = []
        seconds: float | None = None
        try:
            with scope:
                results, seconds = await self._execute(batch)
        finally:
            running = self._running.get(spec.job)
            if running is not None:
                running.discard(scope)
                if not running:
                    del self._running[spec.job]
            self.machine.finished(trio.current_time(), batch, results, seconds)
            self._flush()

    async def _execute(self, batch: Batch) -> tuple[list[TaskResult], float | None]:
        """Fetch what the batch needs (code, large arguments), run it, and return its
        results with the worker seconds spent (None if it did not run)."""
        spec = batch.spec
        try:
            await self._ensure_code(spec)
        except CodeUnavailable as exc:
            error = encode_error("CodeUnavailable", str(exc))
            return [TaskResult(item.id, TaskStatus.ERROR, error) for item in batch.items], None
        items, failed = await self._fetch_args(spec, batch.items)
        if not items:
            return failed, None
        ref = FunctionRef(spec.module, spec.qualname, spec.code, spec.includes)
        limit, where = self._result_limit(spec)
        ran = await self.pool.run(ref, [item.payload for item in items], timeout=spec.timeout,
                                  max_result=limit, limit_where=where)
        results = [TaskResult(item.id, o.status, o.payload)
                   for item, o in zip(items, ran.outcomes, strict=True)]
        return failed + results, ran.worker_seconds

    def _result_limit(self, spec: JobSpec) -> tuple[int, str]:
        """The largest result a task of ``spec`` may return, and whose limit that is."""
        if self.config.max_value_size < spec.max_value_size:
            return self.config.max_value_size, f"peer {self.name}, which ran the task"
        owner = "this peer" if spec.owner == self.node_id else f"peer {self.peer_name(spec.owner)}"
        return spec.max_value_size, f"{owner}, which owns the job"

    async def _fetch_args(self, spec: JobSpec, items: list[TaskItem]
                          ) -> tuple[list[TaskItem], list[TaskResult]]:
        """The batch's tasks with their arguments in hand (those that stayed at the owner
        are fetched now), and error results for those over this peer's limit. A task whose
        arguments the owner no longer has (the job ended) is left out."""
        remote = {item.id: item for item in items if item.remote}
        if not remote:
            return items, []
        fetched, failed = await self._fetch_remote(spec, list(remote.values()))
        ready = [fetched.get(item.id, item) if item.remote else item for item in items]
        return [i for i in ready if not i.remote], failed

    async def _fetch_remote(self, spec: JobSpec, items: list[TaskItem]
                            ) -> tuple[dict[int, TaskItem], list[TaskResult]]:
        address = self._addresses.get(spec.owner)
        if address is None:
            return {}, []
        fetched: dict[int, TaskItem] = {}
        failed: list[TaskResult] = []
        try:
            async with await self.membership.wire.connect(address) as stream:
                await stream.send(FetchArgs(spec.job, tuple(item.id for item in items)))
                for _ in items:
                    await self._receive_arg(stream, spec, fetched, failed)
        except (OSError, ProtocolError, trio.BrokenResourceError) as exc:
            log.debug("fetching arguments of job %s from %s failed: %s", spec.job.hex()[:8],
                      self._where(spec.owner), exc)
        return fetched, failed

    async def _receive_arg(self, stream: SecureStream, spec: JobSpec,
                           fetched: dict[int, TaskItem], failed: list[TaskResult]) -> None:
        header = await stream.receive()
        if not isinstance(header, ValueHeader):
            raise ProtocolError(f"expected a ValueHeader, got {type(header).__name__}")
        if not header.found:
            return
        if header.size > self.config.max_value_size:
            await skip_value(stream, header.size)
            message = too_large(f"the arguments of {spec.qualname} (task {header.id})",
                                header.size,
                                self.config.max_value_size, f"peer {self.name}")
            failed.append(TaskResult(header.id, TaskStatus.ERROR,
                                     encode_error("ValueTooLarge", message)))
            return
        value = await receive_value(stream, header.size)
        fetched[header.id] = TaskItem(header.id, 0, bytes(value))

    async def _serve_args(self, stream: SecureStream, request: FetchArgs) -> None:
        """Answer a :class:`FetchArgs`: each task's arguments, or "not found"."""
        for tid in request.ids:
            payload = self.machine.payload(request.job, tid)
            await stream.send(ValueHeader(tid, len(payload or b""), payload is not None))
            if payload is not None:
                await send_value(stream, payload)

    async def _take_pushed(self, stream: SecureStream, push: PushResult) -> None:
        """Receive a large result pushed by the peer that ran its task."""
        if push.size > self.config.max_value_size:
            reason = too_large(f"the result of task {push.id}", push.size,
                               self.config.max_value_size, f"peer {self.name}")
            await stream.send(ResultAck(AckStatus.REFUSED, reason))
            return
        if self.machine.owned_remaining(push.job) == 0:
            await stream.send(ResultAck(AckStatus.NO_JOB, "the job has ended"))
            return
        value = await receive_value(stream, push.size)
        result = TaskResult(push.id, push.status, bytes(value))
        self.machine.receive(trio.current_time(),
                             Results(push.job, push.sender, push.queue, (result,)))
        self._flush()
        await stream.send(ResultAck(AckStatus.ACCEPTED, ""))

    async def _push(self, out: PushValue) -> None:
        """Carry out a :class:`PushValue`: a few attempts, then give up (the owner will run
        the task again when our reports stop naming it)."""
        why = "its address is unknown"
        for attempt in range(PUSH_ATTEMPTS):
            if attempt:
                await trio.sleep(PUSH_PAUSE)
            address = self._addresses.get(out.dst)
            if address is None or out.dst in self._gone:
                break
            try:
                ack = await self._push_once(address, out)
            except (OSError, ProtocolError, trio.BrokenResourceError) as exc:
                why = str(exc) or type(exc).__name__
                continue
            instead = None
            if ack.status == AckStatus.REFUSED:  # the task fails with the owner's reason
                instead = TaskResult(out.result.id, TaskStatus.ERROR,
                                     encode_error("ValueTooLarge", ack.reason))
            self.machine.push_done(trio.current_time(), out.job, out.result.id,
                                   ack.status == AckStatus.ACCEPTED, instead)
            self._flush()
            return
        log.warning("could not deliver the result of task %d of job %s (%s bytes) to peer %s "
                    "(%s): %s; its owner will run that task again", out.result.id,
                    out.job.hex()[:8], f"{len(out.result.payload):,}",
                    self._names.get(out.dst, "?"), self._where(out.dst), why)
        self.machine.push_done(trio.current_time(), out.job, out.result.id, False)
        self._flush()

    async def _push_once(self, address: Address, out: PushValue) -> ResultAck:
        result = out.result
        async with await self.membership.wire.connect(address) as stream:
            await stream.send(PushResult(out.job, self.node_id, out.queue, result.id,
                                         result.status, len(result.payload)))
            await send_value(stream, result.payload)
            ack = await stream.receive()
        if not isinstance(ack, ResultAck):
            raise ProtocolError("the owner closed the stream without acknowledging")
        return ack

    async def _ensure_code(self, spec: JobSpec) -> None:
        for digest in [spec.code, *spec.includes]:
            if digest is None or digest in self._bundles or self.cache.has(digest):
                continue
            pending = self._fetching.get(digest)
            if pending is not None:
                await pending.wait()
                if not self.cache.has(digest):
                    raise CodeUnavailable(f"code {digest[:12]} could not be fetched")
                continue
            self._fetching[digest] = trio.Event()
            try:
                bundle = await self._fetch(spec.owner, digest)
                self.cache.store(bundle)
            finally:
                self._fetching.pop(digest).set()

    async def _fetch(self, owner: bytes, digest: str) -> CodeBundle:
        address = self._addresses.get(owner)
        if address is None:
            raise CodeUnavailable(f"the job's owner {owner.hex()[:8]} is not a known member")
        try:
            with trio.fail_after(FETCH_TIMEOUT):
                async with await self.membership.wire.connect(address) as stream:
                    await stream.send(FetchCode(digest))
                    reply = await stream.receive()
        except (OSError, ProtocolError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            raise CodeUnavailable(f"fetching code {digest[:12]} from {address[0]}:"
                                  f"{address[1]} failed: {exc}") from None
        if not isinstance(reply, Code) or not reply.bundle:
            raise CodeUnavailable(f"the job's owner does not have code {digest[:12]}")
        bundle = CodeBundle.decode(reply.bundle)
        if bundle.digest != digest:
            raise CodeUnavailable(f"code {digest[:12]} arrived with digest "
                                  f"{bundle.digest[:12]}")
        return bundle

    # --- discovery --------------------------------------------------------------------------

    async def discover(self, address: str, scope: trio.CancelScope,
                       done: trio.Event | None = None) -> None:
        """Advertise and browse over mDNS, introducing new peers to membership."""
        me = self.membership.me

        def found(peer: Discovered) -> None:
            known = {m.id for m in self.membership.members() if m.alive}
            if peer.node_id not in known:
                log.debug("mDNS introduced %s at %s:%d", peer.instance, *peer.address)
                self.membership.join([peer.address])

        try:
            with scope:
                await serve_discovery(cluster=self.config.cluster, node_id=me.id, name=me.name,
                                      address=address, port=me.port, on_peer=found)
        except OSError as exc:
            log.warning("mDNS is unavailable on %s (%s): only seeds and peers that contact "
                        "us will be found", address, exc)
        finally:
            if done is not None:
                done.set()


def _collect(job: Job) -> dict[int, JobResult]:
    """A dict that fills with ``job``'s results, by task index."""
    results: dict[int, JobResult] = {}
    job.listeners.append(lambda batch: results.update((r.task, r) for r in batch))
    return results


async def resolve_seeds(seeds: Sequence[str], default_port: int) -> list[Address]:
    """``host[:port]`` strings as IPv4 addresses."""
    resolved = []
    for seed in seeds:
        host, _, port_text = seed.rpartition(":") if ":" in seed else (seed, "", "")
        try:
            port = int(port_text) if port_text else default_port
            infos = await trio.socket.getaddrinfo(host, port, trio.socket.AF_INET,
                                                  trio.socket.SOCK_DGRAM)
        except (ValueError, OSError) as exc:
            raise P2PClusterError(f"seed {seed!r}: {exc}") from None
        resolved.append((str(infos[0][4][0]), port))
    return resolved


def workers_for(config: Config) -> int:
    return config.workers if config.workers is not None else (os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class _Where:
    bind: str
    advertise: str
    mdns_address: str | None  #: where to run mDNS, or None for no mDNS
    how: str


def _where(config: Config) -> _Where:
    """Which address to bind, advertise and run mDNS on; loopback if there is no network."""
    specific = config.advertise_address or config.bind_address
    if not config.interface and specific.startswith("127."):
        return _Where(config.bind_address, specific, None, f"loopback ({specific})")
    try:
        iface = choose_interface(config.interface)
    except ValueError as exc:
        if config.interface:
            raise P2PClusterError(str(exc)) from None
        return _Where("127.0.0.1", "127.0.0.1", None,
                      "no network interface with a default route: loopback only")
    if iface.loopback and not config.interface:
        # choose_interface() falls back to loopback when nothing else is up (it does not
        # raise): that is the no-network case too. No mDNS there (lo does not multicast).
        return _Where("127.0.0.1", "127.0.0.1", None,
                      "no network interface with a default route: loopback only")
    bind = iface.address if config.interface else config.bind_address
    how = (f"interface {iface.name} ({iface.address}), "
           + ("chosen" if config.interface else "the default route's"))
    return _Where(bind, config.advertise_address or iface.address,
                  iface.address if config.mdns else None, how)


@asynccontextmanager
async def open_peer(config: Config | None = None, *, include: Iterable[str | Path] = (),
                    registry: CodeRegistry | None = None,
                    discovery_done: trio.Event | None = None,
                    discovery_scope: trio.CancelScope | None = None,
                    started: int = 0) -> AsyncIterator[Peer]:
    """Run a peer for the duration of the block: join the cluster, take part in its work.

    ``config`` defaults to :meth:`Config.lan` with ``P2PCLUSTER_*`` variables applied.
    ``include`` names extra files or packages shipped with every job submitted here.
    ``started`` (Unix seconds) is published in the metadata; a daemon sets it so that of two
    peers of one name the later one yields (``_names.py``). On exit the peer leaves
    gracefully and cancels the jobs it owns; its workers stop.
    """
    config = config or Config.load()
    source = load_secrets(secret_file=config.secret_file, create=True)
    keyring = Keyring.from_secrets(source.secrets, config.cluster)
    where = _where(config)
    config = dataclasses.replace(config, bind_address=where.bind)
    seeds = await resolve_seeds(config.seeds, config.port)
    workers = workers_for(config)
    meta = NodeMeta(workers, 0, config.tags, __version__, started).encode()
    cache = CodeCache(CodeCache.default_root())
    registry = registry or CodeRegistry(include)
    async with trio.open_nursery() as nursery:
        membership: Membership = await nursery.start(partial(
            serve_membership, config, keyring, seeds=seeds, meta=meta,
            advertise=where.advertise))
        async with open_worker_pool(workers, cache.root) as pool:
            peer = Peer(config, membership, pool, cache, registry=registry, nursery=nursery,
                        started=started)
            membership.stream_handler = peer._serve_stream
            peer.where = where.how
            await nursery.start(peer._follow_membership)
            async with trio.open_nursery() as inner:
                inner.start_soon(peer._timer)
                inner.start_soon(peer._publish_meta)
                for _ in range(2 * pool.slots):  # two batches per worker at most
                    inner.start_soon(peer._runner)
                scope = discovery_scope or trio.CancelScope()
                if where.mdns_address is not None:
                    inner.start_soon(peer.discover, where.mdns_address, scope, discovery_done)
                elif discovery_done is not None:
                    discovery_done.set()
                try:
                    yield peer
                finally:
                    for job in list(peer._jobs.values()):
                        job.cancel()
                    scope.cancel()
                    with trio.CancelScope(shield=True):
                        await peer._drain_links(LINK_DRAIN)  # the CancelJobs must go out
                        await membership.leave()
                    inner.cancel_scope.cancel()
        nursery.cancel_scope.cancel()

