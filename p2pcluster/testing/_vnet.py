"""`VirtualNetwork`: an in-memory network for trio code, driven by trio's clock.

Each :meth:`VirtualNetwork.host` is a :class:`~p2pcluster._transport.Transport`, so the same
trio code that runs on real sockets runs here, usually under ``trio.testing.MockClock`` with
``autojump_threshold=0``: a virtual hour takes a moment.

Datagrams follow the :class:`LinkConditions` (latency, jitter and so reordering, loss,
duplication) drawn from the seed. Streams are reliable and ordered; the link's loss delays
their segments by TCP retransmission timeouts. While a partition separates their ends, their
bytes wait (as TCP retransmits) and new connects block until it heals or the caller gives up.
trio schedules tasks in random order on purpose, so tests at this level assert properties, not
exact traces (use :class:`Simulation` for bit-for-bit replay).
"""

from __future__ import annotations

import errno
import heapq
import math
import random
from collections.abc import Iterable
from typing import Any

import trio
from trio.lowlevel import ParkingLot

from .._transport import Address
from ._network import TCP_SYN_RTO, LinkConditions, NetworkModel

__all__ = ["VirtualHost", "VirtualNetwork"]

_MAX_DATAGRAM = 65507
_EOF = object()


class _DelayQueue:
    """Items that become available at given times; ``get`` waits for the earliest one."""

    def __init__(self, ready: Any = None) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = 0
        self._lot = ParkingLot()
        self._ready = ready  # optional callable: may the front item be delivered now?
        self.closed = False

    def put(self, at: float, item: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, item))
        self._lot.unpark_all()

    def wake(self) -> None:
        self._lot.unpark_all()

    def close(self) -> None:
        self.closed = True
        self._lot.unpark_all()

    async def get(self) -> Any:
        while True:
            if self.closed:
                raise trio.ClosedResourceError("closed")
            heap = self._heap
            if heap and heap[0][0] <= trio.current_time() and (
                self._ready is None or self._ready()
            ):
                return heapq.heappop(heap)[2]
            deadline = heap[0][0] if heap and heap[0][0] > trio.current_time() else math.inf
            with trio.move_on_at(deadline):
                await self._lot.park()


class VirtualNetwork:
    """A virtual LAN. ``seed`` fixes every random choice; ``conditions`` apply to every link.

    Partitions, one-way blocks and per-link conditions may change at any time.
    """

    def __init__(self, seed: int = 0, conditions: LinkConditions | None = None) -> None:
        self.seed = seed
        self.model = NetworkModel(random.Random(f"{seed}/vnet"), conditions)
        #: The sockets and connections of every host, which its transport plugs into.
        self.fabric = _Fabric(self.model)

    def host(self, ip: str) -> VirtualHost:
        """The transport of the host at ``ip`` (created on first use)."""
        return VirtualHost(self, ip)

    # --- faults ---------------------------------------------------------------------------

    def partition(self, *groups: Iterable[str]) -> None:
        """Each group of host IPs only reaches itself; unlisted hosts form one more group."""
        self.model.partition(*groups)
        self.fabric.changed()

    def block(self, src: str, dst: str) -> None:
        """Drop everything from ``src`` to ``dst`` only (an asymmetric link)."""
        self.model.block(src, dst)
        self.fabric.changed()

    def unblock(self, src: str, dst: str) -> None:
        self.model.unblock(src, dst)
        self.fabric.changed()

    def heal(self) -> None:
        """Remove every partition and block."""
        self.model.heal()
        self.fabric.changed()

    def set_link(self, src: str, dst: str, conditions: LinkConditions) -> None:
        self.model.set_link(src, dst, conditions)


class _Fabric:
    """The bound sockets, listeners and open connections of a :class:`VirtualNetwork`, and
    how bytes move between them under its :class:`NetworkModel`."""

    def __init__(self, model: NetworkModel) -> None:
        self.model = model
        self._datagram: dict[Address, _VDatagramSocket] = {}
        self._listeners: dict[Address, _VListener] = {}
        self._next_port: dict[str, int] = {}
        self._topology = ParkingLot()
        self._waiters: set[_DelayQueue] = set()

    def changed(self) -> None:
        """The topology changed: wake whatever waits for a path to open."""
        self._topology.unpark_all()
        for queue in list(self._waiters):
            queue.wake()

    def watch(self, queue: _DelayQueue) -> None:
        """Wake ``queue`` whenever the topology changes (until :meth:`unwatch`)."""
        self._waiters.add(queue)

    def unwatch(self, queue: _DelayQueue) -> None:
        self._waiters.discard(queue)

    def _bind(self, ip: str, bind: Address, table: dict[Address, Any]) -> Address:
        host, port = bind
        if host not in ("0.0.0.0", "", ip):
            raise OSError(errno.EADDRNOTAVAIL, f"{host} is not an address of host {ip}")
        if port == 0:
            port = self._next_port.get(ip, 40000)
            while (ip, port) in self._datagram or (ip, port) in self._listeners:
                port += 1
            self._next_port[ip] = port + 1
        if (ip, port) in table:
            raise OSError(errno.EADDRINUSE, f"{ip}:{port} is in use")
        return ip, port

    def open_datagram(self, ip: str, bind: Address) -> _VDatagramSocket:
        addr = self._bind(ip, bind, self._datagram)
        sock = self._datagram[addr] = _VDatagramSocket(self, addr)
        return sock

    def open_listener(self, ip: str, bind: Address) -> _VListener:
        addr = self._bind(ip, bind, self._listeners)
        listener = self._listeners[addr] = _VListener(self, addr)
        return listener

    def close_datagram(self, sock: _VDatagramSocket) -> None:
        if self._datagram.get(sock.local_address) is sock:
            del self._datagram[sock.local_address]

    def close_listener(self, listener: _VListener) -> None:
        if self._listeners.get(listener.local_address) is listener:
            del self._listeners[listener.local_address]

    def deliver_datagram(self, src: Address, dst: Address, data: bytes) -> None:
        target = self._datagram.get(dst)
        if target is None:
            return
        now = trio.current_time()
        for delay in self.model.datagram_delays(src[0], dst[0]):
            target.queue.put(now + delay, (data, src))

    async def connect(self, src_ip: str, dst: Address) -> trio.abc.Stream:
        while (syn := self.model.stream_delay(src_ip, dst[0], rto=TCP_SYN_RTO)) is None:
            await self._topology.park()  # SYNs are lost until the partition heals
        await trio.sleep(syn + (self.model.stream_delay(dst[0], src_ip) or 0.0))
        listener = self._listeners.get(dst)
        if listener is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"connection refused by {dst}")
        src = (src_ip, self._bind(src_ip, (src_ip, 0), self._listeners)[1])
        client, server = _VStream(self, src, dst), _VStream(self, dst, src)
        client.peer, server.peer = server, client
        listener.queue.put(trio.current_time(), (server, src))
        return client


