"""`p2pcluster run job.py [ARGS...]`: load the job file, call its ``main(cluster, *ARGS)``,
print the return value.

The job file is bundled and loaded as module ``p2pjob_<digest>``, the same name every peer
gives it, so its functions are named identically everywhere. Jobs go through the local
`p2pcluster join` daemon when one answers on the control socket; otherwise an ephemeral peer
starts in this process, works at once, and says within a second whether it found others.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import inspect
import json
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from ._code import CodeCache, bundle_file, load_job_module
from ._config import Config
from ._errors import P2PClusterError
from ._executor import Cluster
from ._jobs import CodeRegistry, TaskError

__all__ = ["AsyncCluster", "run_job_file"]

#: How long `run` looks for other peers before it says it is alone.
ALONE_AFTER = 0.6


class AsyncCluster:
    """What an ``async def main(cluster, *args)`` receives: awaitable versions of the
    Executor's methods (the work still runs in the cluster's own trio thread)."""

    def __init__(self, cluster: Cluster) -> None:
        self.executor = cluster

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on some peer; cancelling the caller cancels the task."""
        import trio

        future = self.executor.submit(fn, *args, **kwargs)
        try:
            return await trio.to_thread.run_sync(future.result, abandon_on_cancel=True)
        finally:
            future.cancel()

    async def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
                  chunksize: int | None = None, timeout: float | None = None) -> list[Any]:
        """``list(executor.map(...))``; ``timeout`` is per task. Cancelling the caller
        cancels the job."""
        import trio

        results = self.executor.map(fn, *iterables, chunksize=chunksize, task_timeout=timeout)
        stop = threading.Event()

        def collect() -> list[Any]:
            out = []
            for value in results:
                out.append(value)
                if stop.is_set():
                    break
            return out

        try:
            return await trio.to_thread.run_sync(collect, abandon_on_cancel=True)
        finally:
            stop.set()
            self.executor._cancel_iterator(results)

    def members(self) -> list[Any]:
        """The members (a quick call, made without awaiting, as documented)."""
        # Cluster.members() waits for the cluster's trio thread through trio.from_thread,
        # which trio refuses inside a trio run (main's own): wait in a helper thread instead.
        with concurrent.futures.ThreadPoolExecutor(1) as helper:
            return helper.submit(self.executor.members).result()


class ProgressBar:
    """Tasks done out of total, rate, ETA and per-peer counts, redrawn on one stderr line."""

    def __init__(self, cluster: Cluster, stream: TextIO, interval: float = 0.2) -> None:
        self.cluster = cluster
        self.stream = stream
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="p2pcluster-progress",
                                        daemon=True)
        self._drawn = False

    def __enter__(self) -> ProgressBar:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.draw()

    def draw(self) -> None:
        p = self.cluster.progress()
        if p.total == 0:
            return
        self.stream.write("\r\x1b[K" + render_progress(p.done, p.total, p.elapsed, p.per_peer))
        self.stream.flush()
        self._drawn = True


def render_progress(done: int, total: int, elapsed: float, per_peer: dict[str, int],
                    width: int = 24) -> str:
    filled = int(width * done / total) if total else width
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else float("inf")
    peers = " ".join(f"{name}:{count}" for name, count in
                     sorted(per_peer.items(), key=lambda kv: -kv[1])[:6])
    eta_text = f"{eta:.0f}s" if eta != float("inf") else "?"
    return (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} tasks  "
            f"{rate:,.0f}/s  ETA {eta_text}  {peers}")


def _announce(cluster: Cluster, err: TextIO, finished: threading.Event) -> None:
    """Say where the work runs; for an embedded peer, say within a second if it is alone
    (sooner if the job is already over: then it ran wherever it found peers by then)."""
    if cluster.via_daemon:
        members = [m for m in cluster.members() if m.alive]
        print(f"p2pcluster: submitting through the local daemon; {len(members)} peer(s) "
              f"alive in cluster {cluster.config.cluster!r}", file=err)
        return
    peer = cluster.peer
    assert peer is not None
    workers = peer.pool.slots
    deadline = time.monotonic() + ALONE_AFTER
    others: list[str] = []
    while time.monotonic() < deadline:
        others = [m.name for m in cluster.members() if m.alive and m.name != peer.name]
        if others or finished.wait(0.05):
            break
    if others:
        print(f"p2pcluster: ephemeral peer {peer.name} ({workers} workers) joined cluster "
              f"{cluster.config.cluster!r} with {len(others)} other peer(s): "
              f"{', '.join(sorted(others))}", file=err)
    else:
        print(f"p2pcluster: no daemon and no other peer found in cluster "
              f"{cluster.config.cluster!r}: running on an ephemeral local peer with "
              f"{workers} workers ({peer.where})", file=err)


def format_result(value: Any) -> str:
    """JSON if the value is JSON-able, ``repr`` otherwise."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def run_job_file(path: str, args: Sequence[str], *, config: Config,  # noqa: PLR0912, PLR0915
                 control: Path | None = None, daemon: bool | None = None,
                 include: Sequence[str] = (), quiet: bool = False,
                 out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The whole `run` command; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    job_path = Path(path)
    if not job_path.is_file():
        raise P2PClusterError(f"no job file at {path}")
    cache = CodeCache(CodeCache.default_root())
    bundle = bundle_file(job_path)
    sys.path.insert(0, str(job_path.resolve().parent))  # the job may import its neighbours
    registry = CodeRegistry(include)  # first: it puts the --include files on sys.path...
    module = load_job_module(bundle, cache)  # ...so the job file can import them
    main = getattr(module, "main", None)
    if not callable(main):
        raise P2PClusterError(f"{path} has no main(cluster, *args) function; see docs/jobs.md")
    registry.add_job_module(module.__name__, bundle)
    if config.port == Config().port:  # an ephemeral peer takes any free port
        config = dataclasses.replace(config, port=0)
    cluster = Cluster(config, registry=registry, daemon=daemon, control=control,
                      label=job_path.name)
    try:
        with contextlib.ExitStack() as stack:
            finished = threading.Event()
            announcer = threading.Thread(target=_announce, args=(cluster, err, finished),
                                         daemon=True)
            announcer.start()
            if not quiet and err.isatty():
                stack.enter_context(ProgressBar(cluster, err))
            try:
                if inspect.iscoroutinefunction(main):
                    import trio

                    result = trio.run(main, AsyncCluster(cluster), *args)
                else:
                    result = main(cluster, *args)
            finally:
                finished.set()
                announcer.join(timeout=ALONE_AFTER + 0.5)
    except TaskError as exc:
        err.write(f"p2pcluster run: a task failed on peer {exc.peer}:\n")
        if exc.remote_traceback:
            err.write(exc.remote_traceback.rstrip() + "\n")
        else:
            err.write(f"{exc.type_name}: {exc.remote_message}\n")
        return 1
    except (KeyboardInterrupt, P2PClusterError):
        raise
    except Exception:  # the job's own code failed here, in main
        err.write("p2pcluster run: the job's main() raised:\n")
        traceback.print_exc(file=err)
        return 1
    finally:
        cluster.shutdown()
    print(format_result(result), file=out)
    out.flush()
    return 0
