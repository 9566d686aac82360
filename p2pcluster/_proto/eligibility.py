"""Which peers may run a job's tasks: what the job needs, what a peer has, and the rule.

Theory of operation
-------------------
A job's owner records, at submit, what the job needs (:class:`JobNeeds`, carried in every
``JobSpec``): the submitter's Python version, each installed distribution the job imports
with the submitter's version of it, the tags its tasks require, and whether versions must
match exactly (``strict``). A peer's environment (:class:`PeerEnv`) is what others know of
it: its Python version and tags come with its gossiped metadata, the versions of named
distributions from its answer to a question (``FetchVersions``).

The rule (:func:`judge`), the same on every peer:

- **Python**: the same major.minor version as the submitter's; ``strict``: the same version.
- **Distributions**: each one installed, at the same major.minor release as the
  submitter's (``2.5.1`` runs a job submitted with ``2.5.5``, ``1.26.4`` does not);
  ``strict``: the very same version string. A version whose release does not start with a
  number is compared whole.
- **Tags**: the peer has every tag the job requires.

The first two are the peer's *environment*: a peer that fails them cannot run the job at
all, and the owner says so (``numpy missing``, ``numpy 1.26.4 (here 2.5.5)``; "here" is the
submitter's version). Tags are *placement*: a peer without them could run the code but is
not where the tasks should go, and while no live peer has them the tasks wait.

A verdict is ``UNKNOWN`` while the peer has not said its Python version or its version of
some distribution the job needs: the caller asks (:mod:`.placement`) and gives no task to
that peer until the answer comes. Nothing here is ever guessed: an unknown peer gets
nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated

from .wiretypes import Limit

__all__ = [
    "MAX_NEEDED", "Dist", "Fit", "JobNeeds", "PeerEnv", "Verdict", "judge", "normalize",
    "same_release",
]

#: The most distributions (and, separately, tags) one job may need.
MAX_NEEDED = 256
DistName = Annotated[str, Limit(max_len=128)]
Version = Annotated[str, Limit(max_len=64)]
Tag = Annotated[str, Limit(max_len=64)]


@dataclass(frozen=True, slots=True)
class Dist:
    """A distribution (normalized name, see :func:`normalize`) and its version; ``""`` as
    the version means it is not installed."""

    name: DistName
    version: Version


@dataclass(frozen=True, slots=True)
class JobNeeds:
    """What a job needs of the peer that runs its tasks (see the module docstring).

    ``python`` is the submitter's version (``"3.11.7"``; empty: any), ``dists`` the
    distributions its code imports with the submitter's versions, ``tags`` the tags a peer
    must have, ``strict`` whether versions must be equal rather than of the same minor
    release.
    """

    python: Version = ""
    dists: Annotated[tuple[Dist, ...], Limit(max_len=MAX_NEEDED)] = ()
    tags: Annotated[tuple[Tag, ...], Limit(max_len=MAX_NEEDED)] = ()
    strict: bool = False

    def names(self) -> tuple[str, ...]:
        """The distributions a peer must say its versions of."""
        return tuple(d.name for d in self.dists)


#: A job that needs nothing: every peer may run it.
NO_NEEDS = JobNeeds()


@dataclass(frozen=True, slots=True)
class PeerEnv:
    """What is known of one peer: ``python`` its version (None: not known yet), ``tags``
    (None: not known yet), ``versions`` the distributions it said it has (name -> version,
    ``""`` not installed; a name not in it is unknown)."""

    python: str | None = None
    tags: frozenset[str] | None = None
    versions: Mapping[str, str] = field(default_factory=dict)


class Fit(Enum):
    """Whether a peer's environment fits a job's needs."""

    OK = "ok"
    NO = "no"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A peer judged against a job: its environment's ``fit``, whether it has the ``tags``,
    the ``reasons`` it cannot run the job (in words, environment first), and the
    distributions whose versions it has not said yet (``unknown``)."""

    fit: Fit
    tags: bool
    reasons: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    #: False while the peer's Python version, its tags (if the job needs any) or its
    #: version of some distribution is not known: asking it settles the verdict.
    settled: bool = True

    @property
    def ok(self) -> bool:
        """The peer may take the job's tasks."""
        return self.fit is Fit.OK and self.tags


ANY = Verdict(Fit.OK, True)


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them: ``Scikit_Learn`` -> ``scikit-learn``."""
    return re.sub(r"[-_.]+", "-", name).lower()


_RELEASE = re.compile(r"(?:\d+!)?(\d+)(?:\.(\d+))?")


def same_release(have: str, want: str, strict: bool) -> bool:
    """``have`` matches ``want``: equal if ``strict``, else the same major.minor release
    (versions whose release does not start with a number must be equal)."""
    if strict or have == want:
        return have == want
    a, b = _RELEASE.match(have), _RELEASE.match(want)
    if a is None or b is None:
        return False
    return (int(a[1]), int(a[2] or 0)) == (int(b[1]), int(b[2] or 0))


def judge(needs: JobNeeds, env: PeerEnv) -> Verdict:
    """The verdict on a peer with ``env`` for a job that ``needs`` (module docstring)."""
    if needs == NO_NEEDS:
        return ANY
    reasons: list[str] = []
    unknown: list[str] = []
    python_unknown = bool(needs.python) and env.python is None
    if needs.python and env.python is not None and not same_release(
            env.python, needs.python, needs.strict):
        reasons.append(f"Python {env.python} (here {needs.python})")
    for dist in needs.dists:
        have = env.versions.get(dist.name)
        if have is None:
            unknown.append(dist.name)
        elif not have:
            reasons.append(f"{dist.name} missing")
        elif not same_release(have, dist.version, needs.strict):
            reasons.append(f"{dist.name} {have} (here {dist.version})")
    fit = Fit.NO if reasons else Fit.UNKNOWN if unknown or python_unknown else Fit.OK
    missing = [t for t in needs.tags if env.tags is None or t not in env.tags]
    if missing and env.tags is not None:
        reasons.append(("no tag " if len(missing) == 1 else "no tags ") + ", ".join(missing))
    settled = not (unknown or python_unknown or (needs.tags and env.tags is None))
    return Verdict(fit, not missing, tuple(reasons), tuple(unknown), settled)
