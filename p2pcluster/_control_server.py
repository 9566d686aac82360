"""The daemon's end of the control protocol: one :class:`ControlSession` per client connection.

A session reads the client's frames in order: blobs (in chunks, or whole in shared memory;
checked against the daemon's ``max_value_size`` when announced, before a byte is stored or
mapped: :mod:`._controlblobs`), jobs (a :class:`Submit`, then
the arguments), cancellations and requests. It owns each job it starts on the daemon's peer,
and forwards the results as they arrive, in one task that writes only as fast as the client
reads: results wait in the session (as the peer delivered them, never copied) until the
socket takes them, and the peer keeps running work meanwhile. When the client goes away, in
any manner, the session cancels its jobs at once.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import cbor2
import trio

from ._bundles import CodeBundle
from ._control import FramedStream
from ._controlblobs import SEGMENT_SIZE, Blobs, Refused, in_memory
from ._errors import P2PClusterError, ProtocolError, ValueTooLarge
from ._jobs import JobRequest, JobResult, PlacementNote
from ._packed import Packed, Payload, as_bytes, pieces_of
from ._peer import Job, Peer
from ._proto.codec import decode_cbor
from ._proto.control import (
    CHUNK,
    CODEC,
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
    PeerCount,
    Placement,
    Progress,
    Reply,
    Request,
    ResultItem,
    Results,
    SegmentBlob,
    Share,
    Submit,
)
from ._refs import FunctionRef
from ._shm import RESIZING

__all__ = ["Admin", "ControlSession"]

log = logging.getLogger("p2pcluster")
#: Bytes of inline results per Results frame.
RESULTS_BYTES = 1024 * 1024
#: Seconds between two Progress messages of one job (and before the first).
PROGRESS_INTERVAL = 1.0

#: The daemon's handler of requests: operation, arguments -> answer (raises P2PClusterError).
Admin = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class _Pending:
    """A submitted job whose arguments are still arriving."""

    submit: Submit
    bundles: dict[str, CodeBundle]
    payloads: list[Payload] = field(default_factory=list)
    error: str = ""


@dataclass
class _Running:
    """A job the session owns, and its results not yet sent."""

    key: int
    job: Job
    label: str
    results: deque[JobResult] = field(default_factory=deque)
    accepted_sent: bool = False
    finished: bool = False
    queued: bool = False  #: in the session's ready queue
    progress_sent: float = -math.inf
    progress_done: int = -1


class ControlSession:
    """One client's connection: see the module docstring."""

    def __init__(self, stream: FramedStream, peer: Peer, admin: Admin, client: str,
                 max_value_size: int, *, segments: bool = False) -> None:
        self._stream = stream
        self._peer = peer
        self._admin = admin
        self.client = client
        self.limit = max_value_size
        self._segments = segments  #: the client takes large results in shared memory
        self._blobs = Blobs(max_value_size, f"peer {peer.name}")
        self._pending: dict[int, _Pending] = {}
        self._bundles: dict[str, CodeBundle] = {}  #: every bundle this client sent
        self._running: dict[int, _Running] = {}
        self._ready: deque[int] = deque()
        self._wake = trio.Event()
        self._next_blob = 0
        self._out: list[bytes] = []  #: encoded frames the forwarder has yet to write
        self._out_bytes = 0

    async def serve(self) -> None:
        """Serve the client until it closes the connection; then cancel what is left."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._forward)
                nursery.start_soon(self._report_progress)
                while (message := await self._stream.receive_message()) is not None:
                    await self._dispatch(message, nursery)
                nursery.cancel_scope.cancel()
        finally:
            self._abandon()

    def _abandon(self) -> None:
        for running in list(self._running.values()):
            if not running.job.finished.is_set():
                log.info("job %s (%s) cancelled: its client %s went away",
                         running.job.id.hex()[:8], running.label, self.client)
                running.job.cancel()
        self._running.clear()
        self._pending.clear()
        self._blobs.clear()
        self._peer.release_shared(self)

    # --- reading ------------------------------------------------------------------------------

    async def _dispatch(self, message: ControlMessage, nursery: trio.Nursery) -> None:
        if isinstance(message, Blob):
            self._blobs.announce(message)
        elif isinstance(message, Chunk):
            self._blobs.chunk(message)
        elif isinstance(message, SegmentBlob):
            await self._blobs.adopt(message, self._stream.take_fd())
        elif isinstance(message, Submit):
            await self._submit(message)
        elif isinstance(message, Args):
            await self._args(message)
        elif isinstance(message, Cancel):
            await self._cancel(message.job)
        elif isinstance(message, Request):
            nursery.start_soon(self._request, message)
        elif isinstance(message, Share):
            await self._share(message)
        else:
            raise ProtocolError(f"a client does not send {type(message).__name__}")

    async def _submit(self, submit: Submit) -> None:
        if submit.job in self._pending or submit.job in self._running:
            raise ProtocolError(f"job number {submit.job} is already in use")
        pending = _Pending(submit, self._bundles)
        try:
            for value in submit.bundles:
                bundle = CodeBundle.decode(as_bytes(self._blobs.value(value)))
                self._bundles[bundle.digest] = bundle
        except (Refused, ProtocolError) as exc:
            pending.error = f"bad job: {exc}"
        self._pending[submit.job] = pending
        await self._args(Args(submit.job, 0, submit.values))

    async def _args(self, args: Args) -> None:
        pending = self._pending.get(args.job)
        if pending is None:
            return  # cancelled meanwhile
        if args.first != len(pending.payloads):
            raise ProtocolError(f"arguments of job {args.job} out of order")
        for value in args.values:
            try:
                pending.payloads.append(self._blobs.value(value))
            except Refused as exc:
                pending.error = pending.error or str(exc)
                pending.payloads.append(b"")
        if len(pending.payloads) > pending.submit.tasks:
            raise ProtocolError(f"job {args.job} got more arguments than tasks")
        if len(pending.payloads) == pending.submit.tasks:
            del self._pending[args.job]
            await self._start(pending)

    async def _start(self, pending: _Pending) -> None:
        submit = pending.submit
        try:
            request = _job_request(submit, pending)
            job = self._peer.submit(request, max_value_size=self.limit, private=True)
        except (P2PClusterError, ValueError) as exc:
            await self._stream.send_message(Ended(submit.job, EndReason.FAILED, str(exc)))
            return
        running = _Running(submit.job, job, submit.label or submit.ref.qualname)
        job.label = running.label
        self._running[submit.job] = running
        job.listeners.append(lambda batch: self._delivered(running, batch))
        job.watch_placement(lambda note: self._placement(running, note))
        job.watch_finish(lambda: self._finished(running))
        log.info("job %s (%s, %d task(s)) from %s started", job.id.hex()[:8], running.label,
                 job.total, self.client)
        # Accepted goes out with the first results (one write, not two), or within a
        # second with the first Progress, whichever comes first.

    async def _cancel(self, key: int) -> None:
        if self._pending.pop(key, None) is not None:
            await self._stream.send_message(Ended(key, EndReason.CANCELLED, ""))
            return
        running = self._running.get(key)
        if running is not None:
            running.job.cancel()

    async def _request(self, request: Request) -> None:
        try:
            body = decode_cbor(request.body) if request.body else {}
            if not isinstance(body, dict):
                raise ProtocolError("a request's body is a map")
            answer = await self._admin(request.op, body)
            reply = Reply(request.req, True, cbor2.dumps(answer), "")
        except P2PClusterError as exc:
            reply = Reply(request.req, False, b"", str(exc))
        await self._stream.send_message(reply)

    async def _share(self, share: Share) -> None:
        """Keep a value for this client's tasks (see :mod:`._sharing`)."""
        try:
            handle = await self._peer.share_payload(self._blobs.value(share.value), holder=self)
            reply = Reply(share.req, True, cbor2.dumps({"digest": handle.digest,
                                                       "size": handle.size}), "")
        except (Refused, ValueTooLarge) as exc:
            reply = Reply(share.req, False, b"", str(exc))
        await self._stream.send_message(reply)

    # --- forwarding ---------------------------------------------------------------------------

    def _delivered(self, running: _Running, batch: list[JobResult]) -> None:
        running.results.extend(batch)
        self._mark(running)

    def _finished(self, running: _Running) -> None:
        running.finished = True
        self._mark(running)

    def _placement(self, running: _Running, note: PlacementNote) -> None:
        self._queue_out(Placement(running.key, note.kind, note.peer[:255],
                                  tuple(r[:4096] for r in note.reasons[:256])))
        self._mark(running)

    def _mark(self, running: _Running) -> None:
        if not running.queued:
            running.queued = True
            self._ready.append(running.key)
            self._wake.set()

    async def _forward(self) -> None:
        """Send the news of every job marked ready, in as few writes as the bytes allow."""
        while True:
            while not self._ready:
                await self._wake.wait()
                self._wake = trio.Event()
            while self._ready:
                running = self._running.get(self._ready.popleft())
                if running is not None:
                    running.queued = False
                    await self._news(running)
            await self._flush_out()

    async def _news(self, running: _Running) -> None:
        if not running.accepted_sent:
            running.accepted_sent = True
            self._queue_out(Accepted(running.key, running.job.id))
        while running.results:
            await self._results(running)
        if running.finished and running.key in self._running:
            del self._running[running.key]
            job = running.job
            reason = (EndReason.FAILED if job.failure else EndReason.CANCELLED
                      if job.cancelled else EndReason.DONE)
            self._queue_out(Ended(running.key, reason, job.failure[:4096]))
            _log_end(job, running.label, reason)

    async def _results(self, running: _Running) -> None:
        """One Results message: inline results up to RESULTS_BYTES, or one large result
        (sent first as a blob)."""
        items: list[ResultItem] = []
        size = 0
        while running.results and size < RESULTS_BYTES:
            result = running.results[0]
            if len(result.payload) > INLINE:
                if items:
                    break
                running.results.popleft()
                ref = await self._blob(result.payload)
                items.append(ResultItem(result.task, result.status, ref, result.peer))
                break
            running.results.popleft()
            inline = Inline(b"".join(pieces_of(result.payload)))
            items.append(ResultItem(result.task, result.status, inline, result.peer))
            size += len(result.payload)
        self._queue_out(Results(running.key, tuple(items)))
        if self._out_bytes >= RESULTS_BYTES:
            await self._flush_out()

    async def _blob(self, data: bytes | memoryview | Packed) -> BlobRef:
        self._next_blob += 1
        blob = self._next_blob
        if self._segments and len(data) >= SEGMENT_SIZE and await self._in_memory(blob, data):
            return BlobRef(blob, len(data))
        self._queue_out(Blob(blob, len(data)))
        for view in pieces_of(data):  # (a packed value: its pieces, never joined)
            for offset in range(0, len(view), CHUNK):
                self._queue_out(Chunk(blob, bytes(view[offset:offset + CHUNK])))
                await self._flush_out()  # one chunk in memory at a time, paced by the client
        return BlobRef(blob, len(data))

    async def _in_memory(self, blob: int, data: bytes | memoryview | Packed) -> bool:
        """Send blob ``blob`` in a memfd of its own (one copy); False if no memfd can be
        had now (no descriptor, no memory): it goes in chunks instead, and the connection
        lives on."""
        try:
            part = await trio.to_thread.run_sync(partial(in_memory, blob, data, seals=RESIZING))
        except OSError:
            return False
        await self._flush_out()
        try:
            await self._stream.send_frame_with_fd(part.frame, part.fd)
        finally:
            part.close()
        return True

    def _queue_out(self, message: ControlMessage) -> None:
        frame = CODEC.encode(message)
        self._out.append(frame)
        self._out_bytes += len(frame)

    async def _flush_out(self) -> None:
        frames, self._out, self._out_bytes = self._out, [], 0
        await self._stream.send_frames(frames)

    async def _report_progress(self) -> None:
        """Every second, where each long job stands (results alone do not say what is
        queued or running where)."""
        while True:
            await trio.sleep(PROGRESS_INTERVAL)
            now = trio.current_time()
            for running in list(self._running.values()):
                job = running.job
                if not running.accepted_sent:
                    self._mark(running)
                if (running.finished or job.done == running.progress_done
                        or now - job.started < PROGRESS_INTERVAL):
                    continue
                running.progress_done, running.progress_sent = job.done, now
                held = Counter(self._peer.peer_name(holder)
                               for holder in self._peer.holders(job.id).values())
                await self._stream.send_message(Progress(
                    running.key, job.done, job.total,
                    tuple(PeerCount(name, n) for name, n in held.most_common(4096))))


