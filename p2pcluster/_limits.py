"""The process's limit on open files, raised at start so a peer does not run out early.

A peer holds a file descriptor per connection, per worker pipe and per socket; many systems
start processes with a soft limit of 1024 while allowing far more. :func:`raise_open_files`
raises the soft limit to the hard one (what an unprivileged process may do) and says what it
did. The accept loop copes with running out anyway (``_gate.py``).
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass

__all__ = ["OpenFiles", "descriptors_scarce", "open_files_text", "raise_open_files"]

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


def descriptors_scarce() -> bool:
    """Whether this process has half of its soft limit on open files open or more (to hold
    on to a descriptor then is to risk running out: better to copy what it would hold).
    Cheap: the kernel gives a new descriptor the lowest free number, so a probe's number
    is at most how many are open below it."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return False
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    try:
        probe = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return exc.errno == errno.EMFILE
    os.close(probe)
    return soft != resource.RLIM_INFINITY and probe >= soft // 2


def open_files_text() -> str:
    """How many files this process has open, of how many it may (for an error message)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return "the number of open files is unknown"
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    try:
        count = len(os.listdir("/proc/self/fd"))
    except OSError as exc:
        if exc.errno == errno.EMFILE:  # (listing them takes one more)
            return f"all {soft} files it may open are open (ulimit -n)"
        return "the number of open files is unknown"
    return f"{count} files open of at most {soft} (ulimit -n)"
