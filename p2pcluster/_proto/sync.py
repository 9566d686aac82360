"""Anti-entropy: joining, push-pull exchanges of whole tables, reconnecting to the dead.

Every ``push_pull_interval`` (scaled up above 32 members, as memberlist's pushPullScale) the
whole table is exchanged with one random member over a stream, and every
``reconnect_interval`` with one member believed dead, so the halves of a healed partition find
each other. A datagram from a peer we do not know at all (it joined, and every copy of its
Alive was lost) starts an exchange with it at once, at most once per :data:`STRANGER_RETRY`
seconds for each, instead of leaving it unknown until a periodic push-pull. While we know
nobody, the seeds we joined through are retried every
:data:`SEED_RETRY` seconds, with the last :data:`MAX_CANDIDATES` candidates that discovery
introduced. A candidate (an mDNS record, which anyone on the LAN can publish) is tried and
remembered, but never replaces a configured seed; at most :data:`MAX_CANDIDATES` exchanges
with candidates are under way at once (a flood of records costs no more). What a remote
table means here is a transition, decided by :meth:`~.membership.MemberTable.merge`.
:class:`AntiEntropy` owns the schedules, the seeds and its stream requests, and acts through
the machine's :class:`~.context.Context`.
"""

from __future__ import annotations

import math

from .context import Context
from .membership import MemberStatus
from .messages import MemberState, Message, PushPull
from .outputs import Address, Endpoint

__all__ = ["MAX_CANDIDATES", "SEED_RETRY", "STRANGER_RETRY", "AntiEntropy"]

ALIVE, DEAD = MemberStatus.ALIVE, MemberStatus.DEAD
SEED_RETRY = 2.0  # seconds between join attempts while we know nobody
MAX_CANDIDATES = 16  # introduced addresses kept for the retries, the latest
STRANGER_RETRY = 5.0  # seconds before another exchange with the same unknown sender


