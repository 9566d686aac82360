"""The wire's vocabulary: the protocol version, field limits, and the append-only enums (the
control protocol's :class:`EndReason` too).

Light on purpose: a worker process imports it (for :class:`TaskStatus`), and a client of
the daemon (for :class:`EndReason`), without the message classes.
``Annotated[T, Limit(...)]`` bounds a field; :mod:`.codec` turns the limits into checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

#: The wire protocol version every message carries. Bump it for any incompatible change.
#: Version 2 added task sizes, the result limit of a job, holding reports and the data
#: streams that carry large values (``FetchArgs``/``ValueHeader``, ``PushResult``/``ResultAck``).
#: Version 3 added what a job needs (``JobSpec.needs``) and the version questions
#: (``FetchVersions``/``Versions``), and binds both node ids into every datagram's envelope
#: (envelope version 2) and into the stream handshake (handshake version 2), with each peer's
#: current key id.
#: Version 4 lets a stream run under AES-256-GCM when both ends offer it, and replaces each
#: direction's key every 64 GiB (handshake version 3, with an offers byte in each hello).
#: Version 5 has the peer that fetches arguments check their arrays against the owner's sums
#: from submit (``FetchArgs.checks``, ``ValueHeader.sum_kind`` and ``sums``).
PROTOCOL_VERSION = 5
#: Versions this implementation decodes.
SUPPORTED_VERSIONS = frozenset({5})


@dataclass(frozen=True, slots=True)
class Limit:
    """Bounds on a field: ``lo``/``hi`` for integers, ``max_len`` for str, bytes and tuples.

    ``max_len`` of a str counts UTF-8 bytes. A ``printable`` str has no control characters
    (:meth:`str.isprintable`): a name that is logged cannot forge a log line.
    """

    lo: int | None = None
    hi: int | None = None
    max_len: int | None = None
    printable: bool = False


U64 = Limit(lo=0, hi=2**64 - 1)
NodeId = Annotated[bytes, Limit(max_len=32)]
Incarnation = Annotated[int, U64]
Seq = Annotated[int, U64]
Port = Annotated[int, Limit(lo=0, hi=65535)]
Host = Annotated[str, Limit(max_len=255, printable=True)]
Name = Annotated[str, Limit(max_len=255, printable=True)]
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
    FETCH_SHARED = 20
    # 21-24: reserved
    FETCH_VERSIONS = 25
    VERSIONS = 26
    ACTIVITY_QUERY = 28
    ACTIVITY_REPORT = 29


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


# --- work ------------------------------------------------------------------------------------

JobId = Annotated[bytes, Limit(max_len=16)]
TaskId = Annotated[int, U64]
Count = Annotated[int, Limit(lo=0, hi=2**32 - 1)]
Digest = Annotated[str, Limit(max_len=64)]
Ident = Annotated[str, Limit(max_len=1024)]
#: A value's size in bytes (arguments and results may be far larger than any frame).
Size = Annotated[int, Limit(lo=0, hi=2**62)]
MAX_TASKS = 2**20
MAX_INCLUDES = 64
#: Jobs a steal request may decline (the most recent; older ones may still be granted).
MAX_DECLINED = 64


class TaskStatus(IntEnum):
    """How a task ended, in a :class:`TaskResult`. APPEND-ONLY."""

    OK = 0  #: ``payload`` is the CBOR-encoded return value
    ERROR = 1  #: ``payload`` is a CBOR map: type, message, traceback
    POISON = 2  #: the task killed 3 worker processes; ``payload`` as for ERROR
    TIMEOUT = 3  #: the task overran the job's timeout; ``payload`` as for ERROR


class AckStatus(IntEnum):
    """What the owner did with a pushed result. APPEND-ONLY."""

    ACCEPTED = 0  #: it is the task's result (or a duplicate)
    REFUSED = 1  #: too large here: the pusher sends ``reason`` as the task's error instead
    NO_JOB = 2  #: the owner no longer runs the job: nothing to do


class SumKind(IntEnum):
    """How the arrays of a task's arguments were summed at submit, in a
    :class:`~.workmessages.ValueHeader`; a :class:`~.workmessages.FetchArgs` offers the
    kinds its sender can check as the bits ``1 << kind``. APPEND-ONLY."""

    NONE = 0  #: no sums: nothing to check
    CRC32 = 1  #: zlib's CRC-32 of each array's bytes
    XXH3_64 = 2  #: XXH3-64 (seed 0) of each array's bytes, as an unsigned integer


#: Sums one ValueHeader carries at most (a value's out-of-band arrays: ``_packed.MAX_BUFFERS``).
MAX_SUMS = 4096


class PlacementKind(IntEnum):
    """News of where a job's tasks may go, from its owner (and, in the control protocol's
    ``Placement``, to its client). APPEND-ONLY."""

    EXCLUDED = 0  #: a peer cannot run the job's tasks: its environment does not fit
    ALONE = 1  #: only the owner can take them: it runs them all
    WAITING = 2  #: no live peer that can run them has the tags they require: they wait
    RESUMED = 3  #: a peer that can take them is back: they run again
    UNRUNNABLE = 4  #: no live peer can run them, the owner included: the job fails


class EndReason(IntEnum):
    """How a job ended, in the control protocol's ``Ended``. APPEND-ONLY."""

    DONE = 0  #: every task has a result
    CANCELLED = 1  #: the client cancelled it (or left)
    FAILED = 2  #: the daemon could not run it; ``error`` says why
