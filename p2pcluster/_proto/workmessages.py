"""The messages of the work layer: stealing, results, holding reports, code and data
streams (``docs/protocol.md``, sections 3.6 and 3.7). Type codes are in
:class:`~.wiretypes.MessageType`; the registry of every message is :mod:`.messages`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from .eligibility import MAX_NEEDED, NO_NEEDS, Dist, JobNeeds, Tag
from .wiretypes import (
    MAX_DECLINED,
    MAX_INCLUDES,
    MAX_SUMS,
    MAX_TASKS,
    U64,
    Count,
    Digest,
    Ident,
    JobId,
    Limit,
    MessageType,
    NodeId,
    Size,
    TaskId,
)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a peer needs to run a job's tasks: its owner, its function, and its code.

    ``module``/``qualname`` name the function. ``code`` is the digest of the job file's code
    bundle (loaded as ``module``) or None for an importable module; ``includes`` are digests of
    bundles put on ``sys.path``. Bundles are fetched from the owner with :class:`FetchCode`.
    ``timeout`` is per task, in seconds. ``chunksize`` is how many tasks a peer hands a worker
    process at once; 0 lets each peer choose from the task times it measures.
    ``max_value_size`` is the owner's limit on one result, in bytes: a peer that runs a task
    whose result is larger fails that task with an error naming both sizes. ``needs`` is
    what a peer must have to take the job's tasks (:mod:`.eligibility`).
    """

    job: JobId
    owner: NodeId
    module: Ident
    qualname: Ident
    code: Digest | None
    includes: Annotated[tuple[Digest, ...], Limit(max_len=MAX_INCLUDES)]
    timeout: float | None
    chunksize: Annotated[int, Limit(lo=0, hi=2**20)] = 0
    max_value_size: Size = 2**31
    needs: JobNeeds = NO_NEEDS


@dataclass(frozen=True, slots=True)
class TaskItem:
    """One unstarted task: its id within the job, how often it moved, its CBOR arguments.

    A task whose arguments are large travels without them: ``payload`` is empty and ``size``
    is their length, and the peer that runs it fetches them from the job's owner over a data
    stream (:class:`FetchArgs`). ``size`` is 0 when ``payload`` holds the arguments.
    """

    id: TaskId
    moves: Annotated[int, Limit(lo=0, hi=255)]
    payload: bytes
    size: Size = 0

    @property
    def remote(self) -> bool:
        """True if the arguments stay at the owner until the task runs."""
        return self.size > len(self.payload)


@dataclass(frozen=True, slots=True)
class JobTasks:
    """Tasks of one job, with the job's spec."""

    spec: JobSpec
    tasks: Annotated[tuple[TaskItem, ...], Limit(max_len=MAX_TASKS)]


@dataclass(frozen=True, slots=True)
class TaskResult:
    """How task ``id`` ended (see :class:`TaskStatus`)."""

    id: TaskId
    status: Annotated[int, Limit(lo=0, hi=255)]
    payload: bytes


@dataclass(frozen=True, slots=True)
class StealRequest:
    """``thief`` has ``slots`` free worker slots (0: it steals ahead) and nothing queued: it
    asks for work, of any job but the ``declined`` ones (jobs it cannot run: their values
    need NumPy)."""

    TYPE: ClassVar[int] = MessageType.STEAL_REQUEST
    thief: NodeId
    slots: Count
    declined: Annotated[tuple[JobId, ...], Limit(max_len=MAX_DECLINED)] = ()


@dataclass(frozen=True, slots=True)
class StealGrant:
    """The answer to a :class:`StealRequest`: half of ``victim``'s unstarted tasks, oldest
    first (none if it has none), and how many it still has queued."""

    TYPE: ClassVar[int] = MessageType.STEAL_GRANT
    victim: NodeId
    queue: Count
    jobs: Annotated[tuple[JobTasks, ...], Limit(max_len=4096)]


@dataclass(frozen=True, slots=True)
class TasksMoved:
    """To a job's owner: tasks ``ids`` of ``job`` are now held by ``holder``."""

    TYPE: ClassVar[int] = MessageType.TASKS_MOVED
    job: JobId
    holder: NodeId
    ids: Annotated[tuple[TaskId, ...], Limit(max_len=MAX_TASKS)]


@dataclass(frozen=True, slots=True)
class Results:
    """To a job's owner: results from ``sender``, which has ``queue`` tasks still queued."""

    TYPE: ClassVar[int] = MessageType.RESULTS
    job: JobId
    sender: NodeId
    queue: Count
    results: Annotated[tuple[TaskResult, ...], Limit(max_len=MAX_TASKS)]


@dataclass(frozen=True, slots=True)
class CancelJob:
    """From a job's owner: drop ``job``'s queued tasks and stop its running ones."""

    TYPE: ClassVar[int] = MessageType.CANCEL_JOB
    job: JobId


@dataclass(frozen=True, slots=True)
class WorkAvailable:
    """``sender`` has ``queue`` tasks to steal (sent when a job is submitted, and to a peer
    that joins while there is work), so idle peers need not wait for gossip."""

    TYPE: ClassVar[int] = MessageType.WORK_AVAILABLE
    sender: NodeId
    queue: Count


