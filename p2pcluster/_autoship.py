"""The job's own code, found by scanning its imports: what ships with it by itself, and which
installed distributions it uses.

Starting from the job file (or the script that uses :class:`~p2pcluster.Cluster`), every
``import x`` and ``from x import y`` (at any depth of the code: a function's imports count)
names a top-level module ``x``, resolved as this process would, from the job's directory
first. Each one is:

- **the standard library** (or p2pcluster itself): nothing to do;
- **an installed distribution** (``importlib.metadata.packages_distributions``): the job
  needs it, at this machine's version, on every peer that runs its tasks;
- **anything else found** (a module file or package in the job's directory, or in any
  directory that is neither the standard library's nor an installed distribution's): it
  ships with the job exactly as ``--include PATH`` would ship it, and is scanned in turn;
- **not found**: a hint names ``--include``.

Relative imports stay inside a package, which ships whole. Imports built at run time
(``importlib.import_module(name)``) are invisible to the scan: ship those with
``--include``.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.metadata
import os
import sys
import sysconfig
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ._bundles import CodeBundle, bundle_tree
from ._errors import SubmitError
from ._proto.eligibility import normalize

__all__ = ["AutoShip", "ImportScan", "scan_imports"]

_SKIP_DIRS = {"__pycache__"}
_OURS = {"p2pcluster", "__main__", "__future__"}


@dataclass(frozen=True, slots=True)
class ImportScan:
    """What a job imports: ``local`` module files and package directories to ship (in the
    order found), ``dists`` the normalized names of installed distributions it imports,
    ``unresolved`` the top-level modules found nowhere."""

    local: tuple[Path, ...]
    dists: tuple[str, ...]
    unresolved: tuple[str, ...]


def scan_imports(job: str | Path, search: Iterable[str] | None = None) -> ImportScan:
    """Scan ``job`` and, in turn, the local code it imports (see the module docstring).
    ``search`` is where modules are looked for: the job's directory, then ``sys.path``."""
    job = Path(job).resolve()
    path = [str(job.parent), *(sys.path if search is None else search)]
    dists_of = cache(_packages_distributions)
    local: dict[Path, None] = {}
    dists: dict[str, None] = {}
    unresolved: dict[str, None] = {}
    seen: set[str] = set()
    todo = [job]
    while todo:
        for name in _imported(todo.pop()):
            if name in seen:
                continue
            seen.add(name)
            kind, where = _classify(name, path, dists_of)
            if kind == "dist":
                dists.update(dict.fromkeys(where))
            elif kind == "missing":
                unresolved[name] = None
            elif kind == "local" and where[0] not in (str(job),):
                found = Path(where[0])
                local[found] = None
                todo.extend(_sources(found))
    return ImportScan(tuple(local), tuple(dists), tuple(unresolved))


def _imported(source: Path) -> list[str]:
    """The top-level modules ``source`` imports absolutely (none if it does not parse)."""
    try:
        tree = ast.parse(source.read_bytes(), filename=str(source))
    except (OSError, SyntaxError, ValueError):
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.partition(".")[0])
    return names


def _sources(found: Path) -> list[Path]:
    """The Python files of a module file or package directory."""
    if found.is_file():
        return [found] if found.suffix == ".py" else []
    return sorted(p for p in found.rglob("*.py") if not _SKIP_DIRS & set(p.parts))


def _classify(name: str, path: list[str], dists_of: Callable[[], Mapping[str, list[str]]]
              ) -> tuple[str, tuple[str, ...]]:
    """(``"std"``, ``"dist"``, ``"local"`` or ``"missing"``, the distributions or the path).
    ``dists_of`` is called only for a module installed outside the standard library (it
    reads every distribution's metadata)."""
    if name in sys.stdlib_module_names or name in sys.builtin_module_names or name in _OURS:
        return "std", ()
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None:
        return "missing", ()
    if spec.submodule_search_locations:
        where = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin:
        where = Path(spec.origin)
    else:
        return "std", ()
    installed = _installed(where)
    if installed or _has_metadata(where.parent):  # a distribution, maybe (pip --target)
        dists = dists_of().get(name)
        if dists:
            return "dist", tuple(normalize(d) for d in dists)
    return ("std", ()) if installed else ("local", (str(where),))


def _has_metadata(directory: Path) -> bool:
    """Whether ``directory`` holds distribution metadata (``*.dist-info``, ``*.egg-info``)."""
    try:
        return any(p.suffix in (".dist-info", ".egg-info") for p in directory.iterdir())
    except OSError:
        return False


