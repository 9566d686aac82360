"""Code between peers: a job's owner serves its code bundles; the others fetch them once.

A job names its code by digest (the job file, the ``--include`` bundles). The owner keeps the
bundles of the jobs it owns and answers :class:`FetchCode` on a stream of its own. A peer
about to run a task fetches the bundles its code cache lacks from the job's owner, one fetch
per digest at a time however many batches wait for it, checks the digest, and stores them.

A cache that cannot be written (disk full, a name too long, permissions) fails the tasks that
need the code, with :class:`CodeUnavailable`, and logs one warning a minute: the peer lives on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

import trio

from ._bundles import CodeBundle
from ._codecache import CodeCache
from ._errors import P2PClusterError, ProtocolError
from ._proto.messages import Code, FetchCode, JobSpec, Message
from ._runner import Runner
from ._secure import SecureStream
from ._transport import Address

__all__ = ["CodeShipping", "CodeUnavailable"]

log = logging.getLogger("p2pcluster.peer")

#: Seconds allowed to fetch a code bundle from a job's owner.
FETCH_TIMEOUT = 30.0
#: Seconds between two warnings that the code cache cannot be written.
STORE_WARNING_INTERVAL = 60.0


class CodeUnavailable(P2PClusterError):
    """A job's code could not be fetched from its owner."""


class CodeShipping:
    """This peer's code: bundles it serves, and bundles it fetches into its cache."""

    def __init__(self, runner: Runner, cache: CodeCache,
                 address_of: Callable[[bytes], Address | None]) -> None:
        self._runner = runner
        self._cache = cache
        self._address_of = address_of
        self._bundles: dict[str, CodeBundle] = {}  #: of the jobs owned here, to serve
        self._fetching: dict[str, trio.Event] = {}
        self._store_warned = -math.inf

    def add(self, bundles: Mapping[str, CodeBundle]) -> None:
        """Keep (and serve) the bundles of a job owned here. Storing them in the cache is
        left to :meth:`ensure`: a cache that cannot be written fails only tasks run here."""
        self._bundles.update(bundles)

    async def serve(self, stream: SecureStream, first: Message) -> None:
        """Answer :class:`FetchCode` requests, as long as the stream brings them."""
        msg: Message | None = first
        while isinstance(msg, FetchCode):
            bundle = self._bundles.get(msg.digest)
            await stream.send(Code(msg.digest, bundle.encode() if bundle else b""))
            msg = await stream.receive()

    async def ensure(self, spec: JobSpec) -> None:
        """Have every bundle ``spec`` needs in the cache; :class:`CodeUnavailable` if not."""
        for digest in [spec.code, *spec.includes]:
            if digest is None or self._cache.has(digest):
                continue
            own = self._bundles.get(digest)
            if own is not None:
                self._store(own)
                continue
            pending = self._fetching.get(digest)
            if pending is not None:
                await pending.wait()
                if not self._cache.has(digest):
                    raise CodeUnavailable(f"code {digest[:12]} could not be fetched")
                continue
            self._fetching[digest] = trio.Event()
            try:
                self._store(await self._fetch(spec.owner, digest))
            finally:
                self._fetching.pop(digest).set()

    def _store(self, bundle: CodeBundle) -> None:
        """Put ``bundle`` in the cache; :class:`CodeUnavailable` (and a warning, at most
        one a minute) if the cache cannot be written."""
        try:
            self._cache.store(bundle)
        except OSError as exc:
            why = (f"cannot store code {bundle.digest[:12]} in the code cache "
                   f"{self._cache.root}: {exc.strerror or exc}")
            now = trio.current_time()
            if now - self._store_warned >= STORE_WARNING_INTERVAL:
                self._store_warned = now
                log.warning("%s; the tasks that need it fail until there is room", why)
            raise CodeUnavailable(why) from None

    async def _fetch(self, owner: bytes, digest: str) -> CodeBundle:
        address = self._address_of(owner)
        if address is None:
            raise CodeUnavailable(f"the job's owner {owner.hex()[:8]} is not a known member")
        try:
            with trio.fail_after(FETCH_TIMEOUT):
                async with await self._runner.connect(address) as stream:
                    await stream.send(FetchCode(digest))
                    reply = await stream.receive()
        except (OSError, ProtocolError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            raise CodeUnavailable(f"fetching code {digest[:12]} from {address[0]}:"
                                  f"{address[1]} failed: {exc}") from None
        if not isinstance(reply, Code) or not reply.bundle:
            raise CodeUnavailable(f"the job's owner does not have code {digest[:12]}")
        bundle = CodeBundle.decode(reply.bundle)
        if bundle.digest != digest:
            raise CodeUnavailable(f"code {digest[:12]} arrived with digest "
                                  f"{bundle.digest[:12]}")
        return bundle
