"""What the submitting side needs, whichever peer runs the job: naming the function and the
code to ship, encoding the calls, and turning results back into values or errors.

A job is ``fn`` applied to a list of argument payloads. :class:`CodeRegistry` turns ``fn``
into a :class:`~._refs.FunctionRef` plus the code bundles the peers need (the job file or the
``__main__`` script, and every ``--include``). :func:`unpack` turns one result into a value,
or raises the :class:`~._errors.TaskError` that carries the remote traceback.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FunctionType
from typing import Any, NamedTuple

import trio

from ._autoship import AutoShip
from ._bundles import CodeBundle, bundle_file, bundle_tree
from ._environment import job_needs
from ._errors import (
    PoisonTaskError,
    TaskError,
    TaskTimeoutError,
    ValueTooLarge,
    task_error,
    too_large,
)
from ._packed import Packed, Payload, cut, find_cuts
from ._proto.eligibility import NO_NEEDS, JobNeeds
from ._proto.wiretypes import PlacementKind, TaskStatus
from ._refs import FunctionRef, function_ref
from ._values import decode_value, encode_call

__all__ = [
    "IN_TRIO_PART", "CodeRegistry", "JobRequest", "JobResult", "PlacementNote", "encode_args",
    "encode_map_args", "encode_map_args_in_trio", "placement_line", "unpack", "unpack_in_trio",
    "unrunnable_message",
]


_ERRORS: dict[int, type[TaskError]] = {
    TaskStatus.ERROR: TaskError, TaskStatus.POISON: PoisonTaskError,
    TaskStatus.TIMEOUT: TaskTimeoutError,
}


def unpack(status: int, payload: bytes | memoryview | Packed, peer: str) -> Any:
    """A task's value, or raise the :class:`~._errors.TaskError` it ended with. A value
    landed in memory of its own (a ``memoryview``: a large result pushed here) is decoded
    in place: its large arrays are views of it, writable and the caller's own, not copies;
    so are those of a packed one, as a worker of this peer placed it in shared memory
    (mapped copy-on-write)."""
    value: Payload = payload if isinstance(payload, bytes | Packed) else b""
    if isinstance(payload, memoryview):
        cuts = find_cuts(payload) if status == TaskStatus.OK else []
        value = cut(payload, cuts) if cuts else bytes(payload)
    if status == TaskStatus.OK:
        return decode_value(value)
    try:
        info = decode_value(value)
    except Exception:  # a malformed error report is still an error
        info = {}
    if not isinstance(info, dict):
        info = {}
    raise task_error(_ERRORS.get(status, TaskError), str(info.get("type", "Error")),
                     str(info.get("message", "")), str(info.get("traceback", "")), peer)


class JobResult(NamedTuple):
    """How one task of a job ended: its index in the job, its status (``TaskStatus``), the
    CBOR of its value or error (a large one as the memory it landed in), and the name of
    the peer that ran it."""

    task: int
    status: int
    payload: bytes | memoryview | Packed
    peer: str


class PlacementNote(NamedTuple):
    """News from a job's owner of where its tasks may go: ``kind`` a
    :class:`~._proto.wiretypes.PlacementKind`, ``peer`` the name of the peer excluded (for
    the others, the owner's), ``reasons`` in words (``numpy missing``)."""

    kind: int
    peer: str
    reasons: tuple[str, ...]


def unrunnable_message(notes: Iterable[PlacementNote]) -> str:
    """Why no live peer can run a job: ``lab3: numpy missing; lab4: numpy 1.26.4 (here
    2.5.5)``."""
    excluded = [f"{n.peer}: {', '.join(n.reasons)}" for n in notes
                if n.kind == PlacementKind.EXCLUDED]
    return ("no live peer can run this job's tasks, this one included: "
            + ("; ".join(excluded) or "none fits"))


def placement_line(label: str, note: PlacementNote) -> str | None:
    """The stderr line a submitter prints for ``note`` (None: nothing to say)."""
    what = f"{label}'s tasks" if label else "the tasks"
    if note.kind == PlacementKind.EXCLUDED:
        return f"p2pcluster: {note.peer} cannot take {what}: {', '.join(note.reasons)}"
    if note.kind == PlacementKind.ALONE:
        return f"p2pcluster: no other peer can take {what}: {note.peer} runs them alone"
    if note.kind == PlacementKind.WAITING:
        return f"p2pcluster: {what} wait: {', '.join(note.reasons)}"
    if note.kind == PlacementKind.RESUMED:
        return f"p2pcluster: a peer that can take {what} is back"
    return None


@dataclass(frozen=True, slots=True)
class JobRequest:
    """Everything a peer needs to own a job."""

    ref: FunctionRef
    bundles: Mapping[str, CodeBundle]
    #: Each task's arguments (a packed value's arrays are the caller's, read when the task
    #: is fetched or run: see :mod:`._heldargs`).
    payloads: Sequence[Payload]
    timeout: float | None = None
    chunksize: int = 0
    #: What a peer must have to take the job's tasks (:mod:`._proto.eligibility`).
    needs: JobNeeds = NO_NEEDS


def encode_args(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Payload:
    """One call's arguments as one task payload: plain CBOR, or CBOR heads around views of
    its large arrays' own buffers (never copied through the encoder, nor joined: see
    :mod:`._heldargs`)."""
    return encode_call(args, kwargs)


def encode_map_args(iterables: Sequence[Iterable[Any]]) -> list[Payload]:
    """``map``'s argument tuples, each as one task payload (the shortest iterable wins)."""
    return [encode_call(call, {}) for call in _calls(iterables)]


def _calls(iterables: Sequence[Iterable[Any]]) -> Iterator[tuple[Any, ...]]:
    if len(iterables) == 1:
        return ((x,) for x in iterables[0])
    return (tuple(xs) for xs in zip(*iterables, strict=False))


async def encode_map_args_in_trio(iterables: Sequence[Iterable[Any]]) -> list[Payload]:
    """:func:`encode_map_args`, for a caller in the trio thread: it lets the loop run after
    every :data:`IN_TRIO_PART` calls (100,000 small calls take 0.3 s to encode here, and a
    peer whose loop answers no probe for ``probe_timeout`` gets suspected)."""
    payloads: list[Payload] = []
    for call in _calls(iterables):
        payloads.append(encode_call(call, {}))
        if len(payloads) % IN_TRIO_PART == 0:
            await trio.sleep(0)
    return payloads


async def unpack_in_trio(results: Iterable[tuple[int, bytes | memoryview | Packed, str]]
                         ) -> list[Any]:
    """:func:`unpack` of each of ``results`` (status, payload, peer), for a caller in the
    trio thread: it lets the loop run after every :data:`IN_TRIO_PART` values."""
    values = []
    for index, result in enumerate(results, 1):
        values.append(unpack(*result))
        if index % IN_TRIO_PART == 0:
            await trio.sleep(0)
    return values


#: Calls encoded, results decoded or tasks admitted (:func:`~._ownedjob.admit`) per pass
#: of the trio loop: about 20 ms of its time here.
IN_TRIO_PART = 2048


def _check_sizes(fn: Callable[..., Any], payloads: Sequence[Payload], limit: int,
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

    The job file's own modules ship by themselves, found by scanning its imports (or, for a
    script that uses Cluster, those of ``__main__``): see :class:`~._autoship.AutoShip`,
    which also finds the installed distributions the job needs (``strict``: at exactly
    this process's versions). ``requires`` are tags every job requires besides its own.
    ``say`` writes one line for the user (stderr).
    """

    def __init__(self, include: Iterable[str | Path] = (), *, auto_limit: int = 16 * 2**20,
                 strict: bool = False, requires: Iterable[str] = (),
                 say: Callable[[str], None] | None = None) -> None:
        self._refs: dict[FunctionType, FunctionRef] = {}
        self._bundles: dict[str, CodeBundle] = {}
        self._job_modules: dict[str, str] = {}
        self._includes: list[str] = []
        self.strict = strict
        self.requires = _check_tags(requires)  #: tags every job of this registry requires
        self._needs: dict[tuple[tuple[str, ...], tuple[str, ...]], JobNeeds] = {}
        self._off_loop = trio.Lock()  # (see request_in_trio)
        for path in include:
            self._include(path, bundle_tree(path))
        self._auto = AutoShip(auto_limit, [Path(p) for p in include], say)

    def _include(self, path: str | Path, bundle: CodeBundle) -> None:
        self._bundles[bundle.digest] = bundle
        if bundle.digest not in self._includes:
            self._includes.append(bundle.digest)
        self._refs.clear()
        parent = str(Path(path).resolve().parent)
        if parent not in sys.path:  # so this process resolves included modules too
            sys.path.append(parent)

    def add_job_module(self, name: str, bundle: CodeBundle,
                       path: str | Path | None = None) -> None:
        """Ship ``bundle`` as module ``name``; with ``path`` (its file), what it imports
        too."""
        self._bundles[bundle.digest] = bundle
        self._job_modules[name] = bundle.digest
        self._refs.clear()
        if path is not None:
            for found, included in self._auto.scan(path):
                self._include(found, included)

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
                self.add_job_module("__main__", bundle_file(main_file), main_file)
        ref = function_ref(fn, job_modules=self._job_modules, includes=self._includes)
        if isinstance(fn, FunctionType):
            self._refs[fn] = ref
        return ref

    def request(self, fn: Callable[..., Any], payloads: Sequence[Payload], *,
                timeout: float | None = None, chunksize: int | None = None,
                max_value_size: int | None = None, where: str = "this peer",
                requires: Iterable[str] = ()) -> JobRequest:
        """A :class:`JobRequest`; raises :class:`~p2pcluster.SubmitError` on a bad ``fn``,
        and :class:`~p2pcluster.ValueTooLarge` on an argument over ``max_value_size``
        (the limit ``where``). Its tasks go only to peers with every tag in ``requires``
        and the job's environment (:meth:`needs`)."""
        self._scan_main()
        ref = self.ref(fn)
        if max_value_size is not None:
            _check_sizes(fn, payloads, max_value_size, where)
        needed = [d for d in itertools.chain([ref.job], ref.includes) if d is not None]
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive (seconds)")
        if chunksize is not None and chunksize < 1:
            raise ValueError("chunksize must be at least 1")
        return JobRequest(ref, {d: self._bundles[d] for d in needed}, payloads,
                          None if timeout is None else float(timeout), chunksize or 0,
                          self.needs(requires))

    async def request_in_trio(self, fn: Callable[..., Any], payloads: Sequence[Payload],
                              **options: Any) -> JobRequest:
        """:meth:`request`, for a caller in the trio thread (``Peer.map`` and the like): one
        that may read the disk (see :meth:`cold`) is built in a thread, one at a time, since
        the loop must not wait for it (a peer whose loop answers no probe for
        ``probe_timeout`` gets suspected)."""
        if not self.cold(fn, options.get("requires", ())):
            return self.request(fn, payloads, **options)
        async with self._off_loop:
            return await trio.to_thread.run_sync(partial(self.request, fn, payloads, **options))

    def cold(self, fn: Callable[..., Any], requires: Iterable[str] = ()) -> bool:
        """Whether a request for ``fn`` may read the disk: the first one (it scans
        ``__main__``'s imports and reads the installed distributions' metadata: 0.2 to 0.3 s
        here), one for a function of a ``__main__`` not shipped yet, or one that needs
        versions not read yet."""
        if not self._job_modules and not self._auto.scanned:
            return True
        if getattr(fn, "__module__", None) == "__main__" and "__main__" not in self._job_modules:
            return True
        return self._needs_key(requires) not in self._needs

    def needs(self, requires: Iterable[str] = ()) -> JobNeeds:
        """What a job submitted now needs: this Python's minor version (exact, if
        ``strict``), the distributions the shipped code imports at this process's versions,
        and the tags ``requires``."""
        key = self._needs_key(requires)
        needs = self._needs.get(key)
        if needs is None:  # reading versions costs a look at the disk: once per set
            needs = self._needs[key] = job_needs(self._auto.dists, requires=key[0],
                                                 strict=self.strict)
        return needs

    def _needs_key(self, requires: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """What a job's needs depend on: its tags, and the distributions scanned so far."""
        return tuple(sorted({*self.requires, *_check_tags(requires)})), self._auto.dists

    def _scan_main(self) -> None:
        """A script that uses Cluster ships what its ``__main__`` imports (once)."""
        if self._job_modules or not self._auto.first_scan():
            return
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        if main_file and Path(main_file).is_file() and not AutoShip.installed(main_file):
            for found, included in self._auto.scan(main_file):
                self._include(found, included)


def _check_tags(requires: Iterable[str]) -> tuple[str, ...]:
    if isinstance(requires, str):
        requires = (requires,)
    tags = tuple(sorted(set(requires)))
    for tag in tags:
        if not isinstance(tag, str) or not tag or len(tag) > 64:
            raise ValueError(f"a required tag is a non-empty string of at most 64 "
                             f"characters, not {tag!r}")
    return tags
