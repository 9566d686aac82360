"""`open_peer`: a whole peer in one trio task tree, and :class:`Peer`, its trio-native API.

:func:`open_peer` composes the services of a peer, each in a module of its own and wired to
the others with explicit callbacks:

- a :class:`~._runner.Runner` owns the port (UDP and TCP) and routes incoming streams;
- :func:`~._membership.serve_membership` runs SWIM with the Lifeguard refinements;
- :func:`~._addresswatch.serve_place` runs :func:`~._discovery.serve_introductions`, which
  introduces peers found over mDNS, and follows this peer's address if it changes;
- a worker pool (:func:`~._pool.open_worker_pool`) runs tasks in processes;
- the :class:`~._work.WorkService` runs the stealing machine and owns the jobs submitted
  here.

:class:`Peer` is the face of all that: run a call, map a function, follow tasks as they
finish, own jobs, and read members and statistics.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ._activity import Activity
from ._addresswatch import serve_place
from ._codecache import CodeCache
from ._config import Config
from ._errors import ClusterError, ValueTooLarge, too_large
from ._heldargs import taken_off_loop
from ._jobs import (
    CodeRegistry,
    JobRequest,
    JobResult,
    encode_args,
    encode_map_args_in_trio,
    unpack,
    unpack_in_trio,
)
from ._membership import Membership, MembershipStatistics, serve_membership
from ._netutil import Where, resolve_seeds
from ._netutil import where as choose_where
from ._packed import Payload
from ._pool import WorkerPoolStatistics, open_worker_pool
from ._proto.envelope import Keyring
from ._proto.membership import Member, MemberEvent
from ._proto.workevents import StealingStatistics
from ._rejections import Rejections
from ._runner import Runner, open_runner
from ._secret import SecretSource, load_secrets
from ._secure import WireStatistics
from ._shared import Shared, digest_of
from ._sharing import SharingStatistics
from ._transport import Address
from ._usage import child_pids, serve_usage
from ._values import encode_shared
from ._versions import gather_versions
from ._work import Job, WorkService

__all__ = ["Job", "Peer", "PeerStatistics", "open_peer"]

#: Seconds a leaving peer waits for its last work messages (its jobs' CancelJobs) to go out.
LINK_DRAIN = 0.5


@dataclass(frozen=True, slots=True)
class PeerStatistics:
    """What a peer has done, and holds: scheduling, worker-pool and membership counters, and
    right now, its unstarted tasks, the batches out to its workers and the jobs it owns."""

    stealing: StealingStatistics
    workers: WorkerPoolStatistics
    membership: MembershipStatistics
    queued: int
    running: int
    jobs_owned: int
    sharing: SharingStatistics


class Peer:
    """A running peer. Get one with :func:`open_peer`.

    The trio-native API: :meth:`run` one call, :meth:`map` a function over iterables,
    :meth:`as_completed` to get ``(index, value)`` pairs as tasks finish. Task functions must
    be module-level functions (see ``docs/jobs.md``); arguments and results travel as CBOR.
    """

    def __init__(self, config: Config, runner: Runner, membership: Membership,
                 work: WorkService, *, registry: CodeRegistry, workers: int, how: str) -> None:
        self._config = config
        #: What this peer tells others about its work, and asks them (the dashboard's source).
        self.activity = Activity(config, runner, work)
        self._runner = runner
        self._membership = membership
        self._work = work
        self._registry = registry
        self._workers = workers
        #: How this peer chose its address, in words (for logs).
        self.where = how

    # --- who and where ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._membership.me.name

    @property
    def node_id(self) -> bytes:
        return self._membership.me.id

    @property
    def me(self) -> Member:
        """This peer as a member (its address, incarnation and metadata)."""
        return self._membership.me

    @property
    def address(self) -> Address:
        """Where other peers reach this one (the advertised host, the bound port)."""
        return self._membership.local_address

    @property
    def workers(self) -> int:
        """The worker processes this peer offers."""
        return self._workers

    @property
    def config(self) -> Config:
        return self._config

    def members(self) -> list[Member]:
        """The member table, this peer included."""
        return self._membership.members()

    def subscribe(self) -> trio.MemoryReceiveChannel[MemberEvent]:
        """Every later membership event (see :meth:`Membership.subscribe`)."""
        return self._membership.subscribe()

    def statistics(self) -> PeerStatistics:
        state = self._work.state()
        return PeerStatistics(self._work.statistics(), self._work.pool_statistics(),
                              self._membership.statistics(), state.queued, state.running,
                              state.jobs_owned, self._work.shared.statistics())

    async def share(self, value: Any) -> Shared:
        """Share ``value`` with the cluster; pass the handle in task arguments, and each
        task gets the value itself. Every peer fetches it once (``docs/jobs.md``, "Shared
        inputs"); this peer keeps it until it closes."""
        payload = encode_shared(value)  # the arrays themselves: see _sharing.py
        return await self.share_payload(payload, digest=await trio.to_thread.run_sync(
            digest_of, payload))

    async def share_payload(self, payload: Payload, holder: object = None,
                            digest: bytes | None = None) -> Shared:
        """Keep an encoded value (whose SHA-256 is ``digest``, if known) for ``holder`` (see
        :meth:`share`) until :meth:`release_shared`; ValueTooLarge over the limit."""
        limit = self._config.max_value_size
        if len(payload) > limit:
            raise ValueTooLarge(too_large("the value to share", len(payload), limit,
                                          f"peer {self.me.name}"))
        digest = digest or await trio.to_thread.run_sync(digest_of, payload)
        return self._work.shared.add(payload, holder, digest)

    def release_shared(self, holder: object) -> None:
        """``holder`` is gone: the values only it shared go."""
        self._work.shared.release(holder)

    def wire_statistics(self) -> WireStatistics:
        """The counters of this peer's wire: datagrams, streams, bytes, what it rejected."""
        return self._runner.statistics()

    async def reload_secrets(self) -> SecretSource:
        """Read the cluster secrets again (``Config.secret_file``, or ``P2PCLUSTER_SECRET``)
        and switch this peer's keyring to them: seal with the first, accept them all. On
        :class:`~p2pcluster.SecretError` the keys in use stay. Streams already open keep
        their session keys, except those under a key now dropped: they end."""
        source = await trio.to_thread.run_sync(partial(
            load_secrets, secret_file=self._config.secret_file))
        self._runner.set_keyring(Keyring.from_secrets(source.secrets, self._config.cluster))
        return source

    def take_rejected(self) -> Rejections:
        """Hosts whose traffic failed authentication since the last call, with counts."""
        return self._runner.take_rejected()

    def peer_name(self, node_id: bytes) -> str:
        """The name of the member with ``node_id`` (its id's prefix if unknown)."""
        return self._work.name_of(node_id)

    def holders(self, job: bytes) -> dict[int, bytes]:
        """For a job owned here: unfinished task index -> the peer believed to hold it."""
        return self._work.holders(job)

    async def versions(self, peers: Sequence[tuple[bytes, str]],
                       packages: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Ask ``peers`` (id, name) for their Python and installed versions (see
        :func:`~._versions.gather_versions`)."""
        return await gather_versions(self._work.versions, peers, packages)

    # --- work -------------------------------------------------------------------------------

    def request(self, fn: Callable[..., Any], payloads: Sequence[Payload], *,
                timeout: float | None = None, chunksize: int | None = None,
                requires: Iterable[str] = ()) -> JobRequest:
        """A job for ``fn`` over encoded calls, checked here (see :class:`CodeRegistry`);
        its tasks go only to peers with every tag in ``requires``."""
        return self._registry.request(fn, payloads, timeout=timeout, chunksize=chunksize,
                                      max_value_size=self._config.max_value_size,
                                      requires=requires)

    async def _request(self, fn: Callable[..., Any], payloads: Sequence[Payload],
                       **options: Any) -> JobRequest:
        """:meth:`request`, built in a thread where it may read the disk."""
        return await self._registry.request_in_trio(
            fn, payloads, max_value_size=self._config.max_value_size, **options)

    async def run(self, fn: Callable[..., Any], /, *args: Any, timeout: float | None = None,
                  requires: Iterable[str] = (), **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on some peer and return its value (or raise its
        :class:`~p2pcluster.TaskError`). ``timeout`` limits the task, in seconds;
        ``requires`` names the tags the peer must have."""
        request = await self._request(fn, [encode_args(args, kwargs)], timeout=timeout,
                                      requires=requires)
        async with self.open_job(request) as job:
            results = _collect(job)
            await job.wait()
        _check_failure(job)
        return unpack(*results[0][1:])

    async def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
                  timeout: float | None = None, chunksize: int | None = None,
                  requires: Iterable[str] = ()) -> list[Any]:
        """``[fn(*xs) for xs in zip(*iterables)]``, across the cluster, in order.

        The first task error is raised (after the job is cancelled). ``timeout`` is per task;
        ``requires`` names the tags a peer must have to run the tasks (they wait while no
        live peer has them). A :class:`~p2pcluster.ClusterError` if no live peer can run
        them (their Python or distributions differ from this process's).
        """
        request = await self._request(fn, await encode_map_args_in_trio(iterables),
                                      timeout=timeout, chunksize=chunksize, requires=requires)
        async with self.open_job(request) as job:
            results = _collect(job)
            await _wait_or_first_error(job)
            _check_failure(job)
            if job.errors:
                unpack(*results[min(i for i in results if results[i].status)][1:])
        return await unpack_in_trio(results[i][1:] for i in range(job.total))

    async def as_completed(self, fn: Callable[..., Any], *iterables: Iterable[Any],
                           timeout: float | None = None, chunksize: int | None = None
                           ) -> AsyncGenerator[tuple[int, Any], None]:
        """Yield ``(index, value)`` as tasks finish; a task error is raised when reached.

        Use ``async with contextlib.aclosing(peer.as_completed(...)) as results:``; leaving
        early cancels the rest of the job.
        """
        request = await self._request(fn, await encode_map_args_in_trio(iterables),
                                      timeout=timeout, chunksize=chunksize)
        send, receive = trio.open_memory_channel[JobResult](math.inf)
        async with self.open_job(request) as job:
            def forward(batch: list[JobResult]) -> None:
                for result in batch:
                    send.send_nowait(result)

            job.listeners.append(forward)
            for _ in range(job.total):
                result = await receive.receive()
                yield result.task, unpack(*result[1:])

    @asynccontextmanager
    async def open_job(self, request: JobRequest) -> AsyncIterator[Job]:
        """Own a job while the block runs; leaving the block early cancels it."""
        job = self.submit(await taken_off_loop(request, self._config.inline_value_size))
        try:
            yield job
        finally:
            job.cancel()

    def submit(self, request: JobRequest, *, max_value_size: int | None = None,
               private: bool = False) -> Job:
        """Own a new job and queue its tasks here (the caller must end or cancel it).
        ``max_value_size`` lowers this peer's limit on the job's results (a client that
        takes less); ``private``: the arguments' buffers are this peer's alone."""
        return self._work.submit(request, max_value_size=max_value_size, private=private)


def _check_failure(job: Job) -> None:
    if job.failure:
        raise ClusterError(job.failure)


def _collect(job: Job) -> dict[int, JobResult]:
    """A dict that fills with ``job``'s results, by task index."""
    results: dict[int, JobResult] = {}
    job.listeners.append(lambda batch: results.update((r.task, r) for r in batch))
    return results


async def _wait_or_first_error(job: Job) -> None:
    """Until ``job`` ends, or one of its tasks fails."""
    failed = trio.Event()
    job.listeners.append(lambda batch: failed.set() if any(r.status for r in batch) else None)
    async with trio.open_nursery() as nursery:
        async def watch() -> None:
            await failed.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        await job.wait()
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_peer(config: Config | None = None, *, include: Iterable[str | Path] = (),
                    registry: CodeRegistry | None = None,
                    started: int = 0, label_output: bool = False) -> AsyncIterator[Peer]:
    """Run a peer for the duration of the block: join the cluster, take part in its work.

    ``config`` defaults to :meth:`Config.lan` with ``P2PCLUSTER_*`` variables applied.
    ``include`` names extra files or packages shipped with every job submitted here.
    ``started`` (Unix seconds) is published in the metadata; a daemon sets it so that of two
    peers of one name the later one yields (``_names.py``). With ``label_output`` (a daemon),
    what tasks print goes to the log, labelled with job and task. On exit the peer leaves
    gracefully and cancels the jobs it owns; its workers stop.
    """
    plan = await _plan(config or Config.load())
    config, workers, place = plan.config, plan.workers, plan.place
    cache = CodeCache(CodeCache.default_root())
    async with open_runner(config, plan.keyring) as runner, trio.open_nursery() as nursery:
        membership: Membership = await nursery.start(partial(
            serve_membership, config, plan.keyring, runner=runner, seeds=plan.seeds,
            meta=_first_meta(config, workers, started), advertise=place.advertise))
        async with open_worker_pool(workers, cache.root, label_output=label_output) as pool:
            work = WorkService(config, runner, membership, pool=pool, cache=cache,
                               nursery=nursery, started=started)
            await nursery.start(work.serve)
            nursery.start_soon(serve_usage, config.usage_interval, child_pids, work.set_usage)
            discovery = trio.CancelScope()  # mDNS, and following our address if it moves
            nursery.start_soon(_within, discovery, partial(serve_place, membership, config, place))
            try:
                yield Peer(config, runner, membership, work, workers=workers, how=place.how,
                           registry=registry or CodeRegistry(
                               include, auto_limit=config.auto_include_limit,
                               strict=config.strict_versions))
            finally:
                discovery.cancel()  # the mDNS goodbye goes out while we tell the peers
                with trio.CancelScope(shield=True):
                    await work.leave(LINK_DRAIN)  # the CancelJobs must go out
                    await membership.leave()
                nursery.cancel_scope.cancel()


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a peer needs before it opens a socket: its keys, where it binds and advertises,
    its seeds' addresses and its worker count."""

    config: Config
    keyring: Keyring
    place: Where
    seeds: list[Address]
    workers: int


async def _plan(config: Config) -> _Plan:
    source = load_secrets(secret_file=config.secret_file, create=True)
    keyring = Keyring.from_secrets(source.secrets, config.cluster)
    place = choose_where(config)
    config = dataclasses.replace(config, bind_address=place.bind)
    seeds = await resolve_seeds(config.seeds, config.port)
    return _Plan(config, keyring, place, seeds, config.worker_count())


async def _within(scope: trio.CancelScope, fn: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await fn()


def _first_meta(config: Config, workers: int, started: int) -> bytes:
    from ._environment import environment_meta
    from ._proto.meta import NodeMeta
    from ._version import __version__

    return NodeMeta(workers, 0, config.tags, __version__, started,
                    *environment_meta()).encode()