def _job_request(submit: Submit, pending: _Pending) -> JobRequest:
    if pending.error:
        raise P2PClusterError(pending.error)
    ref = FunctionRef.from_wire([submit.ref.module, submit.ref.qualname, submit.ref.job,
                                 list(submit.ref.includes)])
    needed = [d for d in (ref.job, *ref.includes) if d is not None]
    missing = [d[:12] for d in needed if d not in pending.bundles]
    if missing:
        raise P2PClusterError(f"bad job: code bundles {missing} were not sent")
    if submit.timeout is not None and not submit.timeout > 0:
        raise P2PClusterError("bad job: timeout must be a positive number of seconds")
    bundles = {d: pending.bundles[d] for d in needed}
    return JobRequest(ref, bundles, pending.payloads, submit.timeout, submit.chunksize,
                      submit.needs)


def _log_end(job: Job, label: str, reason: EndReason) -> None:
    word = {EndReason.CANCELLED: "cancelled", EndReason.FAILED: "failed"}.get(reason, "done")
    peers = ", ".join(f"{name} {n}" for name, n in job.per_peer.most_common())
    elapsed = trio.current_time() - job.started
    log.info("job %s (%s) %s in %.1f s: %d of %d task(s)%s", job.id.hex()[:8], label, word,
             elapsed, job.done, job.total, f" ({peers})" if peers else "")