class AntiEntropy:
    """Push-pull, reconnect and seed-retry for one machine. ``jitter`` (in [0, 1)) sets the
    phase of the first periodic push-pull, so that peers started together spread out."""

    def __init__(self, ctx: Context, *, now: float, jitter: float) -> None:
        self._ctx = ctx
        self._seeds: list[Address] = []  # configured: kept for good
        self._candidates: list[Address] = []  # introduced, the latest MAX_CANDIDATES
        self._introducing: set[Address] = set()  # candidates asked, no answer yet
        self._streams: dict[int, Address] = {}  # push-pull token -> the peer asked
        self._strangers: dict[bytes, float] = {}  # unknown senders asked -> when
        self._stopped = False
        self._next_push_pull = now + (0.5 + jitter) * self.push_pull_interval()
        self._next_reconnect = now + ctx.config.reconnect_interval
        self._next_seed_retry = math.inf

    def push_pull_interval(self) -> float:
        """memberlist's pushPullScale: longer above 32 members, to bound the load."""
        n = self._ctx.table.live_count
        interval = self._ctx.config.push_pull_interval
        if n <= 32:
            return interval
        return interval * (math.ceil(math.log2(n) - math.log2(32)) + 1)

    def schedule_push_pull(self, at: float) -> None:
        """Move the next periodic push-pull to ``at`` (then every interval again)."""
        self._next_push_pull = at

    def next_deadline(self) -> float:
        return min(self._next_push_pull, self._next_reconnect, self._next_seed_retry)

    # --- commands -------------------------------------------------------------------------

    def join(self, now: float, seeds: list[Address]) -> None:
        """Exchange tables with ``seeds`` (not our own address), and add them to the seeds
        retried while we know nobody."""
        fresh = [s for s in dict.fromkeys(seeds) if s not in self._seeds and not self._me(s)]
        self._seeds += fresh
        self._try(now, fresh)

    def introduce(self, now: float, candidates: list[Address]) -> None:
        """Exchange tables with ``candidates`` (found by discovery, unauthenticated), and
        remember the latest :data:`MAX_CANDIDATES` for the retries; the seeds stay."""
        fresh = [c for c in dict.fromkeys(candidates) if c not in self._seeds
                 and not self._me(c)]
        kept = [c for c in self._candidates if c not in fresh]
        self._candidates = [*kept, *fresh][-MAX_CANDIDATES:]
        room = max(0, MAX_CANDIDATES - len(self._introducing))
        asked = fresh[-room:] if room else []
        self._introducing.update(asked)
        self._try(now, asked)

    def stranger(self, now: float, sender: Endpoint) -> None:
        """An authenticated datagram came from ``sender``, a node we do not know: exchange
        tables with it, unless we asked it within :data:`STRANGER_RETRY` seconds."""
        if self._stopped or now - self._strangers.get(sender.node, -math.inf) < STRANGER_RETRY:
            return
        if len(self._strangers) >= 4 * MAX_CANDIDATES:  # forget the old asks, bounded
            self._strangers = {n: t for n, t in self._strangers.items()
                               if now - t < STRANGER_RETRY}
        self._strangers[sender.node] = now
        self._ctx.counters["stranger_push_pulls"] += 1
        self._push_pull(sender.address)

    def _me(self, address: Address) -> bool:
        me = self._ctx.table.me
        return address == (me.host, me.port)

    def _try(self, now: float, addresses: list[Address]) -> None:
        for address in addresses:
            self._push_pull(address, join=True)
        if self._seeds or self._candidates:
            self._next_seed_retry = min(self._next_seed_retry, now + SEED_RETRY)

    def stop(self) -> None:
        """We leave: exchange no more tables (the schedules keep running, idle)."""
        self._stopped = True

    def tick(self, now: float) -> None:
        config = self._ctx.config
        if now >= self._next_push_pull:
            self._periodic_push_pull()
            self._next_push_pull = now + self.push_pull_interval()
        if now >= self._next_reconnect:
            self._reconnect(now)
            self._next_reconnect = now + config.reconnect_interval
        if now >= self._next_seed_retry:
            self._retry_seeds(now)

    # --- tables in and out ----------------------------------------------------------------

    def merge(self, now: float, members: tuple[MemberState, ...], src: Endpoint) -> None:
        """Apply the table ``src`` sent, row by row, as the merge rule says."""
        for state in members:
            for update in self._ctx.table.merge(state, now):
                self._ctx.apply(now, update, src)

    def handle_reply(self, now: float, token: int, reply: Message | None) -> None:
        """The answer to our push-pull ``token``: a table to merge, or a failure."""
        address = self._streams.pop(token)
        self._introducing.discard(address)
        if isinstance(reply, PushPull):
            self.merge(now, reply.members, Endpoint(address, reply.sender))
        else:
            self._ctx.counters["push_pulls_failed"] += 1

    def _push_pull(self, address: Address, *, join: bool = False) -> None:
        ctx = self._ctx
        msg = PushPull(join=join, sender=ctx.table.me.node, members=ctx.table.states())
        self._streams[ctx.request(address, msg, None)] = address
        ctx.counters["push_pulls"] += 1

    def _periodic_push_pull(self) -> None:
        table = self._ctx.table
        live = [e for e in table if e is not table.me and e.status == ALIVE]
        if live and not self._stopped:
            entry = self._ctx.rng.choice(live)
            self._push_pull((entry.host, entry.port))

    def _reconnect(self, now: float) -> None:
        ctx = self._ctx
        ctx.table.purge(now, ctx.config.dead_retention)
        dead = [e for e in ctx.table if e.status == DEAD]
        if dead and not self._stopped:
            entry = ctx.rng.choice(dead)
            self._push_pull((entry.host, entry.port))

    def _retry_seeds(self, now: float) -> None:
        if self._ctx.table.live_count > 1 or self._stopped:
            self._next_seed_retry = math.inf
            return
        for address in [*self._seeds, *self._candidates]:
            self._push_pull(address, join=True)
        self._next_seed_retry = now + SEED_RETRY
