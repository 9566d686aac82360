"""The pool's side of task output: each line a worker's task printed, logged under its job
and task (the format is in :mod:`._taskoutput`)."""

from __future__ import annotations

import logging
from typing import Protocol

import trio

from ._taskoutput import IDLE, MARK, MAX_LINE, printable

__all__ = ["log_task_output"]

log = logging.getLogger("p2pcluster.task")


class _Receiver(Protocol):
    async def receive_some(self, max_bytes: int | None = ..., /) -> bytes | bytearray: ...


async def log_task_output(stream: _Receiver, name: str, worker: int) -> None:
    """Log each line of a worker's ``name`` stream (stdout or stderr) under the label of
    the task that wrote it, until the stream ends (pool side)."""
    label = IDLE
    pending = b""
    while True:
        try:
            chunk = await stream.receive_some(1 << 16)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            break
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        while len(pending) > MAX_LINE:
            lines.append(pending[:MAX_LINE])
            pending = pending[MAX_LINE:]
        for line in lines:
            text, mark, new_label = line.partition(MARK)
            _log_text(label, name, worker, text)  # may precede a marker: a child's output
            if mark:
                label = printable(new_label.decode("utf-8", "replace"), 200)
    _log_text(label, name, worker, pending)


def _log_text(label: str, name: str, worker: int, text: bytes) -> None:
    """Log one line of output, in pieces of :data:`MAX_LINE` bytes, made printable."""
    for start in range(0, len(text), MAX_LINE):
        piece = text[start:start + MAX_LINE].decode("utf-8", "replace")
        log.info("%s %s (worker %d): %s", label, name, worker, printable(piece, 4 * MAX_LINE))
