"""The work-stealing scheduler of one peer, as a sans-IO machine.

Theory of operation
-------------------
A job is submitted to one peer, its **owner**, which puts the job's tasks at the back of its
own queue (:mod:`.taskqueue`). Every peer runs tasks from the front of its queue (oldest first)
as its worker slots free up. A peer with a free slot and an empty queue is **idle**; an idle
peer steals:

1. It picks a **victim** at random, weighted by the queue lengths it knows (gossiped in member
   metadata, refreshed by :class:`WorkAvailable` hints, by the ``queue`` of every grant and of
   every :class:`Results`). A peer that knows of no queued task anywhere sends nothing: a
   workload smaller than the free slots causes no steals at all.
2. The victim answers with a :class:`StealGrant` holding half (rounded up) of its unstarted
   tasks, oldest first, in one message, so one round trip moves many tasks. Large arguments
   stay at the owner (the thief fetches them when the task runs), and a grant carries at most
   ``message_bytes`` of arguments.
3. Each task counts its moves; a task that has moved ``max_moves`` times is never granted
   again, so tasks cannot ping-pong between peers.

The owner always knows which peer holds each unfinished task (:mod:`.ownership`). When it
grants tasks itself it records the thief; when a *thief* re-grants stolen tasks it sends
:class:`TasksMoved` to the owner. Results go straight from whoever ran a task to the owner,
small ones in :class:`Results` messages, large ones each on a data stream of their own
(:class:`PushValue`). The owner keeps the first result of every task id and counts any other
as a duplicate: execution is at least once, delivery is exactly once.

Faults:

- A **holder** dies (membership's ``peer_down``): the owner puts that holder's unfinished
  tasks back at the front of its own queue (their move count reset: a recovery is not a
  move). If the owner learns of a move to a peer it already knows is dead, it requeues at once.
- A holder **loses** tasks while alive (a result on a link that broke): its :class:`Holding`
  reports stop listing them, and the owner requeues them; a holder the owner has not heard
  from for ``lease_timeout`` loses all its tasks the same way (:mod:`.ownership`).
- The **owner** dies: every peer drops that owner's queued tasks and the driver stops the
  running ones (:class:`JobDropped`); results for it are thrown away.
- A **steal** goes unanswered for ``steal_timeout``: the thief forgets the request, treats the
  victim's queue as empty, and tries elsewhere. A grant that arrives late is still accepted.
- A grant that cannot be delivered (the driver reports it with :meth:`grant_failed`) goes
  back to the victim's queue.

When a job ends, by completion or cancellation, the owner tells every peer that ever held one of
its tasks to drop what is left (duplicates only, for a completed job). A message about a job the
owner no longer runs is answered with :class:`CancelJob` too.

The machine never sleeps and never sends: it queues outputs (:class:`SendWork`,
:class:`PushValue`) and :class:`WorkEvent` events, and exposes :meth:`next_deadline`. Peers are
named by node id; the driver maps ids to addresses. Every number it uses is in its
:class:`~.policy.WorkPolicy`.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from random import Random
from typing import NamedTuple

from .messages import (
    MAX_TASKS,
    CancelJob,
    HeldTasks,
    Holding,
    JobSpec,
    JobTasks,
    Message,
    Results,
    StealGrant,
    StealRequest,
    TaskItem,
    TaskResult,
    TasksMoved,
    WorkAvailable,
)
from .ownership import Leases, OwnedJob, ids_from_runs, runs_from_ids
from .policy import WorkPolicy
from .taskqueue import Queued, TaskQueue

__all__ = [
    "Batch", "JobDropped", "JobFinished", "PushValue", "ResultsReady", "SendWork",
    "StealingMachine", "StealingStatistics", "WorkEvent", "WorkOutput",
]

#: Finished or cancelled jobs remembered, to answer late messages with CancelJob.
ENDED_JOBS_KEPT = 1024
#: Empty holding reports a peer still sends an owner after holding nothing of its jobs: an
#: owner requeues a task two reports in a row leave out.
REPORTS_AFTER_LAST = 2


@dataclass(frozen=True, slots=True)
class SendWork:
    """Send ``msg`` to peer ``dst`` over its work link (reliable, in order, may fail)."""

    dst: bytes
    msg: Message


@dataclass(frozen=True, slots=True)
class PushValue:
    """Send one large ``result`` of ``job`` to its owner ``dst`` on a data stream of its own,
    then report the outcome with :meth:`StealingMachine.push_done`."""

    dst: bytes
    job: bytes
    result: TaskResult
    queue: int


WorkOutput = SendWork | PushValue


@dataclass(frozen=True, slots=True)
class ResultsReady:
    """For the owner: first results of tasks of ``job``, run on peer ``peer``."""

    job: bytes
    results: tuple[TaskResult, ...]
    peer: bytes


@dataclass(frozen=True, slots=True)
class JobFinished:
    """For the owner: every task of ``job`` has a result."""

    job: bytes


@dataclass(frozen=True, slots=True)
class JobDropped:
    """Stop running tasks of ``job``: cancelled by its owner, finished, or its owner died."""

    job: bytes
    reason: str


WorkEvent = ResultsReady | JobFinished | JobDropped


class Batch(NamedTuple):
    """Tasks of one job taken to run together on one worker."""

    spec: JobSpec
    items: list[TaskItem]


@dataclass(frozen=True, slots=True)
class StealingStatistics:
    """Counters of one peer's scheduler."""

    submitted: int = 0  #: tasks submitted here
    completed: int = 0  #: first results received for jobs owned here
    duplicates: int = 0  #: results received for tasks that already had one
    executed: int = 0  #: tasks this peer ran (results it produced)
    steal_requests: int = 0  #: requests sent
    steals_granted: int = 0  #: requests answered with tasks (as thief)
    steals_empty: int = 0  #: requests answered with none, or timed out (as thief)
    tasks_stolen: int = 0  #: tasks received in grants
    tasks_given: int = 0  #: tasks granted away
    requeued: int = 0  #: tasks put back on an owner's queue (holder dead, silent or lost them)
    dropped: int = 0  #: queued tasks dropped (owner died, job cancelled or finished)
    results_pushed: int = 0  #: large results sent on data streams of their own
    results_lost: int = 0  #: pushed results that could not be delivered
    reports_sent: int = 0  #: Holding reports sent
    leases_expired: int = 0  #: holders that went silent for lease_timeout (as owner)


