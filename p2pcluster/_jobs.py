"""What the submitting side needs, whichever peer runs the job: naming the function and the
code to ship, encoding the calls, and turning results back into values or errors.

A job is ``fn`` applied to a list of argument payloads. :class:`CodeRegistry` turns ``fn``
into a :class:`~._refs.FunctionRef` plus the code bundles the peers need (the job file or the
``__main__`` script, and every ``--include``). :func:`unpack` turns one result into a value,
or raises the :class:`TaskError` that carries the remote traceback.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FunctionType
from typing import Any, NamedTuple

from ._bundles import CodeBundle, bundle_file, bundle_tree
from ._errors import P2PClusterError, ValueTooLarge, too_large
from ._proto.messages import TaskStatus
from ._refs import FunctionRef, function_ref
from ._values import decode_value, encode_call

__all__ = [
    "CodeRegistry", "JobRequest", "JobResult", "PoisonTaskError", "TaskError",
    "TaskTimeoutError", "encode_map_args", "original_class", "task_error", "unpack",
]


class TaskError(P2PClusterError):
    """A task raised an exception on a peer.

    ``type_name`` is the original exception's type (``"ZeroDivisionError"``, or
    ``"module.Class"``), ``remote_message`` its message, ``remote_traceback`` the traceback as
    formatted on the peer, and ``peer`` the name of the peer that ran it. ``str()`` shows all
    of it; ``args`` is ``(remote_message,)``.

    :func:`unpack` raises a subclass that is *also* the original exception class when this
    process can name that class without importing anything (see :func:`task_error`), so
    ``except ValueError`` catches a remote ``ValueError``.
    """

    def __init__(self, type_name: str, message: str, traceback: str, peer: str) -> None:
        super().__init__(message)  # the original class's __init__, in a combined class
        self.args = (message,)
        self.type_name = type_name
        self.remote_message = message
        self.remote_traceback = traceback
        self.peer = peer

    def __str__(self) -> str:
        text = f"{self.type_name}: {self.remote_message} (on peer {self.peer})"
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        kind = type(self).__dict__.get("_kind", type(self))
        return task_error, (kind, self.type_name, self.remote_message, self.remote_traceback,
                            self.peer)


class PoisonTaskError(TaskError):
    """A task crashed its worker process three times (a segfault, ``os._exit``...); it is
    not retried again."""


class TaskTimeoutError(TaskError, TimeoutError):
    """A task ran longer than the job's ``timeout`` and its worker was stopped."""


_ERRORS: dict[int, type[TaskError]] = {
    TaskStatus.ERROR: TaskError, TaskStatus.POISON: PoisonTaskError,
    TaskStatus.TIMEOUT: TaskTimeoutError,
}


def unpack(status: int, payload: bytes, peer: str) -> Any:
    """A task's value, or raise the :class:`TaskError` it ended with."""
    if status == TaskStatus.OK:
        return decode_value(payload)
    try:
        info = decode_value(payload)
    except Exception:  # a malformed error report is still an error
        info = {}
    if not isinstance(info, dict):
        info = {}
    raise task_error(_ERRORS.get(status, TaskError), str(info.get("type", "Error")),
                     str(info.get("message", "")), str(info.get("traceback", "")), peer)


def task_error(kind: type[TaskError], type_name: str, message: str, traceback: str,
               peer: str) -> TaskError:
    """A ``kind`` (:class:`TaskError` or a subclass) for a remote exception of ``type_name``.

    A plain :class:`TaskError` becomes a cached subclass of both ``kind`` and the original
    class when :func:`original_class` finds it and the two combine: the original's
    ``__init__`` must accept the message alone. Otherwise (``UnicodeDecodeError``, classes
    with required arguments or clashing layouts) the error is a plain ``kind``.
    """
    original = original_class(type_name) if kind is TaskError else None
    combined = _combined(kind, original) if original is not None else None
    if combined is not None:
        try:
            return combined(type_name, message, traceback, peer)
        except Exception:  # an __init__ that wants more than the message alone
            pass
    return kind(type_name, message, traceback, peer)


#: Exception classes a TaskError never takes on (see :func:`original_class`).
_NEVER_COMBINED = (TaskError, StopIteration, StopAsyncIteration)


