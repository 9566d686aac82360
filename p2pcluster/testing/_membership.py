"""`SimCluster`: a cluster of membership machines on a :class:`Simulation`, for tests.

Peer ``i`` lives at address ``10.x.y.z:7946`` (see :func:`peer_address`). A cluster either
starts *converged* (every peer already knows every other, with empty gossip queues and
push-pull timers at random phases, as after a long quiet run) or *bootstraps* (each peer
joins through peer 0, exactly as ``p2pcluster join`` with a seed would).
"""

from __future__ import annotations

from collections.abc import Iterable

from .._config import Config
from .._proto.broadcast import BroadcastQueue
from .._proto.membership import MemberStatus
from .._proto.messages import MemberState
from .._proto.outputs import Address, Endpoint
from .._proto.swim import MembershipMachine
from ._network import LinkConditions
from ._sim import Simulation

__all__ = ["SimCluster", "peer_address"]


def peer_address(i: int) -> Address:
    """The address of peer ``i`` in a :class:`SimCluster`."""
    return f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}", 7946


class SimCluster:
    """``n`` peers on a fresh :class:`Simulation` (reachable as ``.sim``)."""

    def __init__(self, n: int, *, seed: int, config: Config | None = None,
                 conditions: LinkConditions | None = None, converged: bool = True,
                 trace: bool = False, digest: bool = True, roundtrip: bool = True) -> None:
        self.config = config or Config.lan()
        self.sim = Simulation(seed, conditions=conditions or LinkConditions(latency=0.001),
                              trace=trace, digest=digest, roundtrip=roundtrip,
                              stream_timeout=self.config.handshake_timeout)
        self.machines: dict[int, MembershipMachine] = {}
        self._generation: dict[int, int] = {}
        for i in range(n):
            self.machines[i] = self._new_machine(i)
        if converged:
            self._converge()
        for i, machine in self.machines.items():
            self.sim.add(peer_address(i), machine)
            if not converged and i:
                machine.join(self.sim.now, [peer_address(0)])

    def _new_machine(self, i: int) -> MembershipMachine:
        generation = self._generation.get(i, -1) + 1
        self._generation[i] = generation
        rng = self.sim.random(f"peer{i}/{generation}")
        host, port = peer_address(i)
        return MembershipMachine(self.config, node_id=rng.randbytes(16), name=f"peer{i}",
                                 host=host, port=port, rng=rng, now=self.sim.now)

    def _converge(self) -> None:
        states = tuple(MemberState(m.node_id, 0, m.me.name, m.me.host, m.me.port, m.me.meta,
                                   int(MemberStatus.ALIVE)) for m in self.machines.values())
        now = self.sim.now
        for i, machine in self.machines.items():
            sync = machine.anti_entropy
            sync.merge(now, states, Endpoint(peer_address(i), machine.node_id))
            machine.take_events()
            machine.broadcasts = BroadcastQueue(self.config.retransmit_mult)
            sync.schedule_push_pull(now + machine.rng.random() * sync.push_pull_interval())

    # --- faults ---------------------------------------------------------------------------

    def crash(self, i: int) -> MembershipMachine:
        """Stop peer ``i`` at once (kill -9)."""
        self.sim.crash(peer_address(i))
        return self.machines.pop(i)

    def restart(self, i: int, *, via: int = 0) -> MembershipMachine:
        """Start a new process for peer ``i``: same name and address, new id; join ``via``."""
        if i in self.machines:
            self.crash(i)
        machine = self._new_machine(i)
        self.machines[i] = machine
        self.sim.add(peer_address(i), machine)
        machine.join(self.sim.now, [peer_address(via)])
        return machine

    def add(self, i: int, *, via: int = 0) -> MembershipMachine:
        """A new peer ``i`` joins through peer ``via``."""
        return self.restart(i, via=via)

    def leave(self, i: int) -> None:
        self.machines[i].leave(self.sim.now)
        self.sim.flush(peer_address(i))  # send the leave at once

    # --- observations ---------------------------------------------------------------------

    def status(self, observer: int, node: bytes) -> MemberStatus | None:
        entry = self.machines[observer].table.get(node)
        return None if entry is None else entry.status

    def all_see(self, node: bytes, status: MemberStatus,
                observers: Iterable[int] | None = None) -> bool:
        ids = self.machines if observers is None else observers
        return all(self.status(i, node) == status for i in ids if i in self.machines)

    def any_sees(self, node: bytes, status: MemberStatus) -> bool:
        return any(self.status(i, node) == status for i in self.machines)

    def converged(self) -> bool:
        """Every running peer holds the same table, with every running peer alive in it."""
        running = {m.node_id for m in self.machines.values()}
        checksums = set()
        for machine in self.machines.values():
            alive = {e.node for e in machine.table if e.status == MemberStatus.ALIVE}
            if not running <= alive:
                return False
            checksums.add(machine.checksum())
        return len(checksums) == 1

    def false_deaths(self) -> list[tuple[int, str]]:
        """(observer, name) for each running peer some running peer holds dead or left."""
        running = {m.node_id: m.me.name for m in self.machines.values()}
        return [(i, running[e.node]) for i, m in self.machines.items() for e in m.table
                if e.node in running and e.status in (MemberStatus.DEAD, MemberStatus.LEFT)]
