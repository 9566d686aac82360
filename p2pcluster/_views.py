"""The cluster as JSON: members, jobs, tasks and the task stream, from what peers reported.

Pure functions and records over :mod:`._proto.activity`'s reports and the member table;
:mod:`._lookout` gathers the reports, the dashboard, `p2pcluster jobs` and `top` show the
result. The shapes are documented in ``docs/operations.md`` (the dashboard's API). Times
are Unix seconds; sizes bytes; ``null`` means unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._proto.activity import ActivityReport, JobReport, JobState, TaskRecord
from ._proto.control import member_row
from ._proto.membership import Member
from ._proto.meta import NodeMeta

__all__ = ["Bar", "Seen", "job_json", "member_json", "merge_bar", "new_bar", "task_json"]

STATES: dict[int, str] = {JobState.RUNNING: "running", JobState.DONE: "done",
          JobState.CANCELLED: "cancelled"}
#: Two tasks on one worker slot, of one job, closer than this (seconds) make one bar of the
#: task stream: 60 s on a screen 1,200 pixels wide is 0.05 s a pixel.
BAR_GAP = 0.05


@dataclass(frozen=True, slots=True)
class Seen:
    """What a peer said last: its report (None if it never answered), whether it answered
    the latest question (``error`` says why not), and when it last answered (Unix s)."""

    report: ActivityReport | None
    answered: bool
    error: str
    at: float


def member_json(member: Member, now: float, me: bytes, seen: Seen | None) -> dict[str, Any]:
    """One row of ``/api/members``: ``members --json``'s row, what the peer uses (from its
    metadata) and what it said about its workers (from its last report)."""
    row = member_row(member, now)
    usage = NodeMeta.decode(member.meta).usage
    report = seen.report if seen else None
    row.update(
        self=member.id == me,
        cpu=None if usage is None else usage.cpu,
        rss=None if usage is None else usage.rss * 1024,
        load=None if usage is None else usage.load,
        slots=report.slots if report else None,
        busy=report.busy if report and seen and seen.answered else None,
        queued=report.queued if report and seen and seen.answered else None,
        answered=None if seen is None else seen.answered,
        error=seen.error if seen else "",
    )
    return row


def job_json(job: JobReport, owner: Member, now: float, *, stale: bool) -> dict[str, Any]:
    """One row of ``/api/jobs``. ``stale``: the owner did not answer this time, so this is
    what it said last; a running job whose owner is gone is ``"owner gone"``."""
    state = STATES.get(job.state, "unknown")
    if state == "running" and not owner.alive:
        state = "owner gone"
    end = job.ended if job.ended is not None else now
    elapsed = max(0.0, end - job.started)
    rate = job.done / elapsed if elapsed > 0 else None
    eta = ((job.total - job.done) / rate if rate and state == "running" else None)
    return {
        "id": job.job.hex(), "owner": owner.name, "owner_id": owner.id.hex(),
        "function": job.function, "label": job.label, "state": state, "total": job.total,
        "done": job.done, "errors": job.errors, "started": job.started, "ended": job.ended,
        "elapsed": round(elapsed, 3), "rate": None if rate is None else round(rate, 3),
        "eta": None if eta is None else round(eta, 1),
        "done_by": {p.name: p.count for p in job.done_by},
        "held_by": {p.name: p.count for p in job.held_by}, "stale": stale,
    }


def task_json(record: TaskRecord, peer: str, *, output: bool = False) -> dict[str, Any]:
    """One row of ``/api/tasks`` (with ``output``: and what the task printed)."""
    row: dict[str, Any] = {
        "peer": peer, "slot": record.slot, "job": record.job.hex(),
        "function": record.function, "task": record.task, "started": record.started,
        "ended": record.started + record.seconds, "seconds": record.seconds,
        "status": record.status,
    }
    if output:
        row.update(stdout=record.stdout, stderr=record.stderr)
    return row


@dataclass(slots=True)
class Bar:
    """Tasks of one job run back to back on one worker slot: one bar of the task stream."""

    peer: str
    slot: int
    job: str
    function: str
    start: float
    end: float
    tasks: int
    errors: int
    busy: float  #: seconds the tasks ran, gaps excluded

    def json(self) -> dict[str, Any]:
        return {"peer": self.peer, "slot": self.slot, "job": self.job,
                "function": self.function, "start": round(self.start, 4),
                "end": round(self.end, 4), "tasks": self.tasks, "errors": self.errors,
                "busy": round(self.busy, 4)}


def merge_bar(last: Bar | None, record: TaskRecord, peer: str) -> Bar | None:
    """Extend ``last`` (the slot's latest bar) with ``record`` if it continues it; else None
    (``record`` starts a bar of its own: :func:`new_bar`)."""
    end = record.started + record.seconds
    if (last is None or last.job != record.job.hex()
            or record.started - last.end > BAR_GAP or record.started < last.start):
        return None
    last.end = max(last.end, end)
    last.tasks += 1
    last.errors += record.status != 0
    last.busy += record.seconds
    return last


def new_bar(record: TaskRecord, peer: str) -> Bar:
    return Bar(peer, record.slot, record.job.hex(), record.function, record.started,
               record.started + record.seconds, 1, int(record.status != 0), record.seconds)
