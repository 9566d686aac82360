"""Grants in the stealing machine: answering a steal request, taking back a grant that could
not be delivered, and queueing the tasks of a grant received.

A grant is cut from this peer's queue (:meth:`~.taskqueue.TaskQueue.grant`), sized by
:func:`~.victims.grant_size` from what *this thief* may take: only tasks of the jobs its
verdict allows (:meth:`~.placement.Placement.may_take`; a thief that has not said its
versions yet is asked, and gets nothing of those jobs meanwhile). The grant's ``queue`` is
what is left for that thief, so a thief that can take none of a victim's work stops asking
it until that victim's surplus changes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from .execution import Execution
from .holding import Holder
from .messages import JobSpec, JobTasks, StealGrant, StealRequest
from .owner import OwnerRole
from .placement import Placement
from .victims import grant_size, last_move_cap
from .workcontext import WorkContext

__all__ = ["Granting"]


class Granting:
    """Grants of one peer. ``peers`` and ``peer_slots`` are the machine's tables (live peer
    -> its surplus as last heard, and its worker slots), read here and added to when an
    unknown thief shows up."""

    def __init__(self, ctx: WorkContext, owner: OwnerRole, execution: Execution,
                 placement: Placement, *, peers: dict[bytes, int],
                 peer_slots: dict[bytes, int]) -> None:
        self._ctx = ctx
        self._owner = owner
        self._execution = execution
        self._placement = placement
        self._peers = peers
        self._peer_slots = peer_slots

    def on_steal_request(self, now: float, req: StealRequest) -> None:
        """Answer ``req`` with half of what the thief may take (none if nothing)."""
        ctx, thief = self._ctx, req.thief
        if thief in ctx.dead or thief == ctx.node_id:
            return
        self._owner.owned.heard(thief, now)
        declined = frozenset(req.declined)  # jobs the thief cannot run (no NumPy there)
        may_take = partial(self._placement.may_take, now, peer=thief)

        def allowed(spec: JobSpec) -> bool:
            return spec.job not in declined and may_take(spec)

        surplus = self._surplus(allowed)
        want = min(ctx.policy.grant_tasks, grant_size(
            surplus, thief_slots=max(1, self._peer_slots.get(thief, req.slots)),
            total_slots=self._total_slots(thief, req.slots),
            known_work=surplus + sum(self._peers.values())))
        granted = (ctx.queue.grant(want, ctx.policy.message_bytes, ctx.policy.inline_limit,
                                   partial(self._last_move_cap, req.slots), allowed)
                   if want else {})
        for spec, items in granted.values():
            self._owner.moved(now, spec, thief, [t.id for t in items])
            ctx.count("tasks_given", len(items))
        if thief not in self._peers:  # a peer we have not heard of yet: it is alive
            self._peers[thief] = 0
        jobs = tuple(JobTasks(spec, tuple(items)) for spec, items in granted.values())
        ctx.send(thief, StealGrant(ctx.node_id, self._surplus(allowed), jobs))

    def grant_failed(self, now: float, grant: StealGrant) -> None:
        """The driver could not deliver ``grant``: take its tasks back, at the front."""
        ctx = self._ctx
        for job_tasks in reversed(grant.jobs):
            spec = job_tasks.spec
            if spec.owner in ctx.dead or self._owner.owned.ended(spec.job):
                continue
            for item in reversed(job_tasks.tasks):
                ctx.queue.appendleft(spec, self._owner.restored(spec, item))
            self._owner.moved(now, spec, ctx.node_id, [t.id for t in job_tasks.tasks])
        ctx.count("tasks_given", -sum(len(jt.tasks) for jt in grant.jobs))

    def received(self, now: float, grant: StealGrant, holder: Holder) -> int:
        """Queue the tasks of a grant this peer got as a thief; how many. Tasks of a job
        that is over, or that this peer knows it cannot run, are dropped (the owner runs
        them again: this peer's holding reports, which ``holder`` schedules, leave them
        out)."""
        ctx, count = self._ctx, 0
        for job_tasks in grant.jobs:
            spec = job_tasks.spec
            if spec.owner in ctx.dead or self._owner.owned.ended(spec.job):
                ctx.count("dropped", len(job_tasks.tasks))
                continue
            if spec.job in self._execution.declined:  # our next reports leave them out
                holder.owe(now, spec.owner)
                ctx.count("dropped", len(job_tasks.tasks))
                continue
            if spec.owner != ctx.node_id:
                holder.schedule(now)
            if not self._placement.accept(now, spec):
                ctx.count("refused", len(job_tasks.tasks))
                continue
            for item in job_tasks.tasks:  # our own task back: its arguments are here
                ctx.queue.append(spec, self._owner.homecoming(spec, item))
            count += len(job_tasks.tasks)
        return count

    def _surplus(self, allowed: Callable[[JobSpec], bool]) -> int:
        """The machine's surplus, of the jobs ``allowed`` allows."""
        surplus = self._ctx.surplus()
        queue = self._ctx.queue
        return surplus if queue.everywhere(allowed) else min(
            surplus, queue.count(allowed, movable=True))

    def _last_move_cap(self, thief_slots: int, job: bytes) -> int:
        return last_move_cap(thief_slots, self._ctx.policy.batches_per_slot,
                             self._execution.batch_size(job))

    def _total_slots(self, thief: bytes, free: int) -> int:
        """The worker slots this peer knows of: its own, its peers', the thief's."""
        total = self._execution.slots + sum(self._peer_slots.values())
        return total if thief in self._peer_slots else total + max(1, free)
