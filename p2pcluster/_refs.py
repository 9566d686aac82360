"""Function references: a task function, by name, and the refusals of what has no name.

The function travels as a :class:`FunctionRef`: module, qualified name, the digest of the job
file (loaded under the name ``p2pjob_<digest prefix>``, so two versions of a job never share a
module) and the digests of the ``--include`` bundles that go on ``sys.path``.
:func:`function_ref` refuses, at submit time, whatever a peer could not find again by name
(lambdas, closures, bound methods, partials) and says how to fix it.

Running a task runs code, by design: a peer imports the module a :class:`FunctionRef` names
and calls it (:mod:`._loader`). Only holders of the cluster secret can send one, which is why
the secret is guarded like a login.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ._bundles import is_digest, job_module_name
from ._errors import DecodeError, SubmitError

__all__ = ["FunctionRef", "function_ref"]


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
        if job is not None and not (is_digest(job) and module == job_module_name(job)):
            raise DecodeError(f"bad job digest {job!r} for module {module!r}")
        if not isinstance(includes, list | tuple) or not all(is_digest(d) for d in includes):
            raise DecodeError(f"bad include digests {includes!r}")
        return cls(module, qualname, job, tuple(includes))


def _dotted(name: Any) -> bool:
    return type(name) is str and len(name) <= 500 and all(
        part.isidentifier() for part in name.split(".")
    )


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
    if not all(is_digest(d) for d in includes):
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
