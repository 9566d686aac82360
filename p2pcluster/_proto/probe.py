"""Probing: whom to probe next, the probe in flight, and the ping-reqs we relay for others.

SWIM (section 4.3) probes members round-robin over a shuffled list and inserts new members at
random positions. That bounds the time to a failed member's first probe by two passes of the
list, while the expected time stays about 1.6 protocol periods whatever the cluster size.

A probe is direct until ``probe_timeout``, then indirect (ping-req through
``indirect_checks`` helpers, plus one ping over a stream) until the end of the period; an ack
at any time before that counts. :class:`Prober` owns all of it, and acts through the
machine's :class:`~.context.Context`.

Sequence numbers of probes and relayed pings are random 64-bit draws from the machine's
generator, and an ack counts only from the node it should come from (the target, or a helper
we asked to relay; for a relay we serve, the node we pinged): the envelope authenticates the
sender's id, so a recorded ack can neither answer a later probe nor come from elsewhere. A
nack counts once per helper asked.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random
from typing import NamedTuple

from .awareness import Awareness
from .context import Context
from .membership import MemberStatus
from .messages import Ack, Nack, Ping, PingReq, Suspect
from .outputs import Address, Endpoint

__all__ = ["Probe", "ProbeOrder", "Prober", "Relay", "TcpProbe"]

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
    helpers: frozenset[bytes] = frozenset()  #: asked to probe for us; may relay the ack
    nacked: set[bytes] = field(default_factory=set)  #: helpers that sent a nack

    @property
    def expected_nacks(self) -> int:
        return len(self.helpers)

    @property
    def nacks(self) -> int:
        return len(self.nacked)


@dataclass(slots=True)
class Relay:
    """A ping-req we serve: relay ``target``'s ack to ``requester`` or nack at ``nack_at``."""

    requester: Endpoint
    seq: int
    target: bytes
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


class TcpProbe(NamedTuple):
    """A fallback probe of ``target`` over a stream, awaiting its reply."""

    address: Address
    seq: int
    target: bytes


