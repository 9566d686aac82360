"""Every message that crosses the network, as frozen, slotted dataclasses.

Each top-level message has a numeric ``TYPE``; each record that may appear in a union (the
piggybacked membership updates) has one too. **Type codes are append-only**: never renumber,
never reuse a retired code. A peer that receives a code it does not know refuses the message
with :class:`~p2pcluster.ProtocolError`.

Field types are limited to what :mod:`.codec` can check strictly: ``int``, ``float``, ``bool``,
``str``, ``bytes``, ``X | None``, ``tuple[X, ...]``, nested records, and unions of records.
``Annotated[T, Limit(...)]`` bounds a field. ``docs/protocol.md`` gives the byte layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, ClassVar

#: The wire protocol version every message carries. Bump it for any incompatible change.
#: Version 2 added task sizes, the result limit of a job, holding reports and the data
#: streams that carry large values (``FetchArgs``/``ValueHeader``, ``PushResult``/``ResultAck``).
PROTOCOL_VERSION = 2
#: Versions this implementation decodes.
SUPPORTED_VERSIONS = frozenset({2})


@dataclass(frozen=True, slots=True)
class Limit:
    """Bounds on a field: ``lo``/``hi`` for integers, ``max_len`` for str, bytes and tuples.

    ``max_len`` of a str counts UTF-8 bytes.
    """

    lo: int | None = None
    hi: int | None = None
    max_len: int | None = None


U64 = Limit(lo=0, hi=2**64 - 1)
NodeId = Annotated[bytes, Limit(max_len=32)]
Incarnation = Annotated[int, U64]
Seq = Annotated[int, U64]
Port = Annotated[int, Limit(lo=0, hi=65535)]
Host = Annotated[str, Limit(max_len=255)]
Name = Annotated[str, Limit(max_len=255)]
#: Member metadata is opaque here; the membership layer gives it meaning. memberlist's limit.
Meta = Annotated[bytes, Limit(max_len=512)]
MAX_UPDATES = 256
MAX_MEMBERS = 65536


class MessageType(IntEnum):
    """Top-level message type codes. APPEND-ONLY: never renumber or reuse a value."""

    PING = 1
    ACK = 2
    PING_REQ = 3
    NACK = 4
    PUSH_PULL = 5
    GOSSIP = 6
    STEAL_REQUEST = 7
    STEAL_GRANT = 8
    TASKS_MOVED = 9
    RESULTS = 10
    CANCEL_JOB = 11
    WORK_AVAILABLE = 12
    FETCH_CODE = 13
    CODE = 14
    HOLDING = 15
    FETCH_ARGS = 16
    VALUE_HEADER = 17
    PUSH_RESULT = 18
    RESULT_ACK = 19


class UpdateType(IntEnum):
    """Type codes of piggybacked membership updates. APPEND-ONLY."""

    ALIVE = 1
    SUSPECT = 2
    DEAD = 3
    LEFT = 4


class MemberStatus(IntEnum):
    """A member's state, as carried in push-pull. APPEND-ONLY."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


# --- membership updates (piggybacked on ping, ping-req and ack) ---------------------------


@dataclass(frozen=True, slots=True)
class Alive:
    """``node`` is alive at ``incarnation``, reachable at host:port (UDP and TCP)."""

    TYPE: ClassVar[int] = UpdateType.ALIVE
    node: NodeId
    incarnation: Incarnation
    name: Name
    host: Host
    port: Port
    meta: Meta


@dataclass(frozen=True, slots=True)
class Suspect:
    """``by`` suspects ``node`` at ``incarnation``."""

    TYPE: ClassVar[int] = UpdateType.SUSPECT
    node: NodeId
    incarnation: Incarnation
    by: NodeId


@dataclass(frozen=True, slots=True)
class Dead:
    """``by`` declares ``node`` dead at ``incarnation`` (SWIM's *confirm*)."""

    TYPE: ClassVar[int] = UpdateType.DEAD
    node: NodeId
    incarnation: Incarnation
    by: NodeId


@dataclass(frozen=True, slots=True)
class Left:
    """``node`` announces that it leaves gracefully: a Dead that it says about itself."""

    TYPE: ClassVar[int] = UpdateType.LEFT
    node: NodeId
    incarnation: Incarnation


Update = Alive | Suspect | Dead | Left
Updates = Annotated[tuple[Update, ...], Limit(max_len=MAX_UPDATES)]


@dataclass(frozen=True, slots=True)
class MemberState:
    """One row of a member table, as exchanged by push-pull."""

    node: NodeId
    incarnation: Incarnation
    name: Name
    host: Host
    port: Port
    meta: Meta
    status: Annotated[int, Limit(lo=0, hi=255)]


# --- top-level messages --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """Probe ``target``; it answers with an :class:`Ack` of the same ``seq``.

    ``target`` is the id the sender believes lives at the address, so a restarted peer with a
    new id never acks a probe meant for its predecessor.
    """

    TYPE: ClassVar[int] = MessageType.PING
    seq: Seq
    target: NodeId
    updates: Updates = ()


@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to a :class:`Ping` (or, relayed, to a :class:`PingReq`)."""

    TYPE: ClassVar[int] = MessageType.ACK
    seq: Seq
    updates: Updates = ()


