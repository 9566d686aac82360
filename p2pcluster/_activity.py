"""Questions about work between peers: what each peer owns and ran (``_proto/activity.py``).

Every peer answers: the :class:`Activity` service routes streams that start with an
:class:`~._proto.activity.ActivityQuery` and answers each query on the stream with an
:class:`~._proto.activity.ActivityReport` built from its work service (its jobs, recent
and running; the ring of tasks it ran). Any peer can ask all the others at once
(:meth:`Activity.survey`), each with ``Config.activity_timeout``: that is how the dashboard,
`p2pcluster jobs` and `top` of any peer show the whole cluster. A peer asks itself without
the network.
"""

from __future__ import annotations

import platform
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from ._config import Config
from ._errors import ProtocolError
from ._proto.activity import ActivityQuery, ActivityReport, JobReport, JobState, PeerTasks
from ._proto.membership import Member
from ._proto.messages import Message
from ._runner import Runner
from ._secure import SecureStream
from ._work import Job, WorkService

__all__ = ["Activity", "Answer"]

PYTHON = platform.python_version()


@dataclass(frozen=True, slots=True)
class Answer:
    """What one peer said to a survey: its report, or None if it did not answer in time
    (``error`` says how it failed)."""

    member: Member
    report: ActivityReport | None
    error: str = ""


class Activity:
    """This peer's side of the activity questions; see the module docstring."""

    def __init__(self, config: Config, runner: Runner, work: WorkService) -> None:
        self._config = config
        self._runner = runner
        self._work = work
        runner.route((ActivityQuery,), self._serve)

    # --- answering ----------------------------------------------------------------------------

    def report(self, query: ActivityQuery) -> ActivityReport:
        """This peer's answer to ``query``."""
        work = self._work
        tasks = work.tasks.after(query.after, query.since, query.limit)
        if query.job is not None:
            seen = {r.seq for r in tasks}
            tasks += [r for r in work.tasks.of_job(query.job) if r.seq not in seen]
        pool = work.pool_statistics()
        jobs = tuple(self._job_report(job) for job in work.recent_jobs())
        return ActivityReport(time.time(), PYTHON, pool.slots,
                              max(0, pool.slots - pool.idle_workers), work.state().queued,
                              work.tasks.last, jobs, tuple(tasks))

    def _job_report(self, job: Job) -> JobReport:
        now, wall = trio.current_time(), time.time()
        if not job.finished.is_set():
            state = JobState.RUNNING
            held = Counter(self._work.name_of(p) for p in self._work.holders(job.id).values())
        else:
            state = JobState.CANCELLED if job.cancelled else JobState.DONE
            held = Counter()
        return JobReport(
            job.id, job.spec.qualname, job.label or job.spec.qualname, job.total, job.done,
            job.errors, state, wall - (now - job.started),
            None if job.ended is None else wall - (now - job.ended),
            _counts(job.per_peer), _counts(held))

    async def _serve(self, stream: SecureStream, first: Message) -> None:
        """Answer queries for as long as the stream brings them."""
        msg: Message | None = first
        while isinstance(msg, ActivityQuery):
            await stream.send(self.report(msg))
            msg = await stream.receive()

    # --- asking -------------------------------------------------------------------------------

    async def ask(self, member: Member, query: ActivityQuery) -> Answer:
        """``member``'s report (this peer's own if it is this peer), or an :class:`Answer`
        without one after ``Config.activity_timeout``."""
        if member.id == self._work.node_id:
            return Answer(member, self.report(query))
        error = "no answer"
        with trio.move_on_after(self._config.activity_timeout):
            try:
                async with await self._runner.connect(member.address) as stream:
                    await stream.send(query)
                    reply = await stream.receive()
                if isinstance(reply, ActivityReport):
                    return Answer(member, reply)
                error = "an unexpected reply" if reply is not None else "closed the stream"
            except (OSError, ProtocolError, trio.BrokenResourceError) as exc:
                error = str(exc) or type(exc).__name__
        return Answer(member, None, error)

    async def survey(self, members: list[Member],
                     queries: Mapping[bytes, ActivityQuery]) -> list[Answer]:
        """Ask every one of ``members`` at once (each its query in ``queries``, by node id),
        and return their answers in the same order, within about one timeout."""
        answers: list[Answer | None] = [None] * len(members)

        async def one(i: int, member: Member) -> None:
            answers[i] = await self.ask(member, queries[member.id])

        async with trio.open_nursery() as nursery:
            for i, member in enumerate(members):
                nursery.start_soon(one, i, member)
        return [a for a in answers if a is not None]


def _counts(counter: Counter[str]) -> tuple[PeerTasks, ...]:
    return tuple(PeerTasks(name, n) for name, n in counter.most_common(4096))
