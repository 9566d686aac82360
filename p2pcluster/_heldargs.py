"""Large values the owner holds outside the stealing machine: task arguments as the caller
gave them (:class:`HeldArgs`), and results pushed to it as they landed (:class:`HeldResults`).

A task's arguments with large arrays are a :class:`~._packed.Packed` value: small CBOR heads
around views of the caller's own array buffers (a non-contiguous array is the one contiguous
copy :mod:`._arrays` makes at submit). The owner keeps that value instead of joining it into
one byte string: the stealing machine knows only its size (the task is queued as a remote
:class:`~._proto.messages.TaskItem`, fetched by whoever runs it), and :class:`HeldArgs` keeps
the value until its task has a result or its job ends. It keeps views of the caller's own
buffers, not copies, with each buffer's sum taken at submit (:func:`checked`; XXH3-64 from
``xxhash``, installed with the ``numpy`` extra, else zlib's CRC-32): a caller that changes or
reuses an array after ``submit`` (a buffer filled anew in a loop, say) would otherwise change
what the task gets, depending on when a peer happened to fetch it. Instead, the bytes a task
gets are checked against the sums, and a task whose array changed fails with
``ArgumentChanged`` (:func:`changed_result`) instead of running on other values:

- the peer that fetches them checks them as they land (:class:`LandingCheck`), against the
  sums that come in each :class:`~._proto.messages.ValueHeader` (:func:`spans`), when it
  offers to check the owner's kind of sum (:func:`checkable`): the owner seals straight
  from the caller's buffers;
- else the owner checks each chunk as it goes out (:func:`~._dataplane.send_value` sums a
  copy of each chunk and seals that copy, so what is sent is what was checked);
- the owner's own workers get a copy in a segment, checked after the copy.

Copying every array at submit would do as well, but it doubled the owner's memory and cost
more CPU than the two sums (a fresh gigabyte costs about 1 s of page faults here, an XXH3
pass 0.1 s).

Arguments of :data:`inline_limit` bytes or less are joined (a small copy), so that they can
ride in a grant as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import trio

from ._errors import ProtocolError
from ._jobs import JobRequest
from ._packed import Packed, Payload
from ._proto.messages import ArraySum, Results, SumKind, TaskItem, TaskResult, TaskStatus
from ._values import encode_error

__all__ = ["ArgumentChanged", "HeldArgs", "HeldResults", "LandingCheck", "Summer",
           "changed_result", "checkable", "checked", "left_to_check", "new_sum", "own_kind",
           "spans", "taken_now", "taken_off_loop", "verify"]


class HeldArgs:
    """Per owned job: task id -> its arguments, held as given (see the module docstring)."""

    def __init__(self) -> None:
        self._jobs: dict[bytes, dict[int, Packed]] = {}

    def admit(self, job: bytes, payloads: Sequence[Payload], inline_limit: int, *,
              check: bool = True) -> list[tuple[int, bytes] | TaskItem]:
        """The tasks to give the machine: ``(id, CBOR)`` for plain or small arguments,
        a remote item (empty payload, their size) for those held here. ``check=False``:
        the buffers are this peer's alone (a daemon's copy of a client's), no sums."""
        held: dict[int, Packed] = {}
        tasks: list[tuple[int, bytes] | TaskItem] = []
        for tid, payload in enumerate(payloads):
            if isinstance(payload, Packed) and len(payload) > inline_limit:
                held[tid] = checked(payload) if check and not payload.sums else payload
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


Buffer = bytes | bytearray | memoryview


class Summer(Protocol):
    """An incremental sum of bytes (an ``xxhash`` hasher's interface)."""

    def update(self, data: Buffer, /) -> None: ...

    def intdigest(self) -> int: ...


class _Crc32:
    """zlib's CRC-32 with the interface of an xxhash hasher (where xxhash is missing)."""

    __slots__ = ("_value",)

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: Buffer) -> None:
        self._value = zlib.crc32(data, self._value)

    def intdigest(self) -> int:
        return self._value


def new_sum() -> Summer:
    """A fresh sum of bytes: XXH3-64 (xxhash, at memory speed) or else zlib's CRC-32."""
    return _summer_class()()


def own_kind() -> SumKind:
    """The kind of sum :func:`new_sum` makes in this process."""
    return SumKind.CRC32 if _summer_class() is _Crc32 else SumKind.XXH3_64


