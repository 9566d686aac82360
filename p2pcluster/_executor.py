"""`Cluster`: the cluster as a :class:`concurrent.futures.Executor`, for plain or asyncio code.

Trio runs in one background thread. There, the cluster is either an embedded peer
(:func:`~._peer.open_peer`) or the local `p2pcluster join` daemon, reached over its control
socket. The calling threads only name functions and encode arguments (so a bad function or
argument fails at submit time, in the caller) and then wait on real futures.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ._config import Config
from ._control import NoDaemon, control_path, open_connection, request
from ._errors import P2PClusterError
from ._jobs import CodeRegistry, JobRequest, encode_map_args, unpack
from ._peer import Peer, open_peer

__all__ = ["Cluster", "MemberInfo", "Progress"]

log = logging.getLogger("p2pcluster")
Batch = list[tuple[int, int, bytes, str]]


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A member as :meth:`Cluster.members` reports it."""

    name: str
    id: str
    host: str
    port: int
    status: str
    workers: int
    queue: int

    @property
    def alive(self) -> bool:
        return self.status in ("alive", "suspect")


@dataclass(frozen=True, slots=True)
class Progress:
    """Tasks submitted and finished through one :class:`Cluster`, with counts per peer."""

    total: int
    done: int
    per_peer: dict[str, int]
    elapsed: float


