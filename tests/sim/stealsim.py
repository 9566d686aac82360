"""A seeded discrete-event simulator for the work-stealing machine.

Peers run :class:`StealingMachine`; each has ``slots`` workers of a given ``speed``. Work
messages travel over per-pair links with a seeded latency and stay in order (they ride on
streams in the real driver). Membership is modelled as what the driver feeds the machine:
``peer_up`` at start or join, ``peer_queue`` when a peer's advertised surplus changes (gossip,
delayed by ``meta_delay``), and ``peer_down`` at every survivor ``detect`` seconds after a crash
(plus jitter). Batches are cut as a real peer cuts them (:meth:`StealingMachine.take` sizes
them from the task times it was told with :meth:`~StealingMachine.finished`); each batch costs
``batch_overhead`` seconds on top of its tasks (the round trip to a worker process), which is
what batching saves. The surplus is published no more often than :class:`MetaSchedule`
allows, as the driver does. Each peer has an environment (:class:`SimEnv`: its Python
version, tags and installed distributions); the driver's part is played too: metadata gives
``peer_env``, and every :class:`AskVersions` is answered after a round trip from the asked
peer's environment (or fails, if it is down). Everything a test asserts on is recorded: every
result delivered to an owner, every grant and the move count of every task in it, which
peer received tasks of which job, every batch run, every drop, every placement news.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from p2pcluster._proto.eligibility import NO_NEEDS, JobNeeds, PeerEnv
from p2pcluster._proto.messages import (
    JobSpec,
    Results,
    StealGrant,
    StealRequest,
    TaskResult,
    TaskStatus,
)
from p2pcluster._proto.policy import MetaSchedule, WorkPolicy
from p2pcluster._proto.stealing import StealingMachine
from p2pcluster._proto.workevents import (
    AskVersions,
    Batch,
    JobDropped,
    JobFinished,
    PlacementNews,
    PushValue,
    ResultsReady,
    WorkEvent,
    WorkOutput,
)

Cost = Callable[[bytes, int], float]
#: ``lose(src, dst, msg)``: True drops the message in transit (a link that broke under it).
Lose = Callable[[int, int, object], bool]


@dataclass(frozen=True)
class SimEnv:
    """What a simulated peer has: its Python version, its tags, its distributions."""

    python: str = "3.11.7"
    tags: frozenset[str] = frozenset()
    versions: dict[str, str] = field(default_factory=dict)


@dataclass
class SimPeer:
    index: int
    machine: StealingMachine
    speed: float
    env: SimEnv = field(default_factory=SimEnv)
    alive: bool = True
    running: dict[int, Batch] = field(default_factory=dict)
    executed: Counter[bytes] = field(default_factory=Counter)  # job -> tasks finished here
    meta: MetaSchedule = field(default_factory=lambda: MetaSchedule(1.0))
    publish_pending: bool = False
    batch_seconds: dict[int, float] = field(default_factory=dict)  # token -> task seconds
    batch_ran: dict[int, int] = field(default_factory=dict)  # token -> tasks it will run
    #: When each worker slot is next free: a batch taken while its slot is busy waits in
    #: the worker's pipe, as in a real pool.
    free_at: list[float] = field(default_factory=list)


@dataclass
class Record:
    delivered: dict[bytes, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    finished: dict[bytes, float] = field(default_factory=dict)
    moves: Counter[int] = field(default_factory=Counter)  # task id -> grants that carried it
    max_moves_field: int = 0
    steal_requests: int = 0
    grants: list[tuple[float, int, int, int]] = field(default_factory=list)  # t, from, to, n
    dropped: list[tuple[float, int, bytes, str]] = field(default_factory=list)
    batches_started: list[tuple[float, int, bytes, int]] = field(default_factory=list)
    lost: list[tuple[float, int, int, str]] = field(default_factory=list)  # t, from, to, type
    #: (peer index, job) -> tasks of that job the peer received in grants
    received: Counter[tuple[int, bytes]] = field(default_factory=Counter)
    news: list[tuple[float, int, PlacementNews]] = field(default_factory=list)
    questions: list[tuple[float, int, int, tuple[str, ...]]] = field(default_factory=list)


class StealSim:
    def __init__(self, n: int, *, seed: int, slots: int = 1, speeds: list[float] | None = None,
                 latency: float = 0.0005, jitter: float = 0.0005, meta_delay: float = 0.3,
                 detect: float = 2.0, batch: int | None = None,
                 batch_overhead: float = 0.0002, steal_timeout: float = 1.0,
                 meta_interval: float = 1.0, policy: WorkPolicy | None = None,
                 lose: Lose | None = None, envs: list[SimEnv] | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self.latency, self.jitter, self.meta_delay, self.detect = (latency, jitter,
                                                                   meta_delay, detect)
        self.batch = batch
        self.batch_overhead = batch_overhead
        self.meta_interval = meta_interval
        self.slots = slots
        self.policy = policy or WorkPolicy(steal_timeout=steal_timeout)
        self.lose = lose
        self.heap: list[tuple[float, int, str, tuple[object, ...]]] = []
        self.seq = 0
        self.peers: list[SimPeer] = []
        self.link_clear: dict[tuple[int, int], float] = {}
        self.record = Record()
        self.costs: dict[bytes, Cost] = {}
        self.batch_seq = 0
        speeds = speeds or [1.0] * n
        for i in range(n):
            self._add_peer(speeds[i], envs[i] if envs else SimEnv())
        for p in self.peers:
            for q in self.peers:
                if p is not q:
                    self._introduce(p, q, 0)
        for p in self.peers:
            self._pump(p)

    # --- setup ----------------------------------------------------------------------------

    def _add_peer(self, speed: float, env: SimEnv) -> SimPeer:
        index = len(self.peers)
        node = f"peer{index:03d}".encode()
        machine = StealingMachine(node, self.slots, random.Random(self.rng.getrandbits(64)),
                                  self.policy, PeerEnv(env.python, env.tags))
        peer = SimPeer(index, machine, speed, env, meta=MetaSchedule(self.meta_interval),
                       free_at=[0.0] * self.slots)
        self.peers.append(peer)
        return peer

    def _introduce(self, peer: SimPeer, other: SimPeer, queue: int) -> None:
        """``peer`` learns of ``other`` as membership tells it: alive, with its metadata."""
        peer.machine.peer_up(self.now, other.machine.node_id, queue, self.slots)
        peer.machine.peer_env(self.now, other.machine.node_id, other.env.python,
                              other.env.tags)

    def node(self, i: int) -> bytes:
        return self.peers[i].machine.node_id

    def index_of(self, node: bytes) -> int:
        return int(node[4:])

    # --- scenario API ---------------------------------------------------------------------

    def submit(self, owner: int, n_tasks: int, cost: Cost, job: bytes = b"job1",
               needs: JobNeeds = NO_NEEDS) -> bytes:
        peer = self.peers[owner]
        spec = JobSpec(job, peer.machine.node_id, "m", "f", None, (), None, needs=needs)
        self.costs[job] = cost
        peer.machine.submit(self.now, spec, ((i, i.to_bytes(4, "big")) for i in range(n_tasks)))
        self._pump(peer)
        return job

    def crash(self, i: int) -> None:
        peer = self.peers[i]
        peer.alive = False
        peer.running.clear()
        for other in self.peers:
            if other.alive:
                delay = self.detect + self.rng.uniform(0, 0.5)
                self._at(self.now + delay, "down", (other.index, peer.machine.node_id))

    def join(self, speed: float = 1.0, env: SimEnv | None = None) -> int:
        peer = self._add_peer(speed, env or SimEnv())
        for other in self.peers:
            if other is not peer and other.alive:
                # push-pull on join: both learn each other, with the other's advertised queue
                self._introduce(peer, other, other.machine.surplus())
                self._introduce(other, peer, 0)
                self._pump(other)
        self._pump(peer)
        return peer.index

    def cancel(self, owner: int, job: bytes) -> None:
        peer = self.peers[owner]
        peer.machine.cancel(self.now, job)
        self._pump(peer)

    def run_until(self, t: float) -> None:
        while self.heap and self.heap[0][0] <= t:
            self._step()
        self.now = max(self.now, t)

    def run_until_done(self, job: bytes, timeout: float = 600.0) -> float:
        while job not in self.record.finished:
            if not self.heap or self.heap[0][0] > timeout:
                raise AssertionError(f"job not finished by t={self.now:.3f} (seed {self.seed})")
            self._step()
        return self.record.finished[job]

    def run_quiet(self, timeout: float = 600.0) -> None:
        while self.heap and self.heap[0][0] <= timeout:
            self._step()

    # --- the event loop -------------------------------------------------------------------

    def _at(self, t: float, kind: str, data: tuple[object, ...]) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, data))

    def _step(self) -> None:
        t, _, kind, data = heapq.heappop(self.heap)
        self.now = t
        getattr(self, f"_on_{kind}")(*data)

    def _on_deliver(self, dst: int, msg: object) -> None:
        peer = self.peers[dst]
        if peer.alive:
            peer.machine.receive(self.now, msg)  # type: ignore[arg-type]
            self._pump(peer)

    def _on_done(self, i: int, token: int) -> None:
        peer = self.peers[i]
        if not peer.alive or token not in peer.running:
            return
        batch = peer.running.pop(token)
        seconds = peer.batch_seconds.pop(token)
        ran = peer.batch_ran.pop(token)
        ids = [item.id for item in batch.items[:ran]]
        results = [TaskResult(tid, TaskStatus.OK, tid.to_bytes(4, "big")) for tid in ids]
        peer.executed[batch.spec.job] += len(ids)
        peer.machine.finished(self.now, batch, results, seconds, batch.items[ran:])
        self._pump(peer)

    def _on_down(self, i: int, node: bytes) -> None:
        peer = self.peers[i]
        if peer.alive:
            peer.machine.peer_down(self.now, node)
            self._pump(peer)

    def _on_tick(self, i: int) -> None:
        peer = self.peers[i]
        if peer.alive:
            deadline = peer.machine.next_deadline()
            if deadline is not None and deadline <= self.now:
                peer.machine.tick(self.now)
                self._pump(peer)

    def _on_answer(self, i: int, node: bytes, names: tuple[str, ...]) -> None:
        """Peer ``i``'s question to ``node`` comes back: answered, or failed if it is down."""
        peer, asked = self.peers[i], self.peers[self.index_of(node)]
        if not peer.alive:
            return
        if asked.alive:
            env = asked.env
            peer.machine.peer_versions(self.now, node, env.python, env.tags,
                                       {n: env.versions.get(n, "") for n in names})
        else:
            peer.machine.versions_failed(self.now, node, "connection refused")
        self._pump(peer)

    def _on_meta(self, i: int, node: bytes, queue: int) -> None:
        peer = self.peers[i]
        if peer.alive:
            peer.machine.peer_queue(self.now, node, queue)
            self._pump(peer)

    def _on_publish(self, i: int) -> None:
        peer = self.peers[i]
        peer.publish_pending = False
        surplus = peer.machine.surplus()
        if peer.alive and peer.meta.publish(self.now, surplus):
            for other in self.peers:
                if other is not peer and other.alive:
                    self._at(self.now + self.meta_delay * self.rng.uniform(0.5, 1.5), "meta",
                             (other.index, peer.machine.node_id, surplus))

    def _publish(self, peer: SimPeer) -> None:
        """Gossip the surplus once it changed, when :class:`MetaSchedule` allows (as the
        driver does)."""
        if peer.meta.changed(peer.machine.surplus()) and not peer.publish_pending:
            peer.publish_pending = True
            self._at(peer.meta.due(self.now), "publish", (peer.index,))

    def _pump(self, peer: SimPeer) -> None:
        """The driver's loop: fill free slots, carry out outputs and events, tick, gossip."""
        m = peer.machine
        while peer.alive:
            self._fill(peer)
            outputs, events = m.take_outputs(), m.take_events()
            if not outputs and not events:
                break
            self._carry_out(peer, outputs, events)
        deadline = m.next_deadline()
        if deadline is not None and peer.alive:
            self._at(max(deadline, self.now), "tick", (peer.index,))
        if peer.alive:
            self._publish(peer)

    def _record_send(self, peer: SimPeer, dst: bytes, msg: object) -> None:
        if isinstance(msg, StealRequest):
            self.record.steal_requests += 1
        if isinstance(msg, StealGrant):
            n = 0
            for jt in msg.jobs:
                self.record.received[(self.index_of(dst), jt.spec.job)] += len(jt.tasks)
                for item in jt.tasks:
                    self.record.moves[item.id] += 1
                    self.record.max_moves_field = max(self.record.max_moves_field, item.moves)
                    n += 1
            self.record.grants.append((self.now, peer.index, self.index_of(dst), n))

    def _transmit(self, peer: SimPeer, dst_node: bytes, msg: object) -> None:
        """Deliver ``msg`` in order over the link, after a seeded latency (or lose it)."""
        dst = self.index_of(dst_node)
        if self.lose is not None and self.lose(peer.index, dst, msg):
            self.record.lost.append((self.now, peer.index, dst, type(msg).__name__))
            return
        link = (peer.index, dst)
        t = max(self.now + self.latency + self.rng.uniform(0, self.jitter),
                self.link_clear.get(link, 0.0))
        self.link_clear[link] = t
        self._at(t, "deliver", (dst, msg))

    def _fill(self, peer: SimPeer) -> None:
        m = peer.machine
        while True:
            taken = m.take(self.now, self.batch)
            if taken is None:
                return
            spec, items, time_limit = taken
            self.batch_seq += 1
            cost, ran = 0.0, 0
            for item in items:  # as the worker runs it: stop after time_limit
                cost += self.costs[spec.job](spec.job, item.id) / peer.speed
                ran += 1
                if time_limit is not None and cost >= time_limit:
                    break
            peer.running[self.batch_seq] = taken
            peer.batch_seconds[self.batch_seq] = cost
            peer.batch_ran[self.batch_seq] = ran
            self.record.batches_started.append((self.now, peer.index, spec.job, len(items)))
            slot = min(range(self.slots), key=peer.free_at.__getitem__)
            done = max(self.now, peer.free_at[slot]) + self.batch_overhead + cost
            peer.free_at[slot] = done
            self._at(done, "done", (peer.index, self.batch_seq))

    def _carry_out(self, peer: SimPeer, outputs: list[WorkOutput], events: list[WorkEvent]
                   ) -> None:
        m = peer.machine
        for out in outputs:
            if isinstance(out, AskVersions):  # a question: a round trip, or a local look-up
                target = self.index_of(out.dst)
                self.record.questions.append((self.now, peer.index, target, out.names))
                delay = 0.0001 if target == peer.index else 2 * self.latency
                self._at(self.now + delay, "answer", (peer.index, out.dst, out.names))
                continue
            if isinstance(out, PushValue):  # a data stream: the result, then push_done
                msg: object = Results(out.job, m.node_id, out.queue, (out.result,))
                self._transmit(peer, out.dst, msg)
                m.push_done(self.now, out.job, out.result.id, delivered=True)
                continue
            self._record_send(peer, out.dst, out.msg)
            self._transmit(peer, out.dst, out.msg)
        for event in events:
            if isinstance(event, ResultsReady):
                for r in event.results:
                    self.record.delivered[event.job][r.id] += 1
            elif isinstance(event, JobFinished):
                self.record.finished[event.job] = self.now
            elif isinstance(event, PlacementNews):
                self.record.news.append((self.now, peer.index, event))
            elif isinstance(event, JobDropped):
                self.record.dropped.append((self.now, peer.index, event.job, event.reason))
                for token, batch in list(peer.running.items()):
                    if batch.spec.job == event.job:
                        del peer.running[token]
                        peer.batch_seconds.pop(token, None)
                        peer.batch_ran.pop(token, None)
                        m.finished(self.now, batch, [])
