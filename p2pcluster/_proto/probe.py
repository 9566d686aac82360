"""Probing: whom to probe next, the probe in flight, and the ping-reqs we relay for others.

SWIM (section 4.3) probes members round-robin over a shuffled list and inserts new members at
random positions. That bounds the time to a failed member's first probe by two passes of the
list, while the expected time stays about 1.6 protocol periods whatever the cluster size.

A probe is direct until ``probe_timeout``, then indirect (ping-req through
``indirect_checks`` helpers, plus one ping over a stream) until the end of the period; an ack
at any time before that counts. The functions below operate on a
:class:`~.swim.MembershipMachine`, whose state they share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from random import Random
from typing import TYPE_CHECKING

from .membership import MemberStatus
from .messages import Ack, Nack, Ping, PingReq, Suspect
from .outputs import Address, StreamRequest

if TYPE_CHECKING:
    from .swim import MembershipMachine

__all__ = ["Probe", "ProbeOrder", "Relay"]

ALIVE, SUSPECT, DEAD = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD
NACK_FRACTION = 0.8  # Lifeguard: a helper nacks at 80% of its timeout


@dataclass(slots=True)
class Probe:
    """Our probe of ``target``: direct until ``timeout_at``, then indirect until ``end_at``."""

    target: bytes
    address: Address
    seq: int
    timeout_at: float
    end_at: float
    indirect: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class Relay:
    """A ping-req we serve: relay the target's ack to ``requester`` or nack at ``nack_at``."""

    requester: Address
    seq: int
    nack_at: float
    expire_at: float
    nacked: bool = False


class ProbeOrder:
    """Round-robin over a shuffled list of member ids."""

    __slots__ = ("_index", "_known", "_order", "_rng")

    def __init__(self, rng: Random) -> None:
        self._rng = rng
        self._order: list[bytes] = []
        self._known: set[bytes] = set()
        self._index = 0

    def __len__(self) -> int:
        return len(self._order)

    def add(self, node: bytes) -> None:
        """Insert ``node`` at a random position (once)."""
        if node in self._known:
            return
        self._known.add(node)
        position = self._rng.randint(0, len(self._order))
        self._order.insert(position, node)
        if position < self._index:
            self._index += 1

    def next(self, eligible: Callable[[bytes], bool]) -> bytes | None:
        """The next eligible member; at the end of a pass, drop the ineligible and reshuffle."""
        for _ in range(2):
            while self._index < len(self._order):
                node = self._order[self._index]
                self._index += 1
                if eligible(node):
                    return node
            self._order = [n for n in self._order if eligible(n)]
            self._known = set(self._order)
            self._rng.shuffle(self._order)
            self._index = 0
        return None

def eligible(m: MembershipMachine, node: bytes) -> bool:
    entry = m.table.get(node)
    return entry is not None and entry is not m.me and entry.status in (ALIVE, SUSPECT)

def tick_probe(m: MembershipMachine, now: float) -> None:
    probe = m._probe
    if probe is not None and not probe.indirect and now >= probe.timeout_at:
        go_indirect(m, probe)
    if probe is not None and now >= probe.end_at:
        probe_failed(m, now, probe)
    if m._probe is None and now >= m._next_probe and not m._left:
        start_probe(m, now)

def start_probe(m: MembershipMachine, now: float) -> None:
    interval = m.awareness.scale(m.config.probe_interval)
    m._next_probe = now + interval
    node = m.order.next(lambda node: eligible(m, node))
    if node is None:
        return
    target = m.table.get(node)
    assert target is not None
    m._seq += 1
    timeout = m.awareness.scale(m.config.probe_timeout)
    m._probe = Probe(node, (target.host, target.port), m._seq, now + timeout,
                        now + interval)
    buddy = target.as_update() if target.status == SUSPECT else None
    m._send(target.host, target.port, Ping(m._seq, node), first=buddy)
    m._count("probes")

def go_indirect(m: MembershipMachine, probe: Probe) -> None:
    probe.indirect = True
    k = m.config.indirect_checks
    # Sample a few spares: the target and suspect members cannot help.
    candidates = m.table.sample_live(m.rng, k + 3)
    chosen = [e for e in candidates if e.status == ALIVE and e.node != probe.target][:k]
    host, port = probe.address
    for helper in chosen:
        m._send(helper.host, helper.port, PingReq(probe.seq, probe.target, host, port))
    probe.expected_nacks = len(chosen)
    m._counters["indirect_probes"] += len(chosen)
    if m.config.tcp_fallback_probe:
        token = m.new_request("tcp-probe", probe.address, probe.seq)
        m._outputs.append(StreamRequest(probe.address, Ping(probe.seq, probe.target),
                                           token))
        m._count("tcp_probes")

def on_ack(m: MembershipMachine, now: float, seq: int) -> None:
    relay = m._relays.pop(seq, None)
    if relay is not None:
        m._send(*relay.requester, Ack(relay.seq))
        m._count("acks_relayed")
        return
    if m._probe is not None and m._probe.seq == seq:
        m._probe = None
        m.awareness.apply(-1)

def probe_failed(m: MembershipMachine, now: float, probe: Probe) -> None:
    m._probe = None
    missing = probe.expected_nacks - probe.nacks if probe.expected_nacks else 1
    m.awareness.apply(missing)
    m._count("probes_failed")
    target = m.table.get(probe.target)
    if target is not None and target.status in (ALIVE, SUSPECT):
        # Starts a suspicion, or confirms one that another member started.
        m._count("suspicions")
        m._apply(now, Suspect(target.node, target.incarnation, m.me.node))

def serve_ping_req(m: MembershipMachine, now: float, src: Address, msg: PingReq) -> None:
    m._seq += 1
    timeout = m.config.probe_timeout
    m._relays[m._seq] = Relay(src, msg.seq, now + NACK_FRACTION * timeout,
                                    now + m.config.probe_interval)
    m._send(msg.host, msg.port, Ping(m._seq, msg.target))

def tick_relays(m: MembershipMachine, now: float) -> None:
    for seq, relay in list(m._relays.items()):
        if not relay.nacked and now >= relay.nack_at:
            relay.nacked = True
            m._send(*relay.requester, Nack(relay.seq))
            m._count("nacks_sent")
        if now >= relay.expire_at:
            del m._relays[seq]

def reply_ack(m: MembershipMachine, src: Address, seq: int) -> None:
    # If the pinger is a member we hold suspect or dead, tell it first: it can refute.
    entry = m.table.at_address(src)
    first = entry.as_update() if entry is not None and entry.status in (SUSPECT, DEAD) else None
    m._send(*src, Ack(seq), first=first)