class Prober:
    """SWIM's failure detector at one peer: whom to probe next, the probe in flight, the
    ping-reqs it serves for others, and when to probe next (stretched by local health)."""

    def __init__(self, ctx: Context, awareness: Awareness, *, first_probe: float) -> None:
        self._ctx = ctx
        self._awareness = awareness
        self._order = ProbeOrder(ctx.rng)
        self._probe: Probe | None = None
        self._relays: dict[int, Relay] = {}
        self._streams: dict[int, TcpProbe] = {}
        self._next_probe = first_probe

    @property
    def probe(self) -> Probe | None:
        """Our probe in flight, if any."""
        return self._probe

    def add(self, node: bytes) -> None:
        """Probe ``node`` from now on: a member that joined or came back."""
        self._order.add(node)

    def stop(self) -> None:
        """We leave: forget the probe in flight and start no other (relays still run)."""
        self._probe = None
        self._next_probe = math.inf

    def next_deadline(self) -> float:
        probe = self._probe
        if probe is None:
            deadlines = [self._next_probe]
        else:
            deadlines = [probe.end_at if probe.indirect else probe.timeout_at]
        deadlines += [r.expire_at if r.nacked else r.nack_at for r in self._relays.values()]
        return min(deadlines)

    def tick(self, now: float) -> None:
        probe = self._probe
        if probe is not None and not probe.indirect and now >= probe.timeout_at:
            self._go_indirect(probe)
        if probe is not None and now >= probe.end_at:
            self._failed(now, probe)
        if self._probe is None and now >= self._next_probe:
            self._start(now)
        self._tick_relays(now)

    # --- our probes -----------------------------------------------------------------------

    def _eligible(self, node: bytes) -> bool:
        entry = self._ctx.table.get(node)
        return (entry is not None and entry is not self._ctx.table.me
                and entry.status in (ALIVE, SUSPECT))

    def _start(self, now: float) -> None:
        ctx = self._ctx
        interval = self._awareness.scale(ctx.config.probe_interval)
        self._next_probe = now + interval
        node = self._order.next(self._eligible)
        if node is None:
            return
        target = ctx.table.get(node)
        assert target is not None
        seq = ctx.rng.getrandbits(64)
        timeout = self._awareness.scale(ctx.config.probe_timeout)
        self._probe = Probe(node, (target.host, target.port), seq, now + timeout,
                            now + interval)
        buddy = target.as_update() if target.status == SUSPECT else None
        ctx.send(target.endpoint, Ping(seq, node), buddy)
        ctx.counters["probes"] += 1

    def _go_indirect(self, probe: Probe) -> None:
        ctx = self._ctx
        probe.indirect = True
        k = ctx.config.indirect_checks
        # Sample a few spares: the target and suspect members cannot help.
        candidates = ctx.table.sample_live(ctx.rng, k + 3)
        chosen = [e for e in candidates if e.status == ALIVE and e.node != probe.target][:k]
        host, port = probe.address
        for helper in chosen:
            ctx.send(helper.endpoint, PingReq(probe.seq, probe.target, host, port))
        probe.helpers = frozenset(helper.node for helper in chosen)
        ctx.counters["indirect_probes"] += len(chosen)
        if ctx.config.tcp_fallback_probe:
            token = ctx.request(probe.address, Ping(probe.seq, probe.target), probe.target)
            self._streams[token] = TcpProbe(probe.address, probe.seq, probe.target)
            ctx.counters["tcp_probes"] += 1

    def _failed(self, now: float, probe: Probe) -> None:
        ctx = self._ctx
        self._probe = None
        missing = probe.expected_nacks - probe.nacks if probe.expected_nacks else 1
        self._awareness.apply(missing)
        ctx.counters["probes_failed"] += 1
        target = ctx.table.get(probe.target)
        if target is not None and target.status in (ALIVE, SUSPECT):
            # Starts a suspicion, or confirms one that another member started.
            ctx.counters["suspicions"] += 1
            ctx.apply(now, Suspect(target.node, target.incarnation, ctx.table.me.node))

    def on_ack(self, now: float, seq: int, sender: bytes) -> None:
        """An ack from node ``sender``: relay it if it answers a ping-req we serve, else it
        may end our probe; an ack from any other node than expected is ignored."""
        relay = self._relays.get(seq)
        if relay is not None and relay.target == sender:
            del self._relays[seq]
            self._ctx.send(relay.requester, Ack(relay.seq))
            self._ctx.counters["acks_relayed"] += 1
            return
        probe = self._probe
        if probe is not None and probe.seq == seq and (sender == probe.target
                                                         or sender in probe.helpers):
            self._probe = None
            self._awareness.apply(-1)

    def on_nack(self, seq: int, sender: bytes) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq and sender in probe.helpers:
            probe.nacked.add(sender)

    def close_stream(self, token: int) -> TcpProbe | None:
        """The fallback probe that stream request ``token`` carried; None if not ours."""
        return self._streams.pop(token, None)

    # --- serving others -------------------------------------------------------------------

    def answer_ping(self, src: Endpoint, seq: int) -> None:
        """Ack a ping to us. If the pinger is a member we hold suspect or dead, tell it
        first: it can refute."""
        entry = self._ctx.table.get(src.node)
        first = entry.as_update() if entry is not None and entry.status in (SUSPECT, DEAD) else None
        self._ctx.send(src, Ack(seq), first)

    def serve_ping_req(self, now: float, src: Endpoint, msg: PingReq) -> None:
        """Ping ``msg.target`` for ``src``; relay its ack, or nack at 80% of the timeout."""
        ctx = self._ctx
        seq = ctx.rng.getrandbits(64)
        self._relays[seq] = Relay(src, msg.seq, msg.target,
                                  now + NACK_FRACTION * ctx.config.probe_timeout,
                                  now + ctx.config.probe_interval)
        ctx.send(Endpoint((msg.host, msg.port), msg.target), Ping(seq, msg.target))

    def _tick_relays(self, now: float) -> None:
        for seq, relay in list(self._relays.items()):
            if not relay.nacked and now >= relay.nack_at:
                relay.nacked = True
                self._ctx.send(relay.requester, Nack(relay.seq))
                self._ctx.counters["nacks_sent"] += 1
            if now >= relay.expire_at:
                del self._relays[seq]
