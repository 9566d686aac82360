"""The work service: a peer's part in running jobs, around its stealing machine.

The machine (:mod:`._proto.stealing`) decides; this service carries out, with one
collaborator per concern, each wired with explicit callbacks:

- a :class:`~._runner.Driver` ticks the machine and, after every input, hands its outputs
  out: work messages to :class:`~._links.WorkLinks`, large results to the
  :class:`~._dataplane.DataPlane`, and its events to the jobs owned here (:class:`Job`);
- :class:`~._slots.Slots` run batches in the worker pool, with code from
  :class:`~._codeship.CodeShipping` and large arguments from the data plane;
- membership's events become ``peer_up``/``peer_down``; this peer's surplus goes out in its
  metadata at the rate the policy allows (:class:`~._proto.policy.MetaSchedule`).

Incoming streams reach the service through the :class:`~._runner.Runner`'s routes: work
messages, code requests and data streams.
"""

from __future__ import annotations

import logging
import os
import random
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import NoReturn

import trio

from ._codecache import CodeCache
from ._codeship import CodeShipping
from ._config import Config
from ._dataplane import DataPlane, Owner
from ._environment import environment_meta, local_env
from ._heldargs import HeldArgs, HeldResults, changed_result
from ._jobs import JobRequest, JobResult, PlacementNote, placement_line
from ._links import WorkLinks
from ._membership import Membership
from ._ownedjob import Job, admit
from ._pacing import Pacer
from ._pool import WorkerPool, WorkerPoolStatistics
from ._proto.membership import EventKind, Member
from ._proto.messages import (
    WORK_MESSAGES,
    FetchArgs,
    FetchCode,
    FetchShared,
    FetchVersions,
    JobSpec,
    Message,
    PushResult,
    Results,
    StealGrant,
    TaskResult,
)
from ._proto.meta import NodeMeta, Usage
from ._proto.policy import MetaSchedule, WorkPolicy
from ._proto.stealing import StealingMachine
from ._proto.workevents import (
    AskVersions,
    JobDropped,
    JobFinished,
    PlacementNews,
    PushValue,
    ResultsReady,
    StealingStatistics,
    WorkEvent,
)
from ._proto.workorigin import refusal
from ._runner import Driver, Runner
from ._secure import SecureStream
from ._sharing import SharedValues
from ._slots import Slots
from ._taskring import TaskLog
from ._transport import Address
from ._version import __version__
from ._versions import VersionQuestions, VersionsUnavailable

__all__ = ["Job", "WorkService"]

log = logging.getLogger("p2pcluster.peer")
#: Seconds between two warnings about one peer's refused work messages.
REFUSAL_WARNING_INTERVAL = 60.0
#: Ended jobs a peer remembers, for `p2pcluster jobs` and the dashboard.
RECENT_JOBS = 50


@dataclass(frozen=True, slots=True)
class WorkState:
    """What the work service holds right now."""

    queued: int  #: unstarted tasks queued here
    running: int  #: batches out to the worker pool
    jobs_owned: int


