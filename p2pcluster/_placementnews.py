"""What a submitter says about where its jobs' tasks may go: one stderr line per excluded
peer (once per cluster, however many jobs), and why tasks wait, for the progress line."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from ._jobs import PlacementNote, placement_line
from ._proto.wiretypes import PlacementKind

__all__ = ["PlacementReporter"]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class PlacementReporter:
    """Turns :class:`~._jobs.PlacementNote` news into lines (``write``, by default stderr);
    :attr:`waiting` says why tasks wait ("" while none do). Called in the trio thread; read
    from any."""

    def __init__(self, label: str, write: Callable[[str], None] | None = None) -> None:
        self._label = label
        self._write = write or _stderr
        self._said: set[tuple[int, str, tuple[str, ...]]] = set()
        self._lock = threading.Lock()
        self.waiting = ""

    def note(self, note: PlacementNote) -> None:
        """Say ``note`` unless it was said: each exclusion once; waiting and resuming each
        time the state changes."""
        with self._lock:
            if note.kind in (PlacementKind.WAITING, PlacementKind.RESUMED):
                waiting = (", ".join(note.reasons) or "no live peer can take them"
                           if note.kind == PlacementKind.WAITING else "")
                if waiting == self.waiting:
                    return
                self.waiting = waiting
            else:
                key = (note.kind, note.peer, note.reasons)
                if key in self._said:
                    return
                self._said.add(key)
        line = placement_line(self._label, note)
        if line is not None:
            self._write(line)
