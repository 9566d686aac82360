"""What a worker process runs: one batch of calls to one function, results as CBOR.

This module is the main module of the worker processes (:func:`serve`), so it stays light:
no trio, no network layer, only the code modules (:mod:`._refs`, :mod:`._loader`,
:mod:`._values`, :mod:`._handoff`) and cbor2. A worker respawned after a crash pays for little
more than the interpreter. Large arrays come and go through shared memory
(:mod:`._handoff`), never through the pipe.

Every outcome is ``(status, payload)``, ``status`` a :class:`~._proto.messages.TaskStatus`:
``OK`` with the encoded result, or ``ERROR`` with the CBOR map ``{"type", "message",
"traceback"}``. Beside each outcome goes how the call ran: when it started, for how long,
and what it printed (:mod:`._capture`, bounded). Nothing a task does is allowed to escape as
an exception, not even ``SystemExit``: the worker must live on to answer the next batch.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import pickle
import signal
import struct
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ._capture import captured
from ._errors import NumPyUnavailable, P2PClusterError, UnsendableResult, too_large
from ._handoff import WireValue, let_go, open_args, open_ref, to_ref
from ._loader import load_function, remember_sources
from ._packed import Packed, Payload
from ._proto.wiretypes import TaskStatus
from ._refs import FunctionRef
from ._taskoutput import MarkedStream, set_label
from ._values import decode_call, decode_value, encode_error, encode_value

__all__ = ["NUMPY_UNAVAILABLE", "Run", "run_batch", "serve", "warm_up"]

#: The type name of a task that failed for want of NumPy: the peer takes no more of its job.
NUMPY_UNAVAILABLE = "p2pcluster._errors.NumPyUnavailable"
Outcome = tuple[int, Payload]
#: How one call ran: its start (Unix seconds), its seconds, its stdout and its stderr.
Run = tuple[float, float, str, str]


def run_batch(
    cache_root: str, ref_wire: Sequence[Any], payloads: Sequence[Payload], *,
    max_result: int = 2**62, limit_where: str = "this peer", time_limit: float | None = None,
    shared: Mapping[bytes, Any] | None = None, labels: tuple[str, Sequence[int]] | None = None,
) -> tuple[list[Outcome], float, list[Run]]:
    """Call the function ``ref_wire`` names once per payload, in order (``shared``: the
    shared values the calls' handles name).

    Returns the outcomes, the seconds spent in this process (loading included) and the
    :data:`Run` of each call (none if the function did not load). The batch stops after the
    task that runs once ``time_limit`` seconds have passed, or whose arguments hold an array
    NumPy is not here to decode (fewer outcomes than payloads, one per payload from the
    first; the peer gives the rest to others). If the function cannot be loaded, every
    payload gets the same ``ERROR``. A result that encodes to more than ``max_result``
    bytes (the limit of ``limit_where``) is an ``ERROR`` too (``ValueTooLarge``), decided
    here, on the peer that ran the task, before it goes anywhere. With ``labels`` (a
    :class:`~._taskoutput.TaskLabels`: the job, a task id per payload), what each task
    prints is marked with its job and task (:mod:`._taskoutput`).
    """
    start = time.perf_counter()
    try:
        fn = load_function(FunctionRef.from_wire(ref_wire), cache_root)
    except BaseException as exc:
        failed = (TaskStatus.ERROR, _load_error(ref_wire, exc))
        return [failed] * len(payloads), time.perf_counter() - start, []
    stop = math.inf if time_limit is None else start + time_limit
    outcomes = []
    runs: list[Run] = []
    for i, payload in enumerate(payloads):
        if labels is not None:
            set_label(labels[0], labels[1][i])
        (outcome, unrunnable), run = _timed_call(fn, payload, shared)
        runs.append(run)
        outcomes.append(_limited(outcome, fn, max_result, limit_where))
        if labels is not None:
            _flush_output()
        if unrunnable or time.perf_counter() >= stop:
            break
    set_label()
    return outcomes, time.perf_counter() - start, runs


def _timed_call(fn: Callable[..., Any], payload: Payload, shared: Mapping[bytes, Any] | None
                ) -> tuple[tuple[Outcome, bool], Run]:
    """:func:`_call`, with when it started, how long it took and what it printed (which
    goes on to the worker's own streams too)."""
    began, clock = time.time(), time.perf_counter()
    with captured() as output:
        called = _call(fn, payload, shared)
    return called, (began, time.perf_counter() - clock, *output.texts())


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a task may have closed or replaced them
            if isinstance(stream, MarkedStream):
                stream.end_line()
            else:
                stream.flush()


def _limited(outcome: Outcome, fn: Callable[..., Any], limit: int, where: str) -> Outcome:
    if len(outcome[1]) <= limit:
        return outcome
    name = getattr(fn, "__qualname__", "the task")
    message = too_large(f"the result of {name}", len(outcome[1]), limit, where)
    return TaskStatus.ERROR, encode_error("ValueTooLarge", message)


def warm_up() -> None:
    """A no-op that makes a fresh worker import this module (and cbor2) before any task."""


def _call(fn: Callable[..., Any], payload: Payload, shared: Mapping[bytes, Any] | None
          ) -> tuple[Outcome, bool]:
    """The task's outcome, and whether this peer cannot run its job (no NumPy)."""
    try:
        args, kwargs = decode_call(payload, shared=shared)
        result = _check_sync(fn, fn(*args, **kwargs))
        return (TaskStatus.OK, encode_value(result, what=f"the result of {_name(fn)}")), False
    except UnsendableResult as exc:  # no traceback: no line of the task is at fault
        return (TaskStatus.ERROR, encode_error(UNSENDABLE, _message(exc))), False
    except NumPyUnavailable as exc:  # nor here: the task never started
        return (TaskStatus.ERROR, encode_error(NUMPY_UNAVAILABLE, _message(exc))), True
    except BaseException as exc:
        return (TaskStatus.ERROR, _exception_payload(exc)), False


#: The type name of an :class:`UnsendableResult`, as the submitter resolves it.
UNSENDABLE = "p2pcluster.UnsendableResult"


def _name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or fn)


def _check_sync(fn: Callable[..., Any], result: Any) -> Any:
    if isinstance(result, types.CoroutineType):
        result.close()
        raise TypeError(
            f"{getattr(fn, '__qualname__', fn)} is an async function; a task must be a "
            "plain (sync) function"
        )
    return result


def _type_name(exc: BaseException) -> str:
    t = type(exc)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not lose the error
        return f"<{_type_name(exc)}: str() failed>"


def _exception_payload(exc: BaseException, message: str | None = None) -> bytes:
    tb = exc.__traceback__.tb_next if exc.__traceback__ else None  # skip our own frame
    remember_sources(exc)  # the job file's lines, under its own name (job.py)
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return encode_error(_type_name(exc), _message(exc) if message is None else message, text)


def _load_error(ref_wire: Sequence[Any], exc: BaseException) -> bytes:
    name = ".".join(str(part) for part in ref_wire[:2]) if len(ref_wire) >= 2 else "?"
    if isinstance(exc, ImportError | AttributeError):
        message = (
            f"{name} could not be imported on this peer ({_type_name(exc)}: {_message(exc)}). "
            "Install the module on every peer, or ship it with --include."
        )
    else:
        message = f"loading {name} on this peer failed: {_type_name(exc)}: {_message(exc)}"
    return _exception_payload(exc, message)


# --- the worker process's main loop --------------------------------------------------------

_LENGTH = struct.Struct(">I")


def _read_exactly(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _write_frame(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _watch_parent(parent: int) -> None:
    """Exit when the peer process is gone, even in the middle of a task, and take the
    process group (this worker and what its tasks forked) with it."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os.killpg(0, signal.SIGKILL)  # with whatever our tasks forked (our group)
            os._exit(0)


#: Results in segments of ours, by descriptor, until the peer has mapped them ("drop").
_HELD: dict[int, Packed] = {}
#: Shared values decoded here (their arrays read-only), by digest, until the peer drops them;
#: or the exception that decoding one raised.
_SHARED: dict[bytes, Any] = {}


def _answer(outcomes: list[Outcome], seconds: float) -> tuple[list[tuple[int, WireValue]],
                                                             float]:
    """The answer to a batch: each large result placed in a segment held until dropped."""
    answer = []
    for status, payload in outcomes:
        wire, placed = to_ref(payload)
        if placed is not None and placed.segment is not None:
            _HELD[placed.segment.fd] = placed
        answer.append((status, wire))
    return answer, seconds


def _share(values: Mapping[bytes, WireValue]) -> None:
    """Shared values, each decoded once, for every task that uses it."""
    for digest, wire in values.items():
        try:
            _SHARED[digest] = _read_only(decode_value(open_ref(wire, access=mmap.ACCESS_READ)))
        except Exception as exc:  # each task that uses it fails with it
            _SHARED[digest] = _Failed(exc)


class _Failed(NamedTuple):
    error: Exception


def _read_only(value: Any) -> Any:
    """Shared arrays are seen by every task of the worker: none may change them. (A NumPy
    scalar is never writeable, and setting its flag raises.)"""
    flags = getattr(value, "flags", None)
    if flags is not None and getattr(flags, "writeable", False):
        flags.writeable = False
    elif isinstance(value, list | tuple):
        for item in value:
            _read_only(item)
    elif isinstance(value, dict):
        for item in value.values():
            _read_only(item)
    return value


def _run(request: Sequence[Any], label_output: bool
         ) -> tuple[list[tuple[int, WireValue]], float, list[Run], list[int]]:
    """A batch's answer: outcomes, seconds, runs, and the peer's descriptors of the
    argument segments unmapped here (:func:`~._handoff.let_go`)."""
    _, cache_root, ref_wire, wires, max_result, limit_where, time_limit, digests, labels = (
        request)
    failed = next((v.error for d in digests if isinstance(v := _SHARED.get(d), _Failed)), None)
    try:
        if failed is not None:
            raise failed
        payloads, segments = open_args(wires)
    except NumPyUnavailable as exc:
        error = encode_error(NUMPY_UNAVAILABLE, _message(exc))
        return [(TaskStatus.ERROR, error)] * len(wires), 0.0, [], []
    except (OSError, ValueError, P2PClusterError) as exc:  # the peer let go of them
        error = encode_error(type(exc).__name__, f"the task's values could not be had: {exc}")
        return [(TaskStatus.ERROR, error)] * len(wires), 0.0, [], []
    outcomes, seconds, runs = run_batch(
        cache_root, ref_wire, payloads, max_result=max_result, limit_where=limit_where,
        time_limit=time_limit, shared={d: _SHARED[d] for d in digests if d in _SHARED},
        labels=labels if label_output else None)
    answer = _answer(outcomes, seconds)
    del payloads, outcomes  # (a result may have been a view of an argument)
    return (*answer, runs, let_go(segments))


def _drop(fds: Sequence[int], digests: Sequence[bytes]) -> None:
    for fd in fds:
        _HELD.pop(fd, None)
    for digest in digests:
        _SHARED.pop(digest, None)


def serve(rfd: int, wfd: int, *, label_output: bool = False) -> None:
    """Answer batch requests from the peer, in order, until the request pipe closes.

    Each frame is a 4-byte big-endian length and a pickle (the peer and its own workers only:
    nothing from the network is unpickled). The first request is the peer's ``sys.path``;
    the worker answers it with ``"ready"``. Then each request is ``("run", cache_root,
    ref_wire, payloads, max_result, limit_where, time_limit, digests, labels)``, answered
    with :func:`run_batch`'s outcomes (large values as :class:`~._handoff.SegmentRef`), or
    ``("share", {digest: value})``, unanswered: shared values to decode once and keep, or
    ``("drop", fds, digests)``, unanswered: results the peer has mapped, shared values it
    no longer holds. With ``label_output``, stdout and stderr mark what each task writes.
    Requests queue up in the pipe, so a worker that finishes a batch starts the next one
    without waiting for the peer.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the peer's to handle
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    if label_output:
        sys.stdout = MarkedStream(sys.stdout)
        sys.stderr = MarkedStream(sys.stderr)
    first = True
    while (request := _read_request(rfd)) is not None:
        if first:
            first = False
            sys.path[:] = [*request, *(p for p in sys.path if p not in request)]
            _write_frame(wfd, "ready")
        elif request[0] == "drop":
            _drop(request[1], request[2])
        elif request[0] == "share":
            _share(request[1])
        else:
            _write_frame(wfd, _run(request, label_output))
        # Nothing of a batch stays while the worker waits for the next one: a value that
        # crossed the pipe (a large bytes argument) would stay in memory as long as the
        # worker sat idle.
        del request


def _read_request(rfd: int) -> Any:
    """The next request on the pipe, unpickled; None when the pipe closed."""
    header = _read_exactly(rfd, _LENGTH.size)
    body = None if header is None else _read_exactly(rfd, _LENGTH.unpack(header)[0])
    return None if body is None else pickle.loads(body)


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]), label_output="--label-output" in sys.argv[3:])
