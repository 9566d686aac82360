"""The work layer's tunables, in one frozen record the stealing machine and the simulator share.

Every number that decides *how* work moves lives here, not in the trio driver, so the seeded
simulator runs exactly the policy a real peer runs. :meth:`WorkPolicy.from_config` reads the
documented :class:`~p2pcluster.Config` fields; the defaults here equal the LAN preset's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._config import Config

__all__ = ["MetaSchedule", "WorkPolicy"]


@dataclass(frozen=True, slots=True)
class WorkPolicy:
    """How one peer schedules, batches and reports work. Sizes in bytes, times in seconds."""

    #: A steal request unanswered this long counts as empty; the thief tries elsewhere.
    steal_timeout: float = 1.0
    #: A task is granted at most this many times between (re)queues at its owner.
    max_moves: int = 2
    #: Arguments larger than this stay at the owner until the task runs (the thief fetches
    #: them); results larger than this go to the owner on a data stream of their own.
    inline_limit: int = 256 * 1024
    #: Most payload bytes in one grant, one Results message, or one batch for a worker.
    message_bytes: int = 8 * 2**20
    #: Most tasks in one grant, however small: the thief queues a grant's tasks in one step
    #: of its loop (about 10 us a task in Python), and half of a queue of 300,000 tasks held
    #: it for over a second, longer than it may take to answer a probe.
    grant_tasks: int = 8192
    #: How often a peer holding tasks of another peer's jobs tells that owner which.
    report_interval: float = 1.0
    #: An owner requeues the tasks of a holder it has not heard from for this long.
    lease_timeout: float = 10.0
    #: Seconds of work a batch aims for, by the task times measured so far.
    batch_target: float = 0.02
    #: The most tasks one batch holds.
    max_batch: int = 1024
    #: A batch that has run this long gives back the tasks it has not started.
    max_batch_time: float = 0.5
    #: Batches out to each worker slot at once while the queue is long (the next one waits
    #: in the worker's pipe); one per slot once it is short.
    batches_per_slot: int = 2
    #: A peer's answer about its installed versions serves new jobs this long; after
    #: that a new job asks again (the old answer serves until the new one arrives).
    versions_ttl: float = 10.0

    @classmethod
    def from_config(cls, config: Config) -> WorkPolicy:
        """The policy a :class:`~p2pcluster.Config` describes."""
        return cls(steal_timeout=config.steal_timeout, inline_limit=config.inline_value_size,
                   message_bytes=min(8 * 2**20, config.max_frame_size // 4),
                   report_interval=config.report_interval, lease_timeout=config.lease_timeout,
                   batch_target=config.batch_target, max_batch=config.max_batch,
                   max_batch_time=config.max_batch_time,
                   batches_per_slot=config.batches_per_worker,
                   versions_ttl=config.versions_ttl)

    def batch_size(self, task_time: float | None) -> int:
        """Tasks for about :attr:`batch_target` seconds of work at ``task_time`` seconds per
        task (:meth:`task_time`); one task until the first measurement."""
        if task_time is None:
            return 1
        return max(1, min(self.max_batch, int(self.batch_target / max(task_time, 1e-7))))

    @staticmethod
    def task_time(estimate: float | None, tasks: int, seconds: float) -> float:
        """The new estimate of one task's seconds, once ``tasks`` tasks took ``seconds``.

        Each batch's mean counts as much as all history before it (an exponential moving
        average with weight 1/2), so the estimate follows a job whose tasks turn fast or
        slow within two or three batches, where a running mean would lag for the rest of
        the job; a batch's mean already smooths out single odd tasks.
        """
        sample = seconds / max(tasks, 1)
        return sample if estimate is None else (estimate + sample) / 2


class MetaSchedule:
    """When a peer publishes its surplus (the tasks it would give away) in its metadata:
    after the surplus changed, and no more often than every ``interval`` seconds. Each
    publication is a membership update every peer receives, so the rate is bounded; an idle
    peer learns of new work sooner from the ``WorkAvailable`` hints anyway."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._published = 0
        self._last = -math.inf

    def changed(self, surplus: int) -> bool:
        """Does ``surplus`` differ from the last one published?"""
        return surplus != self._published

    def due(self, now: float) -> float:
        """The earliest time the next publication may go out."""
        return max(now, self._last + self.interval)

    def publish(self, now: float, surplus: int) -> bool:
        """Record a publication of ``surplus`` at ``now``; False if it is no news."""
        if surplus == self._published:
            return False
        self._published, self._last = surplus, now
        return True
