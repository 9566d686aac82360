"""A peer's memory of the tasks it ran: a bounded ring, for the dashboard of any peer.

Every task this peer runs leaves a :class:`~._proto.activity.TaskRecord` here: its job and
function, the worker slot, when it started and for how long, how it ended, and what it
printed. The ring keeps the last ``capacity`` records (``Config.task_history``, 10,000 by
default), and of their output at most :data:`OUTPUT_BUDGET` characters in all: the oldest
outputs go first, so a chatty job cannot make a peer hoard memory.

Pure: the caller says when things happened. Sequence numbers count up from 1, so a reader
that remembers the last one it saw asks only for what is new (:meth:`TaskLog.after`).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from typing import NamedTuple

from ._proto.activity import TaskRecord
from ._proto.workmessages import JobSpec

__all__ = ["OUTPUT_BUDGET", "TaskLog", "TaskLogStatistics", "TaskRun", "task_runs"]

#: Characters of task output a peer keeps in all (about 4 MiB of text at most).
OUTPUT_BUDGET = 4 * 1024 * 1024


class TaskRun(NamedTuple):
    """How one task ran in a worker process: its start (Unix seconds), its seconds, the
    worker slot (0 .. workers - 1) and what it printed (cut, see :mod:`._capture`)."""

    started: float
    seconds: float
    slot: int
    stdout: str = ""
    stderr: str = ""


def task_runs(runs: list[tuple[float, float, str, str]], slot: int,
              count: int) -> list[TaskRun | None]:
    """The runs of ``count`` calls a worker on ``slot`` reported (start, seconds, stdout,
    stderr each; none at all if the function did not load)."""
    if not runs:
        return [None] * count
    return [TaskRun(began, seconds, slot, out, err) for began, seconds, out, err in runs]


@dataclass(frozen=True, slots=True)
class TaskLogStatistics:
    """``recorded`` since the peer started; ``kept`` in the ring now; ``output_chars`` of
    output kept now."""

    recorded: int
    kept: int
    output_chars: int


class TaskLog:
    """The ring; see the module docstring."""

    def __init__(self, capacity: int = 10_000, output_budget: int = OUTPUT_BUDGET) -> None:
        self._records: deque[TaskRecord] = deque(maxlen=capacity)
        self._outputs: OrderedDict[int, tuple[str, str]] = OrderedDict()  #: by seq, oldest first
        self._output_chars = 0
        self._budget = output_budget
        self._last = 0

    @property
    def last(self) -> int:
        """The sequence number of the newest record (0 before the first)."""
        return self._last

    def record(self, spec: JobSpec, task: int, status: int, run: TaskRun) -> None:
        """Remember that task ``task`` of ``spec``'s job ran as ``run`` and ended with
        ``status``."""
        self._last += 1
        if self._records and len(self._records) == self._records.maxlen:
            self._forget_output(self._records[0].seq)
        elif self._records.maxlen == 0:
            return
        self._records.append(TaskRecord(
            self._last, spec.job, spec.owner, spec.qualname, task, max(0, run.slot),
            run.started, run.seconds, status))
        if run.stdout or run.stderr:
            self._outputs[self._last] = (run.stdout, run.stderr)
            self._output_chars += len(run.stdout) + len(run.stderr)
            while self._output_chars > self._budget and self._outputs:
                self._forget_output(next(iter(self._outputs)))

    def _forget_output(self, seq: int) -> None:
        texts = self._outputs.pop(seq, None)
        if texts is not None:
            self._output_chars -= len(texts[0]) + len(texts[1])

    def after(self, seq: int, since: float, limit: int) -> list[TaskRecord]:
        """The newest ``limit`` records numbered above ``seq`` that ended at ``since`` or
        later, oldest first, without their output."""
        found: list[TaskRecord] = []
        for record in reversed(self._records):
            if record.seq <= seq or len(found) >= limit:
                break
            if record.started + record.seconds >= since:
                found.append(record)
        found.reverse()
        return found

    def of_job(self, job: bytes) -> list[TaskRecord]:
        """Every record of ``job`` still in the ring, oldest first, with its output."""
        return [self._with_output(r) for r in self._records if r.job == job]

    def _with_output(self, record: TaskRecord) -> TaskRecord:
        texts = self._outputs.get(record.seq)
        return record if texts is None else replace(record, stdout=texts[0], stderr=texts[1])

    def statistics(self) -> TaskLogStatistics:
        return TaskLogStatistics(self._last, len(self._records), self._output_chars)
