"""The soak's jobs: tasks whose every result is known in advance, and what became of each job.

A task's arguments are ``[salt, x, cost]`` (CBOR, as a real peer ships them); the simulated
worker decodes them and computes ``value(salt, x)``, or fails with an error when ``x`` is a
multiple of :data:`FAILING` (a task that raises is a result too, delivered exactly once).
The cost is the task's virtual seconds on a peer of speed 1. Because the worker computes from
the arguments that travelled with the task, a result attached to the wrong task id, or to
another job's task, is caught as a wrong value.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field

from p2pcluster._proto.messages import JobSpec, TaskItem, TaskResult, TaskStatus
from p2pcluster._values import decode_value, encode_error, encode_value

__all__ = ["FAILING", "JobPlan", "JobRecord", "make_job", "run_task", "value"]

FAILING = 53  #: tasks whose ``x`` is a multiple of this raise
_PRIME = 2**61 - 1
#: (tasks, weight): most jobs are small, a few are large.
SIZES = ((1, 2), (4, 3), (30, 4), (120, 3), (400, 2), (1000, 1))


def value(salt: int, x: int) -> int:
    return (x * 0x9E3779B97F4A7C15 + salt) % _PRIME


def run_task(spec: JobSpec, item: TaskItem) -> tuple[TaskResult, float]:
    """What a worker process does with one task: (its result, its cost in seconds)."""
    salt, x, cost = decode_value(item.payload)
    if x % FAILING == 0:
        error = encode_error("ValueError", f"{x} is a multiple of {FAILING}")
        return TaskResult(item.id, TaskStatus.ERROR, error), cost
    return TaskResult(item.id, TaskStatus.OK, encode_value(value(salt, x))), cost


@dataclass(frozen=True, slots=True)
class JobPlan:
    """A job to submit: its tasks' arguments, and the result each must have."""

    spec: JobSpec
    tasks: list[tuple[int, bytes]]
    expected: dict[int, TaskResult]
    work: float  #: total seconds of its tasks at speed 1
    costs: dict[int, float]  #: each task's seconds at speed 1


def make_job(rng: random.Random, owner: bytes, *, median_cost: float) -> JobPlan:
    """A job of random size whose tasks cost lognormal seconds around ``median_cost``."""
    sizes, weights = zip(*SIZES, strict=True)
    n = rng.choices(sizes, weights)[0]
    salt = rng.getrandbits(60)
    spec = JobSpec(rng.randbytes(16), owner, "soak", "task", None, (), None)
    tasks, expected, costs = [], {}, {}
    first = rng.randrange(1000)
    for tid in range(n):
        x = first + tid
        cost = min(20 * median_cost, median_cost * math.exp(rng.gauss(0.0, 0.8)))
        payload = encode_value([salt, x, round(cost, 6)])
        tasks.append((tid, payload))
        expected[tid] = run_task(spec, TaskItem(tid, 0, payload))[0]
        costs[tid] = round(cost, 6)
    return JobPlan(spec, tasks, expected, sum(costs.values()), costs)


@dataclass(slots=True)
class JobRecord:
    """What the soak knows of one submitted job."""

    plan: JobPlan
    owner_name: str
    submitted: float
    owner_slots: int
    #: Seconds (at speed 1) of work ahead of it at its owner when it was submitted: the
    #: other jobs' tasks queued or running there, and what its owner's earlier unfinished
    #: jobs still have to deliver (their tasks may come back to it).
    ahead: float = 0.0
    delivered: Counter[int] = field(default_factory=Counter)
    finished: float | None = None
    cancelled: float | None = None
    owner_crashed: float | None = None
    dropped: float | None = None  #: the owner dropped it (cancelled)

    @property
    def job(self) -> bytes:
        return self.plan.spec.job

    @property
    def must_finish(self) -> bool:
        """Its owner's process lives on and nobody cancelled it: every result must come."""
        return self.cancelled is None and self.owner_crashed is None

    @property
    def over(self) -> bool:
        return (self.finished is not None or self.cancelled is not None
                or self.owner_crashed is not None)
