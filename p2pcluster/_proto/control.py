"""The local control protocol, version 3: the one schema both its ends use. Pure.

`p2pcluster run`, a :class:`~p2pcluster.Cluster` and the other commands talk to the
`p2pcluster join` daemon of their machine over a Unix stream socket. One connection per client
process carries any number of jobs at once (``docs/protocol.md``, section 8):

- **Frames.** Each frame is a 4-byte big-endian length and one CBOR item, at most
  :data:`MAX_FRAME` bytes. The first frame each way is a plain CBOR map: the client's
  :func:`hello` and the daemon's :func:`welcome` (or ``{"ok": false, "error": ...}``), so a
  daemon or client of another version says so in words. Every later frame is a typed message
  ``[version, type, fields...]`` decoded as strictly as the peer protocol (:data:`CODEC`).
- **Values** (a task's arguments, a result, a code bundle) up to :data:`INLINE` bytes ride
  inside messages (:class:`Inline`). Larger ones go first as a :class:`Blob` announcement and
  :class:`Chunk` frames of at most :data:`CHUNK` bytes, then a message refers to them
  (:class:`BlobRef`). A receiver checks an announced size against its ``max_value_size``
  before it stores a byte. Where the other end's greeting says ``"segments": true``
  (:func:`hello`, :func:`welcome`), a large value may go in shared memory instead: a
  :class:`SegmentBlob` frame, with a sealed memfd beside it (``SCM_RIGHTS``), announces it
  whole. Either side writes as fast as the other reads and no faster: the daemon keeps a
  bounded number of frames in flight per connection, so a slow client never makes it buffer
  more than that.
- **A job**: :class:`Submit` (the function, the code, the number of tasks), then the tasks'
  arguments in order in :class:`Args` messages; the daemon answers :class:`Accepted`, then
  :class:`Results` (each with the name of the peer that ran the task) and :class:`Progress`
  as they come, :class:`Placement` news of where its tasks may go (a peer excluded, the
  tasks waiting for a tag), and :class:`Ended` last. :class:`Cancel` ends a job early. Closing the
  connection cancels every job it carried.
- **Everything else** (members, status, leave, ...) is a :class:`Request` with an operation
  name and a CBOR map, answered by a :class:`Reply`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from .codec import Codec
from .eligibility import NO_NEEDS, JobNeeds
from .meta import NodeMeta
from .wiretypes import EndReason, Limit, Size

if TYPE_CHECKING:  # a client of the daemon needs no membership machine
    from .membership import Member

__all__ = [
    "CHUNK", "CODEC", "CONTROL_VERSION", "INLINE", "MAX_FRAME",
    "Accepted", "Args", "Blob", "BlobRef", "Cancel", "Chunk", "ControlMessage", "ControlType",
    "EndReason", "Ended", "Inline", "PeerCount", "Placement", "Progress", "Ref", "Reply",
    "Request", "ResultItem", "Results", "SegmentBlob", "Share", "Submit", "Value", "hello",
    "member_row", "welcome",
]

#: The version of this protocol (the peers' wire protocol has its own).
CONTROL_VERSION = 3
#: Largest frame either side accepts, in bytes: a chunk plus headroom.
MAX_FRAME = 4 * 1024 * 1024
#: Bytes of value per Chunk frame.
CHUNK = 1024 * 1024
#: Values up to this size ride inside messages; larger ones go as blobs.
INLINE = 64 * 1024

U64 = Annotated[int, Limit(lo=0, hi=2**64 - 1)]
Count = Annotated[int, Limit(lo=0, hi=2**32 - 1)]
Text = Annotated[str, Limit(max_len=4096)]
MAX_ITEMS = 1 << 16


class ControlType(IntEnum):
    """Message type codes of the control protocol. APPEND-ONLY: never renumber or reuse."""

    BLOB = 1
    CHUNK = 2
    SUBMIT = 3
    ARGS = 4
    CANCEL = 5
    ACCEPTED = 6
    RESULTS = 7
    PROGRESS = 8
    ENDED = 9
    REQUEST = 10
    REPLY = 11
    SHARE = 12
    # 13-14: reserved
    PLACEMENT = 15
    SEGMENT_BLOB = 16


class ValueType(IntEnum):
    """Type codes of the two forms of a value. APPEND-ONLY."""

    INLINE = 1
    BLOB_REF = 2


# --- values -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Inline:
    """A value carried in the message itself."""

    TYPE: ClassVar[int] = ValueType.INLINE
    data: Annotated[bytes, Limit(max_len=INLINE)]


@dataclass(frozen=True, slots=True)
class BlobRef:
    """A value sent before, as blob ``blob`` of ``size`` bytes; referring to it consumes it."""

    TYPE: ClassVar[int] = ValueType.BLOB_REF
    blob: U64
    size: Size


Value = Inline | BlobRef


@dataclass(frozen=True, slots=True)
class Blob:
    """Announces blob ``blob`` (ids count up from 1, per direction): ``size`` bytes follow
    in :class:`Chunk` frames, in order, and nothing else of that blob."""

    TYPE: ClassVar[int] = ControlType.BLOB
    blob: U64
    size: Size


@dataclass(frozen=True, slots=True)
class SegmentBlob:
    """Announces blob ``blob`` whole (to a daemon whose welcome, or a client whose hello,
    says ``"segments": true``): its ``size`` bytes are at ``offset`` in the memfd passed
    beside this frame (``SCM_RIGHTS``, with the frame's first byte, one descriptor per
    frame), exactly ``offset + size`` bytes long and sealed so that its size cannot change
    (``F_SEAL_SHRINK | F_SEAL_GROW``); one to the daemon, which holds it as a job's
    arguments, is sealed against writes too (``F_SEAL_WRITE``). The receiver maps it
    instead of receiving a copy."""

    TYPE: ClassVar[int] = ControlType.SEGMENT_BLOB
    blob: U64
    size: Size
    offset: Annotated[int, Limit(lo=0, hi=4096)]


@dataclass(frozen=True, slots=True)
class Chunk:
    """The next bytes of blob ``blob``."""

    TYPE: ClassVar[int] = ControlType.CHUNK
    blob: U64
    data: Annotated[bytes, Limit(max_len=CHUNK)]


# --- jobs -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ref:
    """The task function: module and qualified name, the job file's bundle digest (or null),
    and the digests of bundles put on ``sys.path``."""

    module: Annotated[str, Limit(max_len=1024)]
    qualname: Annotated[str, Limit(max_len=1024)]
    job: Annotated[str, Limit(max_len=64)] | None
    includes: Annotated[tuple[Annotated[str, Limit(max_len=64)], ...], Limit(max_len=64)]


@dataclass(frozen=True, slots=True)
class Submit:
    """A new job, numbered ``job`` by the client (unique on its connection), of ``tasks``
    tasks: ``values`` are the arguments of the first of them (of all, for a small job), and
    the rest follow in :class:`Args`. ``bundles`` are code bundles the function
    needs (canonical CBOR, see :class:`~p2pcluster._bundles.CodeBundle`) that this connection
    has not sent before: the daemon keeps each for the connection's life. ``timeout``
    is per task in seconds; ``chunksize`` 0 lets the peers choose; ``label`` names the job in
    logs (the job file, or the script); ``needs`` is what a peer must have to take its
    tasks (:class:`~.eligibility.JobNeeds`)."""

    TYPE: ClassVar[int] = ControlType.SUBMIT
    job: U64
    ref: Ref
    bundles: Annotated[tuple[Value, ...], Limit(max_len=65)]
    tasks: Count
    timeout: float | None
    chunksize: Annotated[int, Limit(lo=0, hi=2**20)]
    label: Text
    values: Annotated[tuple[Value, ...], Limit(max_len=MAX_ITEMS)]
    needs: JobNeeds = NO_NEEDS


@dataclass(frozen=True, slots=True)
class Args:
    """The arguments of tasks ``first``, ``first + 1``, ... of ``job``, each the CBOR of
    ``[args, kwargs]``."""

    TYPE: ClassVar[int] = ControlType.ARGS
    job: U64
    first: Count
    values: Annotated[tuple[Value, ...], Limit(max_len=MAX_ITEMS)]


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop ``job`` everywhere; the daemon answers :class:`Ended`."""

    TYPE: ClassVar[int] = ControlType.CANCEL
    job: U64


