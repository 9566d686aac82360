"""Which work messages an authenticated peer may send: the ids they claim are its own. Sans-IO.

A stream's handshake authenticates the node id of the peer at the other end
(:attr:`~.handshake.Session.origin`). Several work messages also *name* a node: the sender
of :class:`Results`, :class:`Holding`, :class:`WorkAvailable` and :class:`PushResult`, the
thief of a :class:`StealRequest`, the victim of a :class:`StealGrant`. Such a message is
accepted only if the node it names is the stream's peer: one peer cannot speak for another
(report another's holdings, deliver results in its name, ask for work as someone else).

A :class:`CancelJob` names no node, but only a job's owner may end it: it is accepted only
if the tasks of that job held here name the stream's peer as their owner. (A cancel for a
job of which nothing is held here has nothing to stop; it is let through, as an owner sends
one to every peer that ever held a task of its job.)

Not checked: the holder a :class:`TasksMoved` names (a victim that re-grants tasks reports
the thief, a third peer), and the owners inside a grant's job specs (tasks of any owner
move between peers). :func:`refusal` says why a message is refused, or None.
"""

from __future__ import annotations

from collections.abc import Callable

from .messages import (
    CancelJob,
    Holding,
    Message,
    PushResult,
    Results,
    StealGrant,
    StealRequest,
    WorkAvailable,
)

__all__ = ["claimed_node", "refusal"]


def claimed_node(msg: Message) -> bytes | None:
    """The node id ``msg`` says sent it, None if it names none."""
    if isinstance(msg, Results | Holding | WorkAvailable | PushResult):
        return msg.sender
    if isinstance(msg, StealRequest):
        return msg.thief
    if isinstance(msg, StealGrant):
        return msg.victim
    return None


def refusal(msg: Message, peer: bytes, owner_of: Callable[[bytes], bytes | None]
            ) -> str | None:
    """Why ``msg``, from the authenticated node ``peer``, must be refused; None if it may
    be handled. ``owner_of(job)`` is the owner of the job's tasks held here (None: none)."""
    claimed = claimed_node(msg)
    if claimed is not None and claimed != peer:
        return f"it names node {claimed.hex()[:8]} as its sender"
    if isinstance(msg, CancelJob):
        owner = owner_of(msg.job)
        if owner is not None and owner != peer:
            return (f"job {msg.job.hex()[:8]} belongs to node {owner.hex()[:8]}; only its "
                    "owner may cancel it")
    return None
