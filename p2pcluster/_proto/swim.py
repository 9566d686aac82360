"""`MembershipMachine`: SWIM with the Lifeguard refinements, as a sans-IO machine.

Theory of operation
===================

Every protocol period (``probe_interval``, stretched by local health) the machine probes one
member, round-robin (:mod:`.probe`). A probe is a Ping; if no Ack comes within
``probe_timeout``, ``indirect_checks`` other members are asked to probe (PingReq) and relay the
ack, and (``tcp_fallback_probe``) one Ping also goes over a stream. Helpers that see no ack by
80% of their timeout send a Nack. If nothing acks by the end of the period, the target becomes
*suspect*.

A suspicion expires into *dead* after Lifeguard's dynamic timeout (:mod:`.suspicion`), which
shrinks as other members independently confirm it. Only the suspect can refute, by raising
its incarnation; the *buddy system* puts the suspicion first on every ping to the suspect, so
it learns at once. A suspicion we hold unrefuted for half its minimum timeout also sends the
suspect one such ping of its own (ours): under a partition the suspect and the few members on
its side may otherwise never exchange the suspicion and its refutation before it expires.
Local health (:mod:`.awareness`) rises when our own probes fail without nacks (a sign that
*we* are the slow one) and when we must refute, and it stretches our interval and timeout.

News travels piggybacked on pings, acks and ping-reqs, plus a Gossip datagram to
``gossip_nodes`` members every ``gossip_interval`` while updates are queued
(:mod:`.broadcast`). Every ``push_pull_interval`` (scaled up above 32 members) the whole table
is exchanged with one random member over a stream, and every ``reconnect_interval`` with one
member believed dead, so the halves of a healed partition find each other (:mod:`.sync`).

The machine orchestrates; it decides no member's status itself:

- :class:`~.probe.Prober` owns probing: the probe order, the probe in flight, the ping-reqs
  it relays, its schedule;
- :class:`~.sync.AntiEntropy` owns the push-pull, reconnect and seed-retry schedules, the
  seeds and its stream requests;
- :mod:`.membership` makes every change of a member (precedence, suspicion, refutation,
  restarts, tombstones, the merge rule), and the machine calls into it for each one;
- the machine keeps the rest: the gossip queue and round, piggybacking, the suspicion
  timers, outputs, events and statistics. The parts reach it only through the
  :class:`~.context.Context` it lends them.

All methods take ``now`` (seconds, any monotonic origin) and return nothing: outputs queue
until the driver calls :meth:`take_outputs`, events until :meth:`take_events`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields
from random import Random
from typing import TYPE_CHECKING

from . import wire
from .awareness import Awareness
from .broadcast import BroadcastQueue, retransmit_limit
from .context import Context
from .envelope import DATAGRAM_OVERHEAD
from .membership import (
    Change,
    Entry,
    Member,
    MemberEvent,
    MemberStatus,
    MemberTable,
    Refutation,
    news,
)
from .messages import Ack, Gossip, Message, Nack, Ping, PingReq, PushPull, Update
from .outputs import Address, Endpoint, Output, SendDatagram, StreamRequest
from .probe import Prober
from .suspicion import SuspicionTimers
from .sync import AntiEntropy

if TYPE_CHECKING:
    from .._config import Config

__all__ = ["MachineStatistics", "MembershipMachine"]

ALIVE, SUSPECT, DEAD, LEFT = (MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD,
                              MemberStatus.LEFT)
FIRST_ROUND_SHARE = 0.75  # of an update's retransmit budget spent in its first gossip round
LEAVE_FANOUT = 64  # members told directly of a graceful leave
MAX_META = 512  # bytes of member metadata (memberlist's limit; see messages.Meta)


@dataclass(frozen=True, slots=True)
class MachineStatistics:
    """Counters of one machine. ``suspicions`` counts suspicions this peer started."""

    probes: int = 0
    probes_failed: int = 0
    indirect_probes: int = 0
    tcp_probes: int = 0
    nacks_sent: int = 0
    acks_relayed: int = 0
    suspicions: int = 0
    confirmations: int = 0
    refutations: int = 0
    deaths_declared: int = 0
    push_pulls: int = 0
    push_pulls_failed: int = 0
    suspect_pings: int = 0  #: pings of our own to a suspect unrefuted for a while
    stranger_push_pulls: int = 0  #: exchanges with a sender we did not know
    gossip_messages: int = 0
    corrections: int = 0
    health_score: int = 0


class MembershipMachine:
    """One peer's view of the cluster. See the module docstring."""

    def __init__(self, config: Config, *, node_id: bytes, name: str, host: str, port: int,
                 rng: Random, now: float, meta: bytes = b"") -> None:
        self.config = config
        self.rng = rng
        self.me = Entry(node_id, name, host, port, meta, 0, ALIVE, now)
        self.table = MemberTable(self.me)
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.broadcasts = BroadcastQueue(config.retransmit_mult)
        self.max_payload = config.max_datagram_size - DATAGRAM_OVERHEAD
        # One sequence numbers stream tokens and timer ties; probe and relay numbers are
        # random 64-bit draws from ``rng`` (:mod:`.probe`), so a seed replays them too.
        self._next_seq = itertools.count(1).__next__
        self._outputs: list[Output] = []
        self._events: list[MemberEvent] = []
        self._counters = dict.fromkeys((f.name for f in fields(MachineStatistics)), 0)
        self._suspicions = SuspicionTimers(self._next_seq)
        self._nudges = SuspicionTimers(self._next_seq)  # the suspect's own ping, when due
        self._next_gossip = now
        ctx = Context(config=config, rng=rng, table=self.table, counters=self._counters,
                      next_seq=self._next_seq, send=self._send, request=self._request,
                      apply=self._apply)
        jitter = rng.random()  # the first draw: the phases of probing and of push-pull
        self.prober = Prober(ctx, self.awareness, first_probe=now + jitter * config.probe_interval)
        self.anti_entropy = AntiEntropy(ctx, now=now, jitter=jitter)
        self.broadcasts.add(self.me.as_update())

    # --- queries --------------------------------------------------------------------------

    @property
    def node_id(self) -> bytes:
        return self.me.node

    @property
    def incarnation(self) -> int:
        return self.me.incarnation

    @property
    def has_left(self) -> bool:
        return self.me.status == LEFT

    def members(self) -> list[Member]:
        """A consistent snapshot of the table, ourselves included."""
        return self.table.snapshot()

    def checksum(self) -> str:
        return self.table.checksum()

    def statistics(self) -> MachineStatistics:
        return MachineStatistics(**(self._counters | {"health_score": self.awareness.score}))

    def take_outputs(self) -> list[Output]:
        out, self._outputs = self._outputs, []
        return out

    def take_events(self) -> list[MemberEvent]:
        events, self._events = self._events, []
        return events

    # --- commands -------------------------------------------------------------------------

    def join(self, now: float, seeds: list[Address]) -> None:
        """Exchange tables with ``seeds``; retry every few seconds while we know nobody."""
        self.anti_entropy.join(now, seeds)

    def introduce(self, now: float, candidates: list[Address]) -> None:
        """Exchange tables with ``candidates`` found by discovery; they add to the seeds,
        never replace them."""
        self.anti_entropy.introduce(now, candidates)

    def leave(self, now: float) -> None:
        """Announce a graceful leave; keep gossiping it, stop probing and syncing."""
        if self.has_left:
            return
        left = self.table.leave(now)
        self.broadcasts.add(left)
        live = [e for e in self.table if e is not self.me and e.status in (ALIVE, SUSPECT)]
        for entry in self.rng.sample(live, min(len(live), LEAVE_FANOUT)):
            self._send(entry.endpoint, Gossip(updates=()), left)
        self.prober.stop()
        self.anti_entropy.stop()

    def set_meta(self, now: float, meta: bytes) -> None:
        """Publish new metadata (a new incarnation); ``ValueError`` above 512 bytes."""
        if len(meta) > MAX_META:
            raise ValueError(f"metadata is {len(meta)} bytes; the limit is {MAX_META}")
        self.broadcasts.add(self.table.publish_meta(meta))

    def set_host(self, now: float, host: str) -> None:
        """This machine's address changed: advertise ``host`` (a new incarnation)."""
        if host != self.me.host:
            self.broadcasts.add(self.table.move_me(host))

    # --- the Machine protocol -------------------------------------------------------------

    def receive(self, now: float, src: Address, msg: Message, sender: bytes) -> None:
        """A datagram from node ``sender`` (authenticated by the envelope) at ``src``."""
        origin = Endpoint(src, sender)
        if isinstance(msg, (Ping, Ack, PingReq, Gossip)):
            for update in msg.updates:
                self._apply(now, update, origin)
        if self.table.get(sender) is None:
            self.anti_entropy.stranger(now, origin)
        if isinstance(msg, Ping):
            if msg.target == self.me.node:
                self.prober.answer_ping(origin, msg.seq)
        elif isinstance(msg, Ack):
            self.prober.on_ack(now, msg.seq, sender)
        elif isinstance(msg, PingReq):
            self.prober.serve_ping_req(now, origin, msg)
        elif isinstance(msg, Nack):
            self.prober.on_nack(msg.seq, sender)

    def handle_request(self, now: float, src: Address, msg: Message) -> Message | None:
        """A request on a stream; a PushPull's ``sender`` is the stream's authenticated peer
        (the driver checks it)."""
        if isinstance(msg, PushPull):
            self.anti_entropy.merge(now, msg.members, Endpoint(src, msg.sender))
            return PushPull(join=False, sender=self.me.node, members=self.table.states())
        if isinstance(msg, Ping) and msg.target == self.me.node:
            return Ack(seq=msg.seq)
        return None

    def handle_reply(self, now: float, token: int, reply: Message | None) -> None:
        """The reply to a stream request of the prober or of anti-entropy (tokens are unique
        across both). A table is merged whichever request it answers."""
        tcp = self.prober.close_stream(token)
        if tcp is None:
            self.anti_entropy.handle_reply(now, token, reply)
        elif isinstance(reply, PushPull):
            self.anti_entropy.merge(now, reply.members, Endpoint(tcp.address, reply.sender))
        elif isinstance(reply, Ack):  # the driver checked that the target answered
            self.prober.on_ack(now, tcp.seq, tcp.target)

    def tick(self, now: float) -> None:
        self.prober.tick(now)
        self._tick_suspicions(now)
        if now >= self._next_gossip and self.broadcasts:
            # Idle rounds are not spent: fresh news goes out at once, then rate-limited.
            self._gossip()
            self._next_gossip = now + (self.config.gossip_interval or math.inf)
        self.anti_entropy.tick(now)

    def next_deadline(self) -> float | None:
        candidates = [self.prober.next_deadline(), self.anti_entropy.next_deadline()]
        if self.broadcasts:
            candidates.append(self._next_gossip)
        for timers in (self._suspicions, self._nudges):
            due = timers.next_deadline()
            if due is not None:
                candidates.append(due)
        return min(candidates)

    # --- updates, through membership's transitions ----------------------------------------

    def _apply(self, now: float, update: Update, src: Endpoint | None = None) -> None:
        """Apply news from ``src`` (None: our own conclusion)."""
        if update.node == self.me.node:
            self._about_me(update, src)
            return
        if src is not None:
            newer = self.table.missed_refutation(update, now, self.config.gossip_interval)
            if newer is not None:
                self._correct(src, newer)
                return
        for change in self.table.apply(update, now):
            self._on_change(now, change, update)

    def _about_me(self, update: Update, src: Endpoint | None) -> None:
        """An update about ourselves: refute it, or answer it (:meth:`MemberTable.refute`)."""
        outcome = self.table.refute(update)
        if outcome is Refutation.CORRECT and src is not None:
            self._correct(src, self.me.as_update())
        elif outcome in (Refutation.REPEAT_LEFT, Refutation.REFUTED):
            self.broadcasts.add(self.me.as_update())
        if outcome is Refutation.REFUTED:
            self.awareness.apply(1)
            self._counters["refutations"] += 1

    def _correct(self, src: Endpoint, newer: Update) -> None:
        """``src`` sent a suspicion that a refutation answered rounds ago: it missed the
        refutation (gossip is probabilistic), so tell it directly. Without this, a peer that
        missed every copy keeps its suspicion until it expires into a false death."""
        self._send(src, Gossip(updates=()), newer)
        self._counters["corrections"] += 1

    def _on_change(self, now: float, change: Change, update: Update) -> None:
        """Carry out what ``change`` (made by ``update``) calls for: timers, probing,
        gossip, the event."""
        entry = change.entry
        if change.confirmation:
            if self.table.confirm(entry, update):
                self._counters["confirmations"] += 1
                self._watch(entry)
                self.broadcasts.add(update)
            return
        if entry.status == SUSPECT:
            suspicion = self.table.start_suspicion(entry, update, now, self.config)
            self._watch(entry)
            self._nudges.watch(now + suspicion.minimum / 2, entry.node, entry.incarnation)
        elif change.revived:
            self.prober.add(entry.node)
        gossip = news(change, update, self.me.node)
        if gossip is not None:
            self.broadcasts.add(gossip)
        if change.event is not None:
            self._events.append(MemberEvent(change.event, entry.snapshot(), now))

    def _watch(self, entry: Entry) -> None:
        assert entry.suspicion is not None
        self._suspicions.watch(entry.suspicion.deadline(), entry.node, entry.incarnation)

    def _tick_suspicions(self, now: float) -> None:
        for node, incarnation in self._suspicions.due(now):
            dead = self.table.expire(node, incarnation, now)
            if dead is not None:
                self._counters["deaths_declared"] += 1
                self._apply(now, dead)
        for node, incarnation in self._nudges.due(now):
            entry = self.table.get(node)
            if entry is not None and entry.status == SUSPECT and (
                    entry.incarnation == incarnation):
                # Its Ack carries its refutation, least sent and so first in its updates.
                self._send(entry.endpoint, Ping(self.rng.getrandbits(64), node),
                           entry.as_update())
                self._counters["suspect_pings"] += 1

    # --- dissemination --------------------------------------------------------------------

    def _send(self, to: Endpoint, msg: Message, first: Update | None = None) -> None:
        """Send ``msg`` to ``to`` with as many queued updates as fit (``first`` in front)."""
        if (self.broadcasts or first is not None) and isinstance(msg, (Ping, Ack, PingReq,
                                                                        Gossip)):
            base = len(wire.encode(msg))
            budget = self.max_payload - base - 2  # the update array's header may grow
            updates = tuple(self.broadcasts.select(budget, self.table.live_count, first))
            if updates:
                msg = _with_updates(msg, updates)
        self._outputs.append(SendDatagram(to.address, msg, to.node))

    def _request(self, dst: Address, msg: Message, to: bytes | None = None) -> int:
        """Queue a stream request; its token comes back in :meth:`handle_reply`."""
        token = self._next_seq()
        self._outputs.append(StreamRequest(dst, msg, token, to))
        return token

    def gossip_fanout(self) -> int:
        """Peers per gossip round: ``gossip_nodes``, or enough to spend
        :data:`FIRST_ROUND_SHARE` of each update's retransmit budget in its first round. The
        number of transmissions is unchanged; the first wave then reaches nearly every peer
        (a peer is missed with probability about e^-fanout), and the rest of the budget is
        kept for a later round."""
        limit = retransmit_limit(self.config.retransmit_mult, self.table.live_count)
        return max(self.config.gossip_nodes, math.ceil(limit * FIRST_ROUND_SHARE))

    def _gossip(self) -> None:
        if not self.broadcasts:
            return
        for entry in self.table.sample_live(self.rng, self.gossip_fanout()):
            if not self.broadcasts:
                break
            self._send(entry.endpoint, Gossip(updates=()))
            self._counters["gossip_messages"] += 1


def _with_updates(msg: Message, updates: tuple[Update, ...]) -> Message:
    if isinstance(msg, Ping):
        return Ping(msg.seq, msg.target, updates)
    if isinstance(msg, Ack):
        return Ack(msg.seq, updates)
    if isinstance(msg, PingReq):
        return PingReq(msg.seq, msg.target, msg.host, msg.port, updates)
    return Gossip(updates)
