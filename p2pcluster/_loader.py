"""Loading task code in this process: job files, ``--include`` sets, functions by reference.

A worker process (and the submitter, for ``p2pcluster run``) imports the function a
:class:`~._refs.FunctionRef` names. A job file is loaded from the code cache under
:func:`~._bundles.job_module_name` of its digest, compiled under its own file name
(:class:`JobLoader`), so that tracebacks name ``job.py`` and show its lines
(:func:`remember_sources`), never the cache's copy.

Inside one worker process, bundles of different jobs can hold modules of the same name (two
jobs each ``--include`` their own ``utils``). The loader keeps one include set active at a
time: switching sets takes the old directories off ``sys.path`` and forgets the modules loaded
from them. Workers that alternate between such jobs re-import on every switch; that is the
price of never running one job's code against another job's helpers.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import linecache
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import CodeType, ModuleType, TracebackType
from typing import Any

from ._bundles import CodeBundle, job_module_name
from ._codecache import CodeCache
from ._refs import FunctionRef

__all__ = ["JobLoader", "load_function", "load_job_module", "remember_sources"]


class _Loaded:
    """This process's loader state: memoized functions and the active include set."""

    functions: dict[tuple[FunctionRef, str], Callable[..., Any]] = {}  # noqa: RUF012
    include_dirs: tuple[str, ...] = ()


def load_function(ref: FunctionRef, cache_root: str | os.PathLike[str]) -> Callable[..., Any]:
    """Import ``ref``'s function in this process (a worker, or the submitter); memoized.

    Raises ``ImportError`` or ``AttributeError`` when the module or the name is not there.
    """
    root = os.fspath(cache_root)
    fn = _Loaded.functions.get((ref, root))
    if fn is None:
        _use_includes(tuple(os.path.join(root, d) for d in ref.includes))
        if ref.job is not None:
            module = _load_module(ref.module, Path(root, ref.job))
        else:
            module = importlib.import_module(ref.module)
        obj: Any = module
        for part in ref.qualname.split("."):
            obj = getattr(obj, part)
        fn = _Loaded.functions[(ref, root)] = obj
    return fn


def load_job_module(bundle: CodeBundle, cache: CodeCache, *,
                    filename: str | None = None) -> ModuleType:
    """Store a job file's bundle and import it as :func:`job_module_name` of its digest.

    ``filename`` is what tracebacks and ``SyntaxError`` name: `run` passes the path the user
    gave; the default is the file's base name (``job.py``), as on every peer.
    """
    _single_py([path for path, _ in bundle.files])
    return _load_module(job_module_name(bundle.digest), cache.store(bundle), filename)


def _single_py(paths: Sequence[str]) -> str:
    if len(paths) != 1 or not paths[0].endswith(".py") or "/" in paths[0]:
        raise ImportError(f"a job bundle holds exactly one .py file, not {list(paths[:5])}")
    return paths[0]


class JobLoader(importlib.machinery.SourceFileLoader):
    """Loads a job file from the code cache, compiled under ``filename`` (not the cache
    path), so that tracebacks name the job file; no bytecode is written.

    :func:`remember_sources` gives ``linecache`` the lines under that name before a traceback
    is formatted: ``job.py`` is no path a peer could read, and two jobs may share the name.
    (A SourceFileLoader rather than an ``importlib.abc`` class: that module costs a worker
    process 30 ms of imports at start.)
    """

    def __init__(self, name: str, path: Path, filename: str) -> None:
        super().__init__(name, str(path))
        self.filename = filename

    def get_source(self, fullname: str) -> str:
        return importlib.util.decode_source(Path(self.path).read_bytes())

    def get_code(self, fullname: str) -> CodeType:
        return compile(Path(self.path).read_bytes(), self.filename, "exec", dont_inherit=True)

    def is_package(self, fullname: str) -> bool:
        return False


def _load_module(name: str, directory: Path, filename: str | None = None) -> ModuleType:
    module = sys.modules.get(name)
    if module is not None:
        return module
    path = directory / _single_py(sorted(os.listdir(directory)))
    loader = JobLoader(name, path, filename or path.name)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None:  # pragma: no cover - a .py path always has a spec
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def remember_sources(exc: BaseException) -> None:
    """Put the source of each job file in ``exc``'s traceback (and the tracebacks of its
    causes and contexts) into ``linecache``, under the name its code was compiled with, so a
    formatted traceback shows that job's lines, and no other job's of the same name."""
    seen: set[int] = set()
    chain: list[BaseException | None] = [exc]
    while chain:
        current = chain.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        _remember_frames(current.__traceback__)
        chain += [current.__cause__, current.__context__]


def _remember_frames(tb: TracebackType | None) -> None:
    while tb is not None:
        loader = tb.tb_frame.f_globals.get("__loader__")
        if isinstance(loader, JobLoader):
            with contextlib.suppress(OSError, SyntaxError, UnicodeDecodeError):
                lines = loader.get_source("").splitlines(keepends=True)
                linecache.cache[loader.filename] = (len(lines), None, lines, loader.filename)
        tb = tb.tb_next


def _use_includes(dirs: tuple[str, ...]) -> None:
    """Make ``dirs`` the include set: first on ``sys.path``, others' modules forgotten."""
    current = _Loaded.include_dirs
    if dirs == current:
        return
    old = set(current) - set(dirs)
    sys.path[:] = [p for p in sys.path if p not in current]
    for name, module in list(sys.modules.items()):
        if _loaded_from(module, old):
            del sys.modules[name]
    _Loaded.functions.clear()
    sys.path[:0] = dirs
    _Loaded.include_dirs = dirs
    importlib.invalidate_caches()


def _loaded_from(module: ModuleType, dirs: set[str]) -> bool:
    places = [getattr(module, "__file__", None) or "", *(getattr(module, "__path__", None) or ())]
    return any(
        isinstance(p, str) and p.startswith(d + os.sep) for p in places for d in dirs
    )