def original_class(type_name: str) -> type[Exception] | None:
    """The ``Exception`` subclass ``type_name`` names in this process, or None.

    ``type_name`` is a builtin's bare name or ``module.qualname``. Only builtins and modules
    already in ``sys.modules`` count (a job file is, under its ``p2pjob_`` name): nothing is
    imported, and no module ``__getattr__`` runs. ``BaseException`` subclasses that are not
    ``Exception`` (``SystemExit``, ``KeyboardInterrupt``) never count, and neither do
    ``StopIteration`` and ``StopAsyncIteration``, which would silently end a ``for`` loop
    over ``cluster.map`` instead of raising.
    """
    parts = type_name.split(".")
    splits = [(".".join(parts[:i]), parts[i:]) for i in range(len(parts) - 1, 0, -1)]
    for module_name, names in splits if len(parts) > 1 else [("builtins", parts)]:
        obj: Any = sys.modules.get(module_name)
        for name in names:
            obj = _member(obj, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            return None if issubclass(obj, _NEVER_COMBINED) else obj
    return None


def _member(obj: Any, name: str) -> Any:
    try:
        return vars(obj).get(name)
    except TypeError:  # None, or an object without __dict__
        return None


_COMBINED: dict[tuple[type, type], type[TaskError] | None] = {}
_MAX_COMBINED = 256  # classes kept; job files come and go in a long-lived process


def _combined(kind: type[TaskError], original: type[Exception]) -> type[TaskError] | None:
    """``kind[original]``, a subclass of both, made once; None if they do not combine."""
    key = (kind, original)
    if key not in _COMBINED:
        if len(_COMBINED) >= _MAX_COMBINED:
            _COMBINED.clear()
        name = f"{kind.__name__}[{original.__qualname__}]"
        try:
            _COMBINED[key] = type(name, (kind, original),
                                  {"_kind": kind, "__module__": kind.__module__})
        except Exception:  # layout or MRO conflicts, a refusing __init_subclass__
            _COMBINED[key] = None
    return _COMBINED[key]


class JobResult(NamedTuple):
    """How one task of a job ended: its index in the job, its status (``TaskStatus``), the
    CBOR of its value or error, and the name of the peer that ran it."""

    task: int
    status: int
    payload: bytes
    peer: str


@dataclass(frozen=True, slots=True)
class JobRequest:
    """Everything a peer needs to own a job."""

    ref: FunctionRef
    bundles: Mapping[str, CodeBundle]
    payloads: Sequence[bytes]
    timeout: float | None = None
    chunksize: int = 0


def encode_map_args(iterables: Sequence[Iterable[Any]]) -> list[bytes]:
    """``map``'s argument tuples, each as one task payload (the shortest iterable wins)."""
    if len(iterables) == 1:
        return [encode_call((x,), {}) for x in iterables[0]]
    return [encode_call(tuple(xs), {}) for xs in zip(*iterables, strict=False)]


def _check_sizes(fn: Callable[..., Any], payloads: Sequence[bytes], limit: int,
                 where: str) -> None:
    for index, payload in enumerate(payloads):
        if len(payload) > limit:
            name = getattr(fn, "__qualname__", repr(fn))
            what = (f"the arguments of {name}" if len(payloads) == 1
                    else f"the arguments of task {index} of {name}")
            raise ValueTooLarge(too_large(what, len(payload), limit, where))


def _still(fn: FunctionType) -> bool:
    """``fn`` is still what its module's attribute of its qualified name holds."""
    obj: Any = sys.modules.get(fn.__module__)
    for part in fn.__qualname__.split("."):
        obj = getattr(obj, part, None)
    return obj is fn


class CodeRegistry:
    """The code a submitter ships: job modules and ``--include`` files or packages.

    Give the registry each shipped module with :meth:`add_job_module`; functions of
    ``__main__`` ship the script they come from. :meth:`request` names a function and lists
    the bundles a peer will need for it.
    """

    def __init__(self, include: Iterable[str | Path] = ()) -> None:
        self._refs: dict[FunctionType, FunctionRef] = {}
        self._bundles: dict[str, CodeBundle] = {}
        self._job_modules: dict[str, str] = {}
        self._includes: list[str] = []
        for path in include:
            bundle = bundle_tree(path)
            self._bundles[bundle.digest] = bundle
            self._includes.append(bundle.digest)
            parent = str(Path(path).resolve().parent)
            if parent not in sys.path:  # so this process resolves included modules too
                sys.path.append(parent)

    def add_job_module(self, name: str, bundle: CodeBundle) -> None:
        self._bundles[bundle.digest] = bundle
        self._job_modules[name] = bundle.digest
        self._refs.clear()

    def ref(self, fn: Callable[..., Any]) -> FunctionRef:
        """The :class:`FunctionRef` of ``fn``; remembered per function, and checked again
        on each use that its name still leads back to it (a module may redefine it)."""
        if isinstance(fn, FunctionType):
            cached = self._refs.get(fn)
            if cached is not None and _still(fn):
                return cached
        module = getattr(fn, "__module__", None)
        if module == "__main__" and "__main__" not in self._job_modules:
            main_file = getattr(sys.modules["__main__"], "__file__", None)
            if main_file and Path(main_file).is_file():
                self.add_job_module("__main__", bundle_file(main_file))
        ref = function_ref(fn, job_modules=self._job_modules, includes=self._includes)
        if isinstance(fn, FunctionType):
            self._refs[fn] = ref
        return ref

    def request(self, fn: Callable[..., Any], payloads: Sequence[bytes], *,
                timeout: float | None = None, chunksize: int | None = None,
                max_value_size: int | None = None, where: str = "this peer") -> JobRequest:
        """A :class:`JobRequest`; raises :class:`~p2pcluster.SubmitError` on a bad ``fn``,
        and :class:`~p2pcluster.ValueTooLarge` on an argument over ``max_value_size``
        (the limit ``where``)."""
        ref = self.ref(fn)
        if max_value_size is not None:
            _check_sizes(fn, payloads, max_value_size, where)
        needed = [d for d in itertools.chain([ref.job], ref.includes) if d is not None]
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive (seconds)")
        if chunksize is not None and chunksize < 1:
            raise ValueError("chunksize must be at least 1")
        return JobRequest(ref, {d: self._bundles[d] for d in needed}, payloads,
                          None if timeout is None else float(timeout), chunksize or 0)
