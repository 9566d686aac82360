"""`serve_membership`: the trio service around the membership machine.

One UDP socket carries probes and gossip; push-pull exchanges and fallback probes go over
handshaken TCP streams on the same port number. Both belong to the peer's
:class:`~._runner.Runner`, which routes the streams that start with ``PushPull`` or ``Ping``
here; a :class:`~._runner.Driver` carries out the machine's outputs and ticks it at its
deadlines. The machine (:mod:`._proto.swim`) decides everything; this module moves bytes,
keeps time with ``trio.current_time()`` (so tests can use ``MockClock``) and hands events to
subscribers.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields

import trio

from ._config import Config
from ._errors import ProtocolError
from ._netutil import advertise_host
from ._proto.envelope import Keyring
from ._proto.membership import Member, MemberEvent
from ._proto.messages import Message, Ping, PushPull
from ._proto.outputs import SendDatagram, StreamRequest
from ._proto.swim import MachineStatistics, MembershipMachine
from ._runner import Driver, Runner, open_runner
from ._secure import SecureStream, WireStatistics
from ._transport import Address, Transport

__all__ = ["Membership", "MembershipStatistics", "serve_membership"]

log = logging.getLogger("p2pcluster.membership")
LEAVE_TIMEOUT = 1.0  # seconds a graceful leave waits for its news to go out
#: The streams membership serves, by first message.
MEMBERSHIP_REQUESTS = (PushPull, Ping)


@dataclass(frozen=True, slots=True)
class MembershipStatistics:
    """Traffic and protocol counters of one peer.

    ``messages_*`` and ``bytes_*`` count datagrams and stream frames (after sealing);
    ``dropped`` counts datagrams refused by the envelope or the codec.
    """

    messages_sent: int
    messages_received: int
    bytes_sent: int
    bytes_received: int
    dropped: int
    probes: int
    probes_failed: int
    indirect_probes: int
    tcp_probes: int
    nacks_sent: int
    acks_relayed: int
    suspicions: int
    confirmations: int
    refutations: int
    deaths_declared: int
    push_pulls: int
    push_pulls_failed: int
    suspect_pings: int
    stranger_push_pulls: int
    gossip_messages: int
    corrections: int
    health_score: int


class Membership:
    """A running peer's membership: snapshots, events, statistics, leave.

    Obtained from ``await nursery.start(serve_membership, ...)``. Every method is safe to call
    from any task of the same trio run; the synchronous ones never block.
    """

    def __init__(self, machine: MembershipMachine, runner: Runner,
                 nursery: trio.Nursery) -> None:
        self._machine = machine
        self._runner = runner
        self._nursery = nursery
        self._send, self._outbox = trio.open_memory_channel[SendDatagram](math.inf)
        self._subscribers: list[trio.MemorySendChannel[MemberEvent]] = []
        self._driver = Driver(machine, self._carry_out)

    # --- public ---------------------------------------------------------------------------

    @property
    def local_address(self) -> Address:
        """The address other peers reach us at (advertised host, bound port)."""
        me = self.me
        return me.host, me.port

    @property
    def me(self) -> Member:
        return self._machine.me.snapshot()

    def members(self) -> list[Member]:
        """A consistent snapshot of the member table, this peer included."""
        return self._machine.members()

    def checksum(self) -> str:
        return self._machine.checksum()

    def subscribe(self) -> trio.MemoryReceiveChannel[MemberEvent]:
        """A channel of every later join, leave, fail, update and recover event.

        Use ``async with membership.subscribe() as events: async for event in events``.
        Events are buffered without limit, so a slow reader never slows the protocol; close
        the channel to unsubscribe.
        """
        send, receive = trio.open_memory_channel[MemberEvent](math.inf)
        self._subscribers.append(send)
        return receive

    def join(self, seeds: Sequence[Address]) -> None:
        """Exchange tables with ``seeds``, retried while we know nobody."""
        self._machine.join(trio.current_time(), list(seeds))
        self._driver.flush()

    def set_host(self, host: str) -> None:
        """Advertise ``host`` as this peer's address from now on (it changed)."""
        self._machine.set_host(trio.current_time(), host)
        self._driver.flush()

    def introduce(self, candidates: Sequence[Address]) -> None:
        """Exchange tables with ``candidates`` (mDNS calls this): they add to the seeds,
        never replace them."""
        self._machine.introduce(trio.current_time(), list(candidates))
        self._driver.flush()

    def set_meta(self, meta: bytes) -> None:
        """Publish new metadata (at most 512 bytes; else ``ValueError``) to the cluster."""
        self._machine.set_meta(trio.current_time(), meta)
        self._driver.flush()

    async def leave(self, timeout: float = LEAVE_TIMEOUT) -> None:
        """Tell the cluster we leave, and wait (at most ``timeout``) for the news to go out."""
        self._machine.leave(trio.current_time())
        self._driver.flush()
        me = self._machine.node_id
        if not any(m.alive and m.id != me for m in self.members()):
            return  # nobody to tell
        with trio.move_on_after(timeout):
            while self._machine.broadcasts:
                await self._driver.wait_flushed()

    def wire_statistics(self) -> WireStatistics:
        """The counters of the peer's wire (all of its traffic, not only membership's)."""
        return self._runner.statistics()

    def statistics(self) -> MembershipStatistics:
        wire = self._runner.statistics()
        proto = self._machine.statistics()
        return MembershipStatistics(
            messages_sent=wire.datagrams_sent + wire.frames_sent,
            messages_received=wire.datagrams_received + wire.frames_received,
            bytes_sent=wire.datagram_bytes_sent + wire.stream_bytes_sent,
            bytes_received=wire.datagram_bytes_received + wire.stream_bytes_received,
            dropped=(wire.dropped_auth + wire.dropped_replay + wire.dropped_malformed
                     + wire.dropped_oversize),
            **{f.name: getattr(proto, f.name) for f in fields(MachineStatistics)},
        )

    # --- the service ----------------------------------------------------------------------

    def _carry_out(self) -> None:
        """The machine's outputs and events: datagrams to the sender task, stream requests
        each in a task, events to the subscribers."""
        for out in self._machine.take_outputs():
            if isinstance(out, SendDatagram):
                self._send.send_nowait(out)
            elif isinstance(out, StreamRequest):
                self._nursery.start_soon(self._request, out)
        events = self._machine.take_events()
        if events:
            self._publish(events)

    def _publish(self, events: list[MemberEvent]) -> None:
        for channel in list(self._subscribers):
            try:
                for event in events:
                    channel.send_nowait(event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(channel)

    async def _sender(self) -> None:
        async for out in self._outbox:
            await self._runner.udp.send(out.msg, out.dst, out.to)

    async def _receiver(self) -> None:
        while True:
            msg, src, sender = await self._runner.udp.receive()
            self._machine.receive(trio.current_time(), src, msg, sender)
            self._driver.flush()

    async def _request(self, out: StreamRequest) -> None:
        reply = None
        with trio.move_on_after(2 * self._runner.config.handshake_timeout):
            try:
                async with await self._runner.connect(out.dst) as stream:
                    await stream.send(out.msg)
                    reply = _from(stream, await stream.receive(), out.to)
            except (OSError, ProtocolError, trio.BrokenResourceError) as exc:
                log.debug("request to %s:%d failed: %s", *out.dst, exc)
        self._machine.handle_reply(trio.current_time(), out.token, reply)
        self._driver.flush()

    async def _serve_stream(self, stream: SecureStream, first: Message) -> None:
        """A PushPull or a Ping over TCP, and what follows on that stream."""
        msg: Message | None = first
        while isinstance(msg, MEMBERSHIP_REQUESTS):
            if _from(stream, msg, None) is None:
                return
            reply = self._machine.handle_request(trio.current_time(), stream.remote, msg)
            self._driver.flush()
            if reply is None:
                return
            await stream.send(reply)
            msg = await stream.receive()

    async def serve(self, seeds: Sequence[Address], *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take the membership streams from the runner, run the probe, gossip and sync loops
        until cancelled, and join through ``seeds``."""
        self._runner.route(MEMBERSHIP_REQUESTS, self._serve_stream)
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sender)
            nursery.start_soon(self._receiver)
            nursery.start_soon(self._driver.serve)
            if seeds:
                self.join(seeds)
            await trio.sleep_forever()


def _from(stream: SecureStream, msg: Message | None, expected: bytes | None
          ) -> Message | None:
    """``msg`` if the stream's authenticated peer may have sent it: it is node ``expected``
    (when given), and it is the ``sender`` a PushPull claims. Else None (logged)."""
    peer = stream.peer
    claimed = msg.sender if isinstance(msg, PushPull) else peer
    if expected is not None and expected != peer:
        why = f"we expected node {expected.hex()[:8]}"
    elif claimed != peer:
        why = f"its message names node {claimed.hex()[:8]} as sender"
    else:
        return msg
    log.debug("refused a %s from %s:%d, node %s: %s", type(msg).__name__, *stream.remote,
              peer.hex()[:8], why)
    return None


async def serve_membership(
    config: Config,
    keyring: Keyring,
    *,
    transport: Transport | None = None,
    runner: Runner | None = None,
    seeds: Sequence[Address] = (),
    meta: bytes = b"",
    advertise: str | None = None,
    task_status: trio.TaskStatus[Membership] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run this peer's membership until cancelled; ``task_status.started`` gives the handle.

    On the peer's ``runner`` if given (which owns the port), else on a runner of its own that
    binds UDP and TCP on ``config.bind_address:config.port`` (port 0 picks one port free for
    both, through ``transport``). Advertises ``advertise`` (default:
    :func:`~._netutil.advertise_host`), and joins through ``seeds``. Cancel the surrounding
    scope to stop; call :meth:`Membership.leave` first for a graceful leave.
    """
    async with _runner_for(config, keyring, transport, runner) as wire:
        host = advertise or advertise_host(config)
        machine = MembershipMachine(
            config, node_id=wire.node_id, name=config.node_name or socket.gethostname(),
            host=host, port=wire.port, rng=random.Random(int.from_bytes(os.urandom(8), "big")),
            now=trio.current_time(), meta=meta)
        log.debug("membership: %s (%s) on %s:%d, advertising %s:%d", machine.me.name,
                  machine.node_id.hex()[:8], config.bind_address, wire.port, host, wire.port)
        async with trio.open_nursery() as nursery:
            membership = Membership(machine, wire, nursery)
            await nursery.start(membership.serve, seeds)
            task_status.started(membership)


@asynccontextmanager
async def _runner_for(config: Config, keyring: Keyring, transport: Transport | None,
                      runner: Runner | None) -> AsyncIterator[Runner]:
    if runner is not None:
        yield runner
        return
    async with open_runner(config, keyring, transport=transport) as own:
        yield own
