"""Local execution in the stealing machine: batches out to this peer's worker slots, and where
their results go.

A batch is tasks of one job from the front of the queue (:meth:`Execution.take`), sized by
the job's estimated task time (:meth:`~.policy.WorkPolicy.task_time`, a moving average of
the batches measured here) to last the policy's ``batch_target``, capped at a
quarter of the queue per slot (half of it stays stealable) and at ``message_bytes`` of
arguments. While the queue is long, ``batches_per_slot`` batches may be out per slot (the
next waits in the worker's pipe); once it is short, one, so that the owner's last tasks stay
stealable, unless every task queued here was stolen by this peer (it stole them to run them
next: see "stealing ahead" in :mod:`.stealing`).

When a batch ends (:meth:`Execution.finished`), results of a job owned here go to the owner
role; others go to the job's owner: small ones in :class:`Results` messages of at most
``message_bytes``, each large one pushed on a stream of its own (:class:`PushValue`) and
still *held* here until it is delivered.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence, Sized

from .holding import Holder
from .messages import JobSpec, Results, TaskItem, TaskResult
from .owner import OwnerRole
from .wiretypes import MAX_DECLINED
from .workcontext import WorkContext
from .workevents import Batch, PushValue

__all__ = ["Execution"]

#: Jobs whose measured task times are remembered at most.
TIMED_JOBS_KEPT = 1024


class Execution:
    """The batches of one peer with ``slots`` worker slots."""

    def __init__(self, ctx: WorkContext, slots: int, holder: Holder, owner: OwnerRole) -> None:
        self._ctx = ctx
        self.slots = slots
        self._holder = holder
        self._owner = owner
        self.busy = 0  #: batches out
        self._running: dict[bytes, tuple[bytes, int]] = {}  #: job -> (owner, batches out)
        self._task_time: dict[bytes, float] = {}  #: job -> estimated seconds per task
        self.declined: dict[bytes, None] = {}  #: jobs this peer cannot run, oldest first

    def limit(self) -> int:
        """Batches that may be out at once (see the module docstring)."""
        per = self._ctx.policy.batches_per_slot
        queue = self._ctx.queue
        if len(queue) >= per * self.slots or (queue and not any(
                self._owner.owns(q.spec.job) for q in queue)):
            return per * self.slots
        return self.slots

    def batch_size(self, job: bytes) -> int:
        """Tasks of ``job`` in a batch of about the policy's ``batch_target`` seconds, by the
        task time measured here (one task until the first measurement)."""
        return self._ctx.policy.batch_size(self._task_time.get(job))

    def peek(self) -> JobSpec | None:
        if self.busy >= self.limit():
            return None
        front = self._ctx.queue.front(self._ctx.runnable)
        return front.spec if front is not None else None

    def take(self, max_tasks: int | None) -> Batch | None:
        """A batch, or None if none may start (see :meth:`StealingMachine.take`). Only tasks
        of jobs this peer may run are taken (``WorkContext.runnable``)."""
        queue, policy = self._ctx.queue, self._ctx.policy
        if self.busy >= self.limit():
            return None
        front = queue.front(self._ctx.runnable)
        if front is None:
            return None
        if max_tasks is None:
            max_tasks = self.batch_size(front.spec.job)
        fair = max(1, min(max_tasks, len(queue) // (4 * self.slots)))
        spec, items = queue.take(front.spec.chunksize or fair, policy.message_bytes,
                                 self._ctx.runnable)
        self.busy += 1
        _, running = self._running.get(spec.job, (b"", 0))
        self._running[spec.job] = (spec.owner, running + 1)
        self._holder.hold(spec, (item.id for item in items))
        return Batch(spec, items, None if spec.chunksize else policy.max_batch_time)

    def finished(self, batch: Batch, results: Sequence[TaskResult], seconds: float | None,
                 unstarted: Sequence[TaskItem], held: Mapping[int, Sized]) -> None:
        spec = batch.spec
        if held and spec.owner == self._ctx.node_id:
            raise ValueError("results of a job owned here are not held outside the machine")
        if seconds is not None and results:
            self._measure(spec.job, len(results), seconds)
        if unstarted and self._holder.owner_of(spec.job) is not None:  # the job lives on
            for item in reversed(unstarted):
                self._ctx.queue.appendleft(spec, item)
            self._ctx.count("tasks_given_back", len(unstarted))
        self.busy = max(0, self.busy - 1)
        owner, running = self._running.pop(spec.job, (b"", 1))
        if running > 1:
            self._running[spec.job] = (owner, running - 1)
        self._holder.release(spec.job, (item.id for item in batch.items))
        self._ctx.count("executed", len(results))
        if not results:
            return
        if self._owner.owns(spec.job):
            self._owner.accept(spec.job, self._ctx.node_id, results)
        elif spec.owner not in self._ctx.dead | {self._ctx.node_id} and not (
                self._owner.owned.ended(spec.job)):  # our own job, not ours now: it is over
            self._send_results(spec, results, held)

    def push_done(self, job: bytes, tid: int, delivered: bool,
                  instead: TaskResult | None) -> None:
        owner = self._holder.owner_of(job)
        self._holder.release(job, (tid,))
        if instead is not None:
            if owner is not None and owner not in self._ctx.dead:
                self._ctx.send(owner, Results(job, self._ctx.node_id, self._ctx.surplus(),
                                              (instead,)))
        elif not delivered:  # our reports stop naming it, so its owner runs it again
            self._ctx.count("results_lost")

    def running_jobs_of(self, owner: bytes) -> set[bytes]:
        """Jobs of ``owner`` with batches out here."""
        return {job for job, (who, _) in self._running.items() if who == owner}

    def forget(self, job: bytes) -> None:
        """The job is over here: its timings go; batches still out end on their own."""
        self._task_time.pop(job, None)
        self._holder.forget(job)

    def decline(self, now: float, job: bytes) -> int:
        """This peer cannot run ``job`` (its values need what is missing here, NumPy): its
        queued tasks go, and so do those of later grants; the next two :class:`Holding`
        reports leave them out, so the owner runs them elsewhere. Returns how many went. An
        owner never declines its own job (nobody else would run it)."""
        if self._owner.owns(job):
            return 0
        self.declined[job] = None
        if len(self.declined) > MAX_DECLINED:
            del self.declined[next(iter(self.declined))]
        owner = self._holder.owner_of(job) or next(
            (q.spec.owner for q in self._ctx.queue if q.spec.job == job), None)
        dropped = self._ctx.queue.drop(lambda q: q.spec.job == job)
        self.forget(job)
        if owner is not None:
            self._holder.owe(now, owner)
        return dropped

    def _measure(self, job: bytes, tasks: int, seconds: float) -> None:
        estimate = self._task_time.pop(job, None)
        self._task_time[job] = self._ctx.policy.task_time(estimate, tasks, seconds)
        if len(self._task_time) > TIMED_JOBS_KEPT:  # the least recently measured goes
            del self._task_time[next(iter(self._task_time))]

    def _send_results(self, spec: JobSpec, results: Sequence[TaskResult],
                      held: Mapping[int, Sized]) -> None:
        """Small results inline, in :class:`Results`; each large one pushed, as is one whose
        payload the driver ``held`` (whatever its size: it is not here to go inline)."""
        policy, me = self._ctx.policy, self._ctx.node_id
        small = [r for r in results
                 if r.id not in held and len(r.payload) <= policy.inline_limit]
        for part in _parts(small, policy.message_bytes):
            self._ctx.send(spec.owner, Results(spec.job, me, self._ctx.surplus(), part))
        for result in results:
            value = held.get(result.id, result.payload)
            if result.id in held or len(value) > policy.inline_limit:
                self._holder.hold(spec, (result.id,))
                self._ctx.outputs.append(PushValue(spec.owner, spec.job, result,
                                                   self._ctx.surplus(), value))
                self._ctx.count("results_pushed")


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
