"""The soak's chaos: faults and jobs at random times, every choice from the seed.

Each kind of event is a Poisson process with its own ``random.Random`` derived from the seed
(so that changing one kind's rate leaves the others' draws alone):

- **crash**: a running peer stops at once; it restarts (a new process, a new node id) after
  ``restart_after`` seconds, joining through a peer it can reach. At most a quarter of the
  peers are down at once.
- **freeze**: a running peer stops for a while and resumes: mostly short (under the
  suspicion timeout), sometimes long enough to be declared dead.
- **partition**: a group of up to a quarter of the peers is cut off, for a few seconds (only
  suspicions) or for minutes (deaths on both sides), then heals. One partition at a time,
  and the next begins only after the last one's heal bound, so every heal is checked.
- **job**: one of ``owners`` peers submits a job of known results; a few jobs are cancelled
  by their owner a while later.

Nothing new starts after ``until``; the soak then heals what is cut off and drains.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from .soakchecks import Checker
from .soakcluster import SoakCluster
from .soakjobs import JobRecord, make_job

__all__ = ["DENSE", "Chaos", "ChaosRates"]


@dataclass(frozen=True, slots=True)
class ChaosRates:
    """Mean seconds between events of each kind, and their shapes."""

    crash_every: float = 150.0
    restart_after: tuple[float, float] = (5.0, 180.0)
    freeze_every: float = 90.0
    partition_every: float = 240.0
    job_every: float = 10.0
    owners: int = 6  #: peers 0 .. owners-1 submit the jobs
    median_cost: float = 0.2  #: seconds of a typical task at speed 1
    cancel_share: float = 0.03


#: CI's rates (``tests/sim/test_soak.py``, ``scripts/soak.py --dense``): every kind of fault
#: within a few virtual minutes.
DENSE = ChaosRates(crash_every=25.0, restart_after=(5.0, 60.0), freeze_every=15.0,
                   partition_every=20.0, job_every=4.0)


class Chaos:
    """Schedules everything on the cluster's simulation until virtual time ``until``."""

    def __init__(self, cluster: SoakCluster, checker: Checker, rates: ChaosRates,
                 until: float) -> None:
        self.cluster = cluster
        self.checker = checker
        self.rates = rates
        self.until = until
        self.counts = {"freezes": 0, "partitions": 0, "jobs": 0, "cancels": 0}
        self._next_partition = 0.0
        sim = cluster.sim
        self._rng = {kind: sim.random(f"chaos/{kind}") for kind in
                     ("crash", "freeze", "partition", "job")}
        self._every(rates.crash_every, "crash", self._crash)
        self._every(rates.freeze_every, "freeze", self._freeze)
        self._every(rates.partition_every, "partition", self._partition)
        self._every(rates.job_every, "job", self._job)

    def _every(self, mean: float, kind: str, act: Callable[[random.Random], None]) -> None:
        rng, sim = self._rng[kind], self.cluster.sim

        def fire() -> None:
            if sim.now >= self.until:
                return
            act(rng)
            sim.call_at(sim.now + rng.expovariate(1 / mean), fire)

        sim.call_at(sim.now + rng.expovariate(1 / mean), fire)

    # --- faults ---------------------------------------------------------------------------

    def _crash(self, rng: random.Random) -> None:
        cluster = self.cluster
        if len(cluster.peers) <= cluster.n - cluster.n // 4:
            return
        i = rng.choice(sorted(cluster.peers))
        peer = cluster.crash(i)
        for record in self.checker.jobs.values():
            if record.plan.spec.owner == peer.node_id and not record.over:
                record.owner_crashed = cluster.sim.now
        delay = rng.uniform(*self.rates.restart_after)
        cluster.sim.call_at(cluster.sim.now + delay,
                            lambda: cluster.restart(i, cluster.random_seed(i, rng)))

    def _freeze(self, rng: random.Random) -> None:
        cluster = self.cluster
        candidates = [i for i in sorted(cluster.peers) if not cluster.is_frozen(i)]
        if not candidates:
            return
        kind = rng.random()
        span = (0.1, 2.0) if kind < 0.6 else (2.0, 15.0) if kind < 0.85 else (15.0, 60.0)
        cluster.freeze(rng.choice(candidates), rng.uniform(*span))
        self.counts["freezes"] += 1

    def _partition(self, rng: random.Random) -> None:
        cluster, sim = self.cluster, self.cluster.sim
        if sim.now < self._next_partition:
            return
        isolated = rng.sample(range(cluster.n), rng.randint(1, cluster.n // 4))
        duration = rng.uniform(0.5, 5.0) if rng.random() < 0.4 else rng.uniform(5.0, 120.0)
        cluster.partition(isolated)
        self.counts["partitions"] += 1
        healed = sim.now + duration
        self._next_partition = healed + self.checker.heal_bound
        sim.call_at(healed, self.heal)

    def heal(self) -> None:
        if self.cluster.log.active_partition() is not None:
            self.cluster.heal()
            self.checker.watch_heal()

    # --- jobs -----------------------------------------------------------------------------

    def _job(self, rng: random.Random) -> None:
        cluster, sim = self.cluster, self.cluster.sim
        owners = [i for i in range(self.rates.owners)
                  if i in cluster.peers and not cluster.is_frozen(i)]
        if not owners:
            return
        i = rng.choice(owners)
        peer = cluster.peers[i]
        plan = make_job(rng, peer.node_id, median_cost=self.rates.median_cost)
        record = JobRecord(plan, peer.name, sim.now, cluster.slots[i],
                           ahead=self.checker.work_ahead(peer))
        self.checker.add_job(record)
        peer.submit(sim.now, plan.spec, plan.tasks)
        sim.flush(peer.address)
        self.counts["jobs"] += 1
        if rng.random() < self.rates.cancel_share:
            later = rng.uniform(0.0, plan.work / cluster.slots[i])
            sim.call_at(sim.now + later, lambda: self._cancel(record, i))

    def _cancel(self, record: JobRecord, i: int) -> None:
        cluster, sim = self.cluster, self.cluster.sim
        peer = cluster.peers.get(i)
        if record.over or peer is None or peer.node_id != record.plan.spec.owner:
            return
        if cluster.is_frozen(i):  # the client's request waits for the daemon
            sim.call_at(cluster.frozen_until(peer.address), lambda: self._cancel(record, i))
            return
        record.cancelled = sim.now
        peer.cancel(sim.now, record.job)
        sim.flush(peer.address)
        self.counts["cancels"] += 1
