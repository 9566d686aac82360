"""The chaos soak: whole peers (membership and stealing machines together) under seeded chaos,
with every invariant checked as it goes.

:func:`run_soak` starts ``peers`` peers that bootstrap through peer 0, lets them converge,
runs :class:`~.soakchaos.Chaos` for ``duration`` virtual seconds over a lossy network, then
heals what is cut off and drains: every job that must finish finishes, no task is left
queued or running anywhere, and every running peer sees every other alive. The invariants
(:mod:`.soakchecks`) raise :class:`~.soakchecks.Violation` at once; :func:`run_soak` returns
a :class:`SoakReport` either way, with the violation in it. The same seed replays the same
run, bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from p2pcluster import Config
from p2pcluster.testing import LinkConditions

from .peermachine import TaskRunner
from .soakchaos import DENSE, Chaos, ChaosRates
from .soakchecks import Checker, Violation, not_alive
from .soakcluster import SoakCluster
from .soakjobs import run_task

__all__ = ["SoakParams", "SoakReport", "run_soak"]

WATCHDOG = 5.0  #: seconds between checks that running jobs are on time
BOOT = 20.0  #: seconds the peers get to bootstrap before the chaos starts


@dataclass(frozen=True, slots=True)
class SoakParams:
    seed: int
    peers: int = 32
    duration: float = 3600.0  #: virtual seconds of chaos (then the drain)
    loss: float = 0.1  #: datagram loss on every link
    latency: float = 0.001
    jitter: float = 0.001
    rates: ChaosRates = field(default_factory=ChaosRates)
    roundtrip: bool = True  #: decode every message a peer receives, as a real peer would
    digest: bool = False  #: hash every event, to prove that a seed replays bit for bit

    def replay(self) -> str:
        """The command that replays this run."""
        cmd = (f"python scripts/soak.py --seed {self.seed} --hours {self.duration / 3600!r} "
               f"--peers {self.peers} --loss {self.loss!r}")
        if self.rates == DENSE:
            cmd += " --dense"
        elif self.rates != ChaosRates():
            cmd += f"  (with rates {self.rates})"
        if not self.roundtrip:
            cmd += " --no-roundtrip"
        return cmd


@dataclass(slots=True)
class SoakReport:
    """What a soak did and found; ``violation`` is None when every invariant held."""

    seed: int
    peers: int
    virtual_seconds: float
    wall_seconds: float = 0.0
    violation: str | None = None
    replay: str = ""
    events: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)
    work: dict[str, int] = field(default_factory=dict)
    membership: dict[str, int] = field(default_factory=dict)
    checks: dict[str, float] = field(default_factory=dict)
    digest: str = ""  #: of every event processed (with ``SoakParams.digest``)

    @property
    def ok(self) -> bool:
        return self.violation is None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Soak:
    """One run; see the module docstring."""

    def __init__(self, params: SoakParams, config: Config | None = None,
                 task_runner: TaskRunner = run_task) -> None:
        self.params = params
        self.config = config or Config.lan()
        self.checker = Checker(self.config, params.peers)
        conditions = LinkConditions(latency=params.latency, jitter=params.jitter,
                                    loss=params.loss)
        self.cluster = SoakCluster(params.peers, seed=params.seed, config=self.config,
                                   conditions=conditions, observer=self.checker,
                                   roundtrip=params.roundtrip, digest=params.digest,
                                   task_runner=task_runner)
        self.checker.attach(self.cluster)
        self.chaos: Chaos | None = None

    def run(self, progress: Callable[[SoakReport], None] | None = None,
            every: float = 300.0) -> SoakReport:
        started = time.perf_counter()
        report = SoakReport(self.params.seed, self.params.peers, 0.0,
                            replay=self.params.replay())
        try:
            self._boot()
            self._chaos(progress, every, started)
            self._drain()
        except Violation as exc:
            report.violation = str(exc)
        self.fill(report, started)
        return report

    def _boot(self) -> None:
        cluster, sim = self.cluster, self.cluster.sim
        for i in range(cluster.n):
            cluster.start(i, seeds=[0] if i else [])
        # Converged: at one moment by BOOT, every peer sees every other alive. Checked each
        # 0.5 s, since at 10% loss some peer is usually suspected for a moment somewhere.
        while not_alive(cluster.running(), first=True):
            if sim.now >= BOOT:
                raise Violation(f"t={sim.now:.3f}: the peers did not converge in {BOOT} s: "
                                f"{not_alive(cluster.running())[:5]}")
            sim.run_until(min(BOOT, sim.now + 0.5))
        sim.run_until(BOOT)

    def _chaos(self, progress: Callable[[SoakReport], None] | None, every: float,
               started: float) -> None:
        sim, end = self.cluster.sim, BOOT + self.params.duration
        self.chaos = Chaos(self.cluster, self.checker, self.params.rates, end)
        next_report = sim.now + every
        while sim.now < end:
            sim.run_until(min(end, sim.now + WATCHDOG))
            self.checker.check_jobs()
            if progress is not None and sim.now >= next_report:
                next_report += every
                report = SoakReport(self.params.seed, self.params.peers, 0.0)
                progress(self.fill(report, started))

    def _drain(self) -> None:
        """Heal, then run until every job that must finish is done, nothing is left anywhere,
        and every running peer sees every other alive."""
        checker, sim = self.checker, self.cluster.sim
        assert self.chaos is not None
        self.chaos.heal()
        unfinished = [r for r in checker.jobs.values() if r.must_finish and r.finished is None]
        limit = max([checker.deadline(r) for r in unfinished] + [sim.now]) + checker.heal_bound
        while not self._quiet():
            if sim.now >= limit:
                raise Violation(f"t={sim.now:.3f}: not quiet after the drain: {self._left()}")
            sim.run_until(sim.now + 1.0)
            checker.check_jobs()

    def _quiet(self) -> bool:
        return not self._left()

    def _left(self) -> list[str]:
        """What keeps the cluster from being quiet."""
        cluster, left = self.cluster, []
        jobs = [r for r in self.checker.jobs.values() if r.must_finish and r.finished is None]
        left += [f"job {r.job.hex()[:8]} of {r.owner_name} unfinished" for r in jobs[:3]]
        for peer in cluster.running():
            if peer.work.queue_length() or peer.running_batches():
                left.append(f"{peer} holds {peer.work.queue_length()} queued tasks and "
                            f"{peer.running_batches()} batches")
        if any(cluster.is_frozen(i) for i in cluster.peers):
            left.append("a peer is frozen")
        left += [f"{a} does not see {b} alive ({s})"
                 for a, b, s in not_alive(cluster.running())[:3]]
        return left

    def fill(self, report: SoakReport, started: float) -> SoakReport:
        """Put the counters so far into ``report``."""
        cluster, checker = self.cluster, self.checker
        report.virtual_seconds = round(cluster.sim.now, 3)
        report.wall_seconds = round(time.perf_counter() - started, 3)
        report.events = cluster.sim.events_processed
        chaos = self.chaos.counts if self.chaos else {}
        report.faults = {"crashes": cluster.log.crashes, "restarts": cluster.log.restarts,
                         "freezes": chaos.get("freezes", 0),
                         "partitions": chaos.get("partitions", 0)}
        records = checker.jobs.values()
        report.jobs = {"submitted": len(checker.jobs),
                       "finished": sum(r.finished is not None for r in records),
                       "cancelled": sum(r.cancelled is not None for r in records),
                       "owner_crashed": sum(r.owner_crashed is not None for r in records),
                       "tasks": sum(len(r.plan.expected) for r in records),
                       "results_delivered": checker.counts["results"]}
        report.work = _work_totals(cluster) | dict(cluster.net.counts)
        report.membership = _membership_totals(cluster) | {
            k: v for k, v in checker.counts.items() if k != "results"}
        report.checks = _check_figures(checker)
        if self.params.digest:
            report.digest = cluster.sim.trace_digest()
        return report


def _work_totals(cluster: SoakCluster) -> dict[str, int]:
    totals: dict[str, int] = {}
    for peer in cluster.processes.values():
        stats = peer.work.statistics()
        for name in ("executed", "duplicates", "requeued", "dropped", "steals_granted",
                     "tasks_stolen", "leases_expired", "tasks_given_back"):
            totals[name] = totals.get(name, 0) + getattr(stats, name)
    return totals


def _membership_totals(cluster: SoakCluster) -> dict[str, int]:
    totals: dict[str, int] = {}
    for peer in cluster.processes.values():
        stats = peer.members.statistics()
        for name in ("suspicions", "refutations", "deaths_declared", "push_pulls"):
            totals[name] = totals.get(name, 0) + getattr(stats, name)
    return totals


def _check_figures(checker: Checker) -> dict[str, float]:
    heals, latency = checker.heal_times, checker.job_latency
    return {
        "heal_bound": round(checker.heal_bound, 3),
        "heals_checked": len(heals),
        "slowest_heal": round(max(heals, default=0.0), 3),
        "stale_window": round(checker.window, 3),
        "jobs_checked": len(latency),
        "slowest_job_share_of_deadline": round(max((t / d for t, d in latency), default=0), 3),
    }


def run_soak(params: SoakParams, config: Config | None = None,
             progress: Callable[[SoakReport], None] | None = None,
             every: float = 300.0, task_runner: TaskRunner = run_task) -> SoakReport:
    """Run one soak; see the module docstring. ``progress`` gets the report so far every
    ``every`` virtual seconds; ``task_runner`` runs each task (a test swaps in a bad one)."""
    return Soak(params, config, task_runner).run(progress, every)