class _JobHandle:
    """A job as the executor sees it: cancel it from any thread."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._cancel: Callable[[], None] | None = None
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True
        if self._cancel is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._cluster._token.run_sync_soon(self._cancel)


class Cluster(cf.Executor):
    """The cluster, as an Executor: ``submit``, ``map``, ``as_completed``, ``members``.

    ``with Cluster(config) as cluster: cluster.map(fn, items)``. With ``daemon=None`` (the
    default) jobs go through the local `p2pcluster join` daemon of ``config.cluster`` if one
    answers on its control socket, and otherwise through a peer embedded in this process
    (which joins the cluster, runs tasks with ``config.workers`` processes, and leaves on
    :meth:`shutdown`). ``daemon=True`` requires the daemon; ``daemon=False`` always embeds.
    ``include`` lists extra files or packages to ship with every job.

    Task functions must be module-level functions; arguments and results travel as CBOR.
    A script that uses an embedded peer must guard its top level with
    ``if __name__ == "__main__":`` (worker processes are spawned, as with multiprocessing).
    """

    def __init__(self, config: Config | None = None, *, include: Iterable[str | Path] = (),
                 daemon: bool | None = None, control: str | Path | None = None,
                 registry: CodeRegistry | None = None,
                 on_ready: Callable[[Cluster], None] | None = None) -> None:
        self.config = config or Config.load()
        self.registry = registry or CodeRegistry(include)
        self._control = Path(control) if control else control_path(self.config.cluster)
        self._want_daemon = daemon
        self.peer: Peer | None = None
        self.via_daemon = False
        self._lock = threading.Lock()
        self._total = 0
        self._done = 0
        self._per_peer: Counter[str] = Counter()
        self._start = time.monotonic()
        self._shutdown = False
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: trio.Event | None = None
        self._on_ready = on_ready
        self._thread = threading.Thread(target=self._thread_main, name="p2pcluster",
                                        daemon=True)
        self._thread.start()
        self._ready.wait()
        error: BaseException | None = getattr(self, "_error", None)  # set by the thread
        if error is not None:
            self._thread.join()
            raise error

    # --- the trio thread --------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to the constructor, or logged at shutdown
            if not self._ready.is_set():
                self._error = _unwrap(exc)
            else:
                log.error("the cluster's trio thread failed: %s", _unwrap(exc))  # noqa: TRY400
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self._want_daemon is not False and await self._daemon_answers():
                self.via_daemon = True
                self._started()
                await self._stop.wait()
            else:
                async with open_peer(self.config, registry=self.registry) as peer:
                    self.peer = peer
                    self._started()
                    await self._stop.wait()
            nursery.cancel_scope.cancel()

    def _started(self) -> None:
        if self._on_ready is not None:
            self._on_ready(self)
        self._ready.set()

    async def _daemon_answers(self) -> bool:
        try:
            answer = await request(self._control, {"op": "status"}, timeout=2.0)
        except (NoDaemon, P2PClusterError, OSError, trio.TooSlowError):
            if self._want_daemon:
                raise NoDaemon(f"no p2pcluster daemon answers at {self._control}; start one "
                               f"with `p2pcluster join --cluster {self.config.cluster}`") from None
            return False
        return bool(answer.get("ok"))

    def _start_job(self, job_request: JobRequest, handle: _JobHandle,
                   on_results: Callable[[Batch], None], on_end: Callable[[str | None], None]
                   ) -> None:
        """In the trio thread: start the job, feed results, report its end (or error)."""
        if handle._cancelled:
            on_end("cancelled")
            return
        if self.peer is not None:
            job = self.peer.submit(job_request)
            job.listeners.append(on_results)
            handle._cancel = job.cancel

            async def wait_end() -> None:
                await job.wait()
                on_end("cancelled" if job.cancelled else None)

            self._nursery.start_soon(wait_end)
        else:
            scope = trio.CancelScope()
            handle._cancel = scope.cancel
            self._nursery.start_soon(self._daemon_job, job_request, scope, on_results, on_end)

    async def _daemon_job(self, job_request: JobRequest, scope: trio.CancelScope,
                          on_results: Callable[[Batch], None],
                          on_end: Callable[[str | None], None]) -> None:
        error: str | None = "cancelled"
        with scope:
            try:
                connection = await open_connection(self._control)
                async with contextlib.aclosing(connection):
                    await connection.send({
                        "op": "submit", "ref": list(job_request.ref.to_wire()),
                        "bundles": {d: b.encode() for d, b in job_request.bundles.items()},
                        "payloads": list(job_request.payloads),
                        "timeout": job_request.timeout, "chunksize": job_request.chunksize})
                    first = await connection.receive()
                    if not first or not first.get("ok"):
                        error = (first or {}).get("error", "the daemon closed the connection")
                        return
                    async for frame in connection:
                        if "results" in frame:
                            on_results([tuple(r) for r in frame["results"]])
                        if frame.get("done"):
                            error = "cancelled" if frame.get("cancelled") else None
                            return
                    error = "the daemon closed the connection mid-job"
            except (P2PClusterError, OSError) as exc:
                error = f"the daemon failed: {exc}"
            finally:
                on_end(error)

    # --- the Executor -----------------------------------------------------------------------

    def _submit_job(self, job_request: JobRequest, on_results: Callable[[Batch], None],
                    on_end: Callable[[str | None], None]) -> _JobHandle:
        if self._shutdown:
            raise RuntimeError("cannot submit after shutdown")
        handle = _JobHandle(self)
        with self._lock:
            self._total += len(job_request.payloads)

        def count(batch: Batch) -> None:
            with self._lock:
                self._done += len(batch)
                self._per_peer.update(name for _, _, _, name in batch)
            on_results(batch)

        try:
            self._token.run_sync_soon(self._start_job, job_request, handle, count, on_end)
        except trio.RunFinishedError:
            raise RuntimeError("the cluster has shut down") from None
        return handle

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Run ``fn(*args, **kwargs)`` on some peer; a real :class:`concurrent.futures.Future`.

        Cancelling the future stops the task. The future's exception is a
        :class:`~p2pcluster.TaskError` (with the remote traceback) if the task raised.
        """
        from ._code import encode_call

        job_request = self.registry.request(fn, [encode_call(args, kwargs)])
        future: cf.Future[Any] = cf.Future()

        # The future stays PENDING until it has a result: a RUNNING future cannot be
        # cancelled (Future.cancel() returns False), by the caller or by shutdown().
        def on_results(batch: Batch) -> None:
            _, status, payload, name = batch[0]
            try:
                value = unpack(status, payload, name)
            except Exception as exc:
                with contextlib.suppress(cf.InvalidStateError):  # cancelled meanwhile
                    future.set_exception(exc)
            else:
                with contextlib.suppress(cf.InvalidStateError):
                    future.set_result(value)

        def on_end(error: str | None) -> None:
            if error == "cancelled":
                future.cancel()  # no-op if it is done
            elif not future.done():
                with contextlib.suppress(cf.InvalidStateError):
                    future.set_exception(P2PClusterError(error or "the job ended without a "
                                                         "result"))

        handle = self._submit_job(job_request, on_results, on_end)

        def cancelled(done: cf.Future[Any]) -> None:
            if done.cancelled():
                done.set_running_or_notify_cancel()  # wakes cf.wait() and as_completed()
                handle.cancel()

        future.add_done_callback(cancelled)
        return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int | None = None,
            task_timeout: float | None = None) -> Iterator[Any]:
        """Like :meth:`concurrent.futures.Executor.map`: results in order, as an iterator.

        The whole map is one job: it is split and batched across the cluster automatically,
        or ``chunksize`` tasks at a time. ``timeout`` (seconds, from this call) limits the
        wait for results, as in PEP 3148; ``task_timeout`` limits each task. A task's error is
        raised when its result is reached; leaving the iterator early cancels the job.
        """
        payloads = encode_map_args(iterables)
        job_request = self.registry.request(fn, payloads, timeout=task_timeout,
                                            chunksize=chunksize)
        deadline = None if timeout is None else time.monotonic() + timeout
        results: dict[int, tuple[int, bytes, str]] = {}
        end: list[str | None] = []
        cond = threading.Condition()

        def on_results(batch: Batch) -> None:
            with cond:
                for index, status, payload, name in batch:
                    results[index] = (status, payload, name)
                cond.notify_all()

        def on_end(error: str | None) -> None:
            with cond:
                end.append(error)
                cond.notify_all()

        handle = self._submit_job(job_request, on_results, on_end)
        return _MapIterator(len(payloads), results, end, cond, deadline, handle)

    def _cancel_iterator(self, iterator: Iterator[Any]) -> None:
        """Cancel the job behind an iterator from :meth:`map` (from any thread)."""
        if isinstance(iterator, _MapIterator):
            iterator.close()

    def as_completed(self, futures: Iterable[cf.Future[Any]], timeout: float | None = None
                     ) -> Iterator[cf.Future[Any]]:
        """:func:`concurrent.futures.as_completed`, for convenience."""
        return cf.as_completed(futures, timeout)

    def members(self) -> list[MemberInfo]:
        """The cluster's members as this peer (or the daemon) sees them."""
        if self.peer is not None:
            from ._daemon import member_row

            peer = self.peer

            def rows() -> list[dict[str, Any]]:
                now = trio.current_time()
                return [member_row(m, now) for m in peer.members()]

            table = trio.from_thread.run_sync(rows, trio_token=self._token)
        else:
            answer = trio.from_thread.run(request, self._control, {"op": "members"},
                                          trio_token=self._token)
            table = answer.get("members", [])
        return [MemberInfo(r["name"], r["id"], r["host"], r["port"], r["status"],
                           r["workers"], r["queue"]) for r in table]

    def progress(self) -> Progress:
        with self._lock:
            return Progress(self._total, self._done, dict(self._per_peer),
                            time.monotonic() - self._start)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Leave the cluster (an embedded peer) and stop the trio thread. Jobs still running
        are cancelled."""
        if self._shutdown:
            return
        self._shutdown = True
        stop = self._stop
        if stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(stop.set)
        if wait:
            self._thread.join()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class _MapIterator(Iterator[Any]):
    """:meth:`Cluster.map`'s results in order; ``close()`` (or garbage) cancels the job."""

    def __init__(self, total: int, results: dict[int, tuple[int, bytes, str]],  # noqa: PLR0917
                 end: list[str | None], cond: threading.Condition, deadline: float | None,
                 handle: _JobHandle) -> None:
        self._total = total
        self._results = results
        self._end = end
        self._cond = cond
        self._deadline = deadline
        self._handle = handle
        self._next = 0

    def __next__(self) -> Any:
        index = self._next
        if index >= self._total:
            raise StopIteration
        try:
            status, payload, name = self._wait(index)
            self._next += 1
            return unpack(status, payload, name)
        except BaseException:
            self.close()
            raise

    def _wait(self, index: int) -> tuple[int, bytes, str]:
        with self._cond:
            while index not in self._results:
                if self._end:
                    raise P2PClusterError(f"the job ended early: {self._end[0]}")
                wait = None if self._deadline is None else self._deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    raise cf.TimeoutError(f"result {index} of {self._total} was not ready "
                                          "in time")
                self._cond.wait(0.5 if wait is None else min(wait, 0.5))
            return self._results.pop(index)

    def close(self) -> None:
        if self._next < self._total and not self._end:
            self._handle.cancel()

    def __del__(self) -> None:
        self.close()


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc

