"""What tasks print, in the daemon's log: each line labelled with its job and task.

A worker started with output capture (a daemon's) has its stdout and stderr on pipes that its
pool reads. Before a task writes anything, the worker writes a *marker* on the stream, a
line that names the task; the pool's reader (:mod:`._tasklog`) logs every following line
under that label (logger ``p2pcluster.task``, level INFO), until the next marker. Markers
are written only when a task writes, so a task that prints nothing costs nothing, and a
batch of a thousand tiny tasks wakes the peer no more often than before.

Output that bypasses ``sys.stdout`` (C code, a child process) lands under the last label
the stream showed: usually its own task, at worst the previous one. A task's unfinished last
line is ended when the task ends. After a batch, the label is ``worker``.

Every line is made printable before it is logged (:func:`printable`): a task cannot forge
log lines with a newline or move the terminal's cursor with an escape sequence. A line
longer than :data:`MAX_LINE` bytes is logged in pieces of that size.

This module is the worker's side (:class:`MarkedStream`, :func:`set_label`) and imports
nothing heavy: it runs in the worker processes (:mod:`._worker_main`). The pool's side is
:mod:`._tasklog`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any, NamedTuple, TextIO

__all__ = ["IDLE", "MARK", "MAX_LINE", "MarkedStream", "TaskLabels", "printable",
           "set_label"]

#: A marker line starts with these bytes; the rest of the line is the label.
MARK = b"\x00p2pcluster-task "
#: Bytes of one logged line at most (a longer one is cut in pieces).
MAX_LINE = 4096
#: The label of output between tasks.
IDLE = "worker"



class TaskLabels(NamedTuple):
    """The labels of a batch's tasks: its job (the short hex id) and the task ids, in order.
    Sent as it is, and formatted only when a task writes: a batch of tiny tasks costs a few
    bytes per task."""

    job: str
    tasks: Sequence[int]

    def one(self, i: int) -> TaskLabels:
        """The labels of the batch of task ``i`` alone."""
        return TaskLabels(self.job, [self.tasks[i]])


_label: list[tuple[str, int]] = [("", 0)]  # this process's current (job, task); "": none


def set_label(job: str = "", task: int = 0) -> None:
    """What whatever this worker process writes next belongs to (worker side): task ``task``
    of job ``job``, or no task (the default)."""
    _label[0] = (job, task)


def _text(label: tuple[str, int]) -> str:
    return f"job {label[0]} task {label[1]}" if label[0] else IDLE


def printable(text: str, limit: int = MAX_LINE) -> str:
    """``text`` with every non-printable character escaped (``\\n``, ``\\x1b``...),
    at most ``limit`` characters."""
    if text.isprintable():
        return text[:limit]
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)[:limit]


class MarkedStream(io.TextIOBase):
    """``sys.stdout`` or ``sys.stderr`` in a worker: writes through ``stream``, line
    buffered, with a marker line first whenever the label has changed."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._fd = stream.fileno()
        self._marked = ("", 0)
        self._open_line = False  # the last write did not end its line

    def write(self, s: str) -> int:
        label = _label[0]
        if self._marked != label:
            self._stream.flush()
            self._marked = label
            os.write(self._fd, MARK + _text(label).encode("utf-8", "replace") + b"\n")
        n = self._stream.write(s)
        if s:
            self._open_line = not s.endswith("\n")
        if "\n" in s:
            self._stream.flush()
        return n

    def end_line(self) -> None:
        """End the task's unfinished line, if any, and flush: a task's output ends with it."""
        if self._open_line:
            self.write("\n")
        self._stream.flush()

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._stream.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self._stream.errors

    @property
    def buffer(self) -> Any:
        return self._stream.buffer
