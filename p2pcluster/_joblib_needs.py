"""What a pickled joblib batch needs of the peer that unpickles it: the owner's Python minor
version, and the installed distributions whose modules the pickle names, at the owner's
versions.

A pickle names every class and function it holds by reference as ``module`` and
``qualname`` (cloudpickle sends by value only what cannot be imported: ``__main__``,
lambdas, closures). :func:`dumps_noting_modules` pickles as :func:`._joblib_task.dumps`
does and notes the module of every object it meets (the pickler's ``reducer_override`` is
called for each but the plain builtins, so a long list of numbers costs nothing more);
:func:`batch_needs` maps them to distributions
(:func:`importlib.metadata.packages_distributions`) and adds joblib and cloudpickle, which
every batch needs. A peer whose Python or any of those versions differ must get none of the
batch: an estimator pickled by scikit-learn 1.5 may unpickle wrongly, or not at all, with
1.4. The environment check of the cluster (``JobSpec.needs``, :mod:`._proto.eligibility`)
applies the rule.
"""

from __future__ import annotations

import functools
import importlib.metadata
import io
import pickle
import platform
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from types import BuiltinFunctionType, FunctionType
from typing import Any

from ._joblib_task import PROTOCOL, raw
from ._proto.eligibility import normalize

__all__ = ["Needs", "batch_needs", "dumps_noting_modules", "pickle_noting_modules"]

#: Distributions every pickled batch needs, whatever it holds.
ALWAYS = ("cloudpickle", "joblib")

#: Bytes from which a non-contiguous array is pickled as a contiguous copy, out of band.
GAPPY_MIN = 32 * 1024


@dataclass(frozen=True, slots=True)
class Needs:
    """The owner's Python version and ``(distribution, version)`` pairs, sorted by name.
    The same fields as the environment check's ``JobNeeds`` (``python``, ``dists``)."""

    python: str
    dists: tuple[tuple[str, str], ...]


def dumps_noting_modules(obj: Any) -> tuple[list[bytes], set[str]]:
    """``obj`` as :func:`._joblib_task.dumps` pickles it, and the top-level names of the
    modules of the classes, functions and objects in it."""
    head, buffers, modules = pickle_noting_modules(obj)
    return [head, *(bytes(b) for b in buffers)], modules


def pickle_noting_modules(obj: Any) -> tuple[bytes, list[memoryview | bytes], set[str]]:
    """:func:`dumps_noting_modules`, its buffers not copied: views of the memory of the
    arrays in ``obj`` (valid while they are not changed)."""
    pickler = _noting_pickler()
    out = io.BytesIO()
    buffers: list[pickle.PickleBuffer] = []
    noting = pickler(out, protocol=PROTOCOL, buffer_callback=buffers.append)
    noting.dump(obj)
    return out.getvalue(), [_view(b) for b in buffers], noting.modules


def _view(buffer: pickle.PickleBuffer) -> memoryview | bytes:
    try:
        return buffer.raw()
    except BufferError:  # not contiguous: pickle copies it anyway
        return raw(buffer)


@functools.cache
def _noting_pickler() -> type:
    import cloudpickle  # the [joblib] extra

    class Noting(cloudpickle.Pickler):  # type: ignore[misc]
        """cloudpickle's pickler, noting ``modules``."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.modules: set[str] = set()

        def reducer_override(self, item: Any) -> Any:
            owner = item if isinstance(item, type | FunctionType | BuiltinFunctionType) else (
                type(item))
            module = getattr(owner, "__module__", None)
            if isinstance(module, str):
                self.modules.add(module.split(".", 1)[0])
            if module == "numpy" and (reduced := _gappy_array(item)) is not None:
                return reduced
            return super().reducer_override(item)

    return Noting


def _gappy_array(item: Any) -> Any:
    """The reduction of a large NumPy array that is not contiguous (a slice, a transposed
    view, the digits ``X``) as ``numpy.array(contiguous copy)``: the copy's memory goes out
    of band (where pickle would copy the array into the head, as it does for such arrays),
    so that a batch can carry it as a handle (:mod:`._joblib_shares`), and ``numpy.array``
    makes the array the batch gets its own, writable and C-contiguous, as pickle's in-band
    copy is. None for any other object."""
    np = sys.modules.get("numpy")
    if (np is None or type(item) is not np.ndarray or item.nbytes < GAPPY_MIN
            or item.flags.c_contiguous or item.flags.f_contiguous or item.dtype.hasobject):
        return None
    return np.array, (np.ascontiguousarray(item),)


@functools.cache
def _distributions() -> dict[str, tuple[str, ...]]:
    return {k: tuple(v) for k, v in importlib.metadata.packages_distributions().items()}


@functools.cache
def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def batch_needs(modules: Iterable[str]) -> Needs:
    """What a peer must have to run a batch whose pickle holds objects of ``modules``
    (top-level names; module docstring)."""
    names = set(ALWAYS)
    for module in modules:
        names.update(_distributions().get(module, ()))
    dists = sorted({(normalize(n), v) for n in names if (v := _version(n))})
    return Needs(platform.python_version(), tuple(dists))
