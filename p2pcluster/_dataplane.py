"""Data streams: values too large for a work message, moved between peers in sealed chunks.

Two kinds of stream (``docs/protocol.md``, section 3.7):

- **Arguments.** A peer about to run tasks whose arguments stayed at the job's owner sends
  :class:`FetchArgs`; the owner answers each task with a :class:`ValueHeader` and the bytes.
  The fetching peer asks for a batch's arguments on one stream, and checks each size
  against its own ``max_value_size`` *before* it reads a byte of the value: if it is over,
  it closes the stream unread, fails that task (naming both sizes and the setting), and
  asks for the rest on a new stream. It checks the arrays that land against the owner's
  sums from submit (:mod:`._heldargs`), and fails the task of one that changed. A stream
  whose answer went whole waits, idle, for the next batch from that owner
  (:mod:`._idlestreams`); the owner answers requests on it in turn.
- **Results.** A peer whose task returned a large result sends :class:`PushResult` and the
  bytes; the owner checks the size against its limit before reading them, and answers
  :class:`ResultAck`. One value per stream.

A value goes out as frames of at most :data:`CHUNK` bytes, each sealed on its own, so memory
on both sides is the value plus one chunk, and TCP's flow control paces the sender to the
receiver: a slow receiver never makes a sender buffer more than a chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import trio

from ._errors import ProtocolError, too_large
from ._handoff import place
from ._heldargs import (
    ArgumentChanged,
    changed_result,
    checkable,
    left_to_check,
    new_sum,
    verify,
)
from ._idlestreams import IdleStreams
from ._landing import Sums, land, land_result
from ._packed import Packed, Payload
from ._poolshare import off_loop
from ._proto.messages import (
    AckStatus,
    FetchArgs,
    JobSpec,
    Message,
    PushResult,
    ResultAck,
    Results,
    TaskItem,
    TaskResult,
    TaskStatus,
    ValueHeader,
)
from ._proto.workevents import PushValue
from ._runner import Runner
from ._secure import SecureStream
from ._shm import SegmentStock, available
from ._transport import Address
from ._values import encode_error

__all__ = ["CHUNK", "DataPlane", "Fetched", "Owner", "send_value"]

log = logging.getLogger("p2pcluster.peer")
#: Bytes per data frame: large enough that sealing costs little per byte, small enough that
#: a frame in flight costs little memory.
CHUNK = 1024 * 1024
#: Chunk buffers of checked sends, free for the next (a fresh 1 MiB is 256 page faults).
_ASIDE: list[bytearray] = []
_ASIDE_KEPT = 4
#: Attempts to push a large result to its owner, and the pause between them.
PUSH_ATTEMPTS = 3
PUSH_PAUSE = 0.5
#: Seconds an owner waits for the next request on an arguments stream before closing it
#: (longer than a fetching peer keeps it idle: :data:`~._idlestreams.LINGER`).
OWNER_LINGER = 15.0


async def send_value(stream: SecureStream, data: Payload | bytearray | memoryview, *,
                     check: bool = True) -> None:
    """Send ``data`` as consecutive frames of at most :data:`CHUNK` bytes; a packed value
    piece by piece, each array's frames sealed straight from its own buffer. A value with
    sums (held arguments) goes as :func:`_send_checked` sends it, unless ``check`` is
    false: the receiver checks them (it has them in its :class:`ValueHeader`)."""
    if check and isinstance(data, Packed) and data.sums:
        await _send_checked(stream, data)
        return
    pieces = data.pieces() if isinstance(data, Packed) else (memoryview(data),)
    for view in pieces:
        for offset in range(0, len(view), CHUNK):
            await stream.send_payload(view[offset:offset + CHUNK])


async def _send_checked(stream: SecureStream, data: Packed) -> None:
    """Each chunk of an array is copied aside (into memory the cache holds), summed and
    sealed from that copy, so that what goes out is what was checked, whatever the caller
    writes meanwhile. An array whose sum differs from its sum at submit raises
    :class:`ArgumentChanged` before its last chunk goes: the receiver never has it whole."""
    aside = _ASIDE.pop() if _ASIDE else bytearray(CHUNK)
    try:
        await _send_pieces(stream, data, aside)
    finally:
        if len(_ASIDE) < _ASIDE_KEPT:
            _ASIDE.append(aside)


async def _send_pieces(stream: SecureStream, data: Packed, aside: bytearray) -> None:
    for index, piece in enumerate(data.pieces()):
        array, summer = index // 2, new_sum()
        for offset in range(0, len(piece), CHUNK):
            size = min(CHUNK, len(piece) - offset)
            with memoryview(aside)[:size] as chunk:
                chunk[:] = piece[offset:offset + size]
                if index % 2:  # the pieces are head, buffer, head, ...: an array's chunk
                    summer.update(chunk)
                    if offset + size == len(piece) and summer.intdigest() != data.sums[array]:
                        raise ArgumentChanged(array)
                await stream.send_payload(chunk)


class Fetched(NamedTuple):
    """Tasks with their arguments in hand: ``items`` and each one's ``payloads`` (those
    fetched from the owner sit in shared memory, ready for a worker), and error results
    of the tasks whose arguments were over this peer's limit."""

    items: list[TaskItem]
    payloads: list[Payload]
    failed: list[TaskResult]


