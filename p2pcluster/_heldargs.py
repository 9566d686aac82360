"""Large values the owner holds outside the stealing machine: task arguments as the caller
gave them (:class:`HeldArgs`), and results pushed to it as they landed (:class:`HeldResults`).

A task's arguments with large arrays are a :class:`~._packed.Packed` value: small CBOR heads
around views of the caller's own array buffers (a non-contiguous array is the one contiguous
copy :mod:`._arrays` makes at submit). The owner keeps that value instead of joining it into
one byte string: the stealing machine knows only its size (the task is queued as a remote
:class:`~._proto.messages.TaskItem`, fetched by whoever runs it), and :class:`HeldArgs` keeps
the value until its task has a result or its job ends. What it keeps is a copy of each
array's bytes, taken at submit (:func:`captured`): a caller that changes or reuses its array
after ``submit`` (a buffer filled anew in a loop, say) must not change what a task gets,
which would otherwise depend on when a peer happened to fetch it. A peer that fetches the
arguments gets those bytes sealed straight from the copy; the owner's own workers get them
placed into a segment when they run the task.

Arguments of :data:`inline_limit` bytes or less are joined (a small copy), so that they can
ride in a grant as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence

from ._packed import Packed, Payload
from ._proto.messages import Results, TaskItem, TaskResult

__all__ = ["HeldArgs", "HeldResults", "captured"]


class HeldArgs:
    """Per owned job: task id -> its arguments, held as given (see the module docstring)."""

    def __init__(self) -> None:
        self._jobs: dict[bytes, dict[int, Packed]] = {}

    def admit(self, job: bytes, payloads: Sequence[Payload], inline_limit: int
              ) -> list[tuple[int, bytes] | TaskItem]:
        """The tasks to give the machine: ``(id, CBOR)`` for plain or small arguments,
        a remote item (empty payload, their size) for those held here."""
        held: dict[int, Packed] = {}
        tasks: list[tuple[int, bytes] | TaskItem] = []
        for tid, payload in enumerate(payloads):
            if isinstance(payload, Packed) and len(payload) > inline_limit:
                held[tid] = captured(payload)
                tasks.append(TaskItem(tid, 0, b"", len(payload)))
            else:
                tasks.append((tid, payload if isinstance(payload, bytes) else payload.flat()))
        if held:
            self._jobs[job] = held
        return tasks

    def get(self, job: bytes, tid: int) -> Packed | None:
        """The held arguments of task ``tid`` of ``job``, or None."""
        held = self._jobs.get(job)
        return held.get(tid) if held else None

    def serve(self, inline: Callable[[bytes, int], bytes | None], job: bytes, tid: int
              ) -> Payload | None:
        """The arguments of unfinished task ``tid`` (``inline`` gives the machine's: None
        once the task has a result), held here or not."""
        args = inline(job, tid)
        return None if args is None else self.get(job, tid) or args

    def release(self, job: bytes, tids: Iterable[int]) -> None:
        """Those tasks have results: let go of their arguments."""
        held = self._jobs.get(job)
        if held:
            for tid in tids:
                held.pop(tid, None)

    def drop(self, job: bytes) -> None:
        """The job is over."""
        self._jobs.pop(job, None)

    def __len__(self) -> int:
        """Tasks whose arguments are held, over every job."""
        return sum(map(len, self._jobs.values()))


def captured(value: Packed) -> Packed:
    """``value`` with its buffers copied: the arrays as they are now, whatever their owner
    does with them later. (A non-contiguous view's buffer is a copy already, and is copied
    once more: a small cost on a rare path, against telling copies from views.)"""
    return Packed(value.heads, [memoryview(bytes(buffer)) for buffer in value.buffers])


class HeldResults:
    """A pushed result's value, landed in memory of its own (:func:`~._landing.land_result`),
    goes to the job as it is: the machine gets the result without its payload, and the job
    takes the value from here while the machine's events are carried out."""

    def __init__(self) -> None:
        self._landed: dict[tuple[bytes, int], memoryview] = {}

    @contextlib.contextmanager
    def landing(self, results: Results, value: memoryview | None) -> Iterator[None]:
        """Hold ``value``, the payload of the one result of ``results``, while the machine
        takes them (a duplicate's value is let go of at the end)."""
        key = (results.job, results.results[0].id) if value is not None else None
        if key is not None and value is not None:
            self._landed[key] = value
        try:
            yield
        finally:
            if key is not None:
                self._landed.pop(key, None)

    def payload(self, job: bytes, result: TaskResult) -> bytes | memoryview:
        """The payload of ``result``: the value landed for it, if any."""
        return self._landed.pop((job, result.id), result.payload)
