"""The owner's side of the stealing machine: the jobs this peer owns.

The owner queues a job's tasks, records every move of them (its own grants, and the
``TasksMoved`` reports of thieves that re-grant), accepts the first result of each task and
counts any other as a duplicate, and runs a task again, from the front of its queue, when
its holder died, lost it (two holding reports without it), or went silent for a whole
lease. When the job ends, by completion or cancellation, every peer that ever held one of its
tasks is told to drop what is left (:class:`CancelJob`); a message about a job that ended
here is answered the same way. The books themselves live in :mod:`.ownership`.

Faults the owner, the thieves and the victims recover from:

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
- A grant that cannot be delivered (the driver reports it with
  ``StealingMachine.grant_failed``) goes back to the victim's queue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from .messages import (
    MAX_TASKS,
    CancelJob,
    Holding,
    JobSpec,
    Results,
    TaskItem,
    TaskResult,
    TasksMoved,
)
from .ownership import OwnedJob, Ownership, ids_from_runs
from .workcontext import WorkContext
from .workevents import JobFinished, ResultsReady

__all__ = ["OwnerRole"]


class OwnerRole:
    """See the module docstring. ``forget(job)`` tells the machine a job is over here."""

    def __init__(self, ctx: WorkContext, owned: Ownership,
                 forget: Callable[[bytes], None]) -> None:
        self._ctx = ctx
        self.owned = owned
        self._forget = forget

    def owns(self, job: bytes) -> bool:
        return job in self.owned.jobs

    def remaining(self, job: bytes) -> int:
        """Unfinished tasks of ``job`` (0 if it is not owned here, or over)."""
        owned = self.owned.jobs.get(job)
        return len(owned) if owned else 0

    def holders(self, job: bytes) -> dict[int, bytes]:
        """For an owned job: unfinished task id -> the peer believed to hold it."""
        return owned.holders() if (owned := self.owned.jobs.get(job)) else {}

    def payload(self, job: bytes, tid: int) -> bytes | None:
        """For an owned job: the arguments of unfinished task ``tid``, or None."""
        owned = self.owned.jobs.get(job)
        return owned.payloads.get(tid) if owned else None

    def add(self, spec: JobSpec, tasks: Iterable[tuple[int, bytes] | TaskItem], *,
            more: bool = False) -> bool:
        """Own ``spec``'s job and queue its tasks; whether it goes on (False: it had none,
        and none are to come, so it is over).
        A task given as a remote :class:`TaskItem` (empty payload, ``size`` bytes) has
        arguments the driver holds outside the machine and serves to whoever runs it.
        ``more``: more of its tasks follow (:meth:`extend`), and the job does not end
        before they are in, however many of these finish."""
        if spec.owner != self._ctx.node_id:
            raise ValueError("a job is submitted to its owner")
        if spec.job in self.owned.jobs or self.owned.ended(spec.job):
            raise ValueError("job id already used")
        owned = self.owned.jobs[spec.job] = OwnedJob(spec, self._ctx.node_id)
        self._queue(owned, tasks, more)
        return bool(len(owned)) or more

    def extend(self, job: bytes, tasks: Iterable[tuple[int, bytes] | TaskItem], *,
               more: bool = False) -> bool:
        """Queue more tasks of ``job``, added with ``more`` (``more`` again: still more
        follow); False if the job is over (cancelled meanwhile), and nothing is queued."""
        owned = self.owned.jobs.get(job)
        if owned is None or not owned.open:
            if owned is None and self.owned.ended(job):
                return False
            raise ValueError("a job extended is one added with more tasks to follow")
        self._queue(owned, tasks, more)
        return True

    def _queue(self, owned: OwnedJob, tasks: Iterable[tuple[int, bytes] | TaskItem],
               more: bool) -> None:
        spec, before = owned.spec, len(owned)
        for task in tasks:
            item = task if isinstance(task, TaskItem) else TaskItem(task[0], 0, task[1])
            owned.add(item.id, item.payload, item.size)
            self._ctx.queue.append(spec, owned.item(item.id))
        owned.open = more
        self._ctx.count("submitted", len(owned) - before)
        if not len(owned) and not more:
            self.end(spec.job)
            self._ctx.emit(JobFinished(spec.job))

    def accept(self, job: bytes, peer: bytes, results: Sequence[TaskResult]) -> None:
        """Results of ``job`` from ``peer``: the first of each task goes to the driver."""
        owned = self.owned.jobs[job]
        fresh = tuple(r for r in results if owned.finish(r.id))
        self._ctx.count("duplicates", len(results) - len(fresh))
        if fresh:
            self._ctx.count("completed", len(fresh))
            self._ctx.emit(ResultsReady(job, fresh, peer))
        if not len(owned) and not owned.open:
            self._ctx.emit(JobFinished(job))
            self._ctx.stats["dropped"] += self._ctx.queue.drop(lambda q: q.spec.job == job)
            self.end(job)

    def end(self, job: bytes) -> None:
        """The job is over: tell every peer that held one of its tasks."""
        owned = self.owned.end(job)
        self._forget(job)
        for peer in sorted(owned.ever_held):  # sorted: the same order on every replay
            if peer not in self._ctx.dead:
                self._ctx.send(peer, CancelJob(job))

    def moved(self, now: float, spec: JobSpec, holder: bytes, ids: list[int]) -> None:
        """Record (as owner) or report (to the owner) that ``ids`` are now at ``holder``."""
        if spec.owner != self._ctx.node_id:
            self._ctx.send(spec.owner, TasksMoved(spec.job, holder, tuple(ids)))
            return
        owned = self.owned.jobs.get(spec.job)
        if owned is None:
            return
        fresh = owned.move(ids, holder)
        if holder == self._ctx.node_id:
            return
        self.owned.assigned(holder, now)
        if holder in self._ctx.dead:
            self.requeue(owned, fresh)

    def on_moved(self, now: float, msg: TasksMoved) -> None:
        owned = self.owned.jobs.get(msg.job)
        if owned is None:
            if self.owned.ended(msg.job) and msg.holder not in self._ctx.dead:
                self._ctx.send(msg.holder, CancelJob(msg.job))
            return
        self.moved(now, owned.spec, msg.holder, list(msg.ids))

    def on_results(self, now: float, msg: Results) -> None:
        self.owned.heard(msg.sender, now)
        if msg.job in self.owned.jobs:
            self.accept(msg.job, msg.sender, msg.results)
        elif msg.sender != self._ctx.node_id and msg.sender not in self._ctx.dead:
            self._ctx.send(msg.sender, CancelJob(msg.job))

    def on_holding(self, now: float, msg: Holding) -> None:
        """A holder's report: run again what two reports in a row left out."""
        self.owned.heard(msg.sender, now)
        try:
            reported = {h.job: ids_from_runs(h.runs, MAX_TASKS) for h in msg.jobs}
        except ValueError:
            return  # a malformed report says nothing
        for job in reported:
            if self.owned.ended(job) and msg.sender not in self._ctx.dead:
                self._ctx.send(msg.sender, CancelJob(job))
        for owned, lost in self.owned.reported(msg.sender, reported):
            self.requeue(owned, lost)

    def check_leases(self, now: float) -> None:
        """Run again every task of a holder silent for a whole lease."""
        for peer in self.owned.expired(now):
            self._ctx.count("leases_expired")
            self.lost_with(peer)

    def lost_with(self, peer: bytes) -> None:
        """``peer`` died, left or went silent: our tasks it held come back, at the front."""
        for owned, ids in self.owned.held_by(peer):
            self.requeue(owned, ids)

    def requeue(self, owned: OwnedJob, ids: Sequence[int]) -> None:
        ids = [tid for tid in ids if tid in owned.payloads]
        if not ids:
            return
        owned.move(ids, self._ctx.node_id)
        for tid in sorted(ids, reverse=True):
            self._ctx.queue.appendleft(owned.spec, owned.item(tid))
        self._ctx.count("requeued", len(ids))

    def homecoming(self, spec: JobSpec, item: TaskItem) -> TaskItem:
        """A task of a job owned here, granted back here by a thief (a re-steal): with the
        arguments its grants left behind put back, since no other peer holds them."""
        if not item.remote or spec.owner != self._ctx.node_id:
            return item
        owned = self.owned.jobs.get(spec.job)
        return TaskItem(item.id, item.moves, owned.payloads.get(item.id, b"") if owned else b"")

    def restored(self, spec: JobSpec, item: TaskItem) -> TaskItem:
        """A task coming back to a queue, one move less; the owner puts back the arguments
        a grant left behind (those the driver holds stay remote)."""
        if item.remote and spec.owner == self._ctx.node_id:
            owned = self.owned.jobs.get(spec.job)
            if owned is not None and item.id in owned.payloads:
                return owned.item(item.id, item.moves - 1)
            return TaskItem(item.id, item.moves - 1, b"", 0)
        return TaskItem(item.id, item.moves - 1, item.payload, item.size)