@dataclass(frozen=True, slots=True)
class Accepted:
    """``job`` runs, owned by the daemon's peer under id ``job_id``."""

    TYPE: ClassVar[int] = ControlType.ACCEPTED
    job: U64
    job_id: Annotated[bytes, Limit(max_len=16)]


@dataclass(frozen=True, slots=True)
class ResultItem:
    """How task ``index`` ended (``status`` as in the peer protocol's TaskStatus: 0 the
    value, else a CBOR map of the error), and the name of the peer that ran it."""

    index: U64
    status: Annotated[int, Limit(lo=0, hi=255)]
    value: Value
    peer: Annotated[str, Limit(max_len=255)]


@dataclass(frozen=True, slots=True)
class Results:
    """First results of tasks of ``job``, in no particular order."""

    TYPE: ClassVar[int] = ControlType.RESULTS
    job: U64
    items: Annotated[tuple[ResultItem, ...], Limit(max_len=MAX_ITEMS)]


@dataclass(frozen=True, slots=True)
class PeerCount:
    name: Annotated[str, Limit(max_len=255)]
    count: Count


@dataclass(frozen=True, slots=True)
class Progress:
    """Where ``job`` stands: ``done`` of ``total`` tasks have results, and the unfinished
    ones are held (queued or running) by these peers. At most about once a second."""

    TYPE: ClassVar[int] = ControlType.PROGRESS
    job: U64
    done: Count
    total: Count
    held: Annotated[tuple[PeerCount, ...], Limit(max_len=4096)]