class StealingMachine:
    """One peer's queue, its owned jobs, and the stealing protocol.

    ``slots`` is how many batches this peer runs at once. The driver calls :meth:`take` when
    a slot is free and :meth:`finished` when the batch is done; it feeds membership changes to
    :meth:`peer_up`, :meth:`peer_queue` and :meth:`peer_down`, messages to :meth:`receive`,
    and calls :meth:`tick` at :meth:`next_deadline`.
    """

    def __init__(self, node_id: bytes, slots: int, rng: Random,
                 policy: WorkPolicy | None = None) -> None:
        if slots < 0:
            raise ValueError("slots must be >= 0")
        self.node_id = node_id
        self.slots = slots
        self.rng = rng
        self.policy = policy or WorkPolicy()
        self.busy = 0
        self.queue = TaskQueue(self.policy.max_moves)
        self.owned: dict[bytes, OwnedJob] = {}
        self.peers: dict[bytes, int] = {}  #: live peer -> its surplus as last heard
        self.peer_slots: dict[bytes, int] = {}  #: live peer -> its worker slots
        self._running: dict[bytes, tuple[bytes, int]] = {}  #: job -> (owner, batches running)
        self._in_hand: dict[bytes, tuple[bytes, Counter[int]]] = {}  #: running or pushing
        self.dead: set[bytes] = set()
        self._ended: deque[bytes] = deque(maxlen=ENDED_JOBS_KEPT)
        self._ended_set: set[bytes] = set()
        self.stealing: tuple[bytes, float] | None = None  #: (victim, deadline)
        self._leases = Leases(self.policy.lease_timeout)
        self._next_report: float | None = None
        self._reports_owed: dict[bytes, int] = {}  #: owner -> reports still due to it
        self._next_lease_check: float | None = None
        self._timing: dict[bytes, tuple[int, float]] = {}  #: job -> (tasks run, seconds)
        self._stats: Counter[str] = Counter()
        self._outputs: list[WorkOutput] = []
        self._events: list[WorkEvent] = []

    # --- queries ----------------------------------------------------------------------------

    @property
    def steal_timeout(self) -> float:
        return self.policy.steal_timeout

    def statistics(self) -> StealingStatistics:
        return StealingStatistics(**{f.name: self._stats[f.name]
                                     for f in fields(StealingStatistics)})

    def queue_length(self) -> int:
        """Unstarted tasks queued here."""
        return len(self.queue)

    def surplus(self) -> int:
        """Queued tasks that may still move, beyond what this peer's free slots are about to
        take: what it advertises, and what it grants from. Zero for a workload that fits
        locally."""
        return max(0, min(self.queue.movable, len(self.queue) - max(0, self.slots - self.busy)))

    def idle(self) -> bool:
        return self.busy < self.slots and not self.queue

    def owned_remaining(self, job: bytes) -> int:
        owned = self.owned.get(job)
        return len(owned) if owned else 0

    def holders(self, job: bytes) -> dict[int, bytes]:
        """For an owned job: unfinished task id -> the peer believed to hold it."""
        owned = self.owned.get(job)
        return owned.holders() if owned else {}

    def payload(self, job: bytes, tid: int) -> bytes | None:
        """For an owned job: the arguments of unfinished task ``tid`` (a thief fetches the
        large ones), or None."""
        owned = self.owned.get(job)
        return owned.payloads.get(tid) if owned else None

    def take_outputs(self) -> list[WorkOutput]:
        out, self._outputs = self._outputs, []
        return out

    def take_events(self) -> list[WorkEvent]:
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float | None:
        times = [t for t in (self.stealing[1] if self.stealing else None, self._next_report,
                             self._next_lease_check) if t is not None]
        return min(times) if times else None

    # --- membership -------------------------------------------------------------------------

    def peer_up(self, now: float, peer: bytes, queue: int = 0, slots: int = 1) -> None:
        """``peer`` is alive (joined, or seen at start) with ``slots`` worker slots and a
        surplus of ``queue`` tasks."""
        if peer == self.node_id:
            return
        new = peer not in self.peers
        self.peers[peer] = queue
        self.peer_slots[peer] = slots
        self.dead.discard(peer)
        if new and self.surplus():
            self._send(peer, WorkAvailable(self.node_id, self.surplus()))
        self._maybe_steal(now)

    def peer_queue(self, now: float, peer: bytes, queue: int) -> None:
        """``peer`` now reports ``queue`` tasks queued (metadata or a hint)."""
        if peer in self.peers:
            self.peers[peer] = queue
            self._maybe_steal(now)

    def peer_down(self, now: float, peer: bytes) -> None:
        """``peer`` is dead or left: requeue what it held for us, drop what it owned."""
        if peer == self.node_id:
            return
        self.peers.pop(peer, None)
        self.peer_slots.pop(peer, None)
        self.dead.add(peer)
        self._leases.forget(peer)
        # Its jobs are orphans: drop them here, and have the driver stop running ones.
        orphaned = {q.spec.job for q in self.queue if q.spec.owner == peer}
        orphaned.update(job for job, (owner, _) in self._running.items() if owner == peer)
        if orphaned:
            self._drop_queued(lambda q: q.spec.owner == peer)
        for job in orphaned:
            self._in_hand.pop(job, None)
            self._timing.pop(job, None)
            self._events.append(JobDropped(job, "its owner left or died"))
        # Our tasks it held come back to us, at the front (they are the oldest).
        for owned in self.owned.values():
            self._requeue(owned, owned.held_by(peer))
        if self.stealing and self.stealing[0] == peer:
            self.stealing = None
        self._maybe_steal(now)

    # --- the owner's side -------------------------------------------------------------------

    def submit(self, now: float, spec: JobSpec, tasks: Iterable[tuple[int, bytes]]) -> None:
        """Own job ``spec.job``, and queue its tasks (id, CBOR arguments) here."""
        if spec.owner != self.node_id:
            raise ValueError("a job is submitted to its owner")
        if spec.job in self.owned or spec.job in self._ended_set:
            raise ValueError("job id already used")
        before = self.surplus()
        owned = OwnedJob(spec, self.node_id)
        for tid, payload in tasks:
            owned.add(tid, payload)
            self.queue.append(spec, TaskItem(tid, 0, payload))
        self.owned[spec.job] = owned
        self._stats["submitted"] += len(owned)
        if not len(owned):
            self._end(spec.job)
            self._events.append(JobFinished(spec.job))
            return
        if before == 0 and self.surplus():
            hint = WorkAvailable(self.node_id, self.surplus())
            for peer in self.peers:
                self._send(peer, hint)

    def cancel(self, now: float, job: bytes) -> None:
        """Cancel an owned job everywhere: drop it here and tell every peer that held it."""
        if job not in self.owned:
            return
        self._drop_queued(lambda q: q.spec.job == job)
        self._events.append(JobDropped(job, "cancelled"))
        self._end(job)

    # --- local execution --------------------------------------------------------------------

    def _limit(self) -> int:
        """Batches that may be out at once: ``batches_per_slot`` per slot (two by default)
        while the queue holds at least that many tasks per slot (the next batch waits in a
        worker's pipe, so the worker never waits for its driver), one per slot once it is
        shorter (the last tasks stay stealable)."""
        per = self.policy.batches_per_slot
        return per * self.slots if len(self.queue) >= per * self.slots else self.slots

    def peek(self) -> JobSpec | None:
        """The job of the task :meth:`take` would give next, if any (to size the batch)."""
        front = self.queue.front()
        return front.spec if front is not None and self.busy < self._limit() else None

    def take(self, now: float, max_tasks: int | None = None) -> Batch | None:
        """Claim a batch: up to ``max_tasks`` tasks of one job from the front of the queue.

        Without ``max_tasks``, as many as fill the policy's ``batch_target`` seconds by the
        task times measured for the job (:meth:`finished`), one until the first measurement.
        The job's ``chunksize``, if set, replaces either. Otherwise a batch holds at most a
        quarter of the queue per slot, so that half of it stays stealable; and never more
        than ``message_bytes`` of arguments unless one task alone is larger. Returns None (and
        may start a steal) when there is nothing to run or no batch may start.
        """
        front = self.queue.front()
        if self.busy >= self._limit() or front is None:
            self._maybe_steal(now)
            return None
        if max_tasks is None:
            max_tasks = self.policy.batch_size(*self._timing.get(front.spec.job, (0, 0.0)))
        fair = max(1, min(max_tasks, len(self.queue) // (4 * self.slots)))
        spec, items = self.queue.take(front.spec.chunksize or fair, self.policy.message_bytes)
        self.busy += 1
        _, running = self._running.get(spec.job, (b"", 0))
        self._running[spec.job] = (spec.owner, running + 1)
        self._hold(spec, (item.id for item in items))
        if not self.queue:
            self._maybe_steal(now)
        return Batch(spec, items)

    def finished(self, now: float, batch: Batch, results: Sequence[TaskResult],
                 seconds: float | None = None) -> None:
        """A batch taken with :meth:`take` ended; route its results to the job's owner.

        Pass the results of the tasks that ran (none, if the batch was stopped), and the
        seconds the worker spent on them, which size the job's next batches.
        """
        spec = batch.spec
        if seconds is not None and results:
            self._measure(spec.job, len(results), seconds)
        self.busy = max(0, self.busy - 1)
        owner, running = self._running.pop(spec.job, (b"", 1))
        if running > 1:
            self._running[spec.job] = (owner, running - 1)
        self._release(spec.job, (item.id for item in batch.items))
        self._stats["executed"] += len(results)
        if results:
            if spec.job in self.owned:
                self._accept(spec.job, self.node_id, results)
            elif spec.owner not in self.dead and spec.job not in self._ended_set:
                self._send_results(spec, results)
        self._maybe_steal(now)

    def push_done(self, now: float, job: bytes, tid: int, delivered: bool,
                  instead: TaskResult | None = None) -> None:
        """The driver finished (or failed) a :class:`PushValue` of task ``tid``. ``instead``
        is a small result to send in its place (the owner refused the large one)."""
        owner = self._owner_of(job)
        self._release(job, (tid,))
        if instead is not None:
            if owner is not None and owner not in self.dead:
                self._send(owner, Results(job, self.node_id, self.surplus(), (instead,)))
        elif not delivered:  # our reports stop naming it, so its owner runs it again
            self._stats["results_lost"] += 1

    def _measure(self, job: bytes, tasks: int, seconds: float) -> None:
        done, spent = self._timing.pop(job, (0, 0.0))
        self._timing[job] = (done + tasks, spent + seconds)  # most recent last
        if len(self._timing) > ENDED_JOBS_KEPT:
            del self._timing[next(iter(self._timing))]

    def _owner_of(self, job: bytes) -> bytes | None:
        entry = self._in_hand.get(job)
        return entry[0] if entry is not None else None

    def _send_results(self, spec: JobSpec, results: Sequence[TaskResult]) -> None:
        """Small results in Results messages of at most ``message_bytes``; each large one
        pushed on a data stream of its own (until it is delivered, we still hold it)."""
        small = [r for r in results if len(r.payload) <= self.policy.inline_limit]
        for part in _parts(small, self.policy.message_bytes):
            self._send(spec.owner, Results(spec.job, self.node_id, self.surplus(), part))
        for result in results:
            if len(result.payload) > self.policy.inline_limit:
                self._hold(spec, (result.id,))
                self._outputs.append(PushValue(spec.owner, spec.job, result, self.surplus()))
                self._stats["results_pushed"] += 1

    # --- network ----------------------------------------------------------------------------

    def receive(self, now: float, msg: Message) -> None:
        """A work message arrived (from any peer; messages name their sender)."""
        if isinstance(msg, StealRequest):
            self._on_steal_request(now, msg)
        elif isinstance(msg, StealGrant):
            self._on_grant(now, msg)
        elif isinstance(msg, Results):
            self._on_results(now, msg)
        elif isinstance(msg, TasksMoved):
            self._on_moved(now, msg)
        elif isinstance(msg, CancelJob):
            self._on_cancel(now, msg)
        elif isinstance(msg, WorkAvailable):
            self._note_queue(msg.sender, msg.queue)
            self._maybe_steal(now)
        elif isinstance(msg, Holding):
            self._on_holding(now, msg)

    def grant_failed(self, now: float, grant: StealGrant) -> None:
        """The driver could not deliver ``grant``: take its tasks back, at the front."""
        for job_tasks in reversed(grant.jobs):
            spec = job_tasks.spec
            if spec.owner in self.dead or spec.job in self._ended_set:
                continue
            for item in reversed(job_tasks.tasks):
                self.queue.appendleft(spec, self._restored(spec, item))
            self._moved(now, spec, self.node_id, [t.id for t in job_tasks.tasks])
        self._stats["tasks_given"] -= sum(len(jt.tasks) for jt in grant.jobs)

    def tick(self, now: float) -> None:
        if self.stealing and now >= self.stealing[1]:
            victim = self.stealing[0]
            self.stealing = None
            self._stats["steals_empty"] += 1
            if victim in self.peers:
                self.peers[victim] = 0
            self._maybe_steal(now)
        if self._next_report is not None and now >= self._next_report:
            self._report(now)
        if self._next_lease_check is not None and now >= self._next_lease_check:
            self._check_leases(now)

    # --- internals: stealing ----------------------------------------------------------------

    def _send(self, dst: bytes, msg: Message) -> None:
        self._outputs.append(SendWork(dst, msg))

    def _note_queue(self, peer: bytes, queue: int) -> None:
        if peer in self.peers:
            self.peers[peer] = queue

    def _maybe_steal(self, now: float) -> None:
        if self.stealing is not None or not self.idle():
            return
        candidates = [(peer, q) for peer, q in self.peers.items() if q > 0]
        if not candidates:
            return
        total = sum(q for _, q in candidates)
        pick = self.rng.random() * total
        for victim, q in candidates:  # noqa: B007 - victim is used after the loop
            pick -= q
            if pick < 0:
                break
        self.stealing = (victim, now + self.policy.steal_timeout)
        self._stats["steal_requests"] += 1
        self._send(victim, StealRequest(self.node_id, self.slots - self.busy))

    def _on_steal_request(self, now: float, req: StealRequest) -> None:
        thief = req.thief
        if thief in self.dead or thief == self.node_id:
            return
        self._leases.heard(thief, now)
        want = self._grant_size(thief, req.slots)
        granted = (self.queue.grant(want, self.policy.message_bytes, self.policy.inline_limit)
                   if want else {})
        jobs = tuple(JobTasks(spec, tuple(items)) for spec, items in granted.values())
        for spec, items in granted.values():
            self._moved(now, spec, thief, [t.id for t in items])
            self._stats["tasks_given"] += len(items)
        if thief not in self.peers:  # a peer we have not heard of yet: it is alive
            self.peers[thief] = 0
        self._send(thief, StealGrant(self.node_id, self.surplus(), jobs))

    def _grant_size(self, thief: bytes, free: int) -> int:
        """Half of the surplus, capped at the thief's share of all the queued work we know of
        (by worker slots), and at least one task if there is a surplus at all.

        With one thief this is exactly half. With many thieves at once, the cap stops the
        first from carrying off half of a job to a place it could move from only once more.
        """
        surplus = self.surplus()
        if surplus == 0:
            return 0
        thief_slots = max(1, self.peer_slots.get(thief, free))
        total_slots = self.slots + sum(self.peer_slots.values())
        if thief not in self.peer_slots:
            total_slots += thief_slots
        known_work = surplus + sum(self.peers.values())
        share = math.ceil(known_work * thief_slots / max(1, total_slots))
        return max(1, min(math.ceil(surplus / 2), share))

    def _on_grant(self, now: float, grant: StealGrant) -> None:
        if self.stealing and self.stealing[0] == grant.victim:
            self.stealing = None
        self._note_queue(grant.victim, grant.queue)
        count = 0
        for job_tasks in grant.jobs:
            spec = job_tasks.spec
            if spec.owner in self.dead or spec.job in self._ended_set:
                self._stats["dropped"] += len(job_tasks.tasks)
                continue
            for item in job_tasks.tasks:
                self.queue.append(spec, item)
            count += len(job_tasks.tasks)
            if spec.owner != self.node_id:
                self._schedule_report(now)
        if count:
            self._stats["steals_granted"] += 1
            self._stats["tasks_stolen"] += count
        else:
            self._stats["steals_empty"] += 1
        self._maybe_steal(now)

    def _on_cancel(self, now: float, msg: CancelJob) -> None:
        if msg.job in self.owned:  # only an owner ends its job
            return
        self._drop_queued(lambda q: q.spec.job == msg.job)
        self._in_hand.pop(msg.job, None)
        self._timing.pop(msg.job, None)
        self._events.append(JobDropped(msg.job, "ended by its owner"))
        self._maybe_steal(now)

    def _restored(self, spec: JobSpec, item: TaskItem) -> TaskItem:
        """A task coming back to its queue, one move less; the owner puts back the arguments
        a grant left behind."""
        payload, size = item.payload, item.size
        if item.remote and spec.owner == self.node_id:
            payload, size = self.payload(spec.job, item.id) or b"", 0
        return TaskItem(item.id, item.moves - 1, payload, size)

    # --- internals: ownership ---------------------------------------------------------------

    def _moved(self, now: float, spec: JobSpec, holder: bytes, ids: list[int]) -> None:
        """Record (as owner) or report (to the owner) that ``ids`` are now at ``holder``."""
        if spec.owner != self.node_id:
            self._send(spec.owner, TasksMoved(spec.job, holder, tuple(ids)))
            return
        owned = self.owned.get(spec.job)
        if owned is None:
            return
        fresh = owned.move(ids, holder)
        if holder == self.node_id:
            return
        self._leases.heard(holder, now)  # a new holder gets a whole lease to report
        self._watch_leases(now)
        if holder in self.dead:
            self._requeue(owned, fresh)

    def _on_moved(self, now: float, msg: TasksMoved) -> None:
        owned = self.owned.get(msg.job)
        if owned is None:
            if msg.job in self._ended_set and msg.holder not in self.dead:
                self._send(msg.holder, CancelJob(msg.job))
            return
        self._moved(now, owned.spec, msg.holder, list(msg.ids))

    def _on_results(self, now: float, msg: Results) -> None:
        self._note_queue(msg.sender, msg.queue)
        self._leases.heard(msg.sender, now)
        if msg.job in self.owned:
            self._accept(msg.job, msg.sender, msg.results)
        elif msg.sender != self.node_id and msg.sender not in self.dead:
            self._send(msg.sender, CancelJob(msg.job))
        self._maybe_steal(now)

    def _accept(self, job: bytes, peer: bytes, results: Sequence[TaskResult]) -> None:
        owned = self.owned[job]
        fresh = tuple(r for r in results if owned.finish(r.id))
        self._stats["duplicates"] += len(results) - len(fresh)
        if fresh:
            self._stats["completed"] += len(fresh)
            self._events.append(ResultsReady(job, fresh, peer))
        if not len(owned):
            self._events.append(JobFinished(job))
            self._drop_queued(lambda q: q.spec.job == job)  # duplicates still queued here
            self._end(job)

    def _requeue(self, owned: OwnedJob, ids: Sequence[int]) -> None:
        ids = [tid for tid in ids if tid in owned.payloads]
        if not ids:
            return
        owned.move(ids, self.node_id)
        for tid in sorted(ids, reverse=True):
            self.queue.appendleft(owned.spec, TaskItem(tid, 0, owned.payloads[tid]))
        self._stats["requeued"] += len(ids)

    def _end(self, job: bytes) -> None:
        owned = self.owned.pop(job)
        self._timing.pop(job, None)
        for peer in owned.ever_held:
            if peer not in self.dead:
                self._send(peer, CancelJob(job))
        if len(self._ended) == self._ended.maxlen:
            self._ended_set.discard(self._ended[0])
        self._ended.append(job)
        self._ended_set.add(job)

    def _drop_queued(self, doomed: Callable[[Queued], bool]) -> None:
        self._stats["dropped"] += self.queue.drop(doomed)

    # --- internals: holding reports and leases ----------------------------------------------

    def _hold(self, spec: JobSpec, ids: Iterable[int]) -> None:
        """Tasks in hand here (running, or a result on its way) until :meth:`_release`."""
        entry = self._in_hand.setdefault(spec.job, (spec.owner, Counter()))
        entry[1].update(ids)

    def _release(self, job: bytes, ids: Iterable[int]) -> None:
        entry = self._in_hand.get(job)
        if entry is None:
            return
        entry[1].subtract(ids)
        for tid in [t for t, n in entry[1].items() if n <= 0]:
            del entry[1][tid]
        if not entry[1]:
            del self._in_hand[job]

    def _held(self) -> dict[bytes, dict[bytes, set[int]]]:
        """Owner -> job -> the tasks of other owners' jobs held here."""
        held: dict[bytes, dict[bytes, set[int]]] = {}
        for q in self.queue:
            if q.spec.owner != self.node_id:
                held.setdefault(q.spec.owner, {}).setdefault(q.spec.job, set()).add(q.item.id)
        for job, (owner, ids) in self._in_hand.items():
            if owner != self.node_id and owner not in self.dead:
                held.setdefault(owner, {}).setdefault(job, set()).update(ids)
        return held

    def _schedule_report(self, now: float) -> None:
        if self._next_report is None:
            self._next_report = now + self.policy.report_interval

    def _report(self, now: float) -> None:
        """Tell each owner what we hold of its jobs. After the last of its tasks has gone,
        two more (empty) reports follow: that is what the owner needs to notice a result
        that never arrived."""
        held = self._held()
        for owner in held:
            self._reports_owed[owner] = REPORTS_AFTER_LAST
        for owner in list(self._reports_owed):
            jobs = held.get(owner, {})
            report = tuple(HeldTasks(job, runs_from_ids(ids)) for job, ids in jobs.items())
            if owner not in self.dead:
                self._send(owner, Holding(self.node_id, report))
                self._stats["reports_sent"] += 1
            if not jobs:
                self._reports_owed[owner] -= 1
                if self._reports_owed[owner] <= 0 or owner in self.dead:
                    del self._reports_owed[owner]
        self._next_report = (now + self.policy.report_interval if self._reports_owed
                             else None)

    def _on_holding(self, now: float, msg: Holding) -> None:
        self._leases.heard(msg.sender, now)
        try:
            reported = {h.job: ids_from_runs(h.runs, MAX_TASKS) for h in msg.jobs}
        except ValueError:
            return  # a malformed report says nothing
        for job in reported:
            if job not in self.owned and job in self._ended_set and msg.sender not in self.dead:
                self._send(msg.sender, CancelJob(job))
        for owned in list(self.owned.values()):
            self._requeue(owned, owned.reported(msg.sender, reported.get(owned.spec.job, set())))

    def _watch_leases(self, now: float) -> None:
        if self._next_lease_check is None:
            self._next_lease_check = now + self.policy.report_interval

    def _check_leases(self, now: float) -> None:
        holders = {peer for owned in self.owned.values() for peer in owned.holding_peers()}
        for peer in self._leases.expired(now, holders):
            self._stats["leases_expired"] += 1
            for owned in self.owned.values():
                self._requeue(owned, owned.held_by(peer))
        holders = {peer for owned in self.owned.values() for peer in owned.holding_peers()}
        self._next_lease_check = now + self.policy.report_interval if holders else None


def _parts(results: Sequence[TaskResult], limit: int) -> Iterator[tuple[TaskResult, ...]]:
    """``results`` in consecutive groups of at most ``limit`` payload bytes (at least one
    result each)."""
    part: list[TaskResult] = []
    size = 0
    for result in results:
        if part and size + len(result.payload) > limit:
            yield tuple(part)
            part, size = [], 0
        part.append(result)
        size += len(result.payload)
    if part:
        yield tuple(part)
