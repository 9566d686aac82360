"""A job owned by this peer, as its submitter sees it: results, news of where its tasks may
go, and its end. The work service (:mod:`._work`) feeds it, and admits its tasks into the
machine (:func:`admit`)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence

import trio

from ._jobs import IN_TRIO_PART, JobResult, PlacementNote, unrunnable_message
from ._proto.messages import JobSpec, TaskItem
from ._proto.stealing import StealingMachine
from ._proto.wiretypes import PlacementKind

__all__ = ["Job", "admit"]

log = logging.getLogger("p2pcluster.peer")


class Job:
    """A job owned by this peer: its results as they arrive, and its end.

    Listeners get each batch of new results (first results only, as :class:`JobResult`),
    in the peer's trio thread; a listener must not block. The job keeps no results itself:
    whoever consumes them holds them. ``done`` and ``per_peer`` count finished tasks,
    ``errors`` those that failed; ``label`` names the job for people (the job file).
    """

    def __init__(self, cancel: Callable[[Job], None], spec: JobSpec, total: int,
                 started: float = 0.0) -> None:
        self._cancel = cancel
        self.spec = spec
        self.total = total
        self.started = started
        self.done = 0
        self.errors = 0
        self.label = ""
        self.ended: float | None = None  #: trio time of the end
        self.per_peer: Counter[str] = Counter()
        self.finished = trio.Event()
        self.cancelled = False
        self.listeners: list[Callable[[list[JobResult]], None]] = []
        self.on_finish: list[Callable[[], None]] = []
        #: Called with each :class:`PlacementNote` (where the tasks may go), in the trio
        #: thread; must not block.
        self.on_placement: list[Callable[[PlacementNote], None]] = []
        self.notes: list[PlacementNote] = []
        #: Why the job failed as a whole ("" if it did not): no live peer can run it.
        self.failure = ""

    @property
    def id(self) -> bytes:
        return self.spec.job

    def cancel(self) -> None:
        """Stop the job everywhere (within a round trip); results that arrive are ignored."""
        if not self.finished.is_set():
            self.cancelled = True
            self._cancel(self)

    async def wait(self) -> None:
        await self.finished.wait()

    def deliver(self, batch: list[JobResult]) -> None:
        """(The work service) hand new results to the listeners."""
        self.done += len(batch)
        self.errors += sum(1 for result in batch if result.status)
        self.per_peer.update(result.peer for result in batch)
        for listener in list(self.listeners):
            try:
                listener(batch)
            except Exception:  # one consumer's bug must not take the peer (and others' jobs) down
                log.exception("a listener of job %s failed; it gets no more results",
                              self.id.hex()[:8])
                self.listeners.remove(listener)

    def watch_finish(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the job is over: now if it is already (a job no live peer
        can run may end before :meth:`WorkService.submit` returns)."""
        if self.finished.is_set():
            callback()
        else:
            self.on_finish.append(callback)

    def watch_placement(self, callback: Callable[[PlacementNote], None]) -> None:
        """Call ``callback`` with every placement note so far (the first may come before
        :meth:`WorkService.submit` returns), and with each one to come."""
        for note in self.notes:
            callback(note)
        self.on_placement.append(callback)

    def placement(self, note: PlacementNote) -> None:
        """(The work service) news of where the tasks may go."""
        self.notes.append(note)
        if note.kind == PlacementKind.UNRUNNABLE:
            self.failure = unrunnable_message(self.notes)
        for callback in list(self.on_placement):
            try:
                callback(note)
            except Exception:
                log.exception("a placement listener of job %s failed", self.id.hex()[:8])

    def finish(self) -> None:
        """(The work service) the job is over: wake its waiters and call ``on_finish``."""
        if self.finished.is_set():
            return
        self.ended = trio.current_time()
        self.finished.set()
        for callback in self.on_finish:
            try:
                callback()
            except Exception:
                log.exception("an end listener of job %s failed", self.id.hex()[:8])


Tasks = Sequence[tuple[int, bytes] | TaskItem]


def admit(machine: StealingMachine, nursery: trio.Nursery, flush: Callable[[], None],
          spec: JobSpec, tasks: Tasks) -> None:
    """Give ``machine`` the tasks of the new job ``spec``: the first :data:`IN_TRIO_PART`
    now, the rest from a task in ``nursery``, a part per pass of the loop (``flush`` after
    each: the driver carries out what the machine says), so that the loop goes on
    answering probes and moving tasks while a large job comes in (admitting a task costs
    the loop about 10 us here: 300,000 at once held it for 3 s, and the other peers
    declared the owner dead). A job cancelled meanwhile takes no more."""
    now = trio.current_time()
    machine.submit(now, spec, tasks[:IN_TRIO_PART], more=len(tasks) > IN_TRIO_PART)
    if len(tasks) > IN_TRIO_PART:
        nursery.start_soon(_admit_rest, machine, flush, spec, tasks)


async def _admit_rest(machine: StealingMachine, flush: Callable[[], None], spec: JobSpec,
                      tasks: Tasks) -> None:
    for start in range(IN_TRIO_PART, len(tasks), IN_TRIO_PART):
        await trio.sleep(0)
        part = tasks[start:start + IN_TRIO_PART]
        more = start + IN_TRIO_PART < len(tasks)
        if not machine.extend(trio.current_time(), spec, part, more=more):
            return  # (the job is over: cancelled)
        flush()