class VirtualHost:
    """One host's :class:`~p2pcluster._transport.Transport` on a :class:`VirtualNetwork`."""

    def __init__(self, net: VirtualNetwork, ip: str) -> None:
        self.net = net
        self.ip = ip

    def __repr__(self) -> str:
        return f"VirtualHost({self.ip!r})"

    async def open_datagram(self, bind: Address) -> _VDatagramSocket:
        await trio.lowlevel.checkpoint()
        return self.net.fabric.open_datagram(self.ip, bind)

    async def open_listener(self, bind: Address) -> _VListener:
        await trio.lowlevel.checkpoint()
        return self.net.fabric.open_listener(self.ip, bind)

    async def open_stream(self, dst: Address) -> trio.abc.Stream:
        return await self.net.fabric.connect(self.ip, dst)


class _VDatagramSocket:
    def __init__(self, net: _Fabric, addr: Address) -> None:
        self._net = net
        self._addr = addr
        self.queue = _DelayQueue()

    @property
    def local_address(self) -> Address:
        return self._addr

    async def send(self, data: bytes, dst: Address) -> None:
        await trio.lowlevel.checkpoint()
        if self.queue.closed:
            raise trio.ClosedResourceError("socket is closed")
        if len(data) > _MAX_DATAGRAM:
            raise OSError(errno.EMSGSIZE, "datagram too large")
        self._net.deliver_datagram(self._addr, dst, bytes(data))

    async def receive(self) -> tuple[bytes, Address]:
        item: tuple[bytes, Address] = await self.queue.get()
        return item

    def close(self) -> None:
        self._net.close_datagram(self)
        self.queue.close()


class _VListener:
    def __init__(self, net: _Fabric, addr: Address) -> None:
        self._net = net
        self._addr = addr
        self.queue = _DelayQueue()

    @property
    def local_address(self) -> Address:
        return self._addr

    async def accept(self) -> tuple[trio.abc.Stream, Address]:
        item: tuple[trio.abc.Stream, Address] = await self.queue.get()
        return item

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
        self._net.close_listener(self)
        self.queue.close()


class _VStream(trio.abc.Stream):
    """One end of a virtual TCP connection."""

    def __init__(self, net: _Fabric, local: Address, remote: Address) -> None:
        self._net = net
        self.local = local
        self.remote = remote
        self.peer: _VStream | None = None
        self.inbox = _DelayQueue(ready=self._reachable)
        net.watch(self.inbox)
        self._last_at = 0.0
        self.closed = False
        self._eof = False
        self._pending = b""  # the rest of a chunk larger than a receive_some asked for

    def _reachable(self) -> bool:
        return self._net.model.stream_latency(self.remote[0], self.local[0]) is not None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        if self.closed:
            raise trio.ClosedResourceError("stream is closed")
        peer = self.peer
        if peer is None or peer.closed:
            raise trio.BrokenResourceError("connection reset by peer")
        if data:
            delay = self._net.model.stream_delay(self.local[0], self.remote[0])
            if delay is None:  # partitioned: TCP keeps retrying; delivered once healed
                delay = self._net.model.conditions(self.local[0], self.remote[0]).latency
            self._last_at = max(self._last_at, trio.current_time() + delay)
            peer.inbox.put(self._last_at, bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.closed:
            raise trio.ClosedResourceError("stream is closed")
        if not self._pending and not self._eof:
            try:
                item = await self.inbox.get()
            except trio.ClosedResourceError:
                raise trio.ClosedResourceError("stream is closed") from None
            if item is _EOF:
                self._eof = True
            else:
                self._pending = item
        else:
            await trio.lowlevel.checkpoint()
        size = len(self._pending) if max_bytes is None else max_bytes
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self.inbox.close()
            self._net.unwatch(self.inbox)
            if self.peer is not None and not self.peer.closed:
                latency = self._net.model.conditions(self.local[0], self.remote[0]).latency
                at = max(self._last_at, trio.current_time() + latency)
                self.peer.inbox.put(at, _EOF)
        await trio.lowlevel.checkpoint()