@cache
def _installed_roots() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    return tuple(Path(paths[k]).resolve() for k in ("stdlib", "platstdlib", "purelib",
                                                    "platlib") if k in paths)


def _installed(where: Path) -> bool:
    """Whether ``where`` lies in the standard library or in site-packages."""
    resolved = where.resolve()
    return any(resolved.is_relative_to(root) for root in _installed_roots()) or any(
        part in ("site-packages", "dist-packages") for part in resolved.parts)


def _packages_distributions() -> Mapping[str, list[str]]:
    """Which distributions provide each top-level module: read once per process (it reads
    every distribution's metadata, 0.15 to 0.3 s here), and again once a directory on
    ``sys.path`` changes (a distribution installed, upgraded or removed since)."""
    stamp, last = _path_stamp(), _DISTS.get("last")
    if last is not None and last[0] == stamp:
        return last[1]
    try:
        found = importlib.metadata.packages_distributions()
    except Exception:  # a broken metadata directory must not stop a job
        return {}
    _DISTS["last"] = stamp, found
    return found


#: The last :func:`_packages_distributions`, with the :func:`_path_stamp` it was read at.
_DISTS: dict[str, tuple[tuple[tuple[str, int], ...], Mapping[str, list[str]]]] = {}


def _path_stamp() -> tuple[tuple[str, int], ...]:
    """Each ``sys.path`` directory with its modification time (a directory changes when a
    distribution's metadata directory is added to it or removed from it)."""
    stamp = []
    for entry in sys.path:
        try:
            stamp.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            stamp.append((entry, -1))
    return tuple(stamp)


class AutoShip:
    """What ships by itself with a submitter's jobs: the local code its job files import,
    at most ``limit`` bytes in all (beyond, a line says what was left out), nothing that
    the ``explicit`` ``--include`` paths already ship. ``dists`` accumulates the installed
    distributions the scanned code imports. ``say`` writes one line for the user."""

    def __init__(self, limit: int, explicit: Iterable[Path],
                 say: Callable[[str], None] | None = None) -> None:
        self.limit = limit
        self.dists: tuple[str, ...] = ()
        self._explicit = tuple(p.resolve() for p in explicit)
        self._say = say or _stderr
        self._bytes = 0
        self._shipped: set[Path] = set()
        self._scans = 0

    @property
    def scanned(self) -> bool:
        """Whether anything was scanned (or :meth:`first_scan` asked) yet."""
        return self._scans > 0

    def first_scan(self) -> bool:
        """True the first time it is asked, if nothing was scanned yet."""
        self._scans += 1
        return self._scans == 1

    @staticmethod
    def installed(path: str | Path) -> bool:
        """Whether ``path`` lies in the standard library or in site-packages."""
        return _installed(Path(path))

    def scan(self, job: str | Path) -> list[tuple[Path, CodeBundle]]:
        """Scan ``job``: the bundles to ship with it (as ``--include`` would), newly found."""
        self._scans += 1
        found = scan_imports(job)
        self.dists = tuple(dict.fromkeys((*self.dists, *found.dists)))
        name = Path(job).name
        for module in found.unresolved:
            self._say(f"p2pcluster: {name} imports {module}, which is not found here; if "
                      "its tasks need it, install it on every peer or ship it with --include "
                      "PATH")
        shipped: list[tuple[Path, CodeBundle]] = []
        for path in found.local:
            bundle = self._bundle(path)
            if bundle is not None:
                shipped.append((path, bundle))
        if shipped:
            size = sum(b.size for _, b in shipped)
            names = ", ".join(p.name + ("/" if p.is_dir() else "") for p, _ in shipped)
            self._say(f"p2pcluster: shipping {names} with {name} ({_kb(size)}), found by "
                      "its imports")
        return shipped

    def _bundle(self, path: Path) -> CodeBundle | None:
        resolved = path.resolve()
        if resolved in self._shipped or any(
                resolved == e or resolved.is_relative_to(e) for e in self._explicit):
            return None
        self._shipped.add(resolved)
        try:
            bundle = bundle_tree(path)
        except SubmitError as exc:
            self._say(f"p2pcluster: not shipping {path}: {exc}")
            return None
        if self._bytes + bundle.size > self.limit:
            self._say(f"p2pcluster: not shipping {path} ({_kb(bundle.size)}): it would pass "
                      f"auto_include_limit ({_kb(self.limit)}); ship it with --include PATH "
                      "or raise the limit")
            return None
        self._bytes += bundle.size
        return bundle


def _kb(size: int) -> str:
    return f"{size / 1024:.1f} kB" if size < 1024**2 else f"{size / 1024**2:.1f} MiB"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