def checkable() -> int:
    """The kinds of sum this process can check, as the bits ``1 << kind`` (a
    :class:`~._proto.messages.FetchArgs` offers them)."""
    return 1 << SumKind.CRC32 | (1 << SumKind.XXH3_64 if own_kind() == SumKind.XXH3_64 else 0)


@functools.cache
def _summer_class() -> Callable[[], Summer]:
    """Looked up once: without xxhash, each failed import would search ``sys.path`` again
    (about 0.1 ms), for every array summed at submit and again as it is sent."""
    try:
        import xxhash
    except ImportError:
        return _Crc32
    return xxhash.xxh3_64


def _summed(data: Buffer) -> int:
    summer = new_sum()
    summer.update(data)
    return summer.intdigest()


def _summer_of(kind: int) -> Summer:
    if kind == SumKind.CRC32:
        return _Crc32()
    if kind == SumKind.XXH3_64 and own_kind() == SumKind.XXH3_64:
        return new_sum()
    raise ProtocolError(f"sums of kind {kind}, which this peer did not offer to check")


class ArgumentChanged(Exception):
    """Buffer ``index`` of a held value no longer matches its sum from submit."""

    def __init__(self, index: int) -> None:
        super().__init__(f"argument array {index} changed after submit")
        self.index = index


def taken_now(payloads: Sequence[Payload], inline_limit: int) -> list[Payload]:
    """Arguments as they are now, for a caller in another thread than the peer's (an
    embedded ``Cluster``, whose job starts a moment later in the trio thread): small packed
    ones joined (a copy), large ones summed. Else an array changed right after ``submit``
    returned could be read, or summed, as changed, before the job even started."""
    taken: list[Payload] = [
        payload.flat() if isinstance(payload, Packed) and len(payload) <= inline_limit
        else payload for payload in payloads]
    large = {index: payload for index, payload in enumerate(taken)
             if isinstance(payload, Packed)}
    for index, value in zip(large, _all_checked(list(large.values())), strict=True):
        taken[index] = value
    return taken


async def taken_off_loop(request: JobRequest, inline_limit: int) -> JobRequest:
    """``request`` with its arguments as :func:`taken_now` takes them, for a caller in the
    trio thread (``Peer.map`` and the like): sums of :data:`OFF_LOOP` bytes or more are
    taken in a thread, since the loop must not wait for them (about 0.13 s per GB here,
    and a peer whose loop answers no probe for ``probe_timeout`` gets suspected); smaller
    ones as the job is admitted."""
    payloads = request.payloads
    if sum(len(payload) for payload in payloads if isinstance(payload, Packed)) < OFF_LOOP:
        return request
    taken = await trio.to_thread.run_sync(taken_now, payloads, inline_limit)
    return dataclasses.replace(request, payloads=taken)


#: Bytes of large arguments from which :func:`taken_off_loop` sums them in a thread.
OFF_LOOP = 16 * 1024 * 1024
#: Bytes of large arguments from which one submit's sums are spread over threads, one per
#: core (at most :data:`SUM_THREADS`): the caller waits for them all the same, but the
#: sums take a core's time per 8 GB or so, which the other cores would spend idle, since
#: the job starts once ``submit`` returns.
PARALLEL_SUMS = 64 * 1024 * 1024
SUM_THREADS = 4


def _all_checked(values: list[Packed]) -> list[Packed]:
    """:func:`checked` of each value (xxhash and zlib let go of the GIL as they sum)."""
    threads = min(len(values), _cores(), SUM_THREADS)
    if threads < 2 or sum(len(value) for value in values) < PARALLEL_SUMS:
        return [checked(value) for value in values]
    with ThreadPoolExecutor(threads, thread_name_prefix="p2pcluster-sums") as pool:
        return list(pool.map(checked, values))


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def checked(value: Packed) -> Packed:
    """``value`` (the same buffers) with each buffer's sum as it is now."""
    return Packed(value.heads, value.buffers, sums=[_summed(b) for b in _flat(value)])


def _flat(value: Packed) -> list[memoryview]:
    """The value's buffers as flat bytes (the pieces between its heads)."""
    return list(value.pieces())[1::2]


def verify(value: Packed, buffers: Sequence[memoryview] | None = None) -> None:
    """Raise :class:`ArgumentChanged` if ``buffers`` (by default the value's own; say a copy
    of them) differ from the value's sums (none: nothing to check)."""
    if not value.sums:
        return
    for index, buffer in enumerate(buffers or _flat(value)):
        if _summed(buffer) != value.sums[index]:
            raise ArgumentChanged(index)


