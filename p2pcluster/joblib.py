"""joblib on the whole cluster: ``import p2pcluster.joblib`` registers the backend
``"p2pcluster"``.

::

    import joblib
    import p2pcluster.joblib  # registers the backend

    with joblib.parallel_config(backend="p2pcluster"):
        search = GridSearchCV(SVC(), grid, n_jobs=-1).fit(X, y)

Each batch of calls joblib dispatches is one task on the cluster: through the local
``p2pcluster join`` daemon when one runs, and an embedded peer otherwise, exactly as
:class:`~p2pcluster.Cluster` chooses (``parallel_config(backend="p2pcluster",
daemon=True)`` requires the daemon; ``cluster=`` passes a ``Cluster`` of your own).
``n_jobs=-1`` (the default) is every worker of every live peer.

The batches travel as cloudpickle (NumPy arrays as protocol-5 out-of-band buffers) inside
the cluster's authenticated, encrypted channel, and only to peers whose Python minor version
and versions of the distributions the batch names match this process's
(:mod:`._joblib_needs`). A task's exception is re-raised here with its own type, the
worker's traceback as its ``__cause__``. Parallel calls nested inside a task run
sequentially in that worker. :func:`calls_by_peer` says which peers ran how many calls.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import logging
import os
import queue
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

try:
    import cloudpickle  # noqa: F401 (what the batches travel as)
    import joblib
    from joblib._parallel_backends import (
        AutoBatchingMixin,
        ParallelBackendBase,
        SequentialBackend,
    )
except ImportError as exc:
    raise ImportError(f"p2pcluster.joblib needs joblib and cloudpickle ({exc}): "
                      "pip install 'p2pcluster[joblib]'") from exc

from ._cluster import Cluster
from ._config import Config
from ._futures import TaskFuture
from ._joblib_needs import Needs, batch_needs, pickle_noting_modules
from ._joblib_shares import BufferShares
from ._joblib_task import Failure, loads, run_pickled
from ._jobs import JobRequest
from ._proto.eligibility import Dist, JobNeeds

__all__ = ["P2PClusterBackend", "RemoteTraceback", "calls_by_peer", "shutdown"]

log = logging.getLogger("p2pcluster")

#: The name under which the backend is registered with joblib.
NAME = "p2pcluster"


class RemoteTraceback(Exception):
    """The ``__cause__`` of an exception re-raised from a task: the worker's traceback."""

    def __str__(self) -> str:
        return f"\n\n(on peer {self.args[0]})\n{self.args[1]}"


class _Callbacks:
    """One thread that runs joblib's completion callbacks, so that unpickling a result and
    dispatching the next batch never run in the cluster's trio thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, daemon=True,
                                                name="p2pcluster-joblib")
                self._thread.start()
        self._queue.put(fn)

    def _serve(self) -> None:
        while True:
            callback = self._queue.get()
            try:
                callback()
            except BaseException:  # joblib's own bug: say it, and keep serving the others
                log.exception("a joblib completion callback failed")


class _Shared:
    """The clusters this process opened for the backend, one per (config, daemon), closed
    at exit or by :func:`shutdown`; and the count of calls per peer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clusters: dict[tuple[Config | None, bool | None], Cluster] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        self.callbacks = _Callbacks()
        self.by_value: set[str] = set()  #: job modules registered with cloudpickle
        #: The repeated buffers of each cluster's batches, while it exists.
        self.shares: weakref.WeakKeyDictionary[Cluster, BufferShares] = (
            weakref.WeakKeyDictionary())

    def shares_of(self, cluster: Cluster) -> BufferShares:
        """The repeated buffers of ``cluster``'s batches (:mod:`._joblib_shares`)."""
        with self.lock:
            found = self.shares.get(cluster)
            if found is None:
                found = self.shares[cluster] = BufferShares()
            return found

    def cluster(self, config: Config | None, daemon: bool | None) -> Cluster:
        with self.lock:
            found = self.clusters.get((config, daemon))
            if found is None:
                found = Cluster(config, daemon=daemon, label="joblib")
                self.clusters[(config, daemon)] = found
            return found

    def close(self) -> None:
        with self.lock:
            clusters, self.clusters = list(self.clusters.values()), {}
        for cluster in clusters:
            cluster.shutdown()


_shared = _Shared()
atexit.register(_shared.close)


def shutdown() -> None:
    """Close the clusters the backend opened (an embedded peer leaves); the next parallel
    call opens a new one. Done at exit anyway."""
    _shared.close()


def calls_by_peer(*, reset: bool = False) -> dict[str, int]:
    """How many joblib calls (not batches) each peer ran since the import or the last
    ``reset``."""
    with _shared.lock:
        counts = dict(_shared.calls)
        if reset:
            _shared.calls.clear()
    return counts


