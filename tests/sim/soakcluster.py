"""Whole peers on one :class:`~p2pcluster.testing.Simulation`, the faults done to them, and a
log of those faults.

Peer ``i`` always lives at :func:`~p2pcluster.testing.peer_address` ``(i)``, with its own
number of worker slots and speed (its hardware). A crash stops its process at once (traffic
to it is lost, as when a machine loses power); a restart starts a *new* process there, with a
new node id, which joins through a seed, as a restarted daemon does. A freeze stops the
process for a while (``kill -STOP``, then ``kill -CONT``): it handles nothing, then everything
that queued up. A partition cuts a group of hosts off from the rest until :meth:`heal`.

:class:`FaultLog` remembers which processes (node ids) were ever faulted, and when each was
frozen or cut off from whom, so that a checker can tell a stale verdict from a false one.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from p2pcluster import Config
from p2pcluster._proto.outputs import Address
from p2pcluster.testing import LinkConditions, Simulation, peer_address

from .peermachine import PeerMachine, PeerObserver, TaskRunner
from .soakjobs import run_task
from .worklinks import WorkNet

__all__ = ["FaultLog", "SoakCluster"]


@dataclass(slots=True)
class _Partition:
    start: float
    isolated: frozenset[str]  #: hosts cut off from the rest
    end: float | None = None


@dataclass(slots=True)
class FaultLog:
    """Every fault so far. A process is *faulted* once it was crashed, frozen, or cut off."""

    faulted: dict[bytes, str] = field(default_factory=dict)  #: node id -> first fault
    freezes: dict[bytes, list[tuple[float, float]]] = field(default_factory=dict)
    partitions: list[_Partition] = field(default_factory=list)
    fault_times: list[float] = field(default_factory=list)  #: when each fault began
    crashes: int = 0
    restarts: int = 0

    def fault(self, node: bytes, why: str) -> None:
        self.faulted.setdefault(node, why)

    def frozen(self, node: bytes, start: float, end: float) -> None:
        self.fault(node, "frozen")
        self.fault_times.append(start)
        self.freezes.setdefault(node, []).append((start, end))

    def frozen_time(self, node: bytes, start: float, end: float) -> float:
        """Seconds ``node`` spent frozen between ``start`` and ``end``."""
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b in self.freezes.get(node, ()))

    def active_partition(self) -> _Partition | None:
        last = self.partitions[-1] if self.partitions else None
        return last if last is not None and last.end is None else None

    def excuse(self, observer: PeerMachine, subject: Address, t: float,
               window: float) -> str | None:
        """Why ``observer`` may hold stale news of the process at ``subject`` at time ``t``:
        it was frozen, or cut off from ``subject``, within the last ``window`` seconds."""
        since = t - window
        for a, b in self.freezes.get(observer.node_id, ()):
            if a <= t and b >= since:
                return f"it was frozen from t={a:.3f} to t={b:.3f}"
        for p in self.partitions:
            cut = (observer.address[0] in p.isolated) != (subject[0] in p.isolated)
            if cut and p.start <= t and (p.end is None or p.end >= since):
                return f"a partition cut it off from t={p.start:.3f} to t={p.end}"
        return None

    def separated_since(self, t: float) -> bool:
        """Was any partition in force at or after ``t``?"""
        return any(p.end is None or p.end >= t for p in self.partitions)


class SoakCluster:
    """``n`` peers; see the module docstring. ``observer`` is told everything they do."""

    def __init__(self, n: int, *, seed: int, config: Config, conditions: LinkConditions,
                 observer: PeerObserver, roundtrip: bool = True, digest: bool = False,
                 task_runner: TaskRunner = run_task) -> None:
        self.n = n
        self.config = config
        self.sim = Simulation(seed, conditions=conditions, roundtrip=roundtrip, digest=digest,
                              stream_timeout=config.handshake_timeout)
        self.log = FaultLog()
        self.net = WorkNet(self.sim, resolve=self.at, frozen_until=self.frozen_until,
                           connect_timeout=2 * config.handshake_timeout, roundtrip=roundtrip)
        self._observer = observer
        self._run_task = task_runner
        hardware = self.sim.random("hardware")
        self.slots = [hardware.choice((1, 2, 2, 4)) for _ in range(n)]
        self.speed = [hardware.uniform(0.5, 1.5) for _ in range(n)]
        self.peers: dict[int, PeerMachine] = {}  #: peer index -> its running process
        self.processes: dict[bytes, PeerMachine] = {}  #: node id -> process, ever
        self._by_address: dict[Address, int] = {peer_address(i): i for i in range(n)}
        self._frozen: dict[Address, float] = {}
        self._generation = [0] * n

    # --- looking up -----------------------------------------------------------------------

    def at(self, address: Address) -> PeerMachine | None:
        i = self._by_address.get(address)
        return None if i is None else self.peers.get(i)

    def frozen_until(self, address: Address) -> float:
        return self._frozen.get(address, 0.0)

    def is_frozen(self, i: int) -> bool:
        return self._frozen.get(peer_address(i), 0.0) > self.sim.now

    def index(self, peer: PeerMachine) -> int:
        return self._by_address[peer.address]

    def running(self) -> list[PeerMachine]:
        return list(self.peers.values())

    def reachable(self, i: int, j: int) -> bool:
        return self.sim.network.reachable(peer_address(i)[0], peer_address(j)[0])

    # --- processes ------------------------------------------------------------------------

    def start(self, i: int, seeds: Iterable[int] = ()) -> PeerMachine:
        """Start a new process for peer ``i``, joining through ``seeds``."""
        self._generation[i] += 1
        rng = self.sim.random(f"peer{i}/{self._generation[i]}")
        peer = PeerMachine(self.config, node_id=rng.randbytes(16), name=f"peer{i}",
                           address=peer_address(i), rng=rng, now=self.sim.now,
                           slots=self.slots[i], speed=self.speed[i], run_task=self._run_task,
                           links=self.net, observer=self._observer)
        self.peers[i] = peer
        self.processes[peer.node_id] = peer
        if self.isolated(i):
            self.log.fault(peer.node_id, "cut off by a partition")
        self.sim.add(peer.address, peer)
        seed_addresses = [peer_address(j) for j in seeds if j != i]
        if seed_addresses:
            peer.join(self.sim.now, seed_addresses)
            self.sim.flush(peer.address)
        return peer

    def crash(self, i: int) -> PeerMachine:
        peer = self.peers.pop(i)
        self.sim.crash(peer.address)
        peer.crashed = True
        self._frozen.pop(peer.address, None)
        self.log.fault(peer.node_id, "crashed")
        self.log.fault_times.append(self.sim.now)
        self.log.crashes += 1
        return peer

    def restart(self, i: int, seeds: Iterable[int]) -> PeerMachine:
        self.log.restarts += 1
        return self.start(i, seeds)

    def freeze(self, i: int, duration: float) -> None:
        peer = self.peers[i]
        now = self.sim.now
        self.sim.pause(peer.address, duration)
        self._frozen[peer.address] = now + duration
        self.log.frozen(peer.node_id, now, now + duration)

    def partition(self, isolated: Iterable[int]) -> None:
        hosts = frozenset(peer_address(i)[0] for i in isolated)
        self.sim.network.partition(hosts)
        self.log.partitions.append(_Partition(self.sim.now, hosts))
        self.log.fault_times.append(self.sim.now)
        for i, peer in self.peers.items():
            if peer_address(i)[0] in hosts:
                self.log.fault(peer.node_id, "cut off by a partition")

    def heal(self) -> None:
        self.sim.network.heal()
        active = self.log.active_partition()
        if active is not None:
            active.end = self.sim.now

    def isolated(self, i: int) -> bool:
        """Is peer ``i`` on the cut-off side of the partition in force?"""
        active = self.log.active_partition()
        return active is not None and peer_address(i)[0] in active.isolated

    def random_seed(self, i: int, rng: random.Random) -> list[int]:
        """A peer to join through: one that ``i`` can reach (mDNS finds those on its side),
        else any (a configured seed, retried until a partition heals)."""
        others = [j for j in self.peers if j != i]
        near = [j for j in others if self.reachable(i, j)]
        return [rng.choice(near or others)] if others else []
