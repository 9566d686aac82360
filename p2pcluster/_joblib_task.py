"""What a joblib batch is on the way and in a worker: pickle, with out-of-band buffers.

joblib hands its backends arbitrary callables and objects (estimators, arrays, closures), so
:mod:`p2pcluster.joblib` sends each batch as a cloudpickle of protocol 5: a head, and one
byte string per out-of-band buffer (the memory of each NumPy array, which is never copied
into the head). The parts are the CBOR arguments of one task of :func:`run_pickled`, a plain
module-level function that every peer imports from the installed p2pcluster; its result is
the batch's outcome in the same form.

Where pickle is read
--------------------
Only two places call :func:`loads`: :func:`run_pickled`, in a worker process, on arguments
that came to its peer inside the authenticated, encrypted channel (the peer's stream, or its
owner's own memory); and the joblib backend, on a result that came back the same way (from
the embedded peer, or from the local daemon over its owner-only control socket). Nothing else
in p2pcluster unpickles: ``p2pcluster run`` and the ``Cluster`` API send CBOR. Anyone who
can make a peer run :func:`run_pickled` holds the cluster secret, and can already run any
code on it: pickle adds no power (``docs/security.md``).

Threads
-------
Each worker of a peer is one of its CPUs, so a batch's BLAS and OpenMP thread pools are
limited for the batch's duration, as joblib's process backends limit theirs (loky sets
``OMP_NUM_THREADS`` and the like in its workers): ``run_pickled(..., threads=n)`` runs the
batch under ``threadpoolctl``'s limit of ``n`` threads (at most this machine's CPUs), and
puts the previous limits back after it. Without the limit, each worker of a 2-core peer runs
two OpenBLAS and two OpenMP threads, and the workers of a busy peer fight over its cores.

This module runs in worker processes: it imports nothing heavy until a batch arrives.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

__all__ = ["PROTOCOL", "Failure", "dumps", "loads", "raw", "run_pickled"]

#: The pickle protocol: 5 is the first with out-of-band buffers (PEP 574).
PROTOCOL = 5


class Failure(NamedTuple):
    """A batch that raised: the exception (or, if it could not be pickled, None), its type's
    name and message, and the traceback as the worker formatted it."""

    error: BaseException | None
    type_name: str
    message: str
    traceback: str


def dumps(obj: Any) -> list[bytes]:
    """``obj`` as ``[head, *buffers]``: a cloudpickle with each contiguous buffer (a NumPy
    array's memory) out of band."""
    import cloudpickle  # the [joblib] extra

    buffers: list[pickle.PickleBuffer] = []
    head = cloudpickle.dumps(obj, protocol=PROTOCOL, buffer_callback=buffers.append)
    return [head, *(raw(b) for b in buffers)]


def raw(buffer: pickle.PickleBuffer) -> bytes:
    """An out-of-band buffer's bytes."""
    try:
        view = buffer.raw()
    except BufferError:  # not contiguous: pickle copies it anyway
        return bytes(memoryview(buffer))
    return bytes(view)


def loads(parts: Sequence[bytes]) -> Any:
    """The inverse of :func:`dumps` (see the module docstring for where it may be called)."""
    if not parts or not all(isinstance(p, bytes | bytearray) for p in parts):
        raise ValueError("a pickled joblib value is a list of byte strings")
    return pickle.loads(parts[0], buffers=parts[1:])


def run_pickled(*parts: bytes, threads: int | None = None) -> list[bytes]:
    """Call the pickled batch ``parts`` and return its result, or its :class:`Failure`,
    pickled the same way; with ``threads``, under that limit of BLAS and OpenMP threads (see
    the module docstring). Runs in a worker process. A buffer may come from the peer's
    shared values (:mod:`._joblib_shares`): the same bytes for every batch on the peer, so
    arrays on it are read-only, as every out-of-band array here is."""
    try:
        batch = loads(parts)
        with thread_limit(threads):
            result: Any = batch()
    except BaseException as exc:  # joblib re-raises it on the submitting side
        result = _failure(exc)
    try:
        return dumps(result)
    except BaseException as exc:  # an unpicklable result, or an exception that is
        return dumps(_failure(exc, keep=False))


def _failure(exc: BaseException, *, keep: bool = True) -> Failure:
    tb = exc.__traceback__.tb_next if exc.__traceback__ else None  # skip our own frame
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else (
        f"{kind.__module__}.{kind.__qualname__}")
    try:
        message = str(exc)
    except Exception:
        message = "<str() failed>"
    if keep:
        try:
            dumps(exc)
        except BaseException:
            keep = False
    exc.__traceback__ = None  # frames do not travel
    return Failure(exc if keep else None, name, message, text)


class _Controllers:
    """threadpoolctl's view of this process's thread pools, made again only once modules
    were imported since (making one scans every loaded library: milliseconds; using one
    costs microseconds)."""

    controller: Any = None
    modules = -1


@contextlib.contextmanager
def thread_limit(threads: int | None) -> Iterator[None]:
    """BLAS and OpenMP thread pools limited to ``threads`` (at most this machine's CPUs)
    inside the ``with``; nothing is done for None, or if threadpoolctl is not installed."""
    if threads is None:
        yield
        return
    try:
        import threadpoolctl  # the [joblib] extra (with scikit-learn too)
    except ImportError:
        yield
        return
    if _Controllers.modules != len(sys.modules):
        _Controllers.controller = threadpoolctl.ThreadpoolController()
        _Controllers.modules = len(sys.modules)
    with _Controllers.controller.limit(limits=max(1, min(threads, os.cpu_count() or threads))):
        yield