class P2PClusterBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's backend for p2pcluster (see the module docstring).

    ``config`` and ``daemon`` choose the cluster as :class:`~p2pcluster.Cluster` does (one
    is opened per process and kept until exit); ``cluster`` uses one you opened.
    """

    supports_retrieve_callback = True
    supports_timeout = True
    supports_return_generator = True
    uses_threads = False
    supports_sharedmem = False
    supports_inner_max_num_threads = True
    default_n_jobs = -1
    # A task crosses the network: batches worth at least a tenth of a second.
    MIN_IDEAL_BATCH_DURATION = 0.1
    MAX_IDEAL_BATCH_DURATION = 1.0

    def __init__(self, cluster: Cluster | None = None, config: Config | None = None,
                 daemon: bool | None = None, nesting_level: int | None = None,
                 inner_max_num_threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads, **kwargs)
        self._cluster = cluster
        self._config = config
        self._daemon = daemon
        self._pending: dict[TaskFuture, int] = {}  #: batch -> its number of calls
        self._n_jobs = 1  #: as configured
        self._lock = threading.Lock()

    @property
    def cluster(self) -> Cluster:
        """The cluster the batches go to (opened on first use)."""
        if self._cluster is None:
            self._cluster = _shared.cluster(self._config, self._daemon)
        return self._cluster

    def __reduce__(self) -> tuple[Any, ...]:  # never pickle a live cluster
        return (P2PClusterBackend, ())

    # --- joblib's backend API --------------------------------------------------------------

    def configure(self, n_jobs: int | None = 1, parallel: Any = None, prefer: Any = None,
                  require: Any = None, **backend_kwargs: Any) -> int:
        self.parallel = parallel
        _job_files_by_value()
        self._n_jobs = self.effective_n_jobs(n_jobs)
        return self._n_jobs

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """``n_jobs`` itself when positive; ``-1`` is every worker of every live peer,
        ``-2`` all but one, and so on."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is not None and n_jobs > 0:
            return n_jobs
        total = sum(m.workers for m in self.cluster.members() if m.alive)
        return max(total + 1 + (n_jobs if n_jobs is not None else -1), 1)

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None
               ) -> TaskFuture:
        """Send one batch to the cluster; ``callback(future)`` runs when it is done."""
        try:
            head, buffers, modules = pickle_noting_modules(func)
            cluster = self.cluster
            args = tuple(_shared.shares_of(cluster).swap(cluster, head, buffers))
            request = with_needs(cluster.prepare(run_pickled, args,
                                                 {"threads": self.inner_threads()}),
                                 batch_needs(modules))
            future = cluster.submit_request(request)
        except Exception as exc:  # cannot be sent (unpicklable, too large, no cluster):
            future = TaskFuture()  # joblib re-raises it, as it does a task's error
            future.set_exception(exc)
        with self._lock:
            self._pending[future] = len(func) if hasattr(func, "__len__") else 1
        future.add_done_callback(lambda _: _shared.callbacks.put(
            lambda: self._done(future, callback)))
        return future

    def inner_threads(self) -> int:
        """The BLAS and OpenMP threads each batch may use in its worker: joblib's
        ``inner_max_num_threads`` if set, else as joblib's process backends choose, this
        machine's CPUs divided by ``n_jobs`` (one, when ``n_jobs`` is every worker of peers
        like this one)."""
        if self.inner_max_num_threads is not None:
            return max(1, int(self.inner_max_num_threads))
        return max(1, (os.cpu_count() or 1) // max(1, self._n_jobs))

    def _done(self, future: TaskFuture, callback: Callable[[Any], None] | None) -> None:
        with self._lock:
            calls = self._pending.pop(future, 0)
        if calls and not future.cancelled() and future.exception() is None:
            with _shared.lock:
                _shared.calls[future.peer or "?"] += calls
        if callback is not None and not future.cancelled():
            callback(future)

    def retrieve_result_callback(self, out: TaskFuture) -> Any:
        """The batch's results, or raise its error with its own type."""
        value = loads(out.result())
        if isinstance(value, Failure):
            raise _rebuilt(value, out.peer)
        return value

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Cancel every batch still queued or running (a task in a worker is stopped)."""
        with self._lock:
            pending, self._pending = list(self._pending), {}
        for future in pending:
            future.cancel()

    def get_nested_backend(self) -> tuple[ParallelBackendBase, int | None]:
        """Inside a task, nested parallel calls run sequentially in that worker."""
        level = (self.nesting_level or 0) + 1
        return SequentialBackend(nesting_level=level), None


def _job_files_by_value() -> None:
    """Job files (``p2pcluster run job.py``) load as modules no other peer can import by
    name: their functions and classes travel by value, like those of ``__main__``."""
    import cloudpickle

    with _shared.lock:
        for name in [n for n in sys.modules if n.startswith("p2pjob_")]:
            if name not in _shared.by_value:
                cloudpickle.register_pickle_by_value(sys.modules[name])
                _shared.by_value.add(name)


def with_needs(request: JobRequest, needs: Needs) -> JobRequest:
    """``request``, to go only to peers whose Python minor version and versions of the
    distributions in ``needs`` match this process's (the environment check,
    :mod:`._proto.eligibility`), besides what the request needs already (its tags)."""
    have = request.needs
    versions = {d.name: d.version for d in have.dists} | dict(needs.dists)
    dists = tuple(Dist(name, version) for name, version in sorted(versions.items()))
    return dataclasses.replace(request, needs=JobNeeds(needs.python, dists, have.tags,
                                                       have.strict))


def _rebuilt(failure: Failure, peer: str | None) -> BaseException:
    cause = RemoteTraceback(peer or "?", failure.traceback)
    if failure.error is not None:
        failure.error.__cause__ = cause
        return failure.error
    # The exception could not be pickled: a TaskError, also of its class if that is builtin.
    from ._errors import TaskError, task_error

    return task_error(TaskError, failure.type_name, failure.message, failure.traceback,
                      peer or "?")


joblib.register_parallel_backend(NAME, P2PClusterBackend)
