"""What a task prints, kept within bounds: the worker side of a task's stdout and stderr.

A worker process swaps ``sys.stdout`` and ``sys.stderr`` for a :class:`BoundedText` around
each call (:func:`captured`), which passes every write on to the stream it replaced (in a
daemon's worker, the one that labels it for the daemon's log: :mod:`._taskoutput`).
It keeps the head and the tail of what the task writes,
:data:`OUTPUT_LIMIT` characters in all, and counts what it cuts from the middle, so a task
that prints a million lines costs the same as one that prints a thousand. The text travels
back to the peer with the task's outcome, and the peer keeps it in its task ring
(:mod:`._taskring`), where the dashboard's job detail shows it.

Only Python-level writes are caught: output a C extension or a child process writes straight
to file descriptor 1 or 2 goes where the peer's own output goes. Light on purpose (a worker
imports it): the standard library only.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["OUTPUT_LIMIT", "BoundedText", "Captured", "captured"]

#: Characters kept of each of a task's stdout and stderr: half from the head, half from the
#: tail.
OUTPUT_LIMIT = 4096


class BoundedText(io.TextIOBase):
    """A text stream that keeps the first and the last ``limit // 2`` characters written,
    and writes everything on to ``echo`` too, if given."""

    def __init__(self, limit: int = OUTPUT_LIMIT, echo: TextIO | None = None) -> None:
        super().__init__()
        self._echo = echo
        self._half = limit // 2
        self._head = ""
        self._tail = ""
        self._cut = 0  #: characters dropped between head and tail

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self._echo is not None:
            self._echo.write(text)
        room = self._half - len(self._head)
        if room > 0:
            self._head += text[:room]
            rest = text[room:]
        else:
            rest = text
        if rest:
            self._tail += rest
            if len(self._tail) > 2 * self._half:  # trim now and then, not on every write
                self._trim()
        return len(text)

    def flush(self) -> None:
        if self._echo is not None:
            self._echo.flush()

    def _trim(self) -> None:
        excess = len(self._tail) - self._half
        if excess > 0:
            self._cut += excess
            self._tail = self._tail[excess:]

    def getvalue(self) -> str:
        """What was kept; a line in the middle says how much was cut."""
        self._trim()
        if not self._cut:
            return self._head + self._tail
        return f"{self._head}\n[... {self._cut} characters cut ...]\n{self._tail}"


class Captured:
    """The two streams of one call, readable once it has returned."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = BoundedText(echo=out)
        self.err = BoundedText(echo=err)

    def texts(self) -> tuple[str, str]:
        return self.out.getvalue(), self.err.getvalue()


@contextmanager
def captured() -> Iterator[Captured]:
    """Send ``sys.stdout`` and ``sys.stderr`` to bounded buffers for the block's duration,
    as well as to where they went.

    The streams the block found are put back on exit, even if the task replaced them.
    """
    saved = sys.stdout, sys.stderr
    streams = Captured(*saved)
    sys.stdout, sys.stderr = streams.out, streams.err
    try:
        yield streams
    finally:
        sys.stdout, sys.stderr = saved
