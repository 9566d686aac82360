"""Work links on the pure simulator: one in-order stream per (sender, destination), as
``_links.py`` keeps them, over the :class:`~p2pcluster.testing.Simulation`'s network.

A link opens on the first message to a peer: it connects to the address the sender's
membership gives (a SYN, the handshake's legs, each delayed as the network delays stream
segments) to whatever process listens there then, and fails after ``connect_timeout`` when
nothing answers (the host crashed, a partition) or the process is frozen that long. Messages
then go one at a time, in order, each after the link's one-way stream delay (lost segments
cost retransmission timeouts). While a partition separates the two hosts, TCP retransmits:
the message waits, and goes through once the partition heals. A frozen receiver's kernel
buffers what arrives: it is handled when the process resumes; a frozen sender writes nothing
new. When the process the link connected to is gone (crashed or restarted: a new process at
that address resets the connection), the link breaks: what it had not delivered goes once
more on a new link, if the sender's membership still gives an address (``LINK_RETRIES``),
and what fails again comes back to the sender as undeliverable. A sender that crashes loses
its links and everything on them.

Every message is encoded with the real codec, and decoded on delivery with ``roundtrip``.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from p2pcluster._proto import wire
from p2pcluster._proto.messages import Message
from p2pcluster._proto.outputs import Address
from p2pcluster.testing import Simulation
from p2pcluster.testing._network import TCP_SYN_RTO

from .peermachine import PeerMachine

__all__ = ["LINK_RETRIES", "RETRANSMIT", "WorkNet"]

LINK_RETRIES = 1  #: as ``_links.LINK_RETRIES``
RETRANSMIT = 1.0  #: seconds between TCP's attempts to get a segment through a partition


@dataclass(eq=False, slots=True)
class _Link:
    src: PeerMachine
    dst: bytes
    address: Address
    queue: deque[tuple[Message, bytes, int]] = field(default_factory=deque)
    target: PeerMachine | None = None  #: the process it connected to
    moving: bool = False  #: a message (or the connection) is under way
    over: bool = False


class WorkNet:
    """The work links of every peer on ``sim``. ``resolve(address)`` is the process running
    at an address (None: nothing); ``frozen_until(address)`` when a frozen one resumes."""

    def __init__(self, sim: Simulation, *, resolve: Callable[[Address], PeerMachine | None],
                 frozen_until: Callable[[Address], float], connect_timeout: float,
                 roundtrip: bool = True) -> None:
        self.sim = sim
        self._resolve = resolve
        self._frozen_until = frozen_until
        self.connect_timeout = connect_timeout
        self.roundtrip = roundtrip
        self._links: dict[tuple[PeerMachine, bytes], _Link] = {}
        self.counts: Counter[str] = Counter()

    # --- the WorkSender protocol ----------------------------------------------------------

    def send(self, src: PeerMachine, dst: bytes, address: Address, msg: Message,
             attempt: int = 0) -> None:
        link = self._links.get((src, dst))
        if link is None:
            link = self._links[src, dst] = _Link(src, dst, address)
            self._connect(link)
        link.queue.append((msg, wire.encode(msg), attempt))
        self.counts["sent"] += 1
        if link.target is not None and not link.moving:
            self._next(link)

    def close(self, src: PeerMachine, dst: bytes) -> None:
        self._links.pop((src, dst), None)  # what it holds still goes out, as in _links.py

    # --- connecting -----------------------------------------------------------------------

    def _connect(self, link: _Link) -> None:
        sim, now = self.sim, self.sim.now
        link.moving = True
        target = self._resolve(link.address)
        net, src, dst = sim.network, link.src.address[0], link.address[0]
        legs = (net.stream_delay(src, dst, rto=TCP_SYN_RTO), net.stream_delay(dst, src, segments=2),
                net.stream_delay(src, dst, segments=2))
        if target is None or None in legs:
            sim.call_at(now + self.connect_timeout, lambda: self._fail(link, "connect timeout"))
            return
        ready = max(now + sum(d for d in legs if d is not None),
                    self._frozen_until(link.address))  # the hello is answered by the process
        if ready - now > self.connect_timeout:
            sim.call_at(now + self.connect_timeout, lambda: self._fail(link, "connect timeout"))
            return
        sim.call_at(ready, lambda: self._connected(link, target))

    def _connected(self, link: _Link, target: PeerMachine) -> None:
        if link.src.crashed:
            self._drop(link)
        elif self._resolve(link.address) is not target:
            self._fail(link, "the process it connected to is gone")
        else:
            link.target = target
            link.moving = False
            self._next(link)

    # --- moving messages ------------------------------------------------------------------

    def _next(self, link: _Link) -> None:
        """Put the next message on the wire (once the sender runs)."""
        if link.over or not link.queue:
            link.moving = False
            return
        link.moving = True
        sim = self.sim
        resume = self._frozen_until(link.src.address)
        if resume > sim.now:  # a frozen sender writes nothing
            sim.call_at(resume, lambda: self._next(link))
            return
        delay = sim.network.stream_delay(link.src.address[0], link.address[0])
        if delay is None:  # partitioned: TCP retransmits until it gets through
            sim.call_at(sim.now + RETRANSMIT, lambda: self._next(link))
            return
        sim.call_at(sim.now + delay, lambda: self._arrive(link))

    def _arrive(self, link: _Link) -> None:
        if link.over:
            return
        if link.src.crashed:
            self._drop(link)
            return
        target = link.target
        if target is None or self._resolve(link.address) is not target:
            self._fail(link, "connection reset")
            return
        resume = self._frozen_until(link.address)
        if resume > self.sim.now:  # in the frozen receiver's socket buffer
            self.sim.call_at(resume, lambda: self._arrive(link))
            return
        msg, data, _ = link.queue.popleft()
        self.counts["delivered"] += 1
        target.deliver(self.sim.now, wire.decode(data) if self.roundtrip else msg)
        self.sim.flush(link.address)
        self._next(link)

    # --- breaking -------------------------------------------------------------------------

    def _forget(self, link: _Link) -> None:
        link.over = True
        if self._links.get((link.src, link.dst)) is link:
            del self._links[link.src, link.dst]

    def _drop(self, link: _Link) -> None:
        self._forget(link)
        self.counts["lost_with_sender"] += len(link.queue)
        link.queue.clear()

    def _fail(self, link: _Link, why: str) -> None:
        """The link broke: its messages go once more on a new link, or back to the sender."""
        if link.over:
            return
        src = link.src
        if src.crashed:
            self._drop(link)
            return
        resume = self._frozen_until(src.address)
        if resume > self.sim.now:  # the sender notices when it runs again
            self.sim.call_at(resume, lambda: self._fail(link, why))
            return
        self._forget(link)
        self.counts["broken"] += 1
        now = self.sim.now
        for msg, _, attempt in link.queue:
            address = src.address_of(link.dst)
            if attempt < LINK_RETRIES and address is not None:
                self.send(src, link.dst, address, msg, attempt + 1)
            else:
                self.counts["undeliverable"] += 1
                src.undeliverable(now, link.dst, msg)
        link.queue.clear()
        self.sim.flush(src.address)
