"""The work-stealing scheduler of one peer, as a sans-IO machine.

Theory of operation
-------------------
A job is submitted to one peer, its **owner**, which puts the job's tasks at the back of its
own queue (:mod:`.taskqueue`). Every peer runs tasks from the front of its queue (oldest first)
as its worker slots free up. A peer with a free slot and an empty queue is **idle**; an idle
peer steals. So does a peer whose slots are all busy but whose workers' pipes have room
(``batches_per_slot``) and whose queue is empty: it **steals ahead**, so that its next batch
is at hand (arguments fetched, waiting in the worker's pipe) when the running one ends,
instead of a round trip to the victim and one to the owner after it; what it stole goes
straight into those pipes (:mod:`.execution`), so nobody steals it back:

1. It picks a **victim** at random, weighted by the queue lengths it knows (gossiped in member
   metadata, refreshed by :class:`WorkAvailable` hints, by the ``queue`` of every grant and of
   every :class:`Results`; metadata saying 0 never lowers what a peer told itself, see
   :class:`~.victims.Surpluses`). A peer that knows of no queued task anywhere sends
   nothing: a workload smaller than the free slots causes no steals at all.
2. The victim answers with a :class:`StealGrant` holding half (rounded up) of its unstarted
   tasks, oldest first, in one message, so one round trip moves many tasks (:mod:`.victims`
   sizes it), with at most ``message_bytes`` of arguments (large ones stay at the owner).
3. Each task counts its moves; a task that has moved ``max_moves`` times is never granted
   again, so tasks cannot ping-pong between peers. Tasks on their last move go only as many
   as the thief starts at once, so that no thief is left with a pile it cannot pass on.

The owner always knows which peer holds each unfinished task (:mod:`.ownership`). When it
grants tasks itself it records the thief; when a *thief* re-grants stolen tasks it sends
:class:`TasksMoved` to the owner. Results go straight from whoever ran a task to the owner,
small ones in :class:`Results` messages, large ones each on a data stream of their own
(:class:`PushValue`). The owner keeps the first result of every task id and counts any other
as a duplicate: execution is at least once, delivery is exactly once.

Faults, and how the books recover from each, are in :mod:`.owner`.

Not every peer may run every job (:mod:`.eligibility`): a victim grants a job's tasks only
to a thief that can run them, a peer runs only the jobs it can, and the owner says who
cannot, or fails a job no live peer can run (:mod:`.placement`).

When a job ends the owner tells every peer that ever held one of its tasks to drop what is
left (:mod:`.owner`). The machine never sleeps and never sends: it queues outputs
(:class:`SendWork`, :class:`PushValue`) and :class:`WorkEvent` events, and exposes
:meth:`next_deadline`. Peers are named by node id; the driver maps ids to addresses. Every
number it uses is in its :class:`~.policy.WorkPolicy`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import fields
from random import Random

from .eligibility import PeerEnv
from .execution import Execution
from .granting import Granting
from .holding import Holder
from .messages import (
    CancelJob,
    Holding,
    JobSpec,
    Message,
    Results,
    StealGrant,
    StealRequest,
    TaskItem,
    TaskResult,
    TasksMoved,
    WorkAvailable,
)
from .owner import OwnerRole
from .ownership import Ownership
from .placement import Placement
from .policy import WorkPolicy
from .taskqueue import TaskQueue
from .victims import Surpluses, choose_victim
from .workcontext import WorkContext
from .workevents import Batch, JobDropped, StealingStatistics, WorkEvent, WorkOutput

__all__ = ["StealingMachine"]

ENDED_JOBS_KEPT = 1024  #: finished or cancelled jobs remembered, to answer late messages


class StealingMachine:
    """One peer's queue, its owned jobs, and the stealing protocol.

    ``slots`` is how many batches this peer runs at once; ``env`` what this peer has (its
    Python version and tags; its distributions it is asked for with :class:`AskVersions`).
    The driver calls :meth:`take` when a slot is free and :meth:`finished` when the batch is
    done; it feeds membership changes to :meth:`peer_up`, :meth:`peer_env`,
    :meth:`peer_queue` and :meth:`peer_down`, messages to :meth:`receive`, answers to
    :meth:`peer_versions`, and calls :meth:`tick` at :meth:`next_deadline`. The owner's books
    are an :class:`~.owner.OwnerRole`'s, the batches an :class:`~.execution.Execution`'s, the
    holder's reports a :class:`~.holding.Holder`'s, the grants a :class:`~.granting.Granting`'s,
    who may take what a :class:`~.placement.Placement`'s; this class steals, and routes.
    """

    def __init__(self, node_id: bytes, slots: int, rng: Random,
                 policy: WorkPolicy | None = None, env: PeerEnv | None = None) -> None:
        if slots < 0:
            raise ValueError("slots must be >= 0")
        self.node_id = node_id
        self.rng = rng
        self.policy = policy or WorkPolicy()
        self.queue = TaskQueue(self.policy.max_moves)
        self._ctx = WorkContext(node_id, self.policy, self.queue, self.surplus)
        self._holder = Holder(node_id, self.policy.report_interval)
        self._owner = OwnerRole(self._ctx, Ownership(
            self.policy.lease_timeout, self.policy.report_interval, ENDED_JOBS_KEPT),
            self._forget)
        self._execution = Execution(self._ctx, slots, self._holder, self._owner)
        self.peers = Surpluses()  #: live peer -> its surplus as last heard
        self.peer_slots: dict[bytes, int] = {}  #: live peer -> its worker slots
        self.stealing: tuple[bytes, float] | None = None  #: (victim, deadline)
        self._placement = Placement(self._ctx, env or PeerEnv(), self.policy.versions_ttl,
                                    self.cancel)
        self._ctx.runnable = self._placement.runnable_here
        self._granting = Granting(self._ctx, self._owner, self._execution, self._placement,
                                  peers=self.peers, peer_slots=self.peer_slots)

    # --- queries ----------------------------------------------------------------------------

    @property
    def slots(self) -> int:
        return self._execution.slots

    @property
    def busy(self) -> int:
        """Batches out to the worker slots."""
        return self._execution.busy

    def statistics(self) -> StealingStatistics:
        stats = self._ctx.stats
        return StealingStatistics(**{f.name: stats[f.name] for f in fields(StealingStatistics)})

    def queue_length(self) -> int:
        """Unstarted tasks queued here."""
        return len(self.queue)

    def surplus(self) -> int:
        """Queued tasks that may still move, beyond what this peer's free slots are about to
        take: what it advertises, and what it grants from (zero for a local workload)."""
        free = min(max(0, self.slots - self.busy), self._runnable())
        return max(0, min(self.queue.movable, len(self.queue) - free))

    def idle(self) -> bool:
        """A free slot, and nothing queued that this peer may run."""
        return self.busy < self.slots and not self._runnable()

    @property
    def owner(self) -> OwnerRole:
        """The books of the jobs owned here (:class:`~.owner.OwnerRole`), to ask."""
        return self._owner

    def owner_of(self, job: bytes) -> bytes | None:
        """The owner ``job``'s tasks here (queued, running, results due) name; None: none."""
        return self._holder.owner_of(job) or self.queue.owner_of(job)

    def take_outputs(self) -> list[WorkOutput]:
        out, self._ctx.outputs = self._ctx.outputs, []
        return out

    def take_events(self) -> list[WorkEvent]:
        events, self._ctx.events = self._ctx.events, []
        return events

    def next_deadline(self) -> float | None:
        times = [t for t in (self.stealing[1] if self.stealing else None,
                             self._holder.next_report, self._owner.owned.next_check)
                 if t is not None]
        return min(times) if times else None

    # --- membership -------------------------------------------------------------------------

    def peer_up(self, now: float, peer: bytes, queue: int = 0, slots: int = 1) -> None:
        """``peer`` is alive (joined, or seen at start) with ``slots`` worker slots and a
        surplus of ``queue`` tasks."""
        if peer == self.node_id:
            return
        new = peer not in self.peers
        self.peers.published(peer, queue)
        self.peer_slots[peer] = slots
        self._ctx.dead.discard(peer)
        self._placement.peer_up(now, peer)
        if new and self.surplus():
            self._ctx.send(peer, WorkAvailable(self.node_id, self.surplus()))
        self._maybe_steal(now)

    def peer_env(self, now: float, peer: bytes, python: str | None,
                 tags: Iterable[str]) -> None:
        """``peer``'s metadata says its Python version (None: not said) and its tags."""
        if peer != self.node_id:
            self._placement.peer_env(now, peer, python, tags)
            self._maybe_steal(now)

    def peer_versions(self, now: float, peer: bytes, python: str, tags: Iterable[str],
                      versions: Mapping[str, str]) -> None:
        """The answer to :class:`AskVersions`: ``peer``'s Python version, tags and versions
        of the distributions asked (``""``: not installed)."""
        self._placement.learned(now, peer, python, tags, versions)
        self._maybe_steal(now)

    def versions_failed(self, now: float, peer: bytes, why: str) -> None:
        """An :class:`AskVersions` could not be answered."""
        self._placement.failed(now, peer, why)
        self._maybe_steal(now)

    def peer_queue(self, now: float, peer: bytes, queue: int) -> None:
        """``peer`` itself now reports ``queue`` tasks queued (as in a hint)."""
        if peer in self.peers:
            self.peers.heard(peer, queue)
            self._maybe_steal(now)

    def peer_down(self, now: float, peer: bytes) -> None:
        """``peer`` is dead or left: requeue what it held for us, drop what it owned."""
        if peer == self.node_id:
            return
        self.peers.forget(peer)
        self.peer_slots.pop(peer, None)
        self._ctx.dead.add(peer)
        self._owner.owned.forget(peer)
        # Its jobs are orphans: drop them here, and have the driver stop running ones.
        orphaned = {q.spec.job for q in self.queue if q.spec.owner == peer}
        orphaned.update(self._execution.running_jobs_of(peer))
        self._ctx.count("dropped", self.queue.drop(lambda q: q.spec.owner == peer))
        for job in sorted(orphaned):  # one order whatever the hash seed: replayable
            self._forget(job)
            self._ctx.emit(JobDropped(job, "its owner left or died"))
        self._owner.lost_with(peer)  # our tasks it held come back to us, at the front
        if self.stealing and self.stealing[0] == peer:
            self.stealing = None
        self._placement.peer_down(now, peer)
        self._maybe_steal(now)

    # --- the owner's side -------------------------------------------------------------------

    def submit(self, now: float, spec: JobSpec, tasks: Iterable[tuple[int, bytes] | TaskItem],
               *, more: bool = False) -> None:
        """Own job ``spec.job``, and queue its tasks (id, CBOR arguments) here; a remote
        :class:`TaskItem` names arguments of ``size`` bytes the driver holds and serves.
        ``more``: more tasks follow (:meth:`extend`; a driver admits a large job in parts,
        so that no one step takes long), and the job does not end before them."""
        before = self.surplus()
        if self._owner.add(spec, tasks, more=more):
            self._placement.own(now, spec)
            if before == 0 and self.surplus():
                self._placement.announce(spec, self.peers)

    def extend(self, now: float, spec: JobSpec, tasks: Iterable[tuple[int, bytes] | TaskItem],
               *, more: bool = False) -> bool:
        """Queue more tasks of a job submitted with ``more`` (``more`` again: still more
        follow); False if it is over (cancelled meanwhile): stop adding."""
        before = self.surplus()
        if not self._owner.extend(spec.job, tasks, more=more):
            return False
        if before == 0 and self.surplus():
            self._placement.announce(spec, self.peers)
        return True

    def cancel(self, now: float, job: bytes) -> None:
        """Cancel an owned job everywhere: drop it here and tell every peer that held it."""
        if not self._owner.owns(job):
            return
        self._ctx.count("dropped", self.queue.drop(lambda q: q.spec.job == job))
        self._ctx.emit(JobDropped(job, "cancelled"))
        self._owner.end(job)

    # --- local execution --------------------------------------------------------------------

    def peek(self) -> JobSpec | None:
        """The job of the task :meth:`take` would give next, if any (to size the batch)."""
        return self._execution.peek()

    def take(self, now: float, max_tasks: int | None = None) -> Batch | None:
        """Claim a batch: up to ``max_tasks`` tasks of one job from the front of the queue.

        Without ``max_tasks``, as many as fill the policy's ``batch_target`` seconds by the
        task times measured for the job (:meth:`finished`), one until the first measurement.
        The job's ``chunksize``, if set, replaces either. Otherwise a batch holds at most a
        quarter of the queue per slot, so that half of it stays stealable; and never more
        than ``message_bytes`` of arguments unless one task alone is larger. Returns None (and
        may start a steal) when there is nothing to run or no batch may start.
        """
        batch = self._execution.take(max_tasks)
        if batch is None or not self.queue:
            self._maybe_steal(now)
        return batch

    def finished(self, now: float, batch: Batch, results: Sequence[TaskResult],
                 seconds: float | None = None, unstarted: Sequence[TaskItem] = (), *,
                 held: Mapping[int, Sized] | None = None) -> None:
        """A batch taken with :meth:`take` ended; route its results to the job's owner.

        Pass the results of the tasks that ran (none, if the batch was stopped), the seconds
        the worker spent on them, which size the job's next batches, and the tasks it did
        not start because it reached the batch's ``time_limit``: they go back to the front
        of the queue (unless the job is over here). ``held``: task id -> a payload the driver
        keeps (of a job owned elsewhere; that result's own is empty), pushed as it is.
        """
        self._execution.finished(batch, results, seconds, unstarted, held or {})
        self._maybe_steal(now)

    def push_done(self, now: float, job: bytes, tid: int, delivered: bool,
                  instead: TaskResult | None = None) -> None:
        """The driver finished (or failed) a :class:`PushValue` of task ``tid``. ``instead``
        is a small result to send in its place (the owner refused the large one)."""
        self._execution.push_done(job, tid, delivered, instead)

    def decline(self, now: float, job: bytes) -> None:
        """This peer cannot run ``job`` (see :meth:`.Execution.decline`)."""
        self._ctx.count("dropped", self._execution.decline(now, job))
        self._maybe_steal(now)

    # --- network ----------------------------------------------------------------------------

    def receive(self, now: float, msg: Message) -> None:
        """A work message arrived (from any peer; messages name their sender)."""
        if isinstance(msg, StealRequest):
            self._granting.on_steal_request(now, msg)
        elif isinstance(msg, StealGrant):
            self._on_grant(now, msg)
        elif isinstance(msg, Results):
            self.peers.heard(msg.sender, msg.queue)
            self._owner.on_results(now, msg)
            self._maybe_steal(now)
        elif isinstance(msg, TasksMoved):
            self._owner.on_moved(now, msg)
        elif isinstance(msg, CancelJob):
            self._on_cancel(now, msg)
        elif isinstance(msg, WorkAvailable):
            self.peers.heard(msg.sender, msg.queue)
            self._maybe_steal(now)
        elif isinstance(msg, Holding):
            self._owner.on_holding(now, msg)

    def grant_failed(self, now: float, grant: StealGrant) -> None:
        """The driver could not deliver ``grant``: take its tasks back, at the front."""
        self._granting.grant_failed(now, grant)

    def tick(self, now: float) -> None:
        if self.stealing and now >= self.stealing[1]:
            victim = self.stealing[0]
            self.stealing = None
            self._ctx.count("steals_empty")
            self.peers.heard(victim, 0)
            self._maybe_steal(now)
        if self._holder.next_report is not None and now >= self._holder.next_report:
            for owner, report in self._holder.report(now, self.queue, self._ctx.dead):
                self._ctx.send(owner, report)
                self._ctx.count("reports_sent")
        next_check = self._owner.owned.next_check
        if next_check is not None and now >= next_check:
            self._owner.check_leases(now)

    # --- internals --------------------------------------------------------------------------

    def _forget(self, job: bytes) -> None:
        self._execution.forget(job)
        self._placement.forget(job)

    def _runnable(self) -> int:
        """Queued tasks this peer may run."""
        runnable = self._placement.runnable_here
        return len(self.queue) if self.queue.everywhere(runnable) else self.queue.count(
            runnable)

    def hungry(self) -> bool:
        """Idle, or stealing ahead: every slot busy, room in the workers' pipes
        (``batches_per_slot``), and nothing queued that this peer may run."""
        room = self.slots * self.policy.batches_per_slot
        return self.busy < room and not self._runnable()

    def _maybe_steal(self, now: float) -> None:
        if self.stealing is not None or not self.hungry():
            return
        victim = choose_victim(self.rng, self.peers)
        if victim is None:
            return
        self.stealing = (victim, now + self.policy.steal_timeout)
        self._ctx.count("steal_requests")
        self._ctx.send(victim, StealRequest(self.node_id, max(0, self.slots - self.busy),
                                            tuple(self._execution.declined)))

    def _on_grant(self, now: float, grant: StealGrant) -> None:
        if self.stealing and self.stealing[0] == grant.victim:
            self.stealing = None
        self.peers.heard(grant.victim, grant.queue)
        count = self._granting.received(now, grant, self._holder)
        self._ctx.count("steals_granted" if count else "steals_empty")
        self._ctx.count("tasks_stolen", count)
        self._maybe_steal(now)

    def _on_cancel(self, now: float, msg: CancelJob) -> None:
        if self._owner.owns(msg.job):  # only an owner ends its job
            return
        self._ctx.count("dropped", self.queue.drop(lambda q: q.spec.job == msg.job))
        self._forget(msg.job)
        self._ctx.emit(JobDropped(msg.job, "ended by its owner"))
        self._maybe_steal(now)
