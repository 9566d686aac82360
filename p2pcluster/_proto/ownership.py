"""What a job's owner knows: where each unfinished task is, and whether its holder still has it.

The owner of a job keeps every unfinished task's arguments (to queue it again) and the peer it
believes holds it. Results are accepted once per task id: execution is at least once,
delivery exactly once.

A holder can lose a task without dying: a result sent on a link that broke, a grant that never
arrived. So every peer holding tasks of another owner's jobs tells that owner which, every
``report_interval`` (a :class:`~.messages.Holding` report: queued, running, or with a result
on its way). The owner compares:

- a task it believes at the reporter that **two reports in a row** leave out is queued again
  (one report may simply have crossed the grant that carried the task);
- a holder it has not heard from for ``lease_timeout`` (no report, no result, no request)
  loses every task it held, which is queued again, even if membership still calls it alive.

Either way the worst case is a task run twice, whose second result is dropped as a duplicate.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence

from .messages import JobSpec, TaskItem

__all__ = ["Leases", "OwnedJob", "Ownership", "ids_from_runs", "runs_from_ids"]


class OwnedJob:
    """One owned job's unfinished tasks: arguments, holders, and missed reports."""

    def __init__(self, spec: JobSpec, me: bytes) -> None:
        self.spec = spec
        self._me = me
        self.payloads: dict[int, bytes] = {}  #: unfinished task id -> its arguments
        #: unfinished task id -> the size of arguments the driver holds for the machine
        #: (their ``payloads`` entry is empty: they always travel as a remote task)
        self.held: dict[int, int] = {}
        self._holder: dict[int, bytes] = {}  #: unfinished task id -> believed holder
        self._by_holder: dict[bytes, set[int]] = {}
        self._misses: dict[int, int] = {}  #: task id -> reports in a row that left it out
        self.ever_held: set[bytes] = set()  #: peers to tell when the job ends
        self.open = False  #: more of its tasks are to come (it cannot end before them)

    def __len__(self) -> int:
        return len(self.payloads)

    def add(self, tid: int, payload: bytes, held: int = 0) -> None:
        if tid in self.payloads:
            raise ValueError(f"duplicate task id {tid}")
        self.payloads[tid] = payload
        if held:
            self.held[tid] = held
        self._assign(tid, self._me)

    def holders(self) -> dict[int, bytes]:
        return dict(self._holder)

    def holding_peers(self) -> Iterator[bytes]:
        """Peers other than the owner that hold at least one unfinished task."""
        return (peer for peer, ids in self._by_holder.items() if ids and peer != self._me)

    def held_by(self, peer: bytes) -> list[int]:
        return sorted(self._by_holder.get(peer, ()))

    def item(self, tid: int, moves: int = 0) -> TaskItem:
        """Unfinished task ``tid`` as the owner queues it: with its arguments, or with the
        size of those the driver holds (a remote task, fetched from the owner)."""
        return TaskItem(tid, moves, self.payloads[tid], self.held.get(tid, 0))

    def move(self, ids: Iterable[int], holder: bytes) -> list[int]:
        """``ids`` are now at ``holder``; return those still unfinished."""
        fresh = [tid for tid in ids if tid in self._holder]
        for tid in fresh:
            self._assign(tid, holder)
            self._misses.pop(tid, None)
        if holder != self._me:
            self.ever_held.add(holder)
        return fresh

    def finish(self, tid: int) -> bool:
        """Task ``tid`` has a result; False if it already had one (a duplicate)."""
        if self.payloads.pop(tid, None) is None:
            return False
        self.held.pop(tid, None)
        self._unassign(tid)
        self._misses.pop(tid, None)
        return True

    def reported(self, peer: bytes, ids: set[int]) -> list[int]:
        """``peer`` says it holds ``ids`` of this job: the tasks we believed it held that
        two reports in a row have left out (to queue again)."""
        lost = []
        for tid in self._by_holder.get(peer, set()).copy():
            if tid in ids:
                self._misses.pop(tid, None)
                continue
            misses = self._misses.get(tid, 0) + 1
            if misses >= 2:
                lost.append(tid)
            else:
                self._misses[tid] = misses
        return lost

    def _assign(self, tid: int, holder: bytes) -> None:
        self._unassign(tid)
        self._holder[tid] = holder
        self._by_holder.setdefault(holder, set()).add(tid)

    def _unassign(self, tid: int) -> None:
        old = self._holder.pop(tid, None)
        if old is not None:
            self._by_holder[old].discard(tid)