@dataclass(frozen=True, slots=True)
class PingReq:
    """Ask the receiver to probe ``target`` at host:port and relay its ack (or a nack)."""

    TYPE: ClassVar[int] = MessageType.PING_REQ
    seq: Seq
    target: NodeId
    host: Host
    port: Port
    updates: Updates = ()


@dataclass(frozen=True, slots=True)
class Nack:
    """A ping-req helper saw no ack by 80% of the timeout: the helper itself is reachable."""

    TYPE: ClassVar[int] = MessageType.NACK
    seq: Seq


@dataclass(frozen=True, slots=True)
class PushPull:
    """``sender``'s full member table, sent over a stream; the receiver answers with its own.

    ``join`` marks the first exchange of a peer that is joining through the receiver.
    """

    TYPE: ClassVar[int] = MessageType.PUSH_PULL
    join: bool
    sender: NodeId
    members: Annotated[tuple[MemberState, ...], Limit(max_len=MAX_MEMBERS)]


@dataclass(frozen=True, slots=True)
class Gossip:
    """Updates only, sent to a few random peers each gossip round while updates are queued."""

    TYPE: ClassVar[int] = MessageType.GOSSIP
    updates: Updates


# --- work stealing (over streams) ----------------------------------------------------------

JobId = Annotated[bytes, Limit(max_len=16)]
TaskId = Annotated[int, U64]
Count = Annotated[int, Limit(lo=0, hi=2**32 - 1)]
Digest = Annotated[str, Limit(max_len=64)]
Ident = Annotated[str, Limit(max_len=1024)]
#: A value's size in bytes (arguments and results may be far larger than any frame).
Size = Annotated[int, Limit(lo=0, hi=2**62)]
MAX_TASKS = 2**20
MAX_INCLUDES = 64


class TaskStatus(IntEnum):
    """How a task ended, in a :class:`TaskResult`. APPEND-ONLY."""

    OK = 0  #: ``payload`` is the CBOR-encoded return value
    ERROR = 1  #: ``payload`` is a CBOR map: type, message, traceback
    POISON = 2  #: the task killed 3 worker processes; ``payload`` as for ERROR
    TIMEOUT = 3  #: the task overran the job's timeout; ``payload`` as for ERROR


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a peer needs to run a job's tasks: its owner, its function, and its code.

    ``module``/``qualname`` name the function. ``code`` is the digest of the job file's code
    bundle (loaded as ``module``) or None for an importable module; ``includes`` are digests of
    bundles put on ``sys.path``. Bundles are fetched from the owner with :class:`FetchCode`.
    ``timeout`` is per task, in seconds. ``chunksize`` is how many tasks a peer hands a worker
    process at once; 0 lets each peer choose from the task times it measures.
    ``max_value_size`` is the owner's limit on one result, in bytes: a peer that runs a task
    whose result is larger fails that task with an error naming both sizes.
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
    """``thief`` has ``slots`` free worker slots and nothing queued: it asks for work."""

    TYPE: ClassVar[int] = MessageType.STEAL_REQUEST
    thief: NodeId
    slots: Count


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
    """

    TYPE: ClassVar[int] = MessageType.FETCH_ARGS
    job: JobId
    ids: Annotated[tuple[TaskId, ...], Limit(max_len=MAX_TASKS)]


@dataclass(frozen=True, slots=True)
class ValueHeader:
    """``size`` bytes follow in raw frames (none if ``found`` is false: the owner has no
    such task any more)."""

    TYPE: ClassVar[int] = MessageType.VALUE_HEADER
    id: TaskId
    size: Size
    found: bool


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


class AckStatus(IntEnum):
    """What the owner did with a pushed result. APPEND-ONLY."""

    ACCEPTED = 0  #: it is the task's result (or a duplicate)
    REFUSED = 1  #: too large here: the pusher sends ``reason`` as the task's error instead
    NO_JOB = 2  #: the owner no longer runs the job: nothing to do


@dataclass(frozen=True, slots=True)
class ResultAck:
    """What the owner did with a pushed result (:class:`AckStatus`), and why."""

    TYPE: ClassVar[int] = MessageType.RESULT_ACK
    status: Annotated[int, Limit(lo=0, hi=255)]
    reason: Annotated[str, Limit(max_len=4096)]


WorkMessage = (StealRequest | StealGrant | TasksMoved | Results | CancelJob | WorkAvailable
               | Holding)

Message = (Ping | Ack | PingReq | Nack | PushPull | Gossip | StealRequest | StealGrant
           | TasksMoved | Results | CancelJob | WorkAvailable | FetchCode | Code | Holding
           | FetchArgs | ValueHeader | PushResult | ResultAck)

#: Every top-level message class, by type code.
MESSAGE_CLASSES: dict[int, type[Message]] = {
    cls.TYPE: cls for cls in (Ping, Ack, PingReq, Nack, PushPull, Gossip, StealRequest,
                              StealGrant, TasksMoved, Results, CancelJob, WorkAvailable,
                              FetchCode, Code, Holding, FetchArgs, ValueHeader, PushResult,
                              ResultAck)
}
#: The messages a peer's work link carries (one-way, in order, over a stream).
WORK_MESSAGES: tuple[type[Message], ...] = (StealRequest, StealGrant, TasksMoved, Results,
                                            CancelJob, WorkAvailable, Holding)
