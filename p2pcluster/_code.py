"""Shipping code and data without pickle: bundles, function references, CBOR values, the cache.

A task is a call ``fn(*args, **kwargs)``. Nothing about it is pickled on the way to a peer:

- **Code** travels as a :class:`CodeBundle`, a sorted list of ``(path, bytes)`` named by the
  SHA-256 of its canonical CBOR. A peer fetches a bundle once and keeps it in its
  :class:`CodeCache`, a directory per digest.
- **The function** travels as a :class:`FunctionRef`: module, qualified name, the digest of the
  job file (loaded under the name ``p2pjob_<digest prefix>``, so two versions of a job never
  share a module) and the digests of the ``--include`` bundles that go on ``sys.path``.
  :func:`function_ref` refuses, at submit time, whatever a peer could not find again by name
  (lambdas, closures, bound methods, partials) and says how to fix it.
- **Arguments and results** travel as CBOR with cbor2's standard tags: ``None``, ``bool``,
  ``int``, ``float``, ``str``, ``bytes``, lists, tuples (which come back as **lists**), dicts,
  sets, ``datetime`` with a timezone, ``date``, ``Decimal``, ``Fraction``, ``UUID``,
  ``complex`` and the ``ipaddress`` types. Decoding accepts exactly those tags: cbor2 has no
  tag that runs code, and we also refuse the odd ones (regular expressions, e-mail messages,
  shared and string references) and every unknown tag.

What this does and does not protect: decoding network bytes never runs code. Running a task
does, by design: a peer imports the module a :class:`FunctionRef` names and calls it. Only
holders of the cluster secret can send one, which is why the secret is guarded like a login.

Inside one worker process, bundles of different jobs can hold modules of the same name (two
jobs each ``--include`` their own ``utils``). The loader keeps one include set active at a
time: switching sets takes the old directories off ``sys.path`` and forgets the modules loaded
from them. Workers that alternate between such jobs re-import on every switch; that is the
price of never running one job's code against another job's helpers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import importlib
import importlib.abc
import importlib.util
import inspect
import linecache
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import CodeType, ModuleType, TracebackType
from typing import Any

import cbor2

from ._errors import DecodeError, MessageTooLarge, P2PClusterError, SubmitError, UnsendableResult

__all__ = [
    "CodeBundle", "bundle_file", "bundle_tree", "class_name", "job_module_name",
    "FunctionRef", "function_ref",
    "encode_call", "decode_call", "encode_value", "decode_value",
    "CodeCache", "JobLoader", "load_function", "load_job_module", "remember_sources",
]

MAX_FILES = 10_000
MAX_BYTES = 64 * 2**20
MAX_PATH = 1024  # bytes of UTF-8 per bundle path
_DIGEST = re.compile(r"[0-9a-f]{64}\Z")
_SKIP_DIRS = {"__pycache__"}

# --------------------------------------------------------------------------- bundles


def _path_problem(path: Any) -> str | None:
    if type(path) is not str or not path:
        return f"a path must be a non-empty string, got {path!r}"
    if len(path.encode()) > MAX_PATH:
        return f"path {path[:60]!r}... is longer than {MAX_PATH} bytes"
    if path.startswith("/") or "\\" in path or "\0" in path:
        return f"path {path!r} is absolute or contains a backslash or NUL"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return f"path {path!r} has an empty, '.' or '..' component"
    return None


def _files_problem(files: Sequence[tuple[str, bytes]]) -> str | None:
    previous = ""
    for path, _ in files:
        problem = _path_problem(path)
        if problem:
            return problem
        if previous and path <= previous:
            return f"paths must be sorted and unique: {path!r} follows {previous!r}"
        if previous and path.startswith(previous + "/"):
            return f"{previous!r} is both a file and a directory"
        previous = path
    return None


@dataclass(frozen=True, slots=True)
class CodeBundle:
    """Files of a job or of an ``--include``, by POSIX relative path, sorted.

    The digest names the bundle everywhere (cache directory, :class:`FunctionRef`), so the
    encoding is canonical: one bundle, one byte string. The constructor checks the paths and
    raises ``ValueError``; :meth:`decode` raises :class:`~p2pcluster.ProtocolError` instead.
    """

    files: tuple[tuple[str, bytes], ...]
    _digest: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problem = _files_problem(self.files)
        if problem:
            raise ValueError(problem)

    def encode(self) -> bytes:
        """Canonical CBOR: ``[[path, bytes], ...]``."""
        return cbor2.dumps([list(item) for item in self.files], canonical=True)

    @property
    def digest(self) -> str:
        """Hex SHA-256 of :meth:`encode`, computed once."""
        if not self._digest:
            object.__setattr__(self, "_digest", hashlib.sha256(self.encode()).hexdigest())
        return self._digest

    @property
    def size(self) -> int:
        """Total bytes of file content."""
        return sum(len(data) for _, data in self.files)

    @classmethod
    def decode(
        cls, data: bytes, *, max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES
    ) -> CodeBundle:
        """Decode bytes from a peer; refuse anything but a canonical, safe bundle."""
        from ._proto.codec import decode_cbor  # keeps worker processes from importing it

        if len(data) > max_bytes + max_files * (MAX_PATH + 16):
            raise MessageTooLarge(f"code bundle of {len(data)} bytes exceeds the limit")
        obj = decode_cbor(data)
        if type(obj) is not list:
            raise DecodeError("a code bundle is an array of [path, bytes]")
        if len(obj) > max_files:
            raise MessageTooLarge(f"code bundle of {len(obj)} files exceeds {max_files}")
        files = tuple(_decode_entry(item) for item in obj)
        if sum(len(content) for _, content in files) > max_bytes:
            raise MessageTooLarge(f"code bundle content exceeds {max_bytes} bytes")
        problem = _files_problem(files)
        if problem:
            raise DecodeError(f"code bundle: {problem}")
        bundle = cls(files)
        if bundle.encode() != bytes(data):
            raise DecodeError("code bundle is not in canonical form")
        return bundle


def _decode_entry(item: Any) -> tuple[str, bytes]:
    if type(item) is not list or len(item) != 2 or type(item[1]) is not bytes:
        raise DecodeError("a code bundle entry is [path: str, content: bytes]")
    return item[0], item[1]


def _check_size(bundle: CodeBundle, where: Path) -> CodeBundle:
    if len(bundle.files) > MAX_FILES or bundle.size > MAX_BYTES:
        raise SubmitError(
            f"{where} holds {len(bundle.files)} files and {bundle.size} bytes; peers accept at "
            f"most {MAX_FILES} files and {MAX_BYTES // 2**20} MiB. Ship only the package the "
            "tasks import, and let the tasks load large data themselves."
        )
    return bundle


def _existing(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise SubmitError(f"{p}: no such {what}; check the path (it is relative to {Path.cwd()})")
    return p


def bundle_file(path: str | os.PathLike[str]) -> CodeBundle:
    """One file, stored under its base name: how a job file travels."""
    p = _existing(path, "file")
    if not p.is_file():
        raise SubmitError(f"{p} is not a file; pass a directory with --include instead")
    return _check_size(CodeBundle(((p.name, p.read_bytes()),)), p)


def bundle_tree(path: str | os.PathLike[str]) -> CodeBundle:
    """A file, or a directory ``pkg`` stored as ``pkg/...``: how an ``--include`` travels.

    Skips ``__pycache__``, ``*.pyc`` and directories whose name starts with a dot (``.git``,
    ``.venv``). Symbolic links to files are read; links to directories are not followed, so a
    link cannot pull a whole tree in by surprise.
    """
    p = _existing(path, "file or directory")
    if p.is_file():
        return bundle_file(p)
    top = p.resolve().name
    files: list[tuple[str, bytes]] = []
    for dirpath, dirnames, filenames in os.walk(p):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
        rel = Path(dirpath).relative_to(p)
        for name in filenames:
            if not name.endswith(".pyc"):
                files.append(((Path(top) / rel / name).as_posix(), (Path(dirpath) / name)
                              .read_bytes()))
    if not files:
        raise SubmitError(f"{p} contains no files to ship")
    return _check_size(CodeBundle(tuple(sorted(files))), p)


def job_module_name(digest: str) -> str:
    """The module name a job file is loaded under, on every peer: ``p2pjob_<16 hex>``."""
    return "p2pjob_" + digest[:16]


# --------------------------------------------------------------------------- references


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """A task function, by name: what a peer needs to import it.

    ``job`` is the digest of a one-file bundle that *is* ``module`` (always named
    :func:`job_module_name` of that digest); ``includes`` are digests of bundles whose cache
    directories go on ``sys.path``, first one first.
    """

    module: str
    qualname: str
    job: str | None = None
    includes: tuple[str, ...] = ()

    def to_wire(self) -> tuple[str, str, str | None, tuple[str, ...]]:
        return (self.module, self.qualname, self.job, self.includes)

    @classmethod
    def from_wire(cls, wire: Sequence[Any]) -> FunctionRef:
        """Rebuild and check a reference from a peer (lists stand in for tuples)."""
        if not isinstance(wire, list | tuple) or len(wire) != 4:
            raise DecodeError("a function reference is [module, qualname, job, includes]")
        module, qualname, job, includes = wire
        if not _dotted(module) or not _dotted(qualname):
            raise DecodeError(f"bad module or qualified name: {module!r}, {qualname!r}")
        if job is not None and not (_digest(job) and module == job_module_name(job)):
            raise DecodeError(f"bad job digest {job!r} for module {module!r}")
        if not isinstance(includes, list | tuple) or not all(_digest(d) for d in includes):
            raise DecodeError(f"bad include digests {includes!r}")
        return cls(module, qualname, job, tuple(includes))


def _dotted(name: Any) -> bool:
    return type(name) is str and len(name) <= 500 and all(
        part.isidentifier() for part in name.split(".")
    )


def _digest(value: Any) -> bool:
    return type(value) is str and _DIGEST.match(value) is not None


_WHERE_TO_PUT_IT = (
    "Define it with `def` at module level in the job file, or in a module the peers can "
    "import (installed on every peer, or shipped with --include)."
)


def function_ref(
    fn: Callable[..., Any],
    *,
    job_modules: Mapping[str, str] = {},
    includes: Sequence[str] = (),
) -> FunctionRef:
    """Name ``fn`` so that a peer finds the very same function, or raise :class:`SubmitError`.

    ``job_modules`` maps the names of shipped one-file modules (``p2pjob_...`` or
    ``__main__``) to their bundle digests. A function of ``__main__`` is referenced under
    :func:`job_module_name`, so the peers load the script without running its
    ``if __name__ == "__main__":`` block.
    """
    _refuse_unnameable(fn)
    module, qualname = _names(fn)
    assert module is not None and qualname is not None  # checked by _refuse_unnameable
    if module == "__main__" and "__main__" not in job_modules:
        raise SubmitError(
            f"{qualname} is defined in the script you ran (__main__), which the peers do not "
            f"have. Move it into the job file (`p2pcluster run job.py`) or into a module the "
            "peers can import (installed on every peer, or shipped with --include)."
        )
    if _resolve(module, qualname) is not fn and not _same_method(fn, module, qualname):
        raise SubmitError(
            f"{module}.{qualname} does not lead back to {fn!r} in this process: it was "
            "redefined, wrapped by a decorator that does not use functools.wraps, or created "
            f"at run time, so a peer would find something else or nothing. {_WHERE_TO_PUT_IT}"
        )
    job = job_modules.get(module)
    if module.startswith("p2pjob_") and job is None:
        raise SubmitError(f"{qualname} comes from a job file ({module}) that is not this job's")
    if not all(_digest(d) for d in includes):
        raise ValueError(f"includes must be bundle digests, got {list(includes)!r}")
    if module == "__main__" and job is not None:
        module = job_module_name(job)
    return FunctionRef(module, qualname, job, tuple(includes))


def _refuse_unnameable(fn: Any) -> None:
    import functools

    if isinstance(fn, functools.partial):
        raise SubmitError(
            f"{fn!r} is a functools.partial, which cannot be sent. Send the function itself and "
            "pass the bound arguments as task arguments (make them part of each item), or "
            "define a module-level function in the job file that calls it with them."
        )
    owner = getattr(fn, "__self__", None)
    if owner is not None and not isinstance(owner, ModuleType | type):
        raise SubmitError(
            f"{fn!r} is a method bound to a {type(owner).__qualname__} object, which cannot be "
            "sent. Use a module-level function and pass the data it needs as task arguments. "
            + _WHERE_TO_PUT_IT
        )
    if not callable(fn):
        raise SubmitError(f"{fn!r} is not callable; a task is a function")
    module, qualname = _names(fn)
    if module is None or qualname is None:
        raise SubmitError(
            f"{fn!r} (a {type(fn).__qualname__}) has no module and qualified name, so a peer "
            f"cannot find it. {_WHERE_TO_PUT_IT}"
        )
    if qualname.endswith("<lambda>"):
        raise SubmitError(
            f"{fn!r} is a lambda, which has no name a peer could import. {_WHERE_TO_PUT_IT}"
        )
    if "<locals>" in qualname:
        raise SubmitError(
            f"{qualname} is defined inside another function, so a peer cannot find it by name "
            "and the variables it closes over cannot be sent. Pass those as task arguments. "
            + _WHERE_TO_PUT_IT
        )


def _names(fn: Any) -> tuple[str | None, str | None]:
    """Module and qualified name; builtin methods of a class keep the module on the class."""
    module = getattr(fn, "__module__", None)
    if module is None:
        owner = getattr(fn, "__self__", None)
        owner = owner if isinstance(owner, type) else getattr(fn, "__objclass__", None)
        module = getattr(owner, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    return (module if isinstance(module, str) else None,
            qualname if isinstance(qualname, str) else None)


def _resolve(module: str, qualname: str) -> Any:
    mod = sys.modules.get(module)
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


def _same_method(fn: Any, module: str, qualname: str) -> bool:
    """A classmethod: every attribute access makes a new (equal) bound method."""
    return isinstance(getattr(fn, "__self__", None), type) and _resolve(module, qualname) == fn


# --------------------------------------------------------------------------- values


class _Unencodable(Exception):
    """Internal: raised by the encoder hooks, turned into a SubmitError."""

    def __init__(self, obj: Any) -> None:
        super().__init__(obj)
        self.obj = obj


def _refuse(encoder: cbor2.CBOREncoder, obj: Any) -> None:
    raise _Unencodable(obj)


def _encode_datetime(encoder: cbor2.CBOREncoder, obj: datetime) -> None:
    if obj.utcoffset() is None:
        raise _Unencodable(obj)
    encoder.encode_datetime(obj)


_ENCODERS: dict[type, Callable[[cbor2.CBOREncoder, Any], Any]] = {
    datetime: _encode_datetime,
    type(re.compile("")): _refuse,
    cbor2.CBORTag: _refuse,
    cbor2.CBORSimpleValue: _refuse,
    type(cbor2.undefined): _refuse,
}
# Tags cbor2 decodes that we refuse (regexp, MIME, value sharing, string references); every
# tag cbor2 does not know goes to _refuse_tag.
_REFUSED_TAGS: dict[int, Any] = dict.fromkeys((25, 28, 29, 35, 36, 256))
_ACCEPTED = (
    "None, bool, int, float, str, bytes, list, tuple (it arrives as a list), dict, set, "
    "datetime with a timezone, date, Decimal, Fraction, UUID, complex and IP addresses"
)


def _refuse_tag(tag: cbor2.CBORTag, immutable: bool) -> Any:
    raise ValueError(f"CBOR tag {tag.tag} is not allowed")


def _dumps(value: Any) -> bytes:
    return cbor2.dumps(value, datetime_as_timestamp=False, encoders=_ENCODERS, default=_refuse)


#: (test, how to fix an argument, how to fix a result), first match wins.
_HINTS: tuple[tuple[Callable[[Any], bool], str, str], ...] = (
    (lambda o: isinstance(o, datetime),
     "attach a timezone: dt.replace(tzinfo=timezone.utc), or dt.astimezone()",
     "attach a timezone before returning it: dt.replace(tzinfo=timezone.utc), or "
     "dt.astimezone()"),
    (lambda o: hasattr(o, "tolist"), "convert it with .tolist(), or load the data inside the task",
     "return value.tolist() instead"),
    (dataclasses.is_dataclass, "convert it with dataclasses.asdict(), and rebuild it in the task",
     "return dataclasses.asdict(value) instead, and rebuild the object where you use it"),
    (lambda o: isinstance(o, enum.Enum), "send its .value or .name", "return its .value or .name"),
    (lambda o: hasattr(o, "read") or hasattr(o, "fileno"),
     "pass the path instead, and open the file inside the task",
     "return the path, or the content the caller needs, instead"),
    (callable, "pass its name, and look it up inside the task",
     "return its name, and look it up where you use it"),
)
_DEFAULT_HINTS = (
    "convert it to lists, dicts, str, bytes or numbers, or pass what is needed to load it (a "
    "path, a URL) and load the data inside the task",
    "return lists, dicts, str, bytes or numbers instead (for an object of your own, its "
    "fields, such as vars(value)), and rebuild the object where you use it",
)


def _hint(obj: Any, travel: str) -> str:
    which = 0 if travel == "arguments" else 1
    for test, *hints in _HINTS:
        if test(obj):
            return hints[which]
    return _DEFAULT_HINTS[which]


def _type_name(obj: Any) -> str:
    return class_name(type(obj))


def class_name(t: type) -> str:
    """How messages name a class: ``int``, ``decimal.Decimal``, and ``Point from job.py``
    for a class of a job file (never its ``p2pjob_`` module name)."""
    if t.__module__ == "builtins":
        return t.__qualname__
    loader = getattr(sys.modules.get(t.__module__), "__loader__", None)
    if isinstance(loader, JobLoader):
        return f"{t.__qualname__} from {loader.filename}"
    return f"{t.__module__}.{t.__qualname__}"


def _a(obj: Any) -> str:
    if isinstance(obj, type):
        return f"the class {class_name(obj)}"
    if inspect.isroutine(obj):
        return f"the function {getattr(obj, '__qualname__', obj)}"
    return f"a {_type_name(obj)}"


def _describe(where: str, value: Any, exc: Exception, *, travel: str) -> str:
    culprit = exc.obj if isinstance(exc, _Unencodable) else value
    what = f"it is {_a(value)}"
    if culprit is not value:
        what += f" containing {_a(culprit)}"
    if isinstance(culprit, datetime):
        what += " without a timezone"
    elif not isinstance(exc, _Unencodable):
        what += f" ({exc})"
    verb = "sent to the cluster" if travel == "arguments" else "sent back"
    return (f"{where} cannot be {verb}: {what}, and {travel} travel as CBOR, "
            f"which carries {_ACCEPTED}. To fix it, {_hint(culprit, travel)}.")


def _try_dumps(value: Any) -> Exception | None:
    try:
        _dumps(value)
    except (_Unencodable, cbor2.CBOREncodeError, ValueError, TypeError, RecursionError) as exc:
        return exc
    return None


def encode_call(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bytes:
    """Encode a call's arguments as ``[args, kwargs]``; :class:`SubmitError` names a bad one."""
    try:
        return _dumps([args, dict(kwargs)])
    except (_Unencodable, cbor2.CBOREncodeError, ValueError, TypeError, RecursionError):
        pass  # find the culprit: only on this error path is each argument encoded alone
    named = [(f"argument {i}", a) for i, a in enumerate(args)]
    named += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for where, value in named:
        exc = _try_dumps(value)
        if exc is not None:
            raise SubmitError(_describe(where, value, exc, travel="arguments")) from None
    raise SubmitError("the arguments cannot be sent to the cluster (they refer to each other)")