@dataclass(frozen=True, slots=True)
class FetchCode:
    """Ask a job's owner for the code bundle with ``digest``; it answers :class:`Code`."""

    TYPE: ClassVar[int] = MessageType.FETCH_CODE
    digest: Digest


@dataclass(frozen=True, slots=True)
class Code:
    """A code bundle (``bundle`` is empty if the peer does not have ``digest``)."""

    TYPE: ClassVar[int] = MessageType.CODE
    digest: Digest
    bundle: bytes


@dataclass(frozen=True, slots=True)
class HeldTasks:
    """Tasks of ``job`` a peer holds: ids as ``[start, count, start, count, ...]`` runs."""

    job: JobId
    runs: Annotated[tuple[TaskId, ...], Limit(max_len=2 * MAX_TASKS)]


@dataclass(frozen=True, slots=True)
class Holding:
    """To a job's owner, every ``report_interval`` while ``sender`` holds tasks of its jobs:
    the tasks it holds (queued, running, or whose result is on its way). The owner requeues
    a task it believes is at ``sender`` but that two reports in a row leave out: a result
    lost with a broken link is run again instead of being waited for forever."""

    TYPE: ClassVar[int] = MessageType.HOLDING
    sender: NodeId
    jobs: Annotated[tuple[HeldTasks, ...], Limit(max_len=4096)]


# --- data streams: large arguments and results ----------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchArgs:
    """The first message of a data stream to a job's owner: send the arguments of ``ids``.

    The owner answers each id, in order, with a :class:`ValueHeader` followed by the value's
    bytes in raw frames (frames of the session, each sealed; their payloads concatenated).
    ``checks`` are the :class:`~.wiretypes.SumKind` values the sender can check, as the bits
    ``1 << kind``: the owner leaves the check of its sums from submit to it.
    """

    TYPE: ClassVar[int] = MessageType.FETCH_ARGS
    job: JobId
    ids: Annotated[tuple[TaskId, ...], Limit(max_len=MAX_TASKS)]
    checks: Annotated[int, Limit(lo=0, hi=255)] = 0


@dataclass(frozen=True, slots=True)
class ArraySum:
    """The sum at submit of the ``size`` bytes at ``offset`` of a value: one array's data."""

    offset: Size
    size: Size
    sum: Annotated[int, U64]


@dataclass(frozen=True, slots=True)
class ValueHeader:
    """``size`` bytes follow in raw frames (none if ``found`` is false: the owner has no
    such task any more). ``sums``, of kind ``sum_kind`` (a :class:`~.wiretypes.SumKind`),
    are those of the value's arrays at submit: the receiver checks what landed against
    them (none: the owner checked the bytes as it sent them)."""

    TYPE: ClassVar[int] = MessageType.VALUE_HEADER
    id: TaskId
    size: Size
    found: bool
    sum_kind: Annotated[int, Limit(lo=0, hi=255)] = 0
    sums: Annotated[tuple[ArraySum, ...], Limit(max_len=MAX_SUMS)] = ()


@dataclass(frozen=True, slots=True)
class PushResult:
    """The first message of a data stream to a job's owner: a result too large to ride in a
    :class:`Results` message. ``size`` bytes of payload follow in raw frames; the owner
    answers :class:`ResultAck`."""

    TYPE: ClassVar[int] = MessageType.PUSH_RESULT
    job: JobId
    sender: NodeId
    queue: Count
    id: TaskId
    status: Annotated[int, Limit(lo=0, hi=255)]
    size: Size


@dataclass(frozen=True, slots=True)
class ResultAck:
    """What the owner did with a pushed result (:class:`AckStatus`), and why."""

    TYPE: ClassVar[int] = MessageType.RESULT_ACK
    status: Annotated[int, Limit(lo=0, hi=255)]
    reason: Annotated[str, Limit(max_len=4096)]


@dataclass(frozen=True, slots=True)
class FetchShared:
    """The first message of a data stream to the peer that shared a value: send the value
    whose SHA-256 is ``digest``. It answers with a :class:`ValueHeader` (``id`` 0; not
    ``found`` if it no longer holds the value) and the value's bytes in raw frames."""

    TYPE: ClassVar[int] = MessageType.FETCH_SHARED
    digest: Annotated[bytes, Limit(max_len=32)]


# --- environments: what a peer has installed -------------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchVersions:
    """Ask a peer which versions of the distributions ``names`` (normalized) it has; it
    answers :class:`Versions` on the same stream."""

    TYPE: ClassVar[int] = MessageType.FETCH_VERSIONS
    names: Annotated[tuple[Annotated[str, Limit(max_len=128)], ...], Limit(max_len=MAX_NEEDED)]


@dataclass(frozen=True, slots=True)
class Versions:
    """A peer's environment: its Python ``implementation`` and ``python`` version, its tags,
    and the asked distributions in the order asked (version ``""``: not installed)."""

    TYPE: ClassVar[int] = MessageType.VERSIONS
    implementation: Annotated[str, Limit(max_len=64)]
    python: Annotated[str, Limit(max_len=64)]
    tags: Annotated[tuple[Tag, ...], Limit(max_len=MAX_NEEDED)]
    dists: Annotated[tuple[Dist, ...], Limit(max_len=MAX_NEEDED)]
