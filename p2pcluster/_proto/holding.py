"""The holder's side of the holding reports: which tasks of other peers' jobs a peer holds,
and when it tells their owners.

A peer holds a task of another owner's job from the moment it queues it (a grant) until its
result is on its way: queued, running in a batch, or a large result being pushed. Every
``report_interval`` it sends each such owner a :class:`~.messages.Holding` report of what it
holds; after the last of an owner's tasks has gone, two more (empty) reports follow, which
is what the owner needs to notice a result that never arrived (:mod:`.ownership` has the
owner's side: two reports in a row that leave a task out, and it runs again).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from .messages import HeldTasks, Holding, JobSpec
from .ownership import runs_from_ids
from .taskqueue import TaskQueue

__all__ = ["REPORTS_AFTER_LAST", "Holder"]

#: Empty holding reports a peer still sends an owner after holding nothing of its jobs: an
#: owner requeues a task two reports in a row leave out.
REPORTS_AFTER_LAST = 2


class Holder:
    """The tasks in hand here (running, or a result on its way), and the reports due."""

    def __init__(self, me: bytes, interval: float) -> None:
        self._me = me
        self._interval = interval
        self._in_hand: dict[bytes, tuple[bytes, Counter[int]]] = {}  #: job -> (owner, ids)
        self._owed: dict[bytes, int] = {}  #: owner -> empty reports still due to it
        self.next_report: float | None = None

    def hold(self, spec: JobSpec, ids: Iterable[int]) -> None:
        """Tasks in hand until :meth:`release` (a task may be in hand twice: counted)."""
        entry = self._in_hand.setdefault(spec.job, (spec.owner, Counter()))
        entry[1].update(ids)

    def release(self, job: bytes, ids: Iterable[int]) -> None:
        entry = self._in_hand.get(job)
        if entry is None:
            return
        entry[1].subtract(ids)
        for tid in [t for t, n in entry[1].items() if n <= 0]:
            del entry[1][tid]
        if not entry[1]:
            del self._in_hand[job]

    def forget(self, job: bytes) -> None:
        """The job is over here (dropped, cancelled): nothing of it is in hand."""
        self._in_hand.pop(job, None)

    def owe(self, now: float, owner: bytes) -> None:
        """``owner`` gets its two reports after the last, even if none named its tasks."""
        self._owed[owner] = REPORTS_AFTER_LAST
        self.schedule(now)

    def owner_of(self, job: bytes) -> bytes | None:
        entry = self._in_hand.get(job)
        return entry[0] if entry is not None else None

    def schedule(self, now: float) -> None:
        """Tasks of another owner arrived: reports are due from now on."""
        if self.next_report is None:
            self.next_report = now + self._interval

    def report(self, now: float, queue: TaskQueue, dead: set[bytes]
               ) -> list[tuple[bytes, Holding]]:
        """The reports due at ``now``, by owner (none to dead owners)."""
        held = self._held(queue, dead)
        for owner in held:
            self._owed[owner] = REPORTS_AFTER_LAST
        reports = []
        for owner in list(self._owed):
            jobs = held.get(owner, {})
            if owner not in dead:
                reports.append((owner, Holding(self._me, tuple(
                    HeldTasks(job, runs_from_ids(ids)) for job, ids in jobs.items()))))
            if not jobs:
                self._owed[owner] -= 1
                if self._owed[owner] <= 0 or owner in dead:
                    del self._owed[owner]
        self.next_report = now + self._interval if self._owed else None
        return reports

    def _held(self, queue: TaskQueue, dead: set[bytes]) -> dict[bytes, dict[bytes, set[int]]]:
        """Owner -> job -> the tasks of other owners' jobs held here."""
        held: dict[bytes, dict[bytes, set[int]]] = {}
        for q in queue:
            if q.spec.owner != self._me:
                held.setdefault(q.spec.owner, {}).setdefault(q.spec.job, set()).add(q.item.id)
        for job, (owner, ids) in self._in_hand.items():
            if owner != self._me and owner not in dead:
                held.setdefault(owner, {}).setdefault(job, set()).update(ids)
        return held