def encode_value(value: Any, *, what: str = "the result") -> bytes:
    """Encode one value (a task's result); :class:`UnsendableResult` says why it cannot be."""
    try:
        return _dumps(value)
    except (_Unencodable, cbor2.CBOREncodeError, ValueError, TypeError, RecursionError) as exc:
        raise UnsendableResult(_describe(what, value, exc, travel="results")) from None


def decode_value(data: bytes) -> Any:
    """Decode one value; refuse odd and unknown tags with :class:`~p2pcluster.DecodeError`.

    Bytes after the value go unnoticed: ``cbor2.loads`` does not report them, and it is four
    times faster than a ``CBORDecoder`` that would. The frame that carries a payload already
    delimits it, so nothing is lost but a check for a sender's bug.
    """
    try:
        return cbor2.loads(
            data, semantic_decoders=_REFUSED_TAGS, tag_hook=_refuse_tag, allow_indefinite=False
        )
    except Exception as exc:  # any failure of cbor2 on foreign bytes is the sender's
        raise DecodeError(f"malformed value: {exc}") from exc


def decode_call(data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The inverse of :func:`encode_call`; tuples among the arguments arrive as lists."""
    obj = decode_value(data)
    if type(obj) is not list or len(obj) != 2 or type(obj[0]) is not list:
        raise DecodeError("a call is [args, kwargs]")
    kwargs = obj[1]
    if type(kwargs) is not dict or (kwargs and not all(type(k) is str for k in kwargs)):
        raise DecodeError("a call's keyword arguments are a map of str")
    return tuple(obj[0]), kwargs


# --------------------------------------------------------------------------- the cache


class CodeCache:
    """Bundles on disk, one directory per digest, private to this user.

    Code in here runs, so the directory is ``0700`` and each bundle appears atomically (a
    temporary directory renamed into place). Files are fsynced before the rename, so a crash
    cannot leave a half-written bundle under a valid digest; loads then trust the disk and do
    not re-hash it. A crash can leave a ``.tmp-*`` directory behind, which is harmless.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._known: set[str] = set()
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = self.root.stat()
        if st.st_uid != os.getuid():
            raise P2PClusterError(f"code cache {self.root} belongs to another user")
        if st.st_mode & 0o077:
            self.root.chmod(0o700)

    @staticmethod
    def default_root() -> Path:
        """``$XDG_CACHE_HOME/p2pcluster/code``, else ``~/.cache/p2pcluster/code``."""
        base = os.environ.get("XDG_CACHE_HOME", "")
        top = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
        return top / "p2pcluster" / "code"

    def path(self, digest: str) -> Path:
        if not _digest(digest):
            raise ValueError(f"not a bundle digest: {digest!r}")
        return self.root / digest

    def has(self, digest: str) -> bool:
        """Whether the bundle is here. A bundle seen once is remembered: it is never
        removed while a peer runs (delete the cache only with no peer running)."""
        if digest in self._known:
            return True
        found = self.path(digest).is_dir()
        if found:
            self._known.add(digest)
        return found

    def store(self, bundle: CodeBundle) -> Path:
        """Write ``bundle`` unless it is there; safe against a concurrent writer."""
        final = self.path(bundle.digest)
        if self.has(bundle.digest):
            return final
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        try:
            for rel, content in bundle.files:
                _write_file(tmp / rel, content)
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            # another writer won the race; its copy holds the same bytes
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final


def _write_file(path: Path, content: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(fd)


# --------------------------------------------------------------------------- loading

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


class JobLoader(importlib.abc.InspectLoader):
    """Loads a job file from the code cache, compiled under ``filename`` (not the cache
    path), so that tracebacks name the job file; no bytecode is written.

    :func:`remember_sources` gives ``linecache`` the lines under that name before a traceback
    is formatted: ``job.py`` is no path a peer could read, and two jobs may share the name.
    """

    def __init__(self, path: Path, filename: str) -> None:
        self.path = path
        self.filename = filename

    def get_source(self, fullname: str) -> str:
        return importlib.util.decode_source(self.path.read_bytes())

    def get_code(self, fullname: str) -> CodeType:
        return compile(self.path.read_bytes(), self.filename, "exec", dont_inherit=True)

    def is_package(self, fullname: str) -> bool:
        return False


def _load_module(name: str, directory: Path, filename: str | None = None) -> ModuleType:
    module = sys.modules.get(name)
    if module is not None:
        return module
    path = directory / _single_py(sorted(os.listdir(directory)))
    loader = JobLoader(path, filename or path.name)
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
