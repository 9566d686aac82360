"""One peer's queue of unstarted tasks, oldest first, and the batches and grants cut from it.

The queue holds tasks of any number of jobs and owners. The front feeds this peer's worker
slots (:meth:`TaskQueue.take`: a batch of one job, capped by count and by bytes); the rest
may be stolen (:meth:`TaskQueue.grant`: the oldest movable tasks, each one move further).

A task that has moved ``max_moves`` times is *stuck*: it runs here and is never granted again,
so tasks cannot ping-pong. Batches and grants may be limited to the jobs a predicate allows
(the jobs this peer may run, or the thief may take): the queue counts its tasks per job so
that such limits cost a look at each job, not at each task. Large arguments never travel in
a grant: a granted task whose arguments exceed ``inline_limit`` leaves them behind
(:attr:`TaskItem.remote`), and the peer that runs it fetches them from the job's owner.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from .messages import JobSpec, TaskItem

#: Whether tasks of a job may go somewhere (run here, go to a thief).
Allowed = Callable[[JobSpec], bool]

__all__ = ["JobItems", "Queued", "TaskQueue", "item_bytes"]


@dataclass(slots=True)
class Queued:
    """A task in a queue, with its job's spec."""

    spec: JobSpec
    item: TaskItem


class JobItems(NamedTuple):
    """Tasks of one job cut from a queue: a batch to run, or a grant's share of one job."""

    spec: JobSpec
    items: list[TaskItem]


def item_bytes(item: TaskItem) -> int:
    """The size of a task's arguments, wherever they are."""
    return max(len(item.payload), item.size)


