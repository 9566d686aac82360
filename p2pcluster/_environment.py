"""This machine's environment: what a peer gossips and answers about itself, and what a job
submitted here needs of the peers that run it.

The rule that decides whether a peer may take a job is pure and lives in
:mod:`._proto.eligibility` (:class:`~._proto.eligibility.JobNeeds`,
:func:`~._proto.eligibility.judge`); this module only reads the facts from this process:
the Python version and implementation, the platform, and installed distributions' versions
(``importlib.metadata``, which reads files: call :func:`installed_versions` off the trio
thread).
"""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Iterable

from ._proto.eligibility import Dist, JobNeeds, PeerEnv, normalize
from ._proto.workmessages import Versions

__all__ = [
    "describe", "environment_meta", "installed_versions", "job_needs", "local_env",
    "python_text",
]


def python_text() -> str:
    """This interpreter, as gossiped: ``CPython 3.11.7``."""
    return f"{platform.python_implementation()} {platform.python_version()}"


def environment_meta() -> tuple[str, str, str]:
    """The environment fields of this peer's metadata: Python, system, machine."""
    return python_text(), platform.system(), platform.machine()


def local_env(tags: Iterable[str]) -> PeerEnv:
    """What this peer's stealing machine knows of itself at start."""
    return PeerEnv(platform.python_version(), frozenset(tags))


def installed_versions(names: Iterable[str]) -> dict[str, str]:
    """Normalized distribution name -> its installed version here, ``""`` if not installed.
    Reads package metadata from disk: may take tens of milliseconds."""
    found: dict[str, str] = {}
    for name in names:
        key = normalize(name)
        try:
            found[key] = importlib.metadata.version(key)
        except importlib.metadata.PackageNotFoundError:
            found[key] = ""
    return found


def describe(names: Iterable[str], tags: Iterable[str]) -> Versions:
    """This peer's answer to a :class:`~._proto.workmessages.FetchVersions`."""
    versions = installed_versions(names)
    return Versions(platform.python_implementation(), platform.python_version(),
                    tuple(tags), tuple(Dist(n, v) for n, v in versions.items()))


def job_needs(dists: Iterable[str], *, requires: Iterable[str] = (),
              strict: bool = False) -> JobNeeds:
    """What a job submitted from this process needs: this Python's version, each of
    ``dists`` (normalized distribution names the job imports) at the version installed
    here (one not installed here is left out: the job cannot use it anywhere), and the tags
    in ``requires``."""
    versions = installed_versions(sorted(set(dists)))
    return JobNeeds(platform.python_version(),
                    tuple(Dist(n, v) for n, v in sorted(versions.items()) if v),
                    tuple(sorted(set(requires))), strict)
