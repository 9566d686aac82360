"""`Simulation`: many sans-IO machines on one virtual clock and one virtual network.

Everything happens in one thread, from one event heap ordered by (time, sequence number), and
every random choice comes from ``random.Random`` objects derived from the seed. The same seed
therefore replays the same run bit for bit; :meth:`Simulation.trace_digest` proves it.

Each message is encoded with the real codec, so sizes are real and an oversized datagram is a
bug that raises at once. With ``roundtrip=True`` (the default) it is also decoded on delivery,
so the machines see exactly what a peer would. ``digest=False`` skips hashing the event log,
for long benchmarks that do not need :meth:`trace_digest`.

If anything raises inside :meth:`run_until`, the exception carries a note with the seed; the
pytest plugin also prints the seed of every simulation in a failing test.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .._proto import wire
from .._proto.envelope import DATAGRAM_OVERHEAD
from .._proto.handshake import FRAME_OVERHEAD, HELLO_SIZE, PROOF_SIZE
from .._proto.messages import Message
from .._proto.outputs import Address, Machine, SendDatagram, StreamRequest
from ._network import TCP_SYN_RTO, LinkConditions, NetworkModel

__all__ = ["NodeStats", "Simulation"]

_DATAGRAM, _TIMER, _REQUEST, _REPLY, _CALL = range(5)
_KIND_NAMES = ("datagram", "timer", "request", "reply", "call")
_registry: list[Simulation] = []  # read by the pytest plugin to report seeds


@dataclass(slots=True)
class NodeStats:
    """Traffic counters of one address (survive crashes and restarts).

    ``msgs_*`` and ``bytes_*`` count datagrams plus stream messages; ``bytes_*`` include the
    envelope, and for streams the frame overhead and the handshake. ``streams_opened``
    counts stream requests this address made.
    """

    msgs_sent: int = 0
    bytes_sent: int = 0
    msgs_received: int = 0
    bytes_received: int = 0
    streams_opened: int = 0
    dropped_oversize: int = 0


@dataclass(slots=True)
class _Slot:
    machine: Machine
    generation: int
    paused_until: float = 0.0
    processing_delay: float = 0.0
    timer_at: float | None = None
    stats: NodeStats = field(default_factory=NodeStats)


class Simulation:
    """Drives machines at addresses; see the module docstring.

    ``conditions`` are the default link conditions; ``stream_timeout`` is how long a stream
    request to an unreachable or crashed peer takes to fail, like a connect timeout (a
    request slowed past it by retransmissions fails too).
    """

    def __init__(self, seed: int, *, conditions: LinkConditions | None = None,
                 max_datagram_size: int = 1400, stream_timeout: float = 1.0,
                 roundtrip: bool = True, trace: bool = False, digest: bool = True) -> None:
        self.seed = seed
        self.now = 0.0
        self.network = NetworkModel(random.Random(f"{seed}/network"), conditions)
        self.max_payload = max_datagram_size - DATAGRAM_OVERHEAD
        self.stream_timeout = stream_timeout
        self.roundtrip = roundtrip
        self._heap: list[tuple[Any, ...]] = []
        self._seq = 0
        self._slots: dict[Address, _Slot] = {}
        self._stats: dict[Address, NodeStats] = {}
        self._generation = 0
        self._trace: list[str] | None = [] if trace else None
        self._digest = hashlib.sha256() if digest or trace else None
        self.events_processed = 0
        _registry.append(self)

    def __repr__(self) -> str:
        return f"Simulation(seed={self.seed}, now={self.now:.3f}, nodes={len(self._slots)})"

    # --- randomness -----------------------------------------------------------------------

    def random(self, name: str) -> random.Random:
        """A ``Random`` derived from the seed and ``name``: give one to each machine."""
        return random.Random(f"{self.seed}/{name}")

    # --- membership of the simulation -----------------------------------------------------

    def add(self, addr: Address, machine: Machine) -> None:
        """Start ``machine`` at ``addr`` (replacing a crashed one: a restart)."""
        self._generation += 1
        stats = self._stats.setdefault(addr, NodeStats())
        self._slots[addr] = _Slot(machine, self._generation, stats=stats)
        self._after_event(addr)

    def crash(self, addr: Address) -> Machine:
        """Stop ``addr`` at once: it processes nothing more, and traffic to it is lost."""
        return self._slots.pop(addr).machine

    def machine(self, addr: Address) -> Machine:
        return self._slots[addr].machine

    @property
    def addresses(self) -> list[Address]:
        return list(self._slots)

    def stats(self, addr: Address) -> NodeStats:
        return self._stats[addr]

    def pause(self, addr: Address, duration: float) -> None:
        """Freeze ``addr`` for ``duration``: it handles nothing, then everything queued."""
        self._slots[addr].paused_until = self.now + duration

    def set_processing_delay(self, addr: Address, delay: float) -> None:
        """Make ``addr`` handle every message ``delay`` late (a CPU-starved peer)."""
        self._slots[addr].processing_delay = delay

    def call_at(self, when: float, fn: Callable[[], object]) -> None:
        """Run ``fn()`` at virtual time ``when`` (a scripted fault, a check)."""
        self._push(when, _CALL, fn)

    # --- running --------------------------------------------------------------------------

    def run_until(self, when: float) -> None:
        """Process every event up to virtual time ``when``; then ``now == when``."""
        try:
            while self._heap and self._heap[0][0] <= when:
                self._step(heapq.heappop(self._heap))
            self.now = max(self.now, when)
        except BaseException as exc:
            exc.add_note(f"p2pcluster.testing.Simulation seed={self.seed} at t={self.now:.6f}")
            raise

    def run_for(self, duration: float) -> None:
        self.run_until(self.now + duration)

    def run_until_true(self, predicate: Callable[[], bool], *, timeout: float,
                       check_every: float = 0.01) -> float:
        """Run until ``predicate()`` holds (checked every ``check_every``); return the time.

        Raises ``TimeoutError`` (with the seed) if it does not hold within ``timeout``.
        """
        deadline = self.now + timeout
        while not predicate():
            if self.now >= deadline:
                err = TimeoutError(f"condition not met within {timeout} virtual s")
                err.add_note(f"p2pcluster.testing.Simulation seed={self.seed}")
                raise err
            self.run_until(min(deadline, self.now + check_every))
        return self.now

    def trace_digest(self) -> str:
        """SHA-256 over every processed event: equal digests mean identical runs."""
        if self._digest is None:
            raise RuntimeError("this Simulation was created with digest=False")
        return self._digest.hexdigest()

    @property
    def trace(self) -> list[str]:
        """The event log, if the simulation was created with ``trace=True``."""
        if self._trace is None:
            raise RuntimeError("create the Simulation with trace=True to keep the log")
        return self._trace

    # --- internals ------------------------------------------------------------------------

    def _push(self, when: float, kind: int, *payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, *payload))

    def _record(self, kind: int, *parts: object) -> None:
        if self._digest is None:
            return
        line = f"{self.now:.9f} {_KIND_NAMES[kind]} " + " ".join(map(str, parts))
        self._digest.update(line.encode())
        if self._trace is not None:
            self._trace.append(line)

    def _step(self, event: tuple[Any, ...]) -> None:
        when, _, kind, *payload = event
        self.now = when
        self.events_processed += 1
        if kind == _CALL:
            self._record(kind)
            payload[0]()
            return
        addr: Address = payload[0]
        slot = self._slots.get(addr)
        if slot is None or (kind in (_TIMER, _REPLY) and payload[1] != slot.generation):
            if kind == _REQUEST:  # the peer is gone: the connection attempt fails
                self._fail_request(payload[1])
            return  # crashed, or a timer or reply of a previous process at this address
        if slot.paused_until > when:
            if kind == _TIMER:
                if slot.timer_at != when:
                    return  # stale
                slot.timer_at = slot.paused_until
            self._push(slot.paused_until, kind, *payload)
            return
        if kind != _TIMER and slot.processing_delay and payload[-1] is not True:
            self._push(when + slot.processing_delay, kind, *payload[:-1], True)
            return
        ticked = self._dispatch(slot, kind, addr, payload)
        self._after_event(addr, ticked=ticked)

    def _dispatch(self, slot: _Slot, kind: int, addr: Address, payload: list[Any]) -> bool:
        """Hand one event to its machine; True if it was a tick."""
        machine = slot.machine
        if kind == _TIMER:
            if slot.timer_at != self.now:
                return False  # superseded by an earlier timer
            slot.timer_at = None
            self._record(kind, addr)
            machine.tick(self.now)
            return True
        elif kind == _DATAGRAM:
            self._receive_datagram(slot, addr, payload)
        elif kind == _REQUEST:
            _, origin, data, msg, _delayed = payload
            src = origin[0]
            msg = self._delivered(data, msg)
            self._record(kind, src, addr, type(msg).__name__)
            self._count_stream(src, addr, len(data))
            reply = machine.handle_request(self.now, src, msg)
            latency = self.network.stream_delay(addr[0], src[0])
            if latency is None or reply is None:
                self._fail_request(origin)
            else:
                encoded = wire.encode(reply)
                self._count_stream(addr, src, len(encoded))
                self._push(self.now + latency, _REPLY, src, origin[1], origin[2], encoded,
                           reply, False)
        else:  # _REPLY
            _, _generation, token, data, reply, _delayed = payload
            if data is not None:
                reply = self._delivered(data, reply)
            self._record(kind, addr, token, type(reply).__name__)
            machine.handle_reply(self.now, token, reply)
        return False

    def _receive_datagram(self, slot: _Slot, addr: Address, payload: list[Any]) -> None:
        _, src, data, msg, sender, to, _delayed = payload
        slot.stats.msgs_received += 1
        slot.stats.bytes_received += len(data) + DATAGRAM_OVERHEAD
        if to != slot.machine.node_id:  # the envelope binds the receiver's id: dropped
            self._record(_DATAGRAM, src, addr, "misdirected")
            return
        msg = self._delivered(data, msg)
        self._record(_DATAGRAM, src, addr, type(msg).__name__)
        slot.machine.receive(self.now, src, msg, sender)

    def _count_stream(self, src: Address, dst: Address, size: int) -> None:
        sender, receiver = self._stats.get(src), self._stats.get(dst)
        if sender is not None:
            sender.msgs_sent += 1
            sender.bytes_sent += size + FRAME_OVERHEAD
        if receiver is not None:
            receiver.msgs_received += 1
            receiver.bytes_received += size + FRAME_OVERHEAD

    def _delivered(self, data: bytes, msg: Message) -> Message:
        return wire.decode(data) if self.roundtrip else msg

    def _fail_request(self, origin: tuple[Address, int, int]) -> None:
        """``origin``: the requester's address, its process generation, the token."""
        src, generation, token = origin
        self._push(self.now + self.stream_timeout, _REPLY, src, generation, token, None, None,
                   False)

    def flush(self, addr: Address) -> None:
        """Carry out what the machine at ``addr`` has queued: call it after acting on the
        machine from outside the simulation (a leave, a message injected by a test)."""
        self._after_event(addr)

    def _after_event(self, addr: Address, *, ticked: bool = False) -> None:
        slot = self._slots.get(addr)
        if slot is None:
            return
        for out in slot.machine.take_outputs():
            if type(out) is SendDatagram:
                self._send_datagram(slot, addr, out)
            elif type(out) is StreamRequest:
                self._send_request(addr, out)
            else:
                raise TypeError(f"unknown output {out!r}")
        deadline = slot.machine.next_deadline()
        if ticked and deadline is not None and deadline <= self.now:
            raise AssertionError(
                f"{addr}: after tick({self.now}) the machine still wants a tick at {deadline};"
                " it would spin forever"
            )
        if deadline is not None and (slot.timer_at is None or deadline < slot.timer_at):
            slot.timer_at = max(deadline, self.now)
            self._push(slot.timer_at, _TIMER, addr, slot.generation)

    def _send_datagram(self, slot: _Slot, src: Address, out: SendDatagram) -> None:
        data = wire.encode(out.msg)
        if len(data) > self.max_payload:
            slot.stats.dropped_oversize += 1
            raise AssertionError(
                f"{src} sent a {type(out.msg).__name__} of {len(data)} bytes; the limit is "
                f"{self.max_payload} before the envelope"
            )
        slot.stats.msgs_sent += 1
        slot.stats.bytes_sent += len(data) + DATAGRAM_OVERHEAD
        sender = slot.machine.node_id
        for delay in self.network.datagram_delays(src[0], out.dst[0]):
            self._push(self.now + delay, _DATAGRAM, out.dst, src, data, out.msg, sender, out.to,
                       False)

    def _send_request(self, src: Address, out: StreamRequest) -> None:
        origin = (src, self._slots[src].generation, out.token)
        stats = self._stats[src]
        stats.streams_opened += 1
        stats.bytes_sent += HELLO_SIZE + PROOF_SIZE  # hello and proof frame
        if out.dst not in self._slots:
            self._fail_request(origin)
            return
        # SYN, SYN-ACK, then the hello/proof/request legs of the handshake and the request.
        net = self.network
        syn = net.stream_delay(src[0], out.dst[0], rto=TCP_SYN_RTO)
        back = net.stream_delay(out.dst[0], src[0], segments=2)
        forth = net.stream_delay(src[0], out.dst[0], segments=2)
        if syn is None or back is None or forth is None:
            self._fail_request(origin)
            return
        delay = syn + back + forth
        if delay > self.stream_timeout:
            self._fail_request(origin)
            return
        self._push(self.now + delay, _REQUEST, out.dst, origin, wire.encode(out.msg), out.msg,
                   False)


def reset_registry() -> list[Simulation]:
    """Forget the simulations created so far; return them (used by the pytest plugin)."""
    sims = list(_registry)
    _registry.clear()
    return sims


def seeds_of(sims: Iterable[Simulation]) -> list[int]:
    return [s.seed for s in sims]
