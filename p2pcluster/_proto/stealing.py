"""The work-stealing scheduler of one peer, as a sans-IO machine.

Theory of operation
-------------------
A job is submitted to one peer, its **owner**, which puts the job's tasks at the back of its
own queue. Every peer runs tasks from the front of its queue (oldest first) as its worker
slots free up. A peer with a free slot and an empty queue is **idle**; an idle peer steals:

1. It picks a **victim** at random, weighted by the queue lengths it knows (gossiped in member
   metadata, refreshed by :class:`WorkAvailable` hints, by the ``queue`` of every grant and of
   every :class:`Results`). A peer that knows of no queued task anywhere sends nothing: a
   workload smaller than the free slots causes no steals at all.
2. The victim answers with a :class:`StealGrant` holding half (rounded up) of its unstarted
   tasks, oldest first, in one message, so one round trip moves many tasks.
3. Each task counts its moves; a task that has moved twice is never granted again, so tasks
   cannot ping-pong between peers.

The owner always knows which peer holds each unfinished task. When it grants tasks itself it
records the thief; when a *thief* re-grants stolen tasks it sends :class:`TasksMoved` to the
owner. Results go straight from whoever ran a task to the owner, which keeps the first result
of every task id and counts any other as a duplicate: execution is at least once, delivery is
exactly once.

Faults come from membership (``peer_down``):

- A **holder** dies: the owner puts that holder's unfinished tasks back at the front of its
  own queue (their move count reset: a recovery is not a move). If the owner learns of a move
  to a peer it already knows is dead, it requeues at once. Should the *victim* die before its
  ``TasksMoved`` reaches the owner, the owner requeues the tasks it believed the victim held,
  which covers the granted ones too (a duplicate at worst, never a loss).
- The **owner** dies: every peer drops that owner's queued tasks and the driver stops the
  running ones (:class:`JobDropped`); results for it are thrown away.
- A **steal** goes unanswered for ``steal_timeout``: the thief forgets the request, treats the
  victim's queue as empty, and tries elsewhere. A grant that arrives late is still accepted.
- A grant that cannot be delivered (the driver reports it with :meth:`grant_failed`) goes
  back to the victim's queue.

When a job ends, by completion or cancellation, the owner tells every peer that ever held one of
its tasks to drop what is left (duplicates only, for a completed job). A message about a job the
owner no longer runs is answered with :class:`CancelJob` too.

The machine never sleeps and never sends: it queues :class:`SendWork` outputs and
:class:`WorkEvent` events, and exposes :meth:`next_deadline`. Peers are named by node id; the
driver maps ids to addresses.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from random import Random

from .messages import (
    CancelJob,
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

__all__ = [
    "JobDropped", "JobFinished", "ResultsReady", "SendWork", "StealingMachine",
    "StealingStatistics", "WorkEvent",
]

#: A task is granted at most this many times between (re)queues at its owner.
MAX_MOVES = 2
#: Finished or cancelled jobs remembered, to answer late messages with CancelJob.
ENDED_JOBS_KEPT = 1024


@dataclass(frozen=True, slots=True)
class SendWork:
    """Send ``msg`` to peer ``dst`` over its work link (reliable, in order, may fail)."""

    dst: bytes
    msg: Message


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


@dataclass(slots=True)
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
    requeued: int = 0  #: tasks put back on an owner's queue after their holder died
    dropped: int = 0  #: queued tasks dropped (owner died, job cancelled or finished)


@dataclass(slots=True)
class _Queued:
    spec: JobSpec
    item: TaskItem


@dataclass(slots=True)
class _OwnedJob:
    spec: JobSpec
    payloads: dict[int, bytes]  #: unfinished tasks' arguments, for requeueing
    holder: dict[int, bytes]  #: unfinished task id -> the peer believed to hold it
    ever_held: set[bytes] = field(default_factory=set)


class StealingMachine:
    """One peer's queue, its owned jobs, and the stealing protocol.

    ``slots`` is how many batches this peer runs at once. The driver calls :meth:`take` when
    a slot is free and :meth:`finished` when the batch is done; it feeds membership changes to
    :meth:`peer_up`, :meth:`peer_queue` and :meth:`peer_down`, messages to :meth:`receive`,
    and calls :meth:`tick` at :meth:`next_deadline`.
    """

    def __init__(self, node_id: bytes, slots: int, rng: Random, *,
                 steal_timeout: float = 1.0, max_moves: int = MAX_MOVES) -> None:
        if slots < 0:
            raise ValueError("slots must be >= 0")
        self.node_id = node_id
        self.slots = slots
        self.rng = rng
        self.steal_timeout = steal_timeout
        self.max_moves = max_moves
        self.busy = 0
        self.queue: deque[_Queued] = deque()
        self.owned: dict[bytes, _OwnedJob] = {}
        self.peers: dict[bytes, int] = {}  #: live peer -> its surplus as last heard
        self.peer_slots: dict[bytes, int] = {}  #: live peer -> its worker slots
        self._stuck = 0  #: queued tasks that moved max_moves times: never granted again
        self._running: dict[bytes, tuple[bytes, int]] = {}  #: job -> (owner, batches running)
        self.dead: set[bytes] = set()
        self.ended: deque[bytes] = deque(maxlen=ENDED_JOBS_KEPT)
        self._ended_set: set[bytes] = set()
        self.stealing: tuple[bytes, float] | None = None  #: (victim, deadline)
        self.stats = StealingStatistics()
        self._outputs: list[SendWork] = []
        self._events: list[WorkEvent] = []

    # --- queries ----------------------------------------------------------------------------

    def queue_length(self) -> int:
        """Unstarted tasks queued here."""
        return len(self.queue)

    def surplus(self) -> int:
        """Queued tasks that may still move, beyond what this peer's free slots are about to
        take: what it advertises, and what it grants from. Zero for a workload that fits
        locally."""
        return max(0, min(len(self.queue) - self._stuck,
                          len(self.queue) - max(0, self.slots - self.busy)))

    def idle(self) -> bool:
        return self.busy < self.slots and not self.queue

    def owned_remaining(self, job: bytes) -> int:
        owned = self.owned.get(job)
        return len(owned.payloads) if owned else 0

    def holders(self, job: bytes) -> dict[int, bytes]:
        """For an owned job: unfinished task id -> the peer believed to hold it."""
        owned = self.owned.get(job)
        return dict(owned.holder) if owned else {}

    def take_outputs(self) -> list[SendWork]:
        out, self._outputs = self._outputs, []
        return out

    def take_events(self) -> list[WorkEvent]:
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float | None:
        return self.stealing[1] if self.stealing else None

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
        # Its jobs are orphans: drop them here, and have the driver stop running ones.
        orphaned = {q.spec.job for q in self.queue if q.spec.owner == peer}
        orphaned.update(job for job, (owner, _) in self._running.items() if owner == peer)
        if orphaned:
            self._drop_queued(lambda q: q.spec.owner == peer)
        for job in orphaned:
            self._events.append(JobDropped(job, "its owner left or died"))
        # Our tasks it held come back to us, at the front (they are the oldest).
        for owned in self.owned.values():
            lost = [tid for tid, holder in owned.holder.items() if holder == peer]
            self._requeue(owned, lost)
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
        owned = _OwnedJob(spec, {}, {})
        for tid, payload in tasks:
            if tid in owned.payloads:
                raise ValueError(f"duplicate task id {tid}")
            owned.payloads[tid] = payload
            owned.holder[tid] = self.node_id
            self.queue.append(_Queued(spec, TaskItem(tid, 0, payload)))
        self.owned[spec.job] = owned
        self.stats.submitted += len(owned.payloads)
        if not owned.payloads:
            self._end(spec.job)
            self._events.append(JobFinished(spec.job))
            return
        if before == 0 and self.surplus():
            hint = WorkAvailable(self.node_id, self.surplus())
            for peer in self.peers:
                self._send(peer, hint)

    def cancel(self, now: float, job: bytes) -> None:
        """Cancel an owned job everywhere: drop it here and tell every peer that held it."""
        owned = self.owned.get(job)
        if owned is None:
            return
        self._drop_queued(lambda q: q.spec.job == job)
        self._events.append(JobDropped(job, "cancelled"))
        self._end(job)

    # --- local execution --------------------------------------------------------------------

    def _limit(self) -> int:
        """Batches that may be out at once: two per slot while the queue holds at least two
        tasks per slot (the second waits in a worker's pipe, so the worker never waits for
        its driver), one per slot once it is shorter (the last tasks stay stealable)."""
        return 2 * self.slots if len(self.queue) >= 2 * self.slots else self.slots

    def peek(self) -> JobSpec | None:
        """The job of the task :meth:`take` would give next, if any (to size the batch)."""
        return self.queue[0].spec if self.queue and self.busy < self._limit() else None

    def take(self, now: float, max_tasks: int) -> tuple[JobSpec, list[TaskItem]] | None:
        """Claim a batch: up to ``max_tasks`` tasks of one job from the front of the queue.

        The job's ``chunksize``, if set, replaces ``max_tasks``. Otherwise a batch holds at
        most a quarter of the queue per slot, so that half of it stays stealable. Returns None
        (and may start a steal) when there is nothing to run or no batch may start.
        """
        if self.busy >= self._limit() or not self.queue:
            self._maybe_steal(now)
            return None
        fair = max(1, min(max_tasks, len(self.queue) // (4 * self.slots)))
        max_tasks = self.queue[0].spec.chunksize or fair
        first = self.queue.popleft()
        items = [first.item]
        job = first.spec.job
        while self.queue and len(items) < max_tasks and self.queue[0].spec.job == job:
            items.append(self.queue.popleft().item)
        if self._stuck:
            self._stuck -= sum(1 for item in items if item.moves >= self.max_moves)
        self.busy += 1
        _, running = self._running.get(job, (b"", 0))
        self._running[job] = (first.spec.owner, running + 1)
        if not self.queue:
            self._maybe_steal(now)
        return first.spec, items

    def finished(self, now: float, spec: JobSpec, results: Sequence[TaskResult]) -> None:
        """A batch taken with :meth:`take` ended; route its results to the job's owner.

        Pass the results of the tasks that ran (none, if the batch was stopped).
        """
        self.busy = max(0, self.busy - 1)
        owner, running = self._running.pop(spec.job, (b"", 1))
        if running > 1:
            self._running[spec.job] = (owner, running - 1)
        self.stats.executed += len(results)
        if results:
            if spec.job in self.owned:
                self._accept(spec.job, self.node_id, results)
            elif spec.owner not in self.dead and spec.job not in self._ended_set:
                self._send(spec.owner, Results(spec.job, self.node_id, self.surplus(),
                                               tuple(results)))
        self._maybe_steal(now)

    # --- network ----------------------------------------------------------------------------

    def receive(self, now: float, msg: Message) -> None:
        """A work message arrived (from any peer; messages name their sender)."""
        if isinstance(msg, StealRequest):
            self._on_steal_request(now, msg)
        elif isinstance(msg, StealGrant):
            self._on_grant(now, msg)
        elif isinstance(msg, Results):
            self._note_queue(msg.sender, msg.queue)
            if msg.job in self.owned:
                self._accept(msg.job, msg.sender, msg.results)
            elif msg.sender != self.node_id and msg.sender not in self.dead:
                self._send(msg.sender, CancelJob(msg.job))
            self._maybe_steal(now)
        elif isinstance(msg, TasksMoved):
            self._on_moved(msg)
        elif isinstance(msg, CancelJob):
            if msg.job not in self.owned:  # only an owner ends its job
                self._drop_queued(lambda q: q.spec.job == msg.job)
                self._events.append(JobDropped(msg.job, "ended by its owner"))
                self._maybe_steal(now)
        elif isinstance(msg, WorkAvailable):
            self._note_queue(msg.sender, msg.queue)
            self._maybe_steal(now)

    def grant_failed(self, now: float, grant: StealGrant) -> None:
        """The driver could not deliver ``grant``: take its tasks back, at the front."""
        for job_tasks in reversed(grant.jobs):
            spec = job_tasks.spec
            if spec.owner in self.dead or spec.job in self._ended_set:
                continue
            for item in reversed(job_tasks.tasks):
                back = TaskItem(item.id, item.moves - 1, item.payload)
                self.queue.appendleft(_Queued(spec, back))
                self._stuck += back.moves >= self.max_moves
            self._moved(spec, self.node_id, [t.id for t in job_tasks.tasks])
        self.stats.tasks_given -= sum(len(jt.tasks) for jt in grant.jobs)

    def tick(self, now: float) -> None:
        if self.stealing and now >= self.stealing[1]:
            victim = self.stealing[0]
            self.stealing = None
            self.stats.steals_empty += 1
            if victim in self.peers:
                self.peers[victim] = 0
            self._maybe_steal(now)

    # --- internals --------------------------------------------------------------------------

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
        self.stealing = (victim, now + self.steal_timeout)
        self.stats.steal_requests += 1
        self._send(victim, StealRequest(self.node_id, self.slots - self.busy))

    def _on_steal_request(self, now: float, req: StealRequest) -> None:
        thief = req.thief
        if thief in self.dead or thief == self.node_id:
            return
        want = self._grant_size(thief, req.slots)
        granted: dict[bytes, tuple[JobSpec, list[TaskItem]]] = {}
        if want:
            kept: deque[_Queued] = deque()
            for q in self.queue:
                if want and q.item.moves < self.max_moves:
                    want -= 1
                    entry = granted.setdefault(q.spec.job, (q.spec, []))
                    entry[1].append(TaskItem(q.item.id, q.item.moves + 1, q.item.payload))
                else:
                    kept.append(q)
            self.queue = kept
            self._stuck = sum(1 for q in kept if q.item.moves >= self.max_moves)
        jobs = tuple(JobTasks(spec, tuple(items)) for spec, items in granted.values())
        for spec, items in granted.values():
            self._moved(spec, thief, [t.id for t in items])
            self.stats.tasks_given += len(items)
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

    def _moved(self, spec: JobSpec, holder: bytes, ids: list[int]) -> None:
        """Record (as owner) or report (to the owner) that ``ids`` are now at ``holder``."""
        if spec.owner == self.node_id:
            owned = self.owned.get(spec.job)
            if owned is not None:
                self._set_holder(owned, holder, ids)
        else:
            self._send(spec.owner, TasksMoved(spec.job, holder, tuple(ids)))

    def _set_holder(self, owned: _OwnedJob, holder: bytes, ids: Iterable[int]) -> None:
        fresh = [tid for tid in ids if tid in owned.holder]
        for tid in fresh:
            owned.holder[tid] = holder
        if holder != self.node_id:
            owned.ever_held.add(holder)
        if holder in self.dead:
            self._requeue(owned, fresh)

    def _on_moved(self, msg: TasksMoved) -> None:
        owned = self.owned.get(msg.job)
        if owned is None:
            if msg.job in self._ended_set and msg.holder not in self.dead:
                self._send(msg.holder, CancelJob(msg.job))
            return
        self._set_holder(owned, msg.holder, msg.ids)

    def _on_grant(self, now: float, grant: StealGrant) -> None:
        if self.stealing and self.stealing[0] == grant.victim:
            self.stealing = None
        self._note_queue(grant.victim, grant.queue)
        count = 0
        for job_tasks in grant.jobs:
            spec = job_tasks.spec
            if spec.owner in self.dead or spec.job in self._ended_set:
                self.stats.dropped += len(job_tasks.tasks)
                continue
            self.queue.extend(_Queued(spec, item) for item in job_tasks.tasks)
            count += len(job_tasks.tasks)
            self._stuck += sum(1 for item in job_tasks.tasks if item.moves >= self.max_moves)
        if count:
            self.stats.steals_granted += 1
            self.stats.tasks_stolen += count
        else:
            self.stats.steals_empty += 1
        self._maybe_steal(now)

    def _accept(self, job: bytes, peer: bytes, results: Sequence[TaskResult]) -> None:
        owned = self.owned[job]
        fresh = []
        for result in results:
            if owned.payloads.pop(result.id, None) is None:
                self.stats.duplicates += 1
                continue
            del owned.holder[result.id]
            fresh.append(result)
        if fresh:
            self.stats.completed += len(fresh)
            self._events.append(ResultsReady(job, tuple(fresh), peer))
        if not owned.payloads:
            self._events.append(JobFinished(job))
            self._drop_queued(lambda q: q.spec.job == job)  # duplicates still queued here
            self._end(job)

    def _requeue(self, owned: _OwnedJob, ids: Sequence[int]) -> None:
        ids = [tid for tid in ids if tid in owned.payloads]
        if not ids:
            return
        for tid in sorted(ids, reverse=True):
            owned.holder[tid] = self.node_id
            self.queue.appendleft(_Queued(owned.spec, TaskItem(tid, 0, owned.payloads[tid])))
        self.stats.requeued += len(ids)

    def _end(self, job: bytes) -> None:
        owned = self.owned.pop(job)
        for peer in owned.ever_held:
            if peer not in self.dead:
                self._send(peer, CancelJob(job))
        if len(self.ended) == self.ended.maxlen:
            self._ended_set.discard(self.ended[0])
        self.ended.append(job)
        self._ended_set.add(job)

    def _drop_queued(self, doomed: Callable[[_Queued], bool]) -> int:
        kept = deque(q for q in self.queue if not doomed(q))
        self._stuck = sum(1 for q in kept if q.item.moves >= self.max_moves)
        dropped = len(self.queue) - len(kept)
        self.queue = kept
        self.stats.dropped += dropped
        return dropped
