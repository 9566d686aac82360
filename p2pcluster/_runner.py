"""The runner: what a peer's services share, and the one loop that drives a sans-IO machine.

A peer is a handful of services (membership, the work layer) around pure machines. Two
things they have in common live here, so that no service owns another's traffic:

- :class:`Runner` owns the :class:`~._secure.SecureWire`, the UDP socket and the TCP
  listener of the peer's port. Every incoming stream is handshaken, its first message read,
  and the stream handed to the service that registered that message type with
  :meth:`Runner.route` (membership: ``PushPull``, ``Ping``; the work layer: work messages,
  code and value requests). A stream whose first message nobody routes is closed. Services
  open streams with :meth:`Runner.connect`.
- :class:`Driver` runs one machine: after every input the service calls
  :meth:`Driver.flush`, which carries out the machine's outputs (with the service's own
  callback) and, if the machine's next deadline moved, wakes :meth:`Driver.serve`, the task
  that sleeps until that deadline and then ticks the machine.

Both take their time from ``trio.current_time()``, so tests run them on trio's mock clock.
"""

from __future__ import annotations

import errno
import logging
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import NoReturn, Protocol

import trio

from ._config import Config
from ._errors import AddressInUse
from ._limits import raise_open_files
from ._proto.envelope import NODE_ID_SIZE, Keyring
from ._proto.messages import Message
from ._rejections import Rejections
from ._secure import SecureDatagramChannel, SecureStream, SecureWire, WireStatistics
from ._transport import Address, StreamListener, Transport
from ._trio_transport import TrioTransport

__all__ = ["Driver", "Runner", "StreamHandler", "Ticking", "open_runner"]

log = logging.getLogger("p2pcluster.runner")

#: Serves a routed stream: ``handler(stream, first_message)``; the stream closes when it
#: returns. Called in a task of its own; a ProtocolError ends that stream only.
StreamHandler = Callable[[SecureStream, Message], Awaitable[None]]


class Ticking(Protocol):
    """What a :class:`Driver` needs of a machine."""

    def tick(self, now: float) -> None: ...
    def next_deadline(self) -> float | None: ...


class Driver:
    """Drives one sans-IO machine: outputs after every input, ticks at its deadlines.

    ``carry_out`` takes the machine's outputs and events and acts on them; it must not
    block. Call :meth:`flush` after every input given to the machine, and run
    :meth:`serve` in a task for as long as the machine lives.
    """

    def __init__(self, machine: Ticking, carry_out: Callable[[], None]) -> None:
        self._machine = machine
        self._carry_out = carry_out
        self._deadline: float | None = None
        self._moved = trio.Event()
        self._flushed = trio.Event()

    def flush(self) -> None:
        """Carry out what the machine has queued; wake the timer if its deadline moved."""
        self._carry_out()
        deadline = self._machine.next_deadline()
        if deadline != self._deadline:
            self._deadline = deadline
            self._moved.set()
            self._moved = trio.Event()
        self._flushed.set()
        self._flushed = trio.Event()

    async def wait_flushed(self) -> None:
        """Wait for the next :meth:`flush` (the machine's state may have changed)."""
        await self._flushed.wait()

    async def serve(self) -> NoReturn:
        """Tick the machine at each of its deadlines, forever."""
        while True:
            deadline = self._machine.next_deadline()
            moved = self._moved
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await moved.wait()
            now = trio.current_time()
            if deadline is not None and now >= deadline:
                self._machine.tick(now)
                self.flush()


class Runner:
    """A peer's wire: its sockets, its incoming streams routed by first message, and the
    streams it opens. Get one with :func:`open_runner`."""

    def __init__(self, wire: SecureWire, udp: SecureDatagramChannel,
                 listener: StreamListener) -> None:
        self._wire = wire
        self.udp = udp
        self._listener = listener
        self._routes: dict[type, StreamHandler] = {}

    @property
    def port(self) -> int:
        """The port number of both sockets."""
        return self.udp.local_address[1]

    @property
    def config(self) -> Config:
        return self._wire.config

    @property
    def node_id(self) -> bytes:
        """This peer's node id, bound into everything the wire seals."""
        return self._wire.node_id

    @property
    def keyring(self) -> Keyring:
        return self._wire.keyring

    def route(self, types: tuple[type, ...], handler: StreamHandler) -> None:
        """Hand every incoming stream whose first message is one of ``types`` to
        ``handler``."""
        for message_type in types:
            if message_type in self._routes:
                raise ValueError(f"{message_type.__name__} streams are routed already")
            self._routes[message_type] = handler

    async def connect(self, address: Address) -> SecureStream:
        """A handshaken stream to ``address`` (see :meth:`SecureWire.connect`)."""
        return await self._wire.connect(address)

    def statistics(self) -> WireStatistics:
        return self._wire.statistics()

    def take_rejected(self) -> Rejections:
        """Hosts whose traffic failed authentication since the last call, with counts."""
        return self._wire.take_rejected()

    def set_keyring(self, keyring: Keyring) -> None:
        """Rotate keys live (see :meth:`SecureWire.set_keyring`)."""
        self._wire.set_keyring(keyring)

    def keys_held_by(self, node: bytes) -> frozenset[bytes]:
        """The key ids peer ``node`` showed it holds in its latest authentic message."""
        return self._wire.keys_held_by(node)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Accept streams until cancelled, each routed in a task of its own."""
        await self._wire.serve(self._listener, self._dispatch, task_status=task_status)

    async def _dispatch(self, stream: SecureStream) -> None:
        first = await stream.receive()
        if first is None:
            return
        handler = self._routes.get(type(first))
        if handler is None:
            log.debug("no service takes %s streams; closed the one from %s:%d",
                      type(first).__name__, *stream.remote)
            return
        await handler(stream, first)


@asynccontextmanager
async def open_runner(config: Config, keyring: Keyring, *,
                      transport: Transport | None = None,
                      node_id: bytes | None = None) -> AsyncIterator[Runner]:
    """Bind UDP and TCP on ``config.bind_address:config.port`` (port 0: one number free for
    both) and serve incoming streams for the duration of the block, as node ``node_id``
    (default: 16 random bytes).

    On real sockets it first raises the process's soft limit on open files to the hard one.
    Raises :class:`~p2pcluster.AddressInUse` if the port is taken.
    """
    if transport is None:
        transport = TrioTransport()
        raise_open_files()
    node_id = node_id or os.urandom(NODE_ID_SIZE)
    wire = SecureWire(transport, keyring, config, node_id=node_id)
    udp, listener = await _bind(wire, transport, config)
    runner = Runner(wire, udp, listener)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.serve)
            try:
                yield runner
            finally:
                nursery.cancel_scope.cancel()
    finally:
        udp.close()
        with trio.CancelScope(shield=True):
            await listener.aclose()


async def _bind(wire: SecureWire, transport: Transport, config: Config
                ) -> tuple[SecureDatagramChannel, StreamListener]:
    """UDP and TCP on the same port number; with port 0, retry until both are free."""
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
    """``exc`` itself, or for a port in use an :class:`AddressInUse` that says what to do:
    the CLI and an embedding program show the same text."""
    if exc.errno != errno.EADDRINUSE:
        return exc
    error = AddressInUse(
        f"{protocol} port {config.port} on {config.bind_address} is already in use, by another "
        "p2pcluster peer or another program; choose another port (--port, P2PCLUSTER_PORT or "
        "Config.port)")
    error.errno = errno.EADDRINUSE
    return error
