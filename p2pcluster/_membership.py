"""`serve_membership`: the trio driver of the membership machine.

One UDP socket carries probes and gossip; push-pull exchanges and fallback probes go over
handshaken TCP streams on the same port number. Every message is sealed by :class:`SecureWire`.
The machine (:mod:`._proto.swim`) decides everything; this module only moves bytes, keeps time
with ``trio.current_time()`` (so tests can use ``MockClock``) and hands events to subscribers.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields

import trio

from ._config import Config
from ._errors import AddressInUse, ProtocolError
from ._netutil import choose_interface, is_specific
from ._proto.envelope import Keyring
from ._proto.membership import Member, MemberEvent
from ._proto.messages import Message, Ping, PushPull
from ._proto.outputs import SendDatagram, StreamRequest
from ._proto.swim import MachineStatistics, MembershipMachine
from ._secure import SecureDatagramChannel, SecureStream, SecureWire
from ._transport import Address, StreamListener, Transport
from ._trio_transport import TrioTransport

__all__ = ["Membership", "MembershipStatistics", "serve_membership"]

log = logging.getLogger("p2pcluster.membership")
LEAVE_TIMEOUT = 1.0  # seconds a graceful leave waits for its news to go out
#: What membership answers over a stream; any other first message goes to ``stream_handler``.
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
    gossip_messages: int
    corrections: int
    health_score: int


class Membership:
    """A running peer's membership: snapshots, events, statistics, leave.

    Obtained from ``await nursery.start(serve_membership, ...)``. Every method is safe to call
    from any task of the same trio run; the synchronous ones never block.
    """

    def __init__(self, machine: MembershipMachine, wire: SecureWire,
                 udp: SecureDatagramChannel, nursery: trio.Nursery) -> None:
        self.machine = machine
        self.wire = wire
        self._udp = udp
        self._nursery = nursery
        self._send, self._outbox = trio.open_memory_channel[tuple[Address, object]](math.inf)
        self._subscribers: list[trio.MemorySendChannel[MemberEvent]] = []
        self._changed = trio.Event()
        #: Serves streams whose first message is not membership's (the work protocol's).
        self.stream_handler: Callable[[SecureStream, Message], Awaitable[None]] | None = None

    # --- public ---------------------------------------------------------------------------

    @property
    def local_address(self) -> Address:
        """The address other peers reach us at (advertised host, bound port)."""
        return self.machine.me.host, self.machine.me.port

    @property
    def me(self) -> Member:
        return self.machine.me.snapshot()

    def members(self) -> list[Member]:
        """A consistent snapshot of the member table, this peer included."""
        return self.machine.members()

    def checksum(self) -> str:
        return self.machine.checksum()

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
        """Exchange tables with ``seeds`` (more peers to introduce; mDNS calls this)."""
        self.machine.join(trio.current_time(), list(seeds))
        self._flush()

    def set_meta(self, meta: bytes) -> None:
        """Publish new metadata (at most 512 bytes; else ``ValueError``) to the cluster."""
        self.machine.set_meta(trio.current_time(), meta)
        self._flush()

    async def leave(self, timeout: float = LEAVE_TIMEOUT) -> None:
        """Tell the cluster we leave, and wait (at most ``timeout``) for the news to go out."""
        self.machine.leave(trio.current_time())
        self._flush()
        if not any(m.alive and m.id != self.machine.node_id for m in self.members()):
            return  # nobody to tell
        with trio.move_on_after(timeout):
            while self.machine.broadcasts:
                await self._wait_changed()

    def statistics(self) -> MembershipStatistics:
        wire = self.wire.statistics()
        proto = self.machine.statistics()
        return MembershipStatistics(
            messages_sent=wire.datagrams_sent + wire.frames_sent,
            messages_received=wire.datagrams_received + wire.frames_received,
            bytes_sent=wire.datagram_bytes_sent + wire.stream_bytes_sent,
            bytes_received=wire.datagram_bytes_received + wire.stream_bytes_received,
            dropped=(wire.dropped_auth + wire.dropped_replay + wire.dropped_malformed
                     + wire.dropped_oversize),
            **{f.name: getattr(proto, f.name) for f in fields(MachineStatistics)},
        )

    # --- the driver -----------------------------------------------------------------------

    async def _wait_changed(self) -> None:
        await self._changed.wait()

    def _flush(self) -> None:
        """Carry out the machine's outputs and events; wake the timer task."""
        for out in self.machine.take_outputs():
            if isinstance(out, SendDatagram):
                self._send.send_nowait((out.dst, out.msg))
            elif isinstance(out, StreamRequest):
                self._nursery.start_soon(self._request, out)
        events = self.machine.take_events()
        if events:
            self._publish(events)
        self._changed.set()
        self._changed = trio.Event()

    def _publish(self, events: list[MemberEvent]) -> None:
        for channel in list(self._subscribers):
            try:
                for event in events:
                    channel.send_nowait(event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(channel)

    async def _sender(self) -> None:
        async for dst, msg in self._outbox:
            await self._udp.send(msg, dst)  # type: ignore[arg-type]

    async def _receiver(self) -> None:
        while True:
            msg, src = await self._udp.receive()
            self.machine.receive(trio.current_time(), src, msg)
            self._flush()

    async def _timer(self) -> None:
        while True:
            deadline = self.machine.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._wait_changed()
            now = trio.current_time()
            if deadline is not None and now >= deadline:
                self.machine.tick(now)
                self._flush()

    async def _request(self, out: StreamRequest) -> None:
        reply = None
        timeout = 2 * self.wire.config.handshake_timeout
        with trio.move_on_after(timeout):
            try:
                async with await self.wire.connect(out.dst) as stream:
                    await stream.send(out.msg)
                    reply = await stream.receive()
            except (OSError, ProtocolError, trio.BrokenResourceError) as exc:
                log.debug("request to %s:%d failed: %s", *out.dst, exc)
        self.machine.handle_reply(trio.current_time(), out.token, reply)
        self._flush()

    async def _serve_stream(self, stream: SecureStream) -> None:
        while (msg := await stream.receive()) is not None:
            if not isinstance(msg, MEMBERSHIP_REQUESTS):
                if self.stream_handler is not None:
                    await self.stream_handler(stream, msg)
                return
            reply = self.machine.handle_request(trio.current_time(), stream.remote, msg)
            self._flush()
            if reply is None:
                return
            await stream.send(reply)


def advertise_host(config: Config) -> str:
    """The address to advertise: configured, else the specific bind address, else the
    address of the interface holding the default route."""
    if config.advertise_address:
        return config.advertise_address
    if is_specific(config.bind_address):
        return config.bind_address
    return choose_interface().address


async def serve_membership(
    config: Config,
    keyring: Keyring,
    *,
    transport: Transport | None = None,
    seeds: Sequence[Address] = (),
    meta: bytes = b"",
    advertise: str | None = None,
    task_status: trio.TaskStatus[Membership] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run this peer's membership until cancelled; ``task_status.started`` gives the handle.

    Binds UDP and TCP on ``config.bind_address:config.port`` (port 0 picks one port free
    for both), advertises ``advertise`` (default: :func:`advertise_host`), and joins through
    ``seeds``. Cancel the surrounding scope to stop; call :meth:`Membership.leave` first for
    a graceful leave.
    """
    transport = transport or TrioTransport()
    wire = SecureWire(transport, keyring, config)
    udp, listener = await _bind(wire, transport, config)
    host = advertise or advertise_host(config)
    port = udp.local_address[1]
    seed = int.from_bytes(os.urandom(8), "big")
    machine = MembershipMachine(
        config, node_id=os.urandom(16), name=config.node_name or socket.gethostname(),
        host=host, port=port, rng=random.Random(seed), now=trio.current_time(), meta=meta)
    log.debug("membership: %s (%s) on %s:%d, advertising %s:%d", machine.me.name,
             machine.node_id.hex()[:8], config.bind_address, port, host, port)
    try:
        async with trio.open_nursery() as nursery:
            membership = Membership(machine, wire, udp, nursery)
            nursery.start_soon(membership._sender)
            nursery.start_soon(membership._receiver)
            nursery.start_soon(membership._timer)
            await nursery.start(wire.serve, listener, membership._serve_stream)
            if seeds:
                membership.join(seeds)
            task_status.started(membership)
    finally:
        udp.close()
        with trio.CancelScope(shield=True):
            await listener.aclose()


async def _bind(wire: SecureWire, transport: Transport, config: Config
                ) -> tuple[SecureDatagramChannel, StreamListener]:
    """UDP and TCP on the same port number; with port 0, retry until both are free.

    A port in use raises :class:`~p2pcluster.AddressInUse`, whose message says what to do:
    the CLI and the embedding program show the same text."""
    for _ in range(20):
        try:
            udp = await wire.open_datagram((config.bind_address, config.port))
        except OSError as exc:
            raise _in_use(exc, "UDP", config)  # noqa: B904 - exc is its context
        try:
            listener = await transport.open_listener((config.bind_address,
                                                      udp.local_address[1]))
        except OSError as exc:
            udp.close()
            if config.port:
                raise _in_use(exc, "TCP", config)  # noqa: B904 - exc is its context
            continue
        return udp, listener
    raise OSError(f"no port free for both UDP and TCP on {config.bind_address}")


def _in_use(exc: OSError, protocol: str, config: Config) -> OSError:
    """``exc`` itself, or for a port in use an :class:`AddressInUse` that says what to do."""
    if exc.errno != errno.EADDRINUSE:
        return exc
    error = AddressInUse(
        f"{protocol} port {config.port} on {config.bind_address} is already in use, by another "
        "p2pcluster peer or another program; choose another port (--port, P2PCLUSTER_PORT or "
        "Config.port)")
    error.errno = errno.EADDRINUSE
    return error
