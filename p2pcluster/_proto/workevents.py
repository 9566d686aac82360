"""What the stealing machine hands its driver: outputs to carry out, events to act on, the
batches it gives out, and its statistics."""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass
from typing import NamedTuple

from .messages import JobSpec, Message, TaskItem, TaskResult
from .wiretypes import PlacementKind

__all__ = [
    "AskVersions", "Batch", "JobDropped", "JobFinished", "PlacementNews", "PushValue",
    "ResultsReady", "SendWork", "StealingStatistics", "WorkEvent", "WorkOutput",
]


@dataclass(frozen=True, slots=True)
class SendWork:
    """Send ``msg`` to peer ``dst`` over its work link (reliable, in order, may fail)."""

    dst: bytes
    msg: Message


@dataclass(frozen=True, slots=True)
class PushValue:
    """Send one large ``result`` of ``job`` to its owner ``dst`` on a data stream of its own,
    then report the outcome with :meth:`StealingMachine.push_done`. ``value`` is its
    payload: the result's own, or the one the driver held outside the machine (see
    :meth:`StealingMachine.finished`), opaque here but for its length."""

    dst: bytes
    job: bytes
    result: TaskResult
    queue: int
    value: Sized


@dataclass(frozen=True, slots=True)
class AskVersions:
    """Ask peer ``dst`` (possibly this peer: the driver looks up its own) which versions of
    the distributions ``names`` it has, with its Python version and tags; report the answer
    with :meth:`StealingMachine.peer_versions`, or the failure with
    :meth:`StealingMachine.versions_failed`."""

    dst: bytes
    names: tuple[str, ...]


WorkOutput = SendWork | PushValue | AskVersions


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


@dataclass(frozen=True, slots=True)
class PlacementNews:
    """For the owner: where ``job``'s tasks may go (:class:`~.wiretypes.PlacementKind`).
    ``peer`` is the peer excluded (for ``EXCLUDED``; else this peer), ``reasons`` why in
    words (``numpy missing``), or for ``WAITING`` what the tasks wait for."""

    job: bytes
    kind: PlacementKind
    peer: bytes
    reasons: tuple[str, ...]


WorkEvent = ResultsReady | JobFinished | JobDropped | PlacementNews


class Batch(NamedTuple):
    """Tasks of one job taken to run together on one worker. After ``time_limit`` seconds
    (None: no limit) the worker stops after its current task; the driver gives the tasks
    not started back with :meth:`~.stealing.StealingMachine.finished`."""

    spec: JobSpec
    items: list[TaskItem]
    time_limit: float | None = None


@dataclass(frozen=True, slots=True)
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
    tasks_given_back: int = 0  #: unstarted tasks of batches cut short by max_batch_time
    requeued: int = 0  #: tasks put back on an owner's queue (holder dead, silent or lost them)
    dropped: int = 0  #: queued tasks dropped (owner died, job cancelled or finished)
    results_pushed: int = 0  #: large results sent on data streams of their own
    results_lost: int = 0  #: pushed results that could not be delivered
    reports_sent: int = 0  #: Holding reports sent
    leases_expired: int = 0  #: holders that went silent for lease_timeout (as owner)
    questions: int = 0  #: questions asked of peers (this one too) about their versions
    refused: int = 0  #: tasks of other owners' jobs dropped here: this peer cannot run them