@dataclass(frozen=True, slots=True)
class Ended:
    """``job`` is over; nothing more about it follows."""

    TYPE: ClassVar[int] = ControlType.ENDED
    job: U64
    reason: Annotated[int, Limit(lo=0, hi=255)]
    error: Text


@dataclass(frozen=True, slots=True)
class Placement:
    """News of where ``job``'s tasks may go: ``kind`` a
    :class:`~.wiretypes.PlacementKind`, ``peer`` the name of the peer excluded (else the
    daemon's), ``reasons`` in words."""

    TYPE: ClassVar[int] = ControlType.PLACEMENT
    job: U64
    kind: Annotated[int, Limit(lo=0, hi=255)]
    peer: Annotated[str, Limit(max_len=255)]
    reasons: Annotated[tuple[Text, ...], Limit(max_len=256)]


# --- everything else --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """Operation ``op`` with its arguments ``body`` (a CBOR map), numbered ``req``."""

    TYPE: ClassVar[int] = ControlType.REQUEST
    req: U64
    op: Annotated[str, Limit(max_len=64)]
    body: Annotated[bytes, Limit(max_len=MAX_FRAME // 2)]


@dataclass(frozen=True, slots=True)
class Share:
    """Keep ``value`` (an encoded value) for tasks whose arguments name it by its SHA-256,
    until the connection closes; numbered ``req``, answered by a :class:`Reply` whose body
    is ``{"digest": bytes, "size": int}``."""

    TYPE: ClassVar[int] = ControlType.SHARE
    req: U64
    value: Value


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to request ``req``: ``body`` (a CBOR map) if ``ok``, else ``error``."""

    TYPE: ClassVar[int] = ControlType.REPLY
    req: U64
    ok: bool
    body: Annotated[bytes, Limit(max_len=MAX_FRAME // 2)]
    error: Text


ControlMessage = (Blob | Chunk | Submit | Args | Cancel | Accepted | Results | Progress
                  | Ended | Request | Reply | Share | Placement | SegmentBlob)

#: Strict CBOR for the typed messages, by type code.
CODEC = Codec({cls.TYPE: cls for cls in (Blob, Chunk, Submit, Args, Cancel, Accepted, Results,
                                          Progress, Ended, Request, Reply, Share, Placement,
                                          SegmentBlob)},
              version=CONTROL_VERSION, supported=frozenset({CONTROL_VERSION}))


def hello(client: str, pid: int, max_value_size: int, segments: bool = False
          ) -> dict[str, Any]:
    """The client's first frame: who it is, the largest value it takes, and whether it
    takes values in shared memory (:class:`SegmentBlob`)."""
    return {"op": "hello", "version": CONTROL_VERSION, "client": client, "pid": pid,
            "max_value_size": max_value_size, "segments": segments}


def welcome(*, peer: str, node: str, cluster: str, software: str,
            max_value_size: int, segments: bool = False) -> dict[str, Any]:
    """The daemon's answer to :func:`hello`: who it is, the largest value it takes, and
    whether it takes values in shared memory (:class:`SegmentBlob`)."""
    return {"ok": True, "version": CONTROL_VERSION, "peer": peer, "node": node,
            "cluster": cluster, "software": software, "max_value_size": max_value_size,
            "segments": segments}


def member_row(member: Member, now: float) -> dict[str, Any]:
    """A member as the ``members`` operation reports it (and `members --json` prints it).
    ``age`` is the seconds since its state last changed."""
    meta = NodeMeta.decode(member.meta)
    return {
        "name": member.name, "id": member.id.hex(), "host": member.host, "port": member.port,
        "status": member.status.name.lower(), "incarnation": member.incarnation,
        "workers": meta.workers, "queue": meta.queue, "tags": list(meta.tags),
        "version": meta.version, "python": meta.python, "system": meta.system,
        "machine": meta.machine, "age": round(max(0.0, now - member.since), 1),
    }
