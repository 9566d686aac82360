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
from typing import Annotated, ClassVar

from .activity import ActivityQuery, ActivityReport
from .wiretypes import (
    MAX_INCLUDES,
    MAX_MEMBERS,
    MAX_TASKS,
    MAX_UPDATES,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    U64,
    AckStatus,
    Count,
    Digest,
    Host,
    Ident,
    Incarnation,
    JobId,
    Limit,
    MemberStatus,
    MessageType,
    Meta,
    Name,
    NodeId,
    Port,
    Seq,
    Size,
    SumKind,
    TaskId,
    TaskStatus,
    UpdateType,
)
from .workmessages import (
    ArraySum,
    CancelJob,
    Code,
    FetchArgs,
    FetchCode,
    FetchShared,
    FetchVersions,
    HeldTasks,
    Holding,
    JobSpec,
    JobTasks,
    PushResult,
    ResultAck,
    Results,
    StealGrant,
    StealRequest,
    TaskItem,
    TaskResult,
    TasksMoved,
    ValueHeader,
    Versions,
    WorkAvailable,
)

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


WorkMessage = (StealRequest | StealGrant | TasksMoved | Results | CancelJob | WorkAvailable
               | Holding)

Message = (Ping | Ack | PingReq | Nack | PushPull | Gossip | StealRequest | StealGrant
           | TasksMoved | Results | CancelJob | WorkAvailable | FetchCode | Code | Holding
           | FetchArgs | ValueHeader | PushResult | ResultAck | FetchShared | FetchVersions
           | Versions | ActivityQuery | ActivityReport)

#: Every top-level message class, by type code.
MESSAGE_CLASSES: dict[int, type[Message]] = {
    cls.TYPE: cls for cls in (Ping, Ack, PingReq, Nack, PushPull, Gossip, StealRequest,
                              StealGrant, TasksMoved, Results, CancelJob, WorkAvailable,
                              FetchCode, Code, Holding, FetchArgs, ValueHeader, PushResult,
                              ResultAck, FetchShared, FetchVersions, Versions,
                              ActivityQuery, ActivityReport)
}
#: The messages a peer's work link carries (one-way, in order, over a stream).
WORK_MESSAGES: tuple[type[Message], ...] = (StealRequest, StealGrant, TasksMoved, Results,
                                            CancelJob, WorkAvailable, Holding)

#: This module is the one place to import any message or wire type from.
__all__ = [
    "Ack",
    "ActivityQuery",
    "ActivityReport",
    "AckStatus",
    "Alive",
    "ArraySum",
    "CancelJob",
    "Code",
    "Count",
    "Dead",
    "Digest",
    "FetchArgs",
    "FetchShared",
    "FetchCode",
    "FetchVersions",
    "Gossip",
    "HeldTasks",
    "Holding",
    "Host",
    "Ident",
    "Incarnation",
    "JobId",
    "JobSpec",
    "JobTasks",
    "Left",
    "Limit",
    "MAX_INCLUDES",
    "MAX_MEMBERS",
    "MAX_TASKS",
    "MAX_UPDATES",
    "MESSAGE_CLASSES",
    "MemberState",
    "MemberStatus",
    "Message",
    "MessageType",
    "Meta",
    "Nack",
    "Name",
    "NodeId",
    "PROTOCOL_VERSION",
    "Ping",
    "PingReq",
    "Port",
    "PushPull",
    "PushResult",
    "ResultAck",
    "Results",
    "SUPPORTED_VERSIONS",
    "Seq",
    "Size",
    "StealGrant",
    "StealRequest",
    "SumKind",
    "Suspect",
    "TaskId",
    "TaskItem",
    "TaskResult",
    "TaskStatus",
    "TasksMoved",
    "U64",
    "Update",
    "UpdateType",
    "Updates",
    "ValueHeader",
    "Versions",
    "WORK_MESSAGES",
    "WorkAvailable",
    "WorkMessage",
]
