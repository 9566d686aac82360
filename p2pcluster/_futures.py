"""What :class:`~._cluster.Cluster` hands its callers, and how each job's news reaches them.

A job's *sink* receives its news from the trio thread (results, its end) and never blocks;
the calling threads wait on what the sink fills in: a :class:`TaskFuture` for ``submit``, a
:class:`MapIterator` for ``map``. :class:`JobBook` counts every job of one cluster, so
``progress()`` and shutdown see them all, and nothing waits on a job nobody tracks.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import ClusterError, P2PClusterError
from ._jobs import JobResult, unpack
from ._proto.wiretypes import EndReason

if TYPE_CHECKING:
    from ._proto.control import Progress as JobProgress

__all__ = ["JobBook", "MapIterator", "Progress", "Sink", "TaskFuture"]


@dataclass(frozen=True, slots=True)
class Progress:
    """Tasks submitted and finished through one :class:`~p2pcluster.Cluster`, with counts
    per peer."""

    total: int
    done: int
    per_peer: dict[str, int]
    elapsed: float
    #: Why tasks wait ("" while none do): no live peer has the tags they require.
    waiting: str = ""


class TaskFuture(cf.Future[Any]):
    """The :class:`concurrent.futures.Future` of one task. ``peer`` is the name of the peer
    that ran it, once it has a result or a task error (None until then, and if it never
    ran: cancelled, or the cluster failed)."""

    peer: str | None = None


class JobBook:
    """The jobs of one cluster that have not ended, and the tasks counted so far (thread
    safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[Sink] = set()
        self._total = 0
        self._done = 0
        self._per_peer: Counter[str] = Counter()
        self._start = time.monotonic()

    def add(self, sink: Sink, tasks: int) -> None:
        with self._lock:
            self._total += tasks
            self._live.add(sink)

    def count(self, batch: list[JobResult]) -> None:
        with self._lock:
            self._done += len(batch)
            self._per_peer.update(r.peer for r in batch)

    def forget(self, sink: Sink) -> None:
        with self._lock:
            self._live.discard(sink)

    def live(self) -> list[Sink]:
        with self._lock:
            return list(self._live)

    def take_all(self) -> list[Sink]:
        """Every job still tracked, which the book then forgets."""
        with self._lock:
            live, self._live = list(self._live), set()
        return live

    def progress(self) -> Progress:
        with self._lock:
            return Progress(self._total, self._done, dict(self._per_peer),
                            time.monotonic() - self._start)


#: Runs a function in the cluster's trio thread, soon (``TrioToken.run_sync_soon``).
RunSoon = Callable[[Callable[[], None]], None]


class Sink:
    """One job's consumer; the trio thread calls it (never blocking).

    The job's starter gives it a way to stop the job with :meth:`attach_cancel`; a
    :meth:`cancel` that came earlier is remembered (:attr:`cancel_requested`).
    """

    def __init__(self, book: JobBook, run_soon: RunSoon) -> None:
        self._book = book
        self._run_soon = run_soon
        self._cancel: Callable[[], None] | None = None
        self.cancel_requested = False
        self.over = False

    def attach_cancel(self, cancel: Callable[[], None]) -> None:
        """``cancel`` stops the job; it is called in the trio thread."""
        self._cancel = cancel

    # news from the embedded peer or the daemon (a :class:`~._control_client.JobSink`)
    def accepted(self, job_id: bytes) -> None:
        pass

    def progress(self, progress: JobProgress) -> None:
        pass

    def results(self, batch: list[JobResult]) -> None:
        self._book.count(batch)
        self.got(batch)

    def ended(self, reason: EndReason, error: str) -> None:
        if reason == EndReason.FAILED:
            self.close(error=P2PClusterError(f"the daemon could not run the job: {error}"))
        else:
            self.close(cancelled=reason == EndReason.CANCELLED)

    def broken(self, error: ClusterError) -> None:
        self.close(error=error)

    # what a sink does with its news
    def got(self, batch: list[JobResult]) -> None:
        raise NotImplementedError

    def finish(self, cancelled: bool) -> None:
        raise NotImplementedError

    def failed(self, error: BaseException) -> None:
        raise NotImplementedError

    def close(self, cancelled: bool = False, error: BaseException | None = None) -> None:
        """The job is over: forget it, and tell the consumer (once)."""
        if self.over:
            return
        self.over = True
        self._book.forget(self)
        if error is not None:
            self.failed(error)
        else:
            self.finish(cancelled)

    def cancel(self) -> None:
        """Stop the job (from any thread)."""
        self.cancel_requested = True
        cancel = self._cancel
        if cancel is not None:
            self._run_soon(cancel)


class FutureSink(Sink):
    """The sink of one ``submit``: fills in its :class:`TaskFuture`."""

    def __init__(self, book: JobBook, run_soon: RunSoon, future: TaskFuture) -> None:
        super().__init__(book, run_soon)
        self.future = future

    def got(self, batch: list[JobResult]) -> None:
        result = batch[0]
        self.future.peer = result.peer
        try:
            value = unpack(result.status, result.payload, result.peer)
        except Exception as exc:
            with contextlib.suppress(cf.InvalidStateError):  # cancelled meanwhile
                self.future.set_exception(exc)
        else:
            with contextlib.suppress(cf.InvalidStateError):
                self.future.set_result(value)

    def finish(self, cancelled: bool) -> None:
        if cancelled:
            self.future.cancel()  # no-op if it is done
        elif not self.future.done():
            self.failed(P2PClusterError("the job ended without a result"))

    def failed(self, error: BaseException) -> None:
        with contextlib.suppress(cf.InvalidStateError):
            self.future.set_exception(error)


class MapSink(Sink):
    """The sink of one ``map``: keeps results until its :class:`MapIterator` takes them."""

    def __init__(self, book: JobBook, run_soon: RunSoon, total: int) -> None:
        super().__init__(book, run_soon)
        self.total = total
        self._received: dict[int, JobResult] = {}
        self._end: BaseException | str | None = None
        self._cond = threading.Condition()

    def got(self, batch: list[JobResult]) -> None:
        with self._cond:
            self._received.update((r.task, r) for r in batch)
            self._cond.notify_all()

    def finish(self, cancelled: bool) -> None:
        self._set_end("cancelled" if cancelled else "over")

    def failed(self, error: BaseException) -> None:
        self._set_end(error)

    def _set_end(self, why: BaseException | str) -> None:
        with self._cond:
            self._end = why
            self._cond.notify_all()

    def take(self, index: int, deadline: float | None) -> JobResult:
        """Result ``index``, once it is in (by ``deadline``, a ``time.monotonic()`` time)."""
        with self._cond:
            while index not in self._received:
                if isinstance(self._end, BaseException):
                    raise self._end
                if self._end is not None:
                    raise P2PClusterError(f"the job ended early: {self._end}")
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    raise cf.TimeoutError(f"result {index} of {self.total} was not ready "
                                          "in time")
                self._cond.wait(0.5 if wait is None else min(wait, 0.5))
            return self._received.pop(index)


class MapIterator(Iterator[Any]):
    """:meth:`Cluster.map`'s results, in order. ``close()`` (or garbage collection) before
    the end cancels the rest of the job."""

    def __init__(self, sink: MapSink, deadline: float | None) -> None:
        self._sink = sink
        self._deadline = deadline
        self._next = 0

    def __next__(self) -> Any:
        index = self._next
        if index >= self._sink.total:
            raise StopIteration
        try:
            result = self._sink.take(index, self._deadline)
            self._next += 1
            return unpack(result.status, result.payload, result.peer)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Cancel the rest of the job, if any is left."""
        if self._next < self._sink.total and not self._sink.over:
            self._sink.cancel()

    def __del__(self) -> None:
        self.close()