class WorkService:
    """See the module docstring. Create it, then run :meth:`serve` in a task."""

    def __init__(self, config: Config, runner: Runner, membership: Membership, *,
                 pool: WorkerPool, cache: CodeCache, nursery: trio.Nursery,
                 started: int = 0) -> None:
        self._config = config
        self._membership = membership
        self._pool = pool
        self._nursery = nursery
        self._started = started
        self._me = membership.me
        policy = WorkPolicy.from_config(config)
        self._held, self._landed = HeldArgs(), HeldResults()
        self._machine = StealingMachine(
            self._me.id, pool.slots, random.Random(int.from_bytes(os.urandom(8), "big")),
            policy, local_env(config.tags))
        self._driver = Driver(self._machine, self._carry_out)
        self._addresses: dict[bytes, Address] = {}
        self._names: dict[bytes, str] = {self._me.id: self._me.name}
        self._gone: set[bytes] = set()  #: peers membership declared dead or left
        self._refusals = Pacer(REFUSAL_WARNING_INTERVAL)
        self._jobs: dict[bytes, Job] = {}
        self._ended: deque[Job] = deque(maxlen=RECENT_JOBS)
        self.tasks = TaskLog(config.task_history)  #: the tasks this peer ran
        self._usage: Usage | None = None
        self._usage_news = False
        self._meta = MetaSchedule(config.meta_interval)
        self._meta_due = trio.Event()
        self._links = WorkLinks(runner, nursery, address_of=self.address_of,
                                undeliverable=self._undeliverable, after_loss=self.flush)
        self._code = CodeShipping(runner, cache, self.address_of)
        self._data = DataPlane(runner, self._owner(), me=self._me.id, name=self._me.name,
                               max_value_size=config.max_value_size)
        self.shared = SharedValues(
            runner, me=self._me.id, name=self._me.name, max_value_size=config.max_value_size,
            address_of=self.address_of, drop=self._drop_shared, linger=config.shared_linger)
        self._slots = Slots(self._machine, pool, self._code, self._data, self.shared,
                            flush=self.flush, name_of=self.name_of, tasks=self.tasks,
                            max_value_size=config.max_value_size, landed=self._landed)
        self.versions = VersionQuestions(runner, self._me.id, config.tags, self.address_of)
        self._route(runner)

    def _route(self, runner: Runner) -> None:
        """Take the streams whose first message is ours."""
        runner.route((FetchVersions,), self.versions.serve)
        runner.route((FetchCode,), self._code.serve)
        runner.route((FetchArgs, PushResult), self._serve_data)
        runner.route((FetchShared,), self._serve_shared)
        runner.route(WORK_MESSAGES, self._serve_work)

    # --- for the peer ---------------------------------------------------------------------------

    def submit(self, request: JobRequest, *, max_value_size: int | None = None,
               private: bool = False) -> Job:
        """Own a new job and queue its tasks here (the caller must end or cancel it).
        ``max_value_size`` lowers this peer's limit on its results (for a client that takes
        less); ``private``: the arguments' buffers are ours alone (:mod:`._heldargs`)."""
        self._code.add(request.bundles)
        ref = request.ref
        spec = JobSpec(os.urandom(16), self._me.id, ref.module, ref.qualname, ref.job,
                       ref.includes, request.timeout, request.chunksize,
                       min(self._config.max_value_size, max_value_size or 2**62),
                       request.needs)
        now = trio.current_time()
        job = Job(self._cancel, spec, len(request.payloads), now)
        self._jobs[spec.job] = job
        admit(self._machine, self._nursery, self.flush, spec, self._held.admit(
            spec.job, request.payloads, self._config.inline_value_size, check=not private))
        self.flush()
        return job

    def jobs(self) -> list[Job]:
        """The jobs owned here that still run."""
        return list(self._jobs.values())

    def recent_jobs(self) -> list[Job]:
        """The jobs owned here that ended most recently (at most :data:`RECENT_JOBS`), then
        those that still run."""
        return [*self._ended, *self._jobs.values()]

    def holders(self, job: bytes) -> dict[int, bytes]:
        """For a job owned here: unfinished task index -> the peer believed to hold it."""
        return self._machine.owner.holders(job)

    @property
    def node_id(self) -> bytes:
        return self._me.id

    def name_of(self, peer: bytes) -> str:
        """The name of the member with id ``peer`` (its id's prefix if unknown)."""
        return self._names.get(peer, peer.hex()[:8])

    def address_of(self, peer: bytes) -> Address | None:
        """A live member's address; None if it is unknown, dead or gone."""
        return None if peer in self._gone else self._addresses.get(peer)

    def meta(self, surplus: int = 0) -> NodeMeta:
        """What this peer publishes about itself, with ``surplus`` tasks to give."""
        return NodeMeta(self._pool.slots, surplus, self._config.tags, __version__,
                        self._started, *environment_meta(), self._usage)

    def set_usage(self, usage: Usage) -> None:
        """Publish what this peer uses, if it moved enough to be news (:meth:`Usage.differs`)."""
        if usage.differs(self._usage):
            self._usage, self._usage_news = usage, True
            self._meta_due.set()

    def state(self) -> WorkState:
        return WorkState(self._machine.queue_length(), self._machine.busy, len(self._jobs))

    def statistics(self) -> StealingStatistics:
        return self._machine.statistics()

    def pool_statistics(self) -> WorkerPoolStatistics:
        return self._pool.statistics()

    async def leave(self, timeout: float) -> None:
        """Cancel the jobs owned here, and wait (at most ``timeout``) for their CancelJobs to
        go out."""
        for job in list(self._jobs.values()):
            job.cancel()
        await self._links.drain(timeout)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> NoReturn:
        async with self._membership.subscribe() as events, trio.open_nursery() as nursery:
            self._known_members()
            task_status.started()
            nursery.start_soon(self._driver.serve)
            nursery.start_soon(self._publish_meta)
            nursery.start_soon(self.shared.serve_linger)
            nursery.start_soon(self._data.idle.serve)
            nursery.start_soon(self._slots.serve,
                               self._config.batches_per_worker * self._pool.slots)
            async for event in events:
                self._member_event(event.kind, event.member)
        raise AssertionError("membership events never end")  # pragma: no cover

    # --- the driver ----------------------------------------------------------------------------

    def flush(self) -> None:
        self._driver.flush()

    def _carry_out(self) -> None:
        machine = self._machine
        for out in machine.take_outputs():
            if isinstance(out, PushValue):
                self._nursery.start_soon(self._data.push, out)
            elif isinstance(out, AskVersions):
                self._nursery.start_soon(self._ask_versions, out)
            else:
                self._links.send(out.dst, out.msg)
        for event in machine.take_events():
            self._job_event(event)
        if self._meta.changed(machine.surplus()):
            self._meta_due.set()
        if machine.peek() is not None:
            self._slots.wake()

    async def _ask_versions(self, ask: AskVersions) -> None:
        """Carry out the machine's question; its answer (or failure) goes back to it."""
        try:
            answer = await self.versions.ask(ask.dst, ask.names)
        except VersionsUnavailable as exc:
            self._machine.versions_failed(trio.current_time(), ask.dst, str(exc))
        else:
            self._machine.peer_versions(trio.current_time(), ask.dst, answer.python,
                                        answer.tags, {d.name: d.version for d in answer.dists})
        self.flush()

    def _job_event(self, event: WorkEvent) -> None:
        if isinstance(event, PlacementNews):
            note = PlacementNote(event.kind, self.name_of(event.peer), event.reasons)
            log.info("job %s: %s", event.job.hex()[:8], placement_line("", note) or note)
            if (job := self._jobs.get(event.job)) is not None:
                job.placement(note)
            return
        if isinstance(event, ResultsReady):
            if (job := self._jobs.get(event.job)) is not None:
                name = self.name_of(event.peer)
                job.deliver([JobResult(r.id, r.status, self._landed.payload(event.job, r), name)
                             for r in event.results])
            self._held.release(event.job, (r.id for r in event.results))
            return
        job = self._jobs.pop(event.job, None)
        if job is not None:
            job.finish()
            self._ended.append(job)
        self._slots.stop(event.job)
        self._held.drop(event.job)
        self.shared.job_over(event.job)
        if job is None and isinstance(event, JobDropped):
            log.debug("dropped job %s: %s", event.job.hex()[:8], event.reason)
        assert isinstance(event, JobFinished | JobDropped)

    def _cancel(self, job: Job) -> None:
        self._machine.cancel(trio.current_time(), job.id)
        self.flush()

    def _undeliverable(self, dst: bytes, msg: Message, why: str) -> None:
        """A work message the links could not send. A grant's tasks come back here; results
        are lost, which the owner repairs (our holding reports stop naming those tasks)."""
        if isinstance(msg, StealGrant):
            self._machine.grant_failed(trio.current_time(), msg)
        elif isinstance(msg, Results):
            address = self._addresses.get(dst)
            where = f"{address[0]}:{address[1]}" if address else "address unknown"
            log.warning("could not deliver %d result(s) of job %s to peer %s (%s): %s; its "
                        "owner will run those tasks again", len(msg.results), msg.job.hex()[:8],
                        self.name_of(dst), where, why)

    def _owner(self) -> Owner:
        def deliver(results: Results, value: memoryview | None) -> None:
            with self._landed.landing(results, value):
                self._machine.receive(trio.current_time(), results)
                self.flush()

        def pushed(job: bytes, tid: int, delivered: bool, instead: TaskResult | None) -> None:
            self._machine.push_done(trio.current_time(), job, tid, delivered, instead)
            self.flush()

        def changed(job: bytes, tid: int, index: int) -> None:
            if (owned := self._jobs.get(job)) is not None:  # not ended meanwhile
                result = changed_result(tid, owned.spec.qualname, index)
                deliver(Results(job, self._me.id, self._machine.surplus(), (result,)), None)

        return Owner(payload=partial(self._held.serve, self._machine.owner.payload),
                     owns=lambda job: self._machine.owner.remaining(job) > 0,
                     deliver=deliver, pushed=pushed, changed=changed,
                     address_of=self.address_of, name_of=self.name_of)

    # --- incoming streams ----------------------------------------------------------------------

    async def _serve_work(self, stream: SecureStream, first: Message) -> None:
        """A peer's work link: its messages, in order, for as long as it stays open."""
        msg: Message | None = first
        while isinstance(msg, WORK_MESSAGES):
            if self._vouched(stream, msg):
                self._machine.receive(trio.current_time(), msg)
                self.flush()
            msg = await stream.receive()

    async def _serve_shared(self, stream: SecureStream, first: Message) -> None:
        assert isinstance(first, FetchShared)
        await self.shared.serve(stream, first)

    def _drop_shared(self, digests: list[bytes]) -> None:
        self._nursery.start_soon(self._pool.drop_shared, digests)

    async def _serve_data(self, stream: SecureStream, first: Message) -> None:
        assert isinstance(first, FetchArgs | PushResult)
        await self._data.serve(stream, first, partial(self._vouched, stream))

    def _vouched(self, stream: SecureStream, msg: Message) -> bool:
        """Whether ``msg`` may come from the stream's authenticated peer (it speaks only for
        itself, and cancels only its own jobs: :mod:`._proto.workorigin`); else a warning,
        at most one a minute per peer."""
        why = refusal(msg, stream.peer, self._machine.owner_of)
        if why is None:
            return True
        if self._refusals.due(stream.peer, trio.current_time()):
            log.warning("refused a %s from peer %s (%s:%d): %s", type(msg).__name__,
                        self.name_of(stream.peer), *stream.remote, why)
        return False

    # --- membership ----------------------------------------------------------------------------

    def _known_members(self) -> None:
        now = trio.current_time()
        for member in self._membership.members():
            if member.alive and member.id != self._me.id:
                self._peer_up(now, member)
        self.flush()

    def _member_event(self, kind: EventKind, member: Member) -> None:
        if kind in (EventKind.JOIN, EventKind.RECOVER, EventKind.UPDATE):
            self._peer_up(trio.current_time(), member)
        elif kind in (EventKind.FAIL, EventKind.LEAVE):
            self._gone.add(member.id)
            self._machine.peer_down(trio.current_time(), member.id)
            self._links.close(member.id)
            self.shared.owner_gone(member.id)
        self.flush()

    def _peer_up(self, now: float, member: Member) -> None:
        self._gone.discard(member.id)
        self._addresses[member.id] = member.address
        self._names[member.id] = member.name
        meta = NodeMeta.decode(member.meta)
        self._machine.peer_up(now, member.id, meta.queue, max(1, meta.workers))
        self._machine.peer_env(now, member.id, meta.python_version, meta.tags)

    async def _publish_meta(self) -> NoReturn:
        """This peer's surplus, in its metadata, no more often than the policy allows."""
        while True:
            await self._meta_due.wait()
            self._meta_due = trio.Event()
            await trio.sleep_until(self._meta.due(trio.current_time()))
            surplus = self._machine.surplus()
            if self._meta.publish(trio.current_time(), surplus) or self._usage_news:
                self._usage_news = False
                self._membership.set_meta(self.meta(surplus).encode())

