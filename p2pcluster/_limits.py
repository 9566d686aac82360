"""The process's limit on open files, raised at start so a peer does not run out early.

A peer holds a file descriptor per connection, per worker pipe and per socket; many systems
start processes with a soft limit of 1024 while allowing far more. :func:`raise_open_files`
raises the soft limit to the hard one (what an unprivileged process may do) and says what it
did. The accept loop copes with running out anyway (``_gate.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

__all__ = ["OpenFiles", "raise_open_files"]

log = logging.getLogger("p2pcluster.limits")


@dataclass(frozen=True, slots=True)
class OpenFiles:
    """The soft limit on open files before and after :func:`raise_open_files`, and the
    hard one (-1: unlimited). ``before == after`` when there was nothing to raise."""

    before: int
    after: int
    hard: int


def raise_open_files() -> OpenFiles | None:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; None where there is no such
    limit (not a Unix). Never fails: a refusal is logged and the limit left as it was."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        # Linux refuses an unlimited soft limit for files; 2**20 is its usual ceiling.
        target = max(soft, 2**20) if soft != resource.RLIM_INFINITY else soft
    else:
        target = hard
    if soft == target:
        return OpenFiles(soft, soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.debug("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
        return OpenFiles(soft, soft, hard)
    log.debug("raised the open-files limit from %d to %d", soft, target)
    return OpenFiles(soft, target, hard)
