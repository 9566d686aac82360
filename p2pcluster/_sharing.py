"""Shared values on one peer: those shared here, and those fetched from the peers that shared
them (``docs/jobs.md``, "Shared inputs"; ``docs/protocol.md``, section 3.7).

A value shared with :meth:`Cluster.share <p2pcluster.Cluster.share>` or
:meth:`Peer.share <p2pcluster.Peer.share>` is encoded once and named by the SHA-256 of its
encoding. The peer that owns the job keeps it (:meth:`SharedValues.add`) for as long as
whoever shared it holds on: the embedded peer's life, or the client's connection to the
daemon. Sharing the same bytes twice adds nothing.

A peer about to run tasks whose arguments hold handles (:func:`~._packed.uses` reads their
digests from the start of each call) asks :meth:`SharedValues.ensure` for the values: those
shared here are at hand; any other it fetches from the job's owner, on a data stream of its
own (:class:`~._proto.messages.FetchShared`), once, however many batches ask at the same time,
after checking the announced size against ``max_value_size`` before it reads a byte. It keeps
the value while jobs that used it run here, and ``shared_linger`` seconds (0 by default)
after the last of them ends here (:meth:`SharedValues.job_over`), so that a job using it soon
after (the next batch of a joblib search: each is a job) finds it at hand; then, or when its
owner dies or leaves (:meth:`SharedValues.owner_gone`), the value goes, and the worker
processes let go of it too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NoReturn

import trio

from ._dataplane import send_value
from ._errors import ProtocolError, ValueTooLarge, too_large
from ._handoff import place
from ._landing import land
from ._packed import Packed, Payload
from ._proto.messages import FetchShared, JobSpec, ValueHeader
from ._runner import Runner
from ._secure import SecureStream
from ._shared import Shared, changed_since_shared, digest_of
from ._shm import available
from ._transport import Address

__all__ = ["SharedValues", "SharingStatistics"]

log = logging.getLogger("p2pcluster.peer")


@dataclass(frozen=True, slots=True)
class SharingStatistics:
    """Shared values on this peer: shared here (``owned``), fetched and kept (``cached``),
    and the traffic of fetching (bytes of values received) and serving them."""

    owned: int
    owned_bytes: int
    cached: int
    cached_bytes: int
    fetches: int
    fetched_bytes: int
    served: int
    served_bytes: int


@dataclass(slots=True)
class _Cached:
    payload: Payload
    owner: bytes
    jobs: set[bytes] = field(default_factory=set)


class SharedValues:
    """See the module docstring. ``drop`` tells the worker processes to let go of values;
    ``linger`` is ``shared_linger`` (seconds), applied while :meth:`serve_linger` runs."""

    def __init__(self, runner: Runner, *, me: bytes, name: str, max_value_size: int,
                 address_of: Callable[[bytes], Address | None],
                 drop: Callable[[list[bytes]], None], linger: float = 0.0) -> None:
        self._runner = runner
        self._me = me
        self._name = name
        self._limit = max_value_size
        self._address_of = address_of
        self._drop = drop
        self._owned: dict[bytes, Payload] = {}
        self._holders: dict[bytes, set[object]] = {}  #: digest -> who shared it here
        self._cached: dict[bytes, _Cached] = {}
        self._fetching: dict[bytes, trio.Event] = {}
        self._changed: set[bytes] = set()  #: shared here, and found changed since
        self._linger = linger
        self._idle: dict[bytes, float] = {}  #: cached, used by no job here, since
        self._wake = trio.Event()  #: set when a value became idle
        self._counts = dict.fromkeys(("fetches", "fetched_bytes", "served", "served_bytes"), 0)

    def statistics(self) -> SharingStatistics:
        return SharingStatistics(
            len(self._owned), sum(map(len, self._owned.values())), len(self._cached),
            sum(len(c.payload) for c in self._cached.values()), **self._counts)

    # --- as the owner -----------------------------------------------------------------------

    def add(self, payload: Payload, holder: object = None, digest: bytes | None = None
            ) -> Shared:
        """Keep ``payload`` (an encoded value whose SHA-256 is ``digest``, computed if not
        given) for ``holder`` until :meth:`release`."""
        digest = digest or digest_of(payload)
        self._owned.setdefault(digest, payload)
        self._holders.setdefault(digest, set()).add(holder)
        return Shared(digest, len(payload))

    def release(self, holder: object) -> None:
        """``holder`` is gone: the values only it shared go."""
        freed = []
        for digest, holders in list(self._holders.items()):
            holders.discard(holder)
            if not holders:
                del self._holders[digest], self._owned[digest]
                self._changed.discard(digest)
                if digest not in self._cached:
                    freed.append(digest)
        if freed:
            self._drop(freed)

    async def serve(self, stream: SecureStream, request: FetchShared) -> None:
        """A peer fetches a value shared here."""
        payload = self._owned.get(request.digest)
        await stream.send(ValueHeader(0, len(payload or b""), payload is not None))
        if payload is not None:
            await send_value(stream, payload)
            self._counts["served"] += 1
            self._counts["served_bytes"] += len(payload)

    # --- as the peer that runs the tasks ----------------------------------------------------

    async def ensure(self, spec: JobSpec, digests: Iterable[bytes]) -> dict[bytes, Payload]:
        """The values of ``digests`` for tasks of ``spec``'s job, fetched from its owner if
        need be; raises :class:`~p2pcluster.ProtocolError` (with the reason) if one cannot
        be had, :class:`~p2pcluster.ValueTooLarge` if one is over ``max_value_size``."""
        values: dict[bytes, Payload] = {}
        for digest in digests:
            while digest in self._fetching:  # another batch fetches it: wait for that one
                await self._fetching[digest].wait()
            payload: Payload | None = self._owned.get(digest)
            if isinstance(payload, Packed) and payload.segment is None:
                payload = await self._snapshot(digest, payload)
            cached = self._cached.get(digest)
            if payload is None and cached is None:
                cached = await self._fetch_once(spec, digest)
            if cached is not None:
                cached.jobs.add(spec.job)
                self._idle.pop(digest, None)
                payload = cached.payload
            assert payload is not None
            values[digest] = payload
        return values

    async def _snapshot(self, digest: bytes, payload: Packed) -> Payload:
        """A value shared here as the caller's own arrays, copied into a segment the first
        time this peer's workers need it (in a thread), checked against its digest after
        the copy, and kept instead of the arrays from then on. Raises
        :class:`~p2pcluster.ProtocolError` if the arrays changed since the share (at once,
        without another copy, for every later batch that uses it)."""
        if digest in self._changed:
            raise ProtocolError(changed_since_shared(digest))
        self._fetching[digest] = done = trio.Event()  # other batches wait for this one
        try:
            placed, actual = await trio.to_thread.run_sync(_placed, payload)
        finally:
            del self._fetching[digest]
            done.set()
        if actual != digest:
            self._changed.add(digest)
            raise ProtocolError(changed_since_shared(digest))
        if digest in self._owned:
            self._owned[digest] = placed
        return placed

    def job_over(self, job: bytes) -> None:
        """``job`` ended here: values no other job here uses go, ``linger`` seconds from now
        unless a job uses them again by then."""
        now = trio.current_time()
        for digest, cached in self._cached.items():
            if job in cached.jobs:
                cached.jobs.discard(job)
                if not cached.jobs:
                    self._idle[digest] = now
        self._expire(now)
        if self._idle:
            self._wake.set()

    async def serve_linger(self) -> NoReturn:
        """Let values go once idle for ``linger`` seconds (a task of the work service)."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._idle:
                await trio.sleep_until(min(self._idle.values()) + self._linger)
                self._expire(trio.current_time())

    def _expire(self, now: float) -> None:
        self._free([d for d, since in self._idle.items() if since + self._linger <= now])

    def owner_gone(self, owner: bytes) -> None:
        """``owner`` died or left: the values fetched from it go."""
        self._free([d for d, c in self._cached.items() if c.owner == owner])

    def _free(self, digests: list[bytes]) -> None:
        for digest in digests:
            del self._cached[digest]
            self._idle.pop(digest, None)
        freed = [d for d in digests if d not in self._owned]
        if freed:
            self._drop(freed)

    async def _fetch_once(self, spec: JobSpec, digest: bytes) -> _Cached:
        self._fetching[digest] = done = trio.Event()
        try:
            payload = await self._fetch(spec, digest)
        finally:
            del self._fetching[digest]
            done.set()
        self._counts["fetches"] += 1
        self._counts["fetched_bytes"] += len(payload)
        cached = self._cached[digest] = _Cached(payload, spec.owner)
        return cached

    async def _fetch(self, spec: JobSpec, digest: bytes) -> Payload:
        address = self._address_of(spec.owner)
        what = f"the shared value {digest.hex()[:16]} of job {spec.job.hex()[:8]}"
        if address is None:
            raise ProtocolError(f"{what}: its owner is not a live member")
        try:
            async with await self._runner.connect(address) as stream:
                await stream.send(FetchShared(digest))
                header = await stream.receive()
                if not isinstance(header, ValueHeader) or not header.found:
                    raise ProtocolError(f"{what}: its owner no longer holds it")
                if header.size > self._limit:  # refused unread: nothing is buffered
                    raise ValueTooLarge(too_large(what, header.size, self._limit,
                                                  f"peer {self._name}"))
                landed = await land(stream, header.size, digest=True)
        except (OSError, trio.BrokenResourceError) as exc:
            raise ProtocolError(f"{what}: fetching it from {address[0]}:{address[1]} "
                                f"failed: {exc}") from None
        if landed.digest != digest:  # the channel is authenticated: the owner's bytes changed
            raise ProtocolError(f"{what}: the bytes received do not match its digest; "
                                + changed_since_shared(digest))
        return landed.payload


def _placed(payload: Packed) -> tuple[Packed, bytes]:
    """``payload``'s buffers copied into one segment (into bytes where there is no shared
    memory), and the SHA-256 of the copy."""
    if available():
        placed = place(payload)
    else:
        placed = Packed(payload.heads, [memoryview(bytes(b)) for b in payload.buffers])
    return placed, digest_of(placed)