class Leases:
    """When the owner last heard from each peer; who has been silent too long."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._heard: dict[bytes, float] = {}

    def heard(self, peer: bytes, now: float) -> None:
        self._heard[peer] = max(now, self._heard.get(peer, -math.inf))

    def forget(self, peer: bytes) -> None:
        self._heard.pop(peer, None)

    def expired(self, now: float, holders: Iterable[bytes]) -> list[bytes]:
        return [p for p in holders
                if now - self._heard.get(p, -math.inf) >= self.timeout]

    def next_expiry(self, holders: Iterable[bytes]) -> float | None:
        times = [self._heard.get(p, -math.inf) + self.timeout for p in holders]
        return min(times) if times else None


def runs_from_ids(ids: Iterable[int]) -> tuple[int, ...]:
    """Task ids as ``(start, count, start, count, ...)`` runs of consecutive ids."""
    runs: list[int] = []
    for tid in sorted(set(ids)):
        if runs and runs[-2] + runs[-1] == tid:
            runs[-1] += 1
        else:
            runs += [tid, 1]
    return tuple(runs)


def ids_from_runs(runs: Sequence[int], limit: int) -> set[int]:
    """The inverse of :func:`runs_from_ids`, refusing more than ``limit`` ids (a report from
    a peer is bounded like any other message)."""
    if len(runs) % 2:
        raise ValueError("runs come in (start, count) pairs")
    if sum(runs[1::2]) > limit:
        raise ValueError(f"runs name more than {limit} tasks")
    return {start + i for start, count in zip(runs[::2], runs[1::2], strict=True)
            for i in range(count)}


class Ownership:
    """Every job owned here, the jobs that ended recently, and the holders' leases.

    The machine queues work; this class only keeps the books: who holds what, who has been
    heard from, and which tasks must run again (it returns them, the machine requeues)."""

    def __init__(self, lease_timeout: float, check_interval: float, keep_ended: int) -> None:
        self.jobs: dict[bytes, OwnedJob] = {}
        self._ended: deque[bytes] = deque(maxlen=keep_ended)
        self._ended_set: set[bytes] = set()
        self._leases = Leases(lease_timeout)
        self._interval = check_interval
        self.next_check: float | None = None

    def ended(self, job: bytes) -> bool:
        """Did this peer own ``job``, which is over now (finished or cancelled)?"""
        return job in self._ended_set

    def end(self, job: bytes) -> OwnedJob:
        """``job`` is over: forget its tasks, remember that it ended."""
        owned = self.jobs.pop(job)
        if len(self._ended) == self._ended.maxlen:
            self._ended_set.discard(self._ended[0])
        self._ended.append(job)
        self._ended_set.add(job)
        return owned

    def heard(self, peer: bytes, now: float) -> None:
        self._leases.heard(peer, now)

    def forget(self, peer: bytes) -> None:
        self._leases.forget(peer)

    def assigned(self, holder: bytes, now: float) -> None:
        """``holder`` got tasks: it has a whole lease to report them."""
        self._leases.heard(holder, now)
        if self.next_check is None:
            self.next_check = now + self._interval

    def held_by(self, peer: bytes) -> list[tuple[OwnedJob, list[int]]]:
        """Every task ``peer`` is believed to hold, by job."""
        return [(owned, owned.held_by(peer)) for owned in self.jobs.values()]

    def reported(self, sender: bytes, reported: dict[bytes, set[int]]
                 ) -> list[tuple[OwnedJob, list[int]]]:
        """``sender`` holds ``reported`` (job -> task ids): the tasks it lost, by job."""
        return [(owned, owned.reported(sender, reported.get(job, set())))
                for job, owned in list(self.jobs.items())]

    def expired(self, now: float) -> list[bytes]:
        """The holders silent for a whole lease (their tasks must run again); schedules the
        next check while any peer holds tasks."""
        silent = self._leases.expired(now, sorted(self._holding()))  # replayable order
        self.next_check = now + self._interval if self._holding() - set(silent) else None
        return silent

    def _holding(self) -> set[bytes]:
        return {peer for owned in self.jobs.values() for peer in owned.holding_peers()}