class TaskQueue:
    """Unstarted tasks, oldest first. See the module docstring."""

    def __init__(self, max_moves: int) -> None:
        self.max_moves = max_moves
        self._queue: deque[Queued] = deque()
        self._stuck = 0
        self._jobs: dict[bytes, _JobCount] = {}  #: job -> its spec and counts here

    def __len__(self) -> int:
        return len(self._queue)

    def __iter__(self) -> Iterator[Queued]:
        return iter(self._queue)

    @property
    def movable(self) -> int:
        """Queued tasks that may still be granted."""
        return len(self._queue) - self._stuck

    def owner_of(self, job: bytes) -> bytes | None:
        """The owner of ``job`` if a task of it is queued here."""
        count = self._jobs.get(job)
        return count.spec.owner if count is not None else None

    def front(self, allowed: Allowed | None = None) -> Queued | None:
        """The oldest task (of a job ``allowed`` allows)."""
        if allowed is None or self.everywhere(allowed):
            return self._queue[0] if self._queue else None
        return next((q for q in self._queue if allowed(q.spec)), None)

    def count(self, allowed: Allowed, *, movable: bool = False) -> int:
        """Tasks (or movable tasks) of the jobs ``allowed`` allows."""
        return sum(c.movable if movable else c.total
                   for c in self._jobs.values() if allowed(c.spec))

    def everywhere(self, allowed: Allowed) -> bool:
        """Does ``allowed`` allow every job queued here?"""
        return all(allowed(c.spec) for c in self._jobs.values())

    def append(self, spec: JobSpec, item: TaskItem) -> None:
        self._queue.append(Queued(spec, item))
        self._stuck += self._counted(spec, item, 1)

    def appendleft(self, spec: JobSpec, item: TaskItem) -> None:
        self._queue.appendleft(Queued(spec, item))
        self._stuck += self._counted(spec, item, 1)

    def take(self, max_tasks: int, max_bytes: int, allowed: Allowed | None = None
             ) -> JobItems:
        """The first task (of a job ``allowed`` allows; there must be one) and those of the
        same job right behind it: at most ``max_tasks`` of them, and no more than
        ``max_bytes`` of arguments unless the first alone is."""
        skip = 0
        if allowed is not None and not self.everywhere(allowed):
            skip = next(i for i, q in enumerate(self._queue) if allowed(q.spec))
        self._queue.rotate(-skip)  # the tasks skipped wait at the back, in order...
        first = self._pop()
        items, size = [first.item], item_bytes(first.item)
        job = first.spec.job
        while self._queue and len(items) < max_tasks and self._queue[0].spec.job == job:
            more = item_bytes(self._queue[0].item)
            if size + more > max_bytes:
                break
            items.append(self._pop().item)
            size += more
        self._queue.rotate(skip)  # ...and come back to the front
        return JobItems(first.spec, items)

    def grant(self, want: int, max_bytes: int, inline_limit: int,
              last_move_cap: Callable[[bytes], int] | None = None,
              allowed: Allowed | None = None) -> dict[bytes, JobItems]:
        """Remove up to ``want`` of the oldest movable tasks for a thief, one move further,
        grouped by job, only of jobs ``allowed`` allows; arguments over ``inline_limit``
        stay behind. Of the tasks this move makes stuck, at most ``last_move_cap(job)`` per
        job go."""
        granted: dict[bytes, JobItems] = {}
        skipped: list[Queued] = []  #: passed over, to go back in front, in order
        size = 0
        last: dict[bytes, int] = {}  #: job -> the cap left for tasks on their last move
        ok = {job: allowed(c.spec) for job, c in self._jobs.items()} if allowed else None
        queue = self._queue  # (taken from the front until the grant is full: a long queue
        while queue and want and size < max_bytes:  # costs no more than a short one)
            q = queue.popleft()
            if q.item.moves < self.max_moves and (ok is None or ok[q.spec.job]) and (
                    last_move_cap is None or q.item.moves + 1 < self.max_moves
                    or _spend(last, q.spec.job, last_move_cap)):
                want -= 1
                self._counted(q.spec, q.item, -1)  # (a movable task: not stuck)
                moved = _moved(q.item, inline_limit)
                size += len(moved.payload)
                granted.setdefault(q.spec.job, JobItems(q.spec, [])).items.append(moved)
            else:
                skipped.append(q)
        queue.extendleft(reversed(skipped))
        return granted

    def drop(self, doomed: Callable[[Queued], bool]) -> int:
        """Remove every task ``doomed`` says; return how many."""
        kept = deque(q for q in self._queue if not doomed(q))
        dropped = len(self._queue) - len(kept)
        self._replace(kept)
        return dropped

    def _pop(self) -> Queued:
        q = self._queue.popleft()
        self._stuck -= self._counted(q.spec, q.item, -1)
        return q

    def _counted(self, spec: JobSpec, item: TaskItem, n: int) -> bool:
        """Count ``n`` (1 or -1) task of ``spec``'s job; True if the task is stuck."""
        stuck = item.moves >= self.max_moves
        count = self._jobs.get(spec.job)
        if count is None:
            count = self._jobs[spec.job] = _JobCount(spec)
        count.total += n
        count.movable += 0 if stuck else n
        if not count.total:
            del self._jobs[spec.job]
        return stuck

    def _replace(self, kept: deque[Queued]) -> None:
        self._queue = kept
        self._jobs = {}
        self._stuck = sum(self._counted(q.spec, q.item, 1) for q in kept)


@dataclass(slots=True)
class _JobCount:
    """One job's tasks in a queue: how many, and how many may still move."""

    spec: JobSpec
    total: int = 0
    movable: int = 0


def _spend(left: dict[bytes, int], job: bytes, cap: Callable[[bytes], int]) -> bool:
    """Take one from ``job``'s allowance (``cap(job)`` at first); False once it is spent."""
    n = left.get(job)
    if n is None:
        n = cap(job)
    left[job] = n - 1
    return n > 0


def _moved(item: TaskItem, inline_limit: int) -> TaskItem:
    if len(item.payload) > inline_limit:
        return TaskItem(item.id, item.moves + 1, b"", len(item.payload))
    return TaskItem(item.id, item.moves + 1, item.payload, item.size)
