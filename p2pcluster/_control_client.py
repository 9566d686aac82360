"""The client's end of the control protocol: one connection to the daemon, any number of jobs.

:func:`open_control_client` connects (after :func:`~._control.connect` has checked whom it
talks to), greets the daemon, and runs two tasks: a writer that sends what :meth:`submit`,
:meth:`cancel` and :meth:`request` queue (a large value as it is at the call: copied into a
sealed memfd that the daemon maps, where both ends have memfds, else joined and sent chunk
by chunk as the socket takes them), and a reader that routes every answer to its job's
:class:`JobSink` or to the waiting request. When the connection breaks, every job still
running gets :meth:`JobSink.ended` with the error, and every later call raises it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import cbor2
import trio

from ._control import FramedStream, connect
from ._controlblobs import SEGMENT_SIZE, Incoming, in_memory
from ._errors import ClusterError, P2PClusterError, ProtocolError, single_errors, too_large
from ._jobs import JobRequest, JobResult, PlacementNote
from ._outbox import Outbox, Part, value_part
from ._packed import Payload, as_bytes
from ._proto.codec import decode_cbor
from ._proto.control import (
    CODEC,
    CONTROL_VERSION,
    INLINE,
    Accepted,
    Args,
    Blob,
    BlobRef,
    Cancel,
    Chunk,
    ControlMessage,
    Ended,
    EndReason,
    Inline,
    Placement,
    Progress,
    Ref,
    Reply,
    Request,
    Results,
    SegmentBlob,
    Share,
    Submit,
    Value,
    hello,
)
from ._proto.wiretypes import TaskStatus
from ._shm import available as shm_available

__all__ = ["ControlClient", "DaemonError", "JobSink", "open_control_client", "request_daemon"]

log = logging.getLogger("p2pcluster.control")
#: Bytes of inline arguments per Args frame (and per write).
ARGS_BYTES = 1024 * 1024
#: Arguments per Args frame at most.
ARGS_COUNT = 4096


class DaemonError(P2PClusterError):
    """The daemon refused a request, or the connection to it broke."""


class JobSink(Protocol):
    """Where a job's news goes; called in the client's trio task, never blocking."""

    def accepted(self, job_id: bytes) -> None: ...
    def results(self, batch: list[JobResult]) -> None: ...
    def progress(self, progress: Progress) -> None: ...
    def ended(self, reason: EndReason, error: str) -> None: ...
    def broken(self, error: ClusterError) -> None: ...


class ControlClient:
    """A connection to the daemon. Get one with :func:`open_control_client`."""

    def __init__(self, stream: FramedStream, welcome: dict[str, Any], path: Path,
                 max_value_size: int) -> None:
        self._stream = stream
        self.welcome = welcome
        self.path = path
        self.max_value_size = max_value_size
        self._outbox = Outbox(stream)
        self._lock = threading.Lock()  #: callers may submit from any thread
        self._jobs: dict[int, JobSink] = {}
        self._requests: dict[int, trio.MemorySendChannel[Reply]] = {}
        self._blobs: dict[int, Incoming] = {}
        self._sent_bundles: set[str] = set()  #: the daemon keeps these for the connection
        self._next = {"job": 0, "req": 0, "blob": 0}
        #: Large values go in shared memory (the daemon takes them so; we have memfds).
        self._segments = bool(welcome.get("segments")) and shm_available()
        self._broken: BaseException | None = None
        #: Called (in the trio run, never blocking) with news of where a job's tasks may go.
        self.on_placement: Callable[[PlacementNote], None] | None = None

    @property
    def peer(self) -> str:
        """The name of the daemon's peer."""
        return str(self.welcome.get("peer", "?"))

    @property
    def limit(self) -> int:
        """The largest value both ends accept."""
        return min(self.max_value_size, int(self.welcome.get("max_value_size", 0)) or 2**62)

    def _id(self, kind: str) -> int:
        """A fresh number (call with the lock held)."""
        self._next[kind] += 1
        return self._next[kind]

    def _check(self) -> None:
        broken = self.broken
        if broken is not None:
            raise broken

    # --- calls (submit and cancel from any thread; request in the trio run) ------------------

    def submit(self, request: JobRequest, sink: JobSink, label: str) -> int:
        """Send a job; its news goes to ``sink`` (called in the trio run). Returns the job's
        number. Safe from any thread, and never blocks: a small job is written at once, from
        the calling thread, when nothing else waits to go out."""
        with self._lock:
            self._check()
            job = self._id("job")
            self._jobs[job] = sink
            self._outbox.put(self._job_parts(job, request, label))
        return job

    def cancel(self, job: int) -> None:
        """Cancel job ``job`` (from any thread)."""
        with self._lock:
            if job in self._jobs and self._broken is None:
                self._outbox.put([CODEC.encode(Cancel(job))])

    async def request(self, op: str, *, value: Payload | None = None, **body: Any
                      ) -> dict[str, Any]:
        """Run operation ``op`` at the daemon; its answer, or :class:`DaemonError`. With
        ``value``, ``op`` is "share": the daemon keeps that value for this connection."""
        send, receive = trio.open_memory_channel[Reply](1)
        blob, ready = 0, None
        if value is not None and self._segments and len(value) >= SEGMENT_SIZE:
            with self._lock:
                blob = self._id("blob")  # its copy in a thread: it may take a while
            ready = await trio.to_thread.run_sync(in_memory, blob, value)
        with self._lock:
            self._check()
            req = self._id("req")
            self._requests[req] = send
            parts: list[Part] = [] if ready is None else [ready]
            if value is None:
                parts.append(CODEC.encode(Request(req, op, cbor2.dumps(body))))
            else:
                shared = (BlobRef(blob, len(value)) if ready is not None
                          else self._value(value, parts))
                parts.append(CODEC.encode(Share(req, shared)))
            self._outbox.put(parts)
        try:
            reply = await receive.receive()
        except trio.EndOfChannel:
            self._check()
            raise DaemonError("the daemon closed the connection") from None
        finally:
            self._requests.pop(req, None)
        if not reply.ok:
            raise DaemonError(reply.error)
        answer = decode_cbor(reply.body) if reply.body else {}
        if not isinstance(answer, dict):
            raise ProtocolError(f"the answer to {op!r} is not a map")
        return answer

    # --- the writer ---------------------------------------------------------------------------

    def _job_parts(self, job: int, request: JobRequest, label: str) -> list[Part]:
        """The frames of a job, in order: new bundles, the Submit (with as many small
        arguments as fit one frame: a one-task job is one frame), then the rest of the
        arguments. A large value is copied now into a sealed memfd, or joined now and
        encoded a chunk at a time as the socket takes it (:meth:`_value`). (Called with the
        lock held: it numbers blobs.)"""
        ref = request.ref
        parts: list[Part] = []
        new = [b for d, b in request.bundles.items() if d not in self._sent_bundles]
        self._sent_bundles.update(b.digest for b in new)
        bundles = tuple(self._value(b.encode(), parts) for b in new)
        payloads = request.payloads  # each copied or joined as it is now (the daemon holds it)
        first = _inline_prefix(payloads)
        parts.append(CODEC.encode(Submit(
            job, Ref(ref.module, ref.qualname, ref.job, ref.includes), bundles, len(payloads),
            request.timeout, request.chunksize, label[:4096],
            tuple(Inline(as_bytes(p)) for p in payloads[:first]), request.needs)))
        if first < len(payloads):
            self._args_parts(job, payloads, first, parts)
        return parts

    def _args_parts(self, job: int, payloads: Sequence[Payload], start: int,
                    parts: list[Part]) -> None:
        first, size = start, 0
        values: list[Value] = []
        for index in range(start, len(payloads)):
            payload = payloads[index]
            if len(payload) > INLINE or (values and (size + len(payload) > ARGS_BYTES
                                                     or len(values) >= ARGS_COUNT)):
                if values:
                    parts.append(CODEC.encode(Args(job, first, tuple(values))))
                first, values, size = index, [], 0
            values.append(self._value(payload, parts))
            size += min(len(payload), INLINE)
        if values:
            parts.append(CODEC.encode(Args(job, first, tuple(values))))

    def _value(self, data: Payload, parts: list[Part]) -> Value:
        """``data`` as it is now, inline, in shared memory or in chunks to come."""
        if len(data) <= INLINE:
            return Inline(as_bytes(data))
        blob = self._id("blob")
        parts.append(value_part(blob, data, segments=self._segments))
        return BlobRef(blob, len(data))

    async def serve(self) -> None:
        """Run the reader and the writer until cancelled. A broken connection fails the
        jobs (:meth:`JobSink.broken`) and later calls, never this task."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._guarded, self._reader)
            nursery.start_soon(self._guarded, self._write)

    async def _guarded(self, task: Callable[[], Awaitable[None]]) -> None:
        try:
            await task()
        except (OSError, ProtocolError, DaemonError, trio.BrokenResourceError,
                trio.ClosedResourceError) as exc:
            if self._broken is None:
                log.debug("control connection to %s ended: %s", self.path, exc)
                self._fail(exc)

    async def _write(self) -> None:
        await self._outbox.serve(self._lock)

    # --- the reader ---------------------------------------------------------------------------

    async def _reader(self) -> None:
        while (message := await self._stream.receive_message()) is not None:
            self._dispatch(message)
        raise DaemonError("the daemon closed the connection")

    def _dispatch(self, message: ControlMessage) -> None:
        if isinstance(message, Blob | SegmentBlob):
            refused = ("" if message.size <= self.max_value_size else
                       too_large("a result", message.size, self.max_value_size, "this client"))
            self._blobs[message.blob] = Incoming(message.size, refused) if isinstance(
                message, Blob) else Incoming.mapped(message, self._stream.take_fd(), refused)
        elif isinstance(message, Chunk):
            incoming = self._blobs.get(message.blob)
            if incoming is None:
                raise ProtocolError(f"a chunk of blob {message.blob}, never announced")
            incoming.add(message.data)
        elif isinstance(message, Reply):
            waiting = self._requests.pop(message.req, None)
            if waiting is not None:
                waiting.send_nowait(message)
        elif isinstance(message, Placement):
            if self.on_placement is not None and message.job in self._jobs:
                self.on_placement(PlacementNote(message.kind, message.peer, message.reasons))
        else:
            self._job_news(message)

    def _job_news(self, message: ControlMessage) -> None:
        sink = self._jobs.get(getattr(message, "job", -1))
        if sink is None:
            return
        if isinstance(message, Accepted):
            sink.accepted(message.job_id)
        elif isinstance(message, Results):
            sink.results([self._result(item.index, item.status, item.value, item.peer)
                          for item in message.items])
        elif isinstance(message, Progress):
            sink.progress(message)
        elif isinstance(message, Ended):
            del self._jobs[message.job]
            sink.ended(EndReason(message.reason), message.error)

    def _result(self, index: int, status: int, value: Value, peer: str) -> JobResult:
        if isinstance(value, Inline):
            return JobResult(index, status, value.data, peer)
        incoming = self._blobs.pop(value.blob, None)
        if incoming is None or incoming.filled != incoming.size:
            raise ProtocolError(f"a result refers to blob {value.blob}, not received whole")
        if incoming.refused:
            from ._values import encode_error

            return JobResult(index, TaskStatus.ERROR,
                             encode_error("ValueTooLarge", incoming.refused), peer)
        return JobResult(index, status, incoming.data, peer)  # (decoded in place)

    @property
    def broken(self) -> ClusterError | None:
        """Why the connection is gone (None while it works)."""
        if self._broken is None:
            return None
        error = ClusterError(f"the connection to the daemon at {self.path} broke: "
                             f"{self._broken}")
        error.__cause__ = self._broken
        return error

    def _fail(self, exc: BaseException) -> None:
        """The connection is gone: every job and request learns why."""
        with self._lock:
            self._broken = exc
            broken = self.broken
            assert broken is not None
            jobs, self._jobs = self._jobs, {}
            waiting, self._requests = list(self._requests.values()), {}
            self._outbox.close()
        for sink in jobs.values():
            sink.broken(broken)
        for channel in waiting:
            channel.close()


def _inline_prefix(payloads: Sequence[Payload]) -> int:
    """How many arguments from the start ride in the Submit itself: small ones, up to a
    frame's worth."""
    size = 0
    for index, payload in enumerate(payloads):
        size += len(payload)
        if len(payload) > INLINE or size > ARGS_BYTES or index >= ARGS_COUNT:
            return index
    return len(payloads)