@dataclass(frozen=True, slots=True)
class Owner:
    """What the data plane needs of the peer's work layer (each call returns at once)."""

    #: The arguments of an unfinished task of a job owned here, or None.
    payload: Callable[[bytes, int], Payload | None]
    #: Whether this peer still runs (owns) the job.
    owns: Callable[[bytes], bool]
    #: Results that arrived for a job owned here; a pushed one's value beside them.
    deliver: Callable[[Results, memoryview | None], None]
    #: The outcome of a push: (job, task, delivered, a small result to send instead).
    pushed: Callable[[bytes, int, bool, TaskResult | None], None]
    #: An argument array of a task of a job owned here changed since submit: fail the task.
    changed: Callable[[bytes, int, int], None]
    #: A live peer's address (None if unknown or gone), and its name.
    address_of: Callable[[bytes], Address | None]
    name_of: Callable[[bytes], str]


class DataPlane:
    """The peer's side of both kinds of data stream, as server and as client."""

    def __init__(self, runner: Runner, owner: Owner, *, me: bytes, name: str,
                 max_value_size: int) -> None:
        self._runner = runner
        self._owner = owner
        self._me = me
        self._name = name
        self._limit = max_value_size
        self.idle = IdleStreams()  #: argument streams between batches; run its serve()

    # --- as the job's owner -------------------------------------------------------------------

    async def serve(self, stream: SecureStream, first: FetchArgs | PushResult,
                    vouched: Callable[[Message], bool]) -> None:
        """A data stream another peer opened (routed here by its first message). An
        arguments stream may carry further ``FetchArgs``, each once the answer to the last
        went whole; it closes after :data:`OWNER_LINGER` seconds without one. A request
        ``vouched`` refuses (not its sender's to make) closes it unanswered."""
        if not vouched(first):
            return
        if isinstance(first, PushResult):
            await self._take_pushed(stream, first)
            return
        request: Message | None = first
        while isinstance(request, FetchArgs) and await self._serve_args(stream, request):
            request = None
            with trio.move_on_after(OWNER_LINGER):
                request = await stream.receive()
            if request is not None and not vouched(request):
                return

    async def _serve_args(self, stream: SecureStream, request: FetchArgs) -> bool:
        """Answer ``request``; False if the stream ended short of a value."""
        for tid in request.ids:
            payload = self._owner.payload(request.job, tid)
            kind, sums = left_to_check(payload, request.checks)
            await stream.send(ValueHeader(tid, len(payload or b""), payload is not None, kind,
                                          sums))
            if payload is not None:
                try:
                    await send_value(stream, payload, check=not sums)
                except ArgumentChanged as exc:  # the stream ends short of the value
                    self._owner.changed(request.job, tid, exc.index)
                    return False
        return True

    async def _take_pushed(self, stream: SecureStream, push: PushResult) -> None:
        if push.size > self._limit:
            reason = too_large(f"the result of task {push.id}", push.size, self._limit,
                               f"peer {self._name}")
            await stream.send(ResultAck(AckStatus.REFUSED, reason))
            return
        if not self._owner.owns(push.job):
            await stream.send(ResultAck(AckStatus.NO_JOB, "the job has ended"))
            return
        value = await land_result(stream, push.size)  # the machine sees no payload:
        result = TaskResult(push.id, push.status, b"")  # the value reaches the job as is
        self._owner.deliver(Results(push.job, push.sender, push.queue, (result,)), value)
        await stream.send(ResultAck(AckStatus.ACCEPTED, ""))

    # --- as the peer that runs the task -------------------------------------------------------

    async def fetch_args(self, spec: JobSpec, items: list[TaskItem],
                         stock: SegmentStock | None = None) -> Fetched:
        """``items`` with their arguments in hand (those that stayed at the owner are
        fetched now, into segments from ``stock``), and error results for those over this
        peer's limit. A task whose arguments the owner no longer has (the job ended) is
        left out."""
        remote = [item for item in items if item.remote]
        if not remote:
            return Fetched(items, [item.payload for item in items], [])
        if spec.owner == self._me:  # our own job's arguments, held here
            fetched, failed = await self._own_args(spec, remote)
        else:
            fetched, failed = await self._fetch(spec, remote, stock)
        ready = [item for item in items if not item.remote or item.id in fetched]
        payloads = [fetched[item.id] if item.remote else item.payload for item in ready]
        return Fetched(ready, payloads, failed)

    async def _own_args(self, spec: JobSpec, items: list[TaskItem]
                        ) -> tuple[dict[int, Payload], list[TaskResult]]:
        """Our own job's held arguments, each copied into a segment for our workers and
        checked after the copy (in a thread, for a large one); a task whose array changed
        since submit fails."""
        fetched: dict[int, Payload] = {}
        failed: list[TaskResult] = []
        for item in items:
            payload = self._owner.payload(spec.job, item.id)
            if not isinstance(payload, Packed) or not payload.sums:
                if payload is not None:
                    fetched[item.id] = payload
                continue
            try:
                fetched[item.id] = await off_loop(partial(_placed_checked, payload),
                                                  len(payload))
            except ArgumentChanged as exc:
                failed.append(changed_result(item.id, spec.qualname, exc.index))
        return fetched, failed

    async def _fetch(self, spec: JobSpec, items: list[TaskItem], stock: SegmentStock | None
                     ) -> tuple[dict[int, Payload], list[TaskResult]]:
        """The tasks' arguments, all asked for on one stream: the one the last batch from
        this owner used, if it waits (:mod:`._idlestreams`), else a new one. A value over
        the limit is refused by closing the stream without reading a byte of it; the tasks
        after it are asked for on a new stream. A stream that breaks costs the task in
        flight, which is left out of the batch (its owner queues it again once this peer's
        reports stop naming it), and the rest are asked for on a new one; a reused stream
        that breaks before its first answer costs nothing (the owner may have just closed
        it)."""
        fetched: dict[int, Payload] = {}
        failed: list[TaskResult] = []
        left = [item.id for item in items]
        while left and (address := self._owner.address_of(spec.owner)) is not None:
            stream = reused = self.idle.take(spec.owner, address)
            answered = False
            try:
                stream = stream or await self._runner.connect(address)
                await stream.send(FetchArgs(spec.job, tuple(left), checkable()))
                while left:
                    usable = await self._receive_arg(stream, spec, left[0], fetched,
                                                     failed, stock=stock)
                    answered = True
                    left.pop(0)
                    if not usable:
                        break
                else:
                    self.idle.give(spec.owner, address, stream)
                    stream = None
            except (OSError, ProtocolError, trio.BrokenResourceError) as exc:
                log.debug("fetching arguments of job %s from %s:%d failed: %s",
                          spec.job.hex()[:8], *address, exc)
                if left and (answered or reused is None):
                    left.pop(0)
            finally:
                if stream is not None:
                    await stream.aclose()
        return fetched, failed

    async def _receive_arg(self, stream: SecureStream, spec: JobSpec, expected: int,
                           fetched: dict[int, Payload], failed: list[TaskResult], *,
                           stock: SegmentStock | None) -> bool:
        """Receive task ``expected``'s arguments into ``fetched`` (or an error result into
        ``failed``); False if that left the stream unusable (a value refused unread)."""
        header = await stream.receive()
        if not isinstance(header, ValueHeader) or header.id != expected:
            got = (f"the one of task {header.id}" if isinstance(header, ValueHeader)
                   else type(header).__name__)
            raise ProtocolError(f"expected the ValueHeader of task {expected}, got {got}")
        if not header.found:
            return True
        if header.size > self._limit:  # the stream closes unread: nothing is buffered
            message = too_large(f"the arguments of {spec.qualname} (task {header.id})",
                                header.size, self._limit, f"peer {self._name}")
            failed.append(TaskResult(header.id, TaskStatus.ERROR,
                                     encode_error("ValueTooLarge", message)))
            return False
        sums = Sums(header.sum_kind, header.sums) if header.sums else None
        try:
            fetched[header.id] = (await land(stream, header.size, stock=stock,
                                             sums=sums)).payload
        except ArgumentChanged as exc:  # the owner's array changed after submit
            failed.append(changed_result(header.id, spec.qualname, exc.index))
        return True

    async def push(self, out: PushValue) -> None:
        """Carry out a :class:`PushValue`: a few attempts, then give up, saying so (the
        owner will run the task again once our reports stop naming it)."""
        why = "its address is unknown"
        for attempt in range(PUSH_ATTEMPTS):
            if attempt:
                await trio.sleep(PUSH_PAUSE)
            address = self._owner.address_of(out.dst)
            if address is None:
                break
            try:
                ack = await self._push_once(address, out)
            except (OSError, ProtocolError, trio.BrokenResourceError) as exc:
                why = str(exc) or type(exc).__name__
                continue
            self._owner.pushed(out.job, out.result.id, ack.status == AckStatus.ACCEPTED,
                               _instead(out, ack))
            return
        log.warning("could not deliver the result of task %d of job %s (%s bytes) to peer %s: "
                    "%s; its owner will run that task again", out.result.id, out.job.hex()[:8],
                    f"{len(out.value):,}", self._owner.name_of(out.dst), why)
        self._owner.pushed(out.job, out.result.id, False, None)

    async def _push_once(self, address: Address, out: PushValue) -> ResultAck:
        result, value = out.result, out.value
        if not isinstance(value, bytes | Packed):
            raise TypeError(f"a result's value is bytes or Packed, not {type(value).__name__}")
        async with await self._runner.connect(address) as stream:
            await stream.send(PushResult(out.job, self._me, out.queue, result.id,
                                         result.status, len(value)))
            await send_value(stream, value)
            ack = await stream.receive()
        if not isinstance(ack, ResultAck):
            raise ProtocolError("the owner closed the stream without acknowledging")
        return ack


def _placed_checked(payload: Packed) -> Packed:
    """``payload`` copied into a segment (where there is shared memory; else as it stands),
    then checked against its sums from submit: :class:`ArgumentChanged` if it changed."""
    placed = place(payload) if available() else payload
    try:
        verify(payload, placed.buffers)
    except ArgumentChanged:
        if placed.segment is not None:
            placed.segment.close()
        raise
    return placed


def _instead(out: PushValue, ack: ResultAck) -> TaskResult | None:
    """A refused result makes its task fail with the owner's reason."""
    if ack.status != AckStatus.REFUSED:
        return None
    return TaskResult(out.result.id, TaskStatus.ERROR, encode_error("ValueTooLarge", ack.reason))
