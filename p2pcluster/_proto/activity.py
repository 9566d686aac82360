"""What a peer tells another about its work: the jobs it owns and the tasks it ran.

Any peer can show the whole cluster (the dashboard, `p2pcluster jobs`, `top`) because every
peer answers an :class:`ActivityQuery` with an :class:`ActivityReport`, on a stream of its
own over the authenticated wire (``docs/protocol.md``, section 3.9):

- the jobs it owns, running or recently ended (:class:`JobReport`): their progress, the
  peers that ran their tasks and the peers that hold the rest;
- the tasks it ran, from a bounded ring (``Config.task_history``, the last 10,000), newest
  last (:class:`TaskRecord`). A query names the last sequence number it has seen
  (``after``) and the oldest end time it wants (``since``), so a dashboard that asks every
  second receives only what is new. A query that names a ``job`` also gets every record of
  that job still in the ring, with what its tasks printed.

Times are wall-clock Unix seconds (each peer's own clock: run NTP), since they are shown
side by side from several machines.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, ClassVar

from .wiretypes import U64, Count, Ident, JobId, Limit, MessageType, Name, NodeId, TaskId

__all__ = ["MAX_OUTPUT", "ActivityQuery", "ActivityReport", "JobReport", "JobState",
           "PeerTasks", "TaskRecord"]

#: Characters of one stream (stdout or stderr) of one task, at most, in a record.
MAX_OUTPUT = 16 * 1024
#: Task records in one report, at most (a ring's worth, and a job's detail besides).
MAX_RECORDS = 2 * 10_000 + 1_000
Text = Annotated[str, Limit(max_len=4096)]
SeqNo = Annotated[int, U64]
Output = Annotated[str, Limit(max_len=4 * MAX_OUTPUT)]  # UTF-8 bytes: up to 4 per character


class JobState(IntEnum):
    """Where a job stands, in a :class:`JobReport`. APPEND-ONLY."""

    RUNNING = 0
    DONE = 1  #: every task has a result
    CANCELLED = 2  #: its client cancelled it, left, or the owner left


@dataclass(frozen=True, slots=True)
class ActivityQuery:
    """Ask a peer for its :class:`ActivityReport`: its jobs, and the records of the tasks it
    ran whose sequence number is above ``after`` and that ended at ``since`` or later (the
    newest ``limit`` of them); with ``job``, also every record of that job, with its
    output."""

    TYPE: ClassVar[int] = MessageType.ACTIVITY_QUERY
    after: SeqNo
    since: float
    limit: Count
    job: JobId | None


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task this peer ran: number ``seq`` in its ring (counting up from 1), task ``task``
    of ``job`` (owned by ``owner``, function ``function``), on worker slot ``slot``, started
    at ``started`` (Unix seconds) for ``seconds``, ended with ``status`` (a TaskStatus).
    ``stdout`` and ``stderr`` hold what it printed (cut to their head and tail), only in the
    answer to a query that names its job."""

    seq: SeqNo
    job: JobId
    owner: NodeId
    function: Ident
    task: TaskId
    slot: Annotated[int, Limit(lo=0, hi=65535)]
    started: float
    seconds: float
    status: Annotated[int, Limit(lo=0, hi=255)]
    stdout: Output = ""
    stderr: Output = ""


@dataclass(frozen=True, slots=True)
class PeerTasks:
    """A number of a job's tasks, and the name of the peer they are at."""

    name: Name
    count: Count


@dataclass(frozen=True, slots=True)
class JobReport:
    """A job the reporting peer owns: ``done`` of ``total`` tasks have results, ``errors`` of
    them errors; ``done_by`` who ran those, ``held_by`` who holds the others (queued or
    running). ``started`` and ``ended`` are Unix seconds (``ended`` null while it runs)."""

    job: JobId
    function: Ident
    label: Text
    total: Count
    done: Count
    errors: Count
    state: Annotated[int, Limit(lo=0, hi=255)]
    started: float
    ended: float | None
    done_by: Annotated[tuple[PeerTasks, ...], Limit(max_len=4096)]
    held_by: Annotated[tuple[PeerTasks, ...], Limit(max_len=4096)]


@dataclass(frozen=True, slots=True)
class ActivityReport:
    """The answer to an :class:`ActivityQuery`. ``clock``: the peer's wall clock as it
    answered; ``python``: its Python version; ``slots``, ``busy``, ``queued``: its worker
    slots, those running a batch right now, its unstarted tasks; ``last``: the sequence
    number of its newest task record (0: none yet), to ask for what follows next time."""

    TYPE: ClassVar[int] = MessageType.ACTIVITY_REPORT
    clock: float
    python: Annotated[str, Limit(max_len=64)]
    slots: Count
    busy: Count
    queued: Count
    last: SeqNo
    jobs: Annotated[tuple[JobReport, ...], Limit(max_len=4096)]
    tasks: Annotated[tuple[TaskRecord, ...], Limit(max_len=MAX_RECORDS)]