def describe_client(argv: Sequence[str] | None = None) -> str:
    """How the daemon's logs name this client: the command and the process id."""
    import sys

    args = list(sys.argv if argv is None else argv)
    name = Path(args[0]).name if args else "python"
    if name == "__main__.py" or name.startswith("p2pcluster"):
        name = "p2pcluster " + " ".join(args[1:3])
    return f"{name.strip()} (pid {os.getpid()})"


@asynccontextmanager
async def open_control_client(path: Path, *, max_value_size: int, client: str | None = None
                              ) -> AsyncIterator[ControlClient]:
    """Connect to the daemon at ``path`` for the duration of the block.

    Raises :class:`~._control.NoDaemon`, :class:`~._control.UntrustedDaemon`, or
    :class:`DaemonError` if the daemon refuses (another version, say).
    """
    stream = await connect(path, fds=shm_available())
    try:
        await stream.send_map(hello(client or describe_client(), os.getpid(), max_value_size,
                                    segments=shm_available()))
        welcome = await stream.receive_map()
        _check_welcome(path, welcome)
        assert welcome is not None
        client_ = ControlClient(stream, welcome, path, max_value_size)
        with single_errors():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client_.serve)
                try:
                    yield client_
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


def _check_welcome(path: Path, welcome: dict[str, Any] | None) -> None:
    if welcome is None:
        raise DaemonError(f"the daemon at {path} closed the connection without a word")
    if not welcome.get("ok"):
        error = str(welcome.get("error", "no reason given"))
        if "unknown operation 'hello'" in error:
            error = ("it speaks an older control protocol than this client "
                     f"(version {CONTROL_VERSION}); restart it with this version's "
                     "`p2pcluster join`")
        raise DaemonError(f"the daemon at {path} refused this client: {error}")


async def request_daemon(path: Path, op: str, *, timeout: float = 10.0,
                         **body: Any) -> dict[str, Any]:
    """Connect, run one request, and disconnect (the commands `members`, `leave`...)."""
    with trio.fail_after(timeout):
        async with open_control_client(path, max_value_size=2**31) as client:
            return await client.request(op, **body)