def spans(value: Packed) -> tuple[ArraySum, ...]:
    """Where each buffer of ``value`` lies in its bytes, with its sum from submit: what a
    :class:`~._proto.messages.ValueHeader` carries for the receiver to check."""
    out, offset, layout = [], 0, value.layout
    for index, total in enumerate(value.sums):
        offset += layout[2 * index]
        out.append(ArraySum(offset, layout[2 * index + 1], total))
        offset += layout[2 * index + 1]
    return tuple(out)


def left_to_check(payload: Payload | None, checks: int) -> tuple[int, tuple[ArraySum, ...]]:
    """The sums of held arguments from submit, for the fetching peer to check if it offers
    their kind in ``checks``; else none (the owner checks them as it sends)."""
    if isinstance(payload, Packed) and payload.sums and checks >> own_kind() & 1:
        return own_kind(), spans(payload)
    return SumKind.NONE, ()


class LandingCheck:
    """Checks a value's arrays against the owner's sums from submit (``sums``, of ``kind``)
    as the value lands, a frame at a time, while its bytes are still in the cache: tell it
    :meth:`landed` as bytes come in, then :meth:`verify` once all are in. Raises
    :class:`~p2pcluster.ProtocolError` at once for sums that do not fit ``value`` (out of
    it, out of order, overlapping) or of a kind this process did not offer
    (:func:`checkable`)."""

    def __init__(self, value: memoryview, kind: int, sums: Sequence[ArraySum]) -> None:
        end = 0
        for span in sums:
            if span.offset < end or span.offset + span.size > len(value):
                raise ProtocolError(f"the sum of {span.size} bytes at {span.offset} lies "
                                    f"outside a value of {len(value)}, or before another's")
            end = span.offset + span.size
        self._value, self._kind, self._sums = value, kind, sums
        self._summer = _summer_of(kind)
        self._index = self._done = 0
        self._changed: int | None = None

    def landed(self, filled: int) -> None:
        """The first ``filled`` bytes of the value are in."""
        while self._index < len(self._sums):
            span = self._sums[self._index]
            start, end = max(self._done, span.offset), min(filled, span.offset + span.size)
            if start < end:
                self._summer.update(self._value[start:end])
            if filled < span.offset + span.size:
                break
            if self._changed is None and self._summer.intdigest() != span.sum:
                self._changed = self._index
            self._index += 1
            self._summer = _summer_of(self._kind)
        self._done = filled

    def verify(self) -> None:
        """Raise :class:`ArgumentChanged` for the first array that differs from its sum."""
        self.landed(len(self._value))
        if self._changed is not None:
            raise ArgumentChanged(self._changed)


def changed_result(tid: int, qualname: str, index: int) -> TaskResult:
    """The error result of task ``tid`` whose argument array ``index`` changed."""
    return TaskResult(tid, TaskStatus.ERROR, encode_error("ArgumentChanged", (
        f"argument array {index} of task {tid} ({qualname}) changed after submit, before "
        "all of it reached the peer that runs the task: the task did not run. An array "
        "passed to submit or map is read when a peer takes the task, not copied at submit; "
        "pass a copy (array.copy()) if you refill or change it before the task's result "
        "is in.")))


class HeldResults:
    """Large results go to the job as they are: a pushed one's value landed in memory of its
    own (:func:`~._landing.land_result`), one of this peer's workers as the worker placed it
    in shared memory. The machine gets the result without its payload, and the job takes
    the value from here while the machine's events are carried out."""

    def __init__(self) -> None:
        self._landed: dict[tuple[bytes, int], memoryview | Packed] = {}

    @contextlib.contextmanager
    def holding(self, job: bytes, values: Mapping[int, memoryview | Packed]
                ) -> Iterator[None]:
        """Hold ``values`` (task id -> payload) of ``job``'s results while the machine takes
        them; those no job took (duplicates, a job over) are let go of at the end."""
        keys = [(job, tid) for tid in values]
        self._landed.update(zip(keys, values.values(), strict=True))
        try:
            yield
        finally:
            for key in keys:
                self._landed.pop(key, None)

    def landing(self, results: Results, value: memoryview | None
                ) -> contextlib.AbstractContextManager[None]:
        """Hold ``value``, the payload of the one result of ``results`` (a push)."""
        return self.holding(results.job, {} if value is None else {results.results[0].id: value})

    def payload(self, job: bytes, result: TaskResult) -> bytes | memoryview | Packed:
        """The payload of ``result``: the value held for it, if any."""
        return self._landed.pop((job, result.id), result.payload)
