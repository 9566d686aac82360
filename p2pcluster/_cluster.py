"""`Cluster`: the cluster as a :class:`concurrent.futures.Executor`, for plain or asyncio code.

Trio runs in one background thread. There, the cluster is either the local `p2pcluster join`
daemon, reached over one control connection that carries every job of this process
(:mod:`._control_client`), or an embedded peer (:func:`~._peer.open_peer`). The calling
threads only name functions and encode arguments (so a bad function or argument fails at
submit time, in the caller) and then wait on real futures.

Nothing waits forever: every job handed to the trio thread is tracked until it ends, and if
the thread fails (the daemon's connection breaks, the embedded peer crashes), every unfinished
future and iterator fails with :class:`~p2pcluster.ClusterError`, whose ``__cause__`` says
why, and every later call raises it.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import trio

from ._config import Config
from ._errors import ClusterError, ValueTooLarge
from ._futures import FutureSink, JobBook, MapIterator, MapSink, Progress, Sink, TaskFuture
from ._heldargs import taken_now
from ._jobs import CodeRegistry, JobRequest, encode_args, encode_map_args
from ._memberinfo import MemberInfo
from ._packed import Payload
from ._placementnews import PlacementReporter
from ._places import control_path

if TYPE_CHECKING:  # each imported where it is used: `run` imports one path, not both
    from ._control_client import ControlClient
    from ._peer import Peer
    from ._shared import Shared

__all__ = ["Cluster"]

log = logging.getLogger("p2pcluster")


class Cluster(cf.Executor):
    """The cluster, as an Executor: ``submit``, ``map``, ``as_completed``, ``members``.

    ``with Cluster(config) as cluster: cluster.map(fn, items)``. With ``daemon=None`` (the
    default) jobs go through the local `p2pcluster join` daemon of ``config.cluster`` if one
    answers on its control socket, and otherwise through a peer embedded in this process
    (which joins the cluster, runs tasks with ``config.workers`` processes, and leaves on
    :meth:`shutdown`). ``daemon=True`` requires the daemon; ``daemon=False`` always embeds.
    ``include`` lists extra files or packages to ship with every job (the modules the script
    imports from its own directory ship by themselves); ``label`` names this program's jobs
    in the daemon's log; ``err`` gets its lines for the user (default stderr). Tasks go only
    to peers whose Python and installed distributions match this process's (the same minor
    version, or exactly with ``config.strict_versions``); a line names each peer left out.

    Task functions must be module-level functions; arguments and results travel as CBOR.
    A script that uses an embedded peer must guard its top level with
    ``if __name__ == "__main__":`` (worker processes are spawned, as with multiprocessing).
    """

    def __init__(self, config: Config | None = None, *, include: Iterable[str | Path] = (),
                 daemon: bool | None = None, control: str | Path | None = None,
                 registry: CodeRegistry | None = None, label: str = "",
                 on_ready: Callable[[Cluster], None] | None = None,
                 err: TextIO | None = None) -> None:
        self.config = config or Config.load()
        self.registry = registry or CodeRegistry(
            include, auto_limit=self.config.auto_include_limit,
            strict=self.config.strict_versions)
        self.placement = PlacementReporter(
            label, None if err is None else lambda line: print(line, file=err, flush=True))
        self._control = Path(control) if control else control_path(self.config.cluster)
        self._want_daemon = daemon
        self._label = label
        self.peer: Peer | None = None
        self._client: ControlClient | None = None
        self._book = JobBook()
        self._shutdown = False
        self._shared: dict[bytes, Shared] = {}  #: every value shared, by digest
        self._failure: BaseException | None = None
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._on_ready = on_ready
        self._thread = threading.Thread(target=self._thread_main, name="p2pcluster",
                                        daemon=True)
        self._thread.start()
        self._ready.wait()
        failure = self._failed()
        if failure is not None:
            self._thread.join()
            raise failure

    def _failed(self) -> BaseException | None:
        """Why the trio thread failed, if it did (set by that thread)."""
        return self._failure

    @property
    def via_daemon(self) -> bool:
        """True if jobs go through the local daemon."""
        return self._client is not None

    @property
    def daemon_peer(self) -> str | None:
        """The name of the daemon's peer, when jobs go through it."""
        return self._client.peer if self._client is not None else None

    # --- the trio thread --------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to the constructor, or to every waiter
            root = _unwrap(exc)
            if not self._ready.is_set():
                self._failure = root
            else:
                log.debug("the cluster's trio thread failed: %s", root)
                failure = ClusterError(f"the cluster failed: {root}")
                failure.__cause__ = root
                self._failure = failure
        finally:
            self._ready.set()
            self._end_all()

    def _end_all(self) -> None:
        """The trio thread is over: nothing it was to finish ever will."""
        for sink in self._book.take_all():
            sink.close(cancelled=self._failure is None, error=self._failure)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        # No socket file, no daemon: then nothing of the control protocol is imported.
        if self._want_daemon or (self._want_daemon is None and self._control.exists()):
            from ._control import NoDaemon
            from ._control_client import open_control_client

            try:
                async with open_control_client(self._control,
                                               max_value_size=self.config.max_value_size
                                               ) as client:
                    self._client = client
                    client.on_placement = self.placement.note
                    await self._serve()
                    return
            except NoDaemon:
                if self._want_daemon:
                    raise NoDaemon(
                        f"no p2pcluster daemon answers at {self._control}; start one with "
                        f"`p2pcluster join --cluster {self.config.cluster}`") from None
        from ._peer import open_peer

        async with open_peer(self.config, registry=self.registry) as peer:
            self.peer = peer
            await self._serve()

    async def _serve(self) -> None:
        assert self._stop is not None
        if self._on_ready is not None:
            self._on_ready(self)
        self._ready.set()
        await self._stop.wait()
        for sink in self._book.live():  # shutdown cancels what still runs
            sink.cancel()

    def _label_of(self, request: JobRequest) -> str:
        return f"{self._label}: {request.ref.qualname}" if self._label else request.ref.qualname

    def _send_to_daemon(self, client: ControlClient, request: JobRequest, sink: Sink) -> None:
        """(Any thread) hand the job to the daemon's connection."""
        try:
            key = client.submit(request, sink, self._label_of(request))
        except (ClusterError, trio.ClosedResourceError):
            self._book.forget(sink)
            raise client.broken or ClusterError("the connection to the daemon is closed"
                                                ) from None
        sink.attach_cancel(lambda: client.cancel(key))

    def _start_job(self, request: JobRequest, sink: Sink) -> None:
        """In the trio thread: start the job on the embedded peer; its news goes to
        ``sink``."""
        if sink.cancel_requested or sink.over:
            sink.close(cancelled=True)
            return
        assert self.peer is not None
        job = self.peer.submit(request)
        job.listeners.append(sink.results)
        job.watch_placement(self.placement.note)
        job.watch_finish(lambda: sink.close(
            cancelled=job.cancelled, error=ClusterError(job.failure) if job.failure else None))
        sink.attach_cancel(job.cancel)

    def _run_soon(self, fn: Callable[[], None]) -> None:
        """(Any thread) run ``fn`` in the trio thread, unless that is over."""
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(fn)

    def _submit_job(self, request: JobRequest, sink: Sink) -> None:
        if self._shutdown:
            raise RuntimeError("cannot submit after shutdown")
        failure = self._failure or (self._client.broken if self._client else None)
        if failure is not None:
            raise failure
        self._book.add(sink, len(request.payloads))
        client = self._client
        if client is not None:  # straight from this thread: no wake-up of the trio thread
            self._send_to_daemon(client, request, sink)
            return
        request = dataclasses.replace(request, payloads=taken_now(  # (see _heldargs)
            request.payloads, self.config.inline_value_size))
        try:
            self._token.run_sync_soon(self._start_job, request, sink)
        except trio.RunFinishedError:
            self._book.forget(sink)
            if self._failure is not None:
                raise self._failure from None
            raise RuntimeError("the cluster has shut down") from None

    def _limit(self) -> int:
        client = self._client
        return client.limit if client is not None else self.config.max_value_size

    def _where(self) -> str:
        client = self._client
        return f"the daemon's peer {client.peer}" if client is not None else "this peer"

    # --- the Executor -----------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any,  # type: ignore[override]
               requires: Iterable[str] = (), **kwargs: Any) -> TaskFuture:
        """Run ``fn(*args, **kwargs)`` on some peer; a real :class:`concurrent.futures.Future`
        (a :class:`TaskFuture`, whose ``peer`` names where it ran). ``requires`` names tags
        the peer must have (``p2pcluster join --tag``); while no live peer has them the task
        waits. (``fn`` cannot take a keyword argument named ``requires`` this way.)

        Cancelling the future stops the task. The future's exception is a
        :class:`~p2pcluster.TaskError` (with the remote traceback) if the task raised; it is
        also an instance of the task's own exception class when this process can resolve it
        (``except ValueError:`` works).
        """
        return self.submit_request(self.prepare(fn, args, kwargs, requires=requires))

    def prepare(self, fn: Callable[..., Any], args: tuple[Any, ...] = (),
                kwargs: dict[str, Any] | None = None, *, requires: Iterable[str] = ()
                ) -> JobRequest:
        """The :class:`JobRequest` of one call ``fn(*args, **kwargs)``, named and encoded as
        :meth:`submit` does (and failing as it does), its tasks for peers with the tags
        ``requires``; :meth:`submit_request` runs it."""
        return self.registry.request(fn, [encode_args(args, kwargs or {})],
                                     max_value_size=self._limit(), where=self._where(),
                                     requires=requires)

    def submit_request(self, request: JobRequest) -> TaskFuture:
        """Run a one-task job from :meth:`prepare`, perhaps amended (what layers such as
        :mod:`p2pcluster.joblib` build on); a :class:`TaskFuture` as from :meth:`submit`."""
        if len(request.payloads) != 1:
            raise ValueError("submit_request takes a request of exactly one task")
        future = TaskFuture()
        sink = FutureSink(self._book, self._run_soon, future)

        # The future stays PENDING until it has a result: a RUNNING future cannot be
        # cancelled (Future.cancel() returns False), by the caller or by shutdown().
        def cancelled(done: cf.Future[Any]) -> None:
            if done.cancelled():
                done.set_running_or_notify_cancel()  # wakes cf.wait() and as_completed()
                sink.cancel()

        future.add_done_callback(cancelled)
        self._submit_job(request, sink)
        return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int | None = None,
            task_timeout: float | None = None, requires: Iterable[str] = ()) -> MapIterator:
        """Like :meth:`concurrent.futures.Executor.map`: results in order, as a
        :class:`MapIterator`.

        The whole map is one job: it is split and batched across the cluster automatically,
        or ``chunksize`` tasks at a time. ``timeout`` (seconds, from this call) limits the
        wait for results, as in PEP 3148; ``task_timeout`` limits each task. A task's error is
        raised when its result is reached; leaving the iterator early (or its ``close()``)
        cancels the job. ``requires`` names tags a peer must have to run the tasks.
        """
        payloads = encode_map_args(iterables)
        request = self.registry.request(fn, payloads, timeout=task_timeout,
                                        chunksize=chunksize, max_value_size=self._limit(),
                                        where=self._where(), requires=requires)
        deadline = None if timeout is None else time.monotonic() + timeout
        sink = MapSink(self._book, self._run_soon, len(payloads))
        self._submit_job(request, sink)
        return MapIterator(sink, deadline)

    def as_completed(self, futures: Iterable[cf.Future[Any]], timeout: float | None = None
                     ) -> Iterator[cf.Future[Any]]:
        """:func:`concurrent.futures.as_completed`, for convenience."""
        return cf.as_completed(futures, timeout)

    def share(self, value: Any) -> Shared:
        """Share ``value`` with the cluster and return its handle: pass the handle as a
        task argument (or inside one), and the task receives the value itself. Each peer
        fetches it once, however many tasks use it; sharing the same value again costs
        nothing (``docs/jobs.md``, "Shared inputs"). Raises :class:`~p2pcluster.SubmitError`
        for a value that cannot travel, :class:`~p2pcluster.ValueTooLarge` over the limit."""
        from ._shared import digest_of
        from ._values import encode_shared

        payload = encode_shared(value)  # the arrays themselves (see _sharing.py)
        digest = digest_of(payload)
        if digest not in self._shared:
            self._shared[digest] = self._in_trio(self._share, payload, digest)
        return self._shared[digest]

    async def _share(self, payload: Payload, digest: bytes) -> Shared:
        if self._client is None:
            assert self.peer is not None
            return await self.peer.share_payload(payload, digest=digest)
        from ._control_client import DaemonError
        from ._shared import Shared

        try:
            answer = await self._client.request("share", value=payload)
        except DaemonError as exc:
            if "over the limit" in str(exc):  # the daemon's max_value_size
                raise ValueTooLarge(str(exc)) from None
            raise
        return Shared(answer["digest"], answer["size"])

    def _in_trio(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return trio.from_thread.run(fn, *args, trio_token=self._token)
        except trio.RunFinishedError:
            if self._failure is not None:
                raise self._failure from None
            raise RuntimeError("the cluster has shut down") from None

    def members(self) -> list[MemberInfo]:
        """The cluster's members as this peer (or the daemon) sees them."""
        table = self._in_trio(self._members)
        return [MemberInfo.from_row(row) for row in table]

    async def _members(self) -> list[dict[str, Any]]:
        if self._client is not None:
            answer = await self._client.request("members")
            rows: list[dict[str, Any]] = answer.get("members", [])
            return rows
        assert self.peer is not None
        now = trio.current_time()
        from ._proto.control import member_row

        return [member_row(m, now) for m in self.peer.members()]

    def progress(self) -> Progress:
        """Tasks submitted and done through this cluster, per peer, and the seconds since it
        started."""
        return dataclasses.replace(self._book.progress(), waiting=self.placement.waiting)

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


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
