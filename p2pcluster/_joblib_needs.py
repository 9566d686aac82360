"""What a pickled joblib batch needs of the peer that unpickles it: the owner's Python minor
version, and the installed distributions whose modules the pickle names, at the owner's
versions.

A pickle names every class and function it holds by reference as ``module`` and
``qualname`` (cloudpickle sends by value only what cannot be imported: ``__main__``,
lambdas, closures). :func:`modules_named` reads them from the pickle's opcodes without
unpickling; :func:`batch_needs` maps them to distributions
(:func:`importlib.metadata.packages_distributions`) and adds joblib and cloudpickle, which
every batch needs. A peer whose Python or any of those versions differ must get none of the
batch: an estimator pickled by scikit-learn 1.5 may unpickle wrongly, or not at all, with
1.4. The environment check of the cluster (``JobSpec.needs``) applies the rule.
"""

from __future__ import annotations

import functools
import importlib.metadata
import pickletools
import platform
import sys
from dataclasses import dataclass

__all__ = ["Needs", "batch_needs", "modules_named"]

#: Distributions every pickled batch needs, whatever it holds.
ALWAYS = ("cloudpickle", "joblib")
_GLOBAL_OPS = frozenset({"GLOBAL", "INST"})
_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})


@dataclass(frozen=True, slots=True)
class Needs:
    """The owner's Python version and ``(distribution, version)`` pairs, sorted by name.
    The same fields as the environment check's ``JobNeeds`` (``python``, ``dists``)."""

    python: str
    dists: tuple[tuple[str, str], ...]


def modules_named(head: bytes) -> set[str]:
    """The top-level names of the modules ``head`` (a pickle) refers to, among those
    imported in this process. Unpickles nothing."""
    found: set[str] = set()
    for op, arg, _ in pickletools.genops(head):
        if op.name in _GLOBAL_OPS and isinstance(arg, str):
            found.add(arg.split(" ", 1)[0].split(".", 1)[0])
        elif op.name in _STRING_OPS and isinstance(arg, str) and arg in sys.modules:
            found.add(arg.split(".", 1)[0])  # STACK_GLOBAL's module name
    return found


@functools.cache
def _distributions() -> dict[str, tuple[str, ...]]:
    return {k: tuple(v) for k, v in importlib.metadata.packages_distributions().items()}


@functools.cache
def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _normalize(name: str) -> str:
    return name.replace("_", "-").replace(".", "-").lower()


def batch_needs(head: bytes) -> Needs:
    """What a peer must have to run the pickled batch ``head`` (module docstring)."""
    names = set(ALWAYS)
    for module in modules_named(head):
        names.update(_distributions().get(module, ()))
    dists = sorted({(_normalize(n), v) for n in names if (v := _version(n))})
    return Needs(platform.python_version(), tuple(dists))
