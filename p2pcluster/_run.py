"""`p2pcluster run job.py [ARGS...]`: load the job file, call its ``main(cluster, *ARGS)``,
print the return value.

The job file is bundled and loaded as module ``p2pjob_<digest>``, the same name every peer
gives it, so its functions are named identically everywhere. Jobs go through the local
`p2pcluster join` daemon when one answers on the control socket; otherwise an ephemeral peer
starts in this process and works at once. It says which other peers it found as soon as it
finds one, or that it is alone once it has looked for :data:`DISCOVERY_WINDOW` seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO, cast

from ._bundles import bundle_file
from ._cluster import Cluster
from ._codecache import CodeCache
from ._config import Config
from ._errors import P2PClusterError, TaskError
from ._jobs import CodeRegistry
from ._loader import load_job_module, remember_sources
from ._memberinfo import MemberInfo

__all__ = ["AsyncCluster", "run_job_file"]

#: Seconds an ephemeral peer looks for other peers before `run` says it is alone: mDNS
#: answers and a seed's table arrive within about a second on a LAN. Others found sooner are
#: announced at once; a job that ends within the window gets no verdict at all (it ran on
#: the peers found by then).
DISCOVERY_WINDOW = 1.0


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
            results.close()

    async def members(self) -> list[MemberInfo]:
        """The members, as :meth:`Cluster.members` (asked from a worker thread: the answer
        comes from the cluster's own trio thread, or from the daemon)."""
        import trio

        return await trio.to_thread.run_sync(self.executor.members)


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
        # One column short of the width: a line that fills the last column makes some
        # terminals wrap, and the next redraw would start a line lower.
        columns = terminal_columns(self.stream) - 1
        waiting = p.waiting
        if waiting:  # the tasks wait for a peer with a tag: say why, first
            waiting = f"  waiting: {waiting}"[:max(0, columns // 2)]
        line = render_progress(p.done, p.total, p.elapsed, p.per_peer,
                               columns=columns - len(waiting)) + waiting
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self._drawn = True


def terminal_columns(stream: TextIO) -> int:
    """The width of the terminal ``stream`` writes to: ``COLUMNS`` if set (as in
    :func:`shutil.get_terminal_size`), else the terminal's, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, ValueError, OSError):  # not a terminal, or no fd at all
            columns = 0
    return columns if columns > 0 else 80


#: The bar's width when the line has room, and the narrowest bar worth drawing.
BAR_WIDTH = 24
MIN_BAR_WIDTH = 5
MAX_PEERS_SHOWN = 6


def render_progress(done: int, total: int, elapsed: float, per_peer: dict[str, int],
                    columns: int = 80) -> str:
    """``[####....] 250/1000 tasks  125/s  ETA 6s  lab1:150 lab2:100``, never longer than
    ``columns``: the per-peer counts go first, then the bar narrows, then it goes, then the
    rate and the ETA; what still does not fit is cut."""
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = f"{(total - done) / rate:.0f}s" if rate > 0 else "?"
    counts = f"{done}/{total} tasks"
    stats = f"{counts}  {rate:,.0f}/s  ETA {eta}"
    peers = [f"{name}:{count}" for name, count in
             sorted(per_peer.items(), key=lambda kv: -kv[1])[:MAX_PEERS_SHOWN]]
    for shown in range(len(peers), 0, -1):
        line = f"{_bar(done, total, BAR_WIDTH)} {stats}  {' '.join(peers[:shown])}"
        if len(line) <= columns:
            return line
    width = min(BAR_WIDTH, columns - len(stats) - 3)  # 3: the brackets and a space
    if width >= MIN_BAR_WIDTH:
        return f"{_bar(done, total, width)} {stats}"
    for line in (stats, f"{counts}  ETA {eta}", counts):
        if len(line) <= columns:
            return line
    return counts[:max(columns, 0)]


def _bar(done: int, total: int, width: int) -> str:
    filled = min(width, int(width * done / total)) if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}]"


def _announce(cluster: Cluster, err: TextIO, finished: threading.Event) -> None:
    """Say where the work runs: through the daemon, at once; on an embedded peer, the others
    as soon as it finds one, and that it is alone only once the whole
    :data:`DISCOVERY_WINDOW` has passed without any. A job over sooner gets no verdict."""
    if cluster.via_daemon:
        members = [m for m in cluster.members() if m.alive]
        print(f"p2pcluster: submitting through the local daemon; {len(members)} peer(s) "
              f"alive in cluster {cluster.config.cluster!r}", file=err)
        return
    peer = cluster.peer
    assert peer is not None
    deadline = time.monotonic() + DISCOVERY_WINDOW
    while not (others := [m.name for m in cluster.members() if m.alive and m.name != peer.name]):
        left = deadline - time.monotonic()
        if left <= 0:
            print(f"p2pcluster: no daemon and no other peer found in cluster "
                  f"{cluster.config.cluster!r}: running on an ephemeral local peer with "
                  f"{peer.workers} workers ({peer.where})", file=err)
            return
        if finished.wait(min(left, 0.05)):
            return
    print(f"p2pcluster: ephemeral peer {peer.name} ({peer.workers} workers) joined cluster "
          f"{cluster.config.cluster!r} with {len(others)} other peer(s): "
          f"{', '.join(sorted(others))}", file=err)


def format_result(value: Any) -> str:
    """JSON if the value is JSON-able, ``repr`` otherwise."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


class _Failed(Exception):
    """Internal: what `run` prints on stderr before it exits 1."""


def run_job_file(path: str, args: Sequence[str], *, config: Config,
                 control: Path | None = None, daemon: bool | None = None,
                 include: Sequence[str] = (), quiet: bool = False,
                 out: TextIO | None = None, err: TextIO | None = None,
                 requires: Sequence[str] = ()) -> int:
    """The whole `run` command; returns the exit status. ``requires``: tags every task of
    the run requires."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        registry = CodeRegistry(include, auto_limit=config.auto_include_limit,
                                strict=config.strict_versions, requires=requires,
                                say=lambda line: print(line, file=err, flush=True))
        main = _load_main(path, registry)
        check_call(path, main, args)
        if config.port == Config().port:  # an ephemeral peer takes any free port
            config = dataclasses.replace(config, port=0)
        cluster = Cluster(config, registry=registry, daemon=daemon, control=control,
                          label=Path(path).name, err=err)
        try:
            result = _call_main(cluster, main, args, err, quiet)
        finally:
            cluster.shutdown()
    except _Failed as exc:
        err.write(str(exc))
        return 1
    print(format_result(result), file=out)
    out.flush()
    return 0


def _load_main(path: str, registry: CodeRegistry) -> Callable[..., Any]:
    """Import the job file as its ``p2pjob_`` module; its ``main`` (and ``registry`` ships
    the code)."""
    job_path = Path(path)
    if not job_path.is_file():
        raise P2PClusterError(f"no job file at {path}")
    cache = CodeCache(CodeCache.default_root())
    bundle = bundle_file(job_path)
    sys.path.insert(0, str(job_path.resolve().parent))  # the job may import its neighbours
    try:  # the registry put the --include files on sys.path, for the job to import
        module = load_job_module(bundle, cache, filename=path)
    except SyntaxError as exc:
        raise _Failed(format_syntax_error(exc)) from None
    except Exception as exc:
        raise _Failed(f"p2pcluster run: loading {path} failed: its top-level code raised an "
                      f"exception.\n{format_user_traceback(exc)}{_import_hint(exc)}") from None
    main = getattr(module, "main", None)
    if not callable(main):
        raise P2PClusterError(f"{path} has no main(cluster, *args) function; see docs/jobs.md")
    registry.add_job_module(module.__name__, bundle, job_path)
    return cast(Callable[..., Any], main)


def check_call(path: str, main: Callable[..., Any], args: Sequence[str]) -> None:
    """Refuse, before any peer starts, a ``main`` that cannot take ``main(cluster, *args)``:
    one without a parameter for the cluster, or ARGS more or fewer than it takes."""
    try:
        signature = inspect.signature(main)
    except (TypeError, ValueError):  # no signature to read (a builtin): the call will say
        return
    try:
        signature.bind(None, *args)
    except TypeError as exc:
        bare = signature.replace(return_annotation=inspect.Signature.empty, parameters=[
            p.replace(annotation=inspect.Parameter.empty)
            for p in signature.parameters.values()])
        call = ", ".join(["cluster", *map(repr, args)])
        raise P2PClusterError(
            f"{path}: main{bare} cannot be called as main({call}): {exc}. `run` passes the "
            "cluster first, then each ARG as a string (docs/jobs.md)") from None


def _import_hint(exc: Exception) -> str:
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return ""
    return (f"p2pcluster run: install {exc.name} on this machine and on every peer, or ship "
            "it with --include PATH\n")


def _call_main(cluster: Cluster, main: Callable[..., Any], args: Sequence[str], err: TextIO,
               quiet: bool) -> Any:
    """``main(cluster, *args)`` with the announcement and the progress bar around it."""
    with contextlib.ExitStack() as stack:
        finished = threading.Event()
        announcer = threading.Thread(target=_announce, args=(cluster, err, finished),
                                     daemon=True)
        if not quiet:
            announcer.start()
            if err.isatty():
                stack.enter_context(ProgressBar(cluster, err))
        try:
            return _call(main, cluster, args)
        except TaskError as exc:
            raise _Failed(_task_failure(exc)) from None
        except (KeyboardInterrupt, P2PClusterError):
            raise
        except Exception as exc:  # the job's own code failed here, in main
            raise _Failed("p2pcluster run: the job's main() raised:\n"
                          + format_user_traceback(exc)) from None
        finally:
            finished.set()
            if announcer.is_alive():
                announcer.join(timeout=1.0)  # it sees `finished` within 0.05 s


def _call(main: Callable[..., Any], cluster: Cluster, args: Sequence[str]) -> Any:
    if inspect.iscoroutinefunction(main):
        import trio

        return trio.run(main, AsyncCluster(cluster), *args)
    return main(cluster, *args)


def _task_failure(exc: TaskError) -> str:
    text = exc.remote_traceback or f"{exc.type_name}: {exc.remote_message}"
    return f"p2pcluster run: a task failed on peer {exc.peer}:\n{text.rstrip()}\n"


def format_syntax_error(exc: SyntaxError) -> str:
    """``p2pcluster run: job.py, line 3: invalid syntax``, the line and its caret."""
    where = f"{exc.filename}, line {exc.lineno}" if exc.lineno else f"{exc.filename}"
    lines = traceback.format_exception_only(type(exc), exc)
    shown = [line for line in lines[1:] if line.startswith(" ")]  # the source line, caret
    return f"p2pcluster run: {where}: {exc.msg}\n{''.join(shown)}"


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def format_user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` (and its causes) without p2pcluster's or importlib's frames;
    job files show under the name they were loaded with, with their lines."""
    remember_sources(exc)
    report = traceback.TracebackException.from_exception(exc)
    for part in _parts(report):
        part.stack = traceback.StackSummary.from_list(
            [frame for frame in part.stack if _is_user_frame(frame.filename)])
    return "".join(report.format())


def _is_user_frame(filename: str) -> bool:
    return not (filename.startswith("<frozen ")
                or os.path.abspath(filename).startswith(_PACKAGE))


def _parts(report: traceback.TracebackException) -> list[traceback.TracebackException]:
    """``report`` and every exception chained to it (causes, contexts, group members)."""
    found: list[traceback.TracebackException] = []
    todo: list[traceback.TracebackException | None] = [report]
    while todo:
        part = todo.pop()
        if part is None or any(part is seen for seen in found):
            continue
        found.append(part)
        todo += [part.__cause__, part.__context__, *(getattr(part, "exceptions", None) or [])]
    return found
