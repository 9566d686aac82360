"""A trivial sans-IO ping/ack machine, to prove the Simulation and the codec together."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from p2pcluster._proto.messages import Ack, Message, Ping, PushPull
from p2pcluster._proto.outputs import Address, Output, SendDatagram, StreamRequest


def node_of(addr: Address) -> bytes:
    """The node id of the PingAckNode at ``addr``."""
    return hashlib.sha256(repr(addr).encode()).digest()[:16]


@dataclass
class PingAckNode:
    """Pings a random peer every ``interval`` (jittered); answers pings; records RTTs.

    Every ``sync_every`` pings it also makes a stream request (a PushPull) to a random peer.
    """

    me: Address
    peers: list[Address]
    rng: random.Random
    interval: float = 0.1
    sync_every: int = 0
    node_id: bytes = b""
    acked: dict[int, float] = field(default_factory=dict)
    sent: dict[int, float] = field(default_factory=dict)
    pings_received: int = 0
    replies: list[Message | None] = field(default_factory=list)
    _next: float = 0.0
    _seq: int = 0
    _out: list[Output] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.node_id = self.node_id or node_of(self.me)

    def receive(self, now: float, src: Address, msg: Message, sender: bytes) -> None:
        if isinstance(msg, Ping):
            self.pings_received += 1
            self._out.append(SendDatagram(src, Ack(seq=msg.seq), sender))
        elif isinstance(msg, Ack) and msg.seq in self.sent and msg.seq not in self.acked:
            self.acked[msg.seq] = now - self.sent[msg.seq]

    def handle_request(self, now: float, src: Address, msg: Message) -> Message | None:
        return PushPull(join=False, sender=b"s", members=())

    def handle_reply(self, now: float, token: int, reply: Message | None) -> None:
        self.replies.append(reply)

    def tick(self, now: float) -> None:
        if now < self._next or not self.peers:
            return
        self._seq += 1
        target = self.rng.choice(self.peers)
        self.sent[self._seq] = now
        self._out.append(SendDatagram(target, Ping(seq=self._seq, target=node_of(target)),
                                      node_of(target)))
        if self.sync_every and self._seq % self.sync_every == 0:
            request = PushPull(join=True, sender=b"s", members=())
            self._out.append(StreamRequest(target, request, self._seq))
        self._next = now + self.interval * (0.5 + self.rng.random())

    def next_deadline(self) -> float | None:
        return self._next if self.peers else None

    def take_outputs(self) -> list[Output]:
        out, self._out = self._out, []
        return out
