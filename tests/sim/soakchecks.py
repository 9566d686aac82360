"""The soak's invariants, checked as events happen (:class:`Checker` observes every peer).

Results (at every delivery to an owner's user, i.e. every ``ResultsReady``):
    only the job's owner delivers; each task's result is delivered once (a duplicate the
    machine counted and dropped is fine, a second delivery is not); each result is exactly
    the expected one (status and bytes); nothing is delivered after the job finished or was
    cancelled, and ``JobFinished`` comes only once every task has its result.

Jobs that must finish (:attr:`~.soakjobs.JobRecord.must_finish`):
    every job whose owner's process never crashed and that nobody cancelled. A job whose
    owner crashed is dropped by everyone (checked at the end: no task of it is left queued
    or running anywhere). Each must finish by :func:`job_deadline`, checked every few
    seconds while it runs, not only at the end.

No false deaths (at every FAIL or LEAVE event, on every peer):
    a process never crashed, frozen or cut off by a partition is never *declared* dead by a
    peer, unless that peer was itself frozen, or cut off from it by a partition, within the
    last :func:`stale_window` seconds (its suspicion then started while it could not hear
    the refutation). Who declared a death is read from the step that caused the event: a
    peer's own suspicion expiring (a tick), or the ``by`` of the ``Dead`` update it received.
    A verdict is judged when its declarer makes it; gossip may relay it much later.
    An excused verdict may spread (SWIM gossips it) and is then refuted; those are counted.
    Nobody leaves gracefully in the soak, so a LEAVE is always a violation. Stricter than
    that: a process once faulted that still runs is declared dead only for a recent cause
    (it, or its declarer, frozen or cut off from the other within the window).

Partitions heal (:meth:`Checker.watch_heal`):
    after a heal, within :func:`heal_bound`, there is a moment when every peer that stayed
    running and unfrozen since the heal sees every other such peer alive.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING

from p2pcluster import Config
from p2pcluster._proto.broadcast import retransmit_limit
from p2pcluster._proto.membership import EventKind, MemberEvent, MemberStatus
from p2pcluster._proto.messages import Dead
from p2pcluster._proto.suspicion import suspicion_bounds
from p2pcluster._proto.workevents import JobDropped, JobFinished, ResultsReady, WorkEvent
from p2pcluster._values import decode_value

from .peermachine import PeerMachine, Step
from .soakjobs import JobRecord

if TYPE_CHECKING:
    from .soakcluster import SoakCluster

__all__ = ["Checker", "Violation", "heal_bound", "job_deadline", "not_alive", "stale_window"]

HEAL_POLL = 0.5  #: seconds between looks at the tables after a heal
RECONNECT_ROUNDS = 6  #: reconnect rounds in the heal bound (see heal_bound)


class Violation(AssertionError):
    """An invariant failed; the message says which, where and when."""


def stale_window(config: Config, n: int) -> float:
    """How long after being frozen or cut off a peer may still act on stale suspicions.

    A suspicion starts at most one protocol period after the last probe that could not get
    through, and the period stretches to ``probe_interval * (awareness_max_multiplier + 1)``
    while the prober's local health is poor; it then lasts at most Lifeguard's Max timeout
    (no confirmation shortens it)."""
    _, maximum = suspicion_bounds(config.suspicion_mult, config.suspicion_max_timeout_mult,
                                  n, config.probe_interval)
    return maximum + config.probe_interval * (config.awareness_max_multiplier + 1)


def heal_bound(config: Config, n: int) -> float:
    """Seconds after a heal by which every live peer sees every other alive again.

    The two sides find each other by reconnect push-pulls (each peer, every
    ``reconnect_interval``, exchanges tables with one member it holds dead). A peer on the
    cut-off side holds the whole other side dead, so each of its reconnects crosses unless it
    picks a tombstone of a crashed peer; :data:`RECONNECT_ROUNDS` rounds make a miss by every
    peer of both sides negligible. One crossing exchange makes the peers it reaches refute
    (their incarnation rises) and their Alive spreads: allow a stale suspicion to run out
    (:func:`stale_window`) and the news to cross the cluster in gossip rounds."""
    spread = retransmit_limit(config.retransmit_mult, n) * config.gossip_interval
    return (RECONNECT_ROUNDS * config.reconnect_interval + stale_window(config, n)
            + 2 * spread)


def recovery_time(config: Config, n: int) -> float:
    """The most one fault can delay a job: the owner hears of a dead holder (a stale window)
    or its lease runs out, then a report, a steal and a cut-short batch."""
    return (max(config.lease_timeout, stale_window(config, n)) + 2 * config.report_interval
            + config.steal_timeout + config.max_batch_time)


def job_deadline(record: JobRecord, *, speed: float, frozen: float, faults: int,
                 recovery: float) -> float:
    """When a job must be finished: its owner alone could run all of it (its slots at its
    speed) after the work ahead of it there (queues are first in, first out), plus the time
    the owner was frozen, plus one recovery per fault during its life and one to spare."""
    local = (record.ahead + record.plan.work) / (record.owner_slots * speed)
    return record.submitted + local + frozen + (faults + 1) * recovery


class Checker:
    """Observes every peer (a :class:`~.peermachine.PeerObserver`); see the module docstring.
    Raises :class:`Violation` at the first broken invariant."""

    def __init__(self, config: Config, n: int) -> None:
        self.config = config
        self.window = stale_window(config, n)
        self.heal_bound = heal_bound(config, n)
        self.recovery = recovery_time(config, n)
        self.jobs: dict[bytes, JobRecord] = {}
        self.counts: Counter[str] = Counter()
        self.heal_times: list[float] = []
        self.job_latency: list[tuple[float, float]] = []  # (took, deadline - submitted)
        self._cluster: SoakCluster | None = None
        #: (declarer, subject) of each death verdict judged when its declarer made it
        self._verdicts: set[tuple[bytes, bytes, int]] = set()  # and its incarnation

    @property
    def cluster(self) -> SoakCluster:
        assert self._cluster is not None, "attach the cluster first"
        return self._cluster

    def attach(self, cluster: SoakCluster) -> None:
        self._cluster = cluster

    def fail(self, what: str) -> None:
        raise Violation(f"t={self.cluster.sim.now:.3f}: {what}")

    # --- membership -----------------------------------------------------------------------

    def member_event(self, peer: PeerMachine, event: MemberEvent, step: Step) -> None:
        if event.kind is EventKind.LEAVE:
            self.fail(f"{peer} saw {event.member.name} leave; nobody leaves in the soak")
        if event.kind is not EventKind.FAIL:
            return
        subject = event.member
        if subject.id in self.cluster.log.faulted:
            self.counts["deaths_of_faulted"] += 1
            self._recent_cause(peer, event, step)
            return
        for declarer in self._declarers(peer, subject.id, step):
            if self._judged(event, step, declarer):
                excuse = "judged when it was made"  # and now relayed, perhaps much later
            else:
                excuse = self.cluster.log.excuse(declarer, subject.address,
                                                 self.cluster.sim.now, self.window)
            if excuse is None:
                self.fail(f"{declarer} declared {subject.name} ({subject.id.hex()[:8]}) dead "
                          f"(seen at {peer} on a {step.kind}), but {subject.name} was never "
                          f"crashed, frozen or cut off, and neither was {declarer} within "
                          f"{self.window:.1f} s")
            if declarer is peer:
                self._verdicts.add((peer.node_id, subject.id, subject.incarnation))
                self.counts["stale_deaths_declared"] += 1
            elif self.cluster.log.excuse(peer, subject.address, self.cluster.sim.now,
                                         self.window) is None:
                self.counts["stale_deaths_spread"] += 1  # to a peer that was not cut off
            else:
                self.counts["stale_deaths_heard"] += 1

    def _recent_cause(self, peer: PeerMachine, event: MemberEvent, step: Step) -> None:
        """A faulted process that still runs is declared dead only for a recent cause: it,
        or its declarer, was frozen or cut off from the other within the stale window."""
        log, now, subject = self.cluster.log, self.cluster.sim.now, event.member
        process = self.cluster.processes.get(subject.id)
        if process is None or process.crashed:
            return
        for declarer in self._declarers(peer, subject.id, step):
            if declarer is peer:
                self._verdicts.add((peer.node_id, subject.id, subject.incarnation))
            elif self._judged(event, step, declarer):
                continue  # judged when it was made, and now relayed
            if (log.excuse(declarer, subject.address, now, self.window) is None
                    and log.excuse(process, declarer.address, now, self.window) is None):
                self.fail(f"{declarer} declared {subject.name} ({subject.id.hex()[:8]}) dead "
                          f"(seen at {peer} on a {step.kind}); {subject.name} was faulted "
                          f"({log.faulted[subject.id]}), but neither it nor {declarer} was "
                          f"frozen or cut off within {self.window:.1f} s")

    def _judged(self, event: MemberEvent, step: Step, declarer: PeerMachine) -> bool:
        """Is the Dead from ``declarer`` in ``step`` a verdict judged when it was made, at an
        incarnation no older than the one the receiver held? (A stale Dead that overrides a
        refutation the receiver knew is a new false death, not a relayed verdict.)"""
        subject = event.member
        return any(isinstance(u, Dead) and u.node == subject.id and u.by == declarer.node_id
                   and u.incarnation >= subject.incarnation
                   and (declarer.node_id, subject.id, u.incarnation) in self._verdicts
                   for u in getattr(step.msg, "updates", ()))

    def _declarers(self, peer: PeerMachine, subject: bytes, step: Step) -> list[PeerMachine]:
        """Who declared ``subject`` dead, by the step that made ``peer`` see it so."""
        if step.kind == "tick":
            return [peer]  # its own suspicion ran out
        updates = getattr(step.msg, "updates", ())
        by = [u.by for u in updates if isinstance(u, Dead) and u.node == subject]
        if not by:
            self.fail(f"{peer} saw {subject.hex()[:8]} fail on a {step.kind} that declared "
                      f"no death ({type(step.msg).__name__}): an address claimed twice?")
        known = [self.cluster.processes.get(node) for node in by]
        if None in known:
            self.fail(f"{peer} heard {subject.hex()[:8]} declared dead by an unknown node")
        return [p for p in known if p is not None]

    # --- jobs -----------------------------------------------------------------------------

    def add_job(self, record: JobRecord) -> None:
        self.jobs[record.job] = record

    def work_event(self, peer: PeerMachine, event: WorkEvent) -> None:
        record = self.jobs.get(event.job)
        if record is None:
            self.fail(f"{peer} reported {type(event).__name__} for a job nobody submitted")
        assert record is not None
        is_owner = peer.node_id == record.plan.spec.owner
        if isinstance(event, ResultsReady):
            if not is_owner:
                self.fail(f"{peer} delivered results of a job owned by {record.owner_name}")
            self._results(record, event)
        elif isinstance(event, JobFinished):
            if not is_owner:
                self.fail(f"{peer} finished a job owned by {record.owner_name}")
            self._finished(record)
        elif isinstance(event, JobDropped) and is_owner and record.cancelled is None:
            self.fail(f"{peer} dropped its own job {record.job.hex()[:8]} ({event.reason}) "
                      "though nobody cancelled it")

    def _results(self, record: JobRecord, event: ResultsReady) -> None:
        job = record.job.hex()[:8]
        if record.finished is not None or record.cancelled is not None:
            self.fail(f"results of job {job} delivered after it ended")
        for result in event.results:
            record.delivered[result.id] += 1
            if record.delivered[result.id] > 1:
                self.fail(f"task {result.id} of job {job} delivered twice")
            expected = record.plan.expected.get(result.id)
            if result != expected:
                got = (result.status, decode_value(result.payload))
                want = None if expected is None else (expected.status,
                                                      decode_value(expected.payload))
                self.fail(f"task {result.id} of job {job}: got {got}, expected {want}")
        self.counts["results"] += len(event.results)

    def _finished(self, record: JobRecord) -> None:
        now = self.cluster.sim.now
        missing = set(record.plan.expected) - set(record.delivered)
        if missing or record.finished is not None:
            self.fail(f"job {record.job.hex()[:8]} finished with {len(missing)} results "
                      f"missing (finished before: {record.finished})")
        record.finished = now
        deadline = self.deadline(record)
        self.job_latency.append((now - record.submitted, deadline - record.submitted))
        if now > deadline:
            self.fail(f"job {record.job.hex()[:8]} finished at {now - record.submitted:.1f} s,"
                      f" after its deadline of {deadline - record.submitted:.1f} s")

    def deadline(self, record: JobRecord) -> float:
        cluster, owner = self.cluster, record.plan.spec.owner
        end = record.finished if record.finished is not None else cluster.sim.now
        index = int(record.owner_name.removeprefix("peer"))
        faults = sum(1 for t in cluster.log.fault_times if record.submitted <= t <= end)
        return job_deadline(record, speed=cluster.speed[index],
                            frozen=cluster.log.frozen_time(owner, record.submitted, end),
                            faults=faults, recovery=self.recovery)

    def work_ahead(self, owner: PeerMachine) -> float:
        """What a job submitted at ``owner`` now waits behind (:attr:`JobRecord.ahead`)."""
        mine = [r for r in self.jobs.values() if r.plan.spec.owner == owner.node_id
                and not r.over]
        left = sum(cost for r in mine for tid, cost in r.plan.costs.items()
                   if tid not in r.delivered)
        own = {r.job for r in mine}
        others = sum(self.jobs[job].plan.costs[tid] for job, tid in owner.backlog()
                     if job not in own and job in self.jobs)
        return left + others

    def check_jobs(self) -> None:
        """Every job that must finish is on time (call every few seconds)."""
        now = self.cluster.sim.now
        for record in self.jobs.values():
            if record.must_finish and record.finished is None and now > self.deadline(record):
                done = len(record.delivered)
                self.fail(f"job {record.job.hex()[:8]} of {record.owner_name} "
                          f"({done}/{len(record.plan.expected)} results) not finished "
                          f"{now - record.submitted:.1f} s after submission")

    # --- partitions heal ------------------------------------------------------------------

    def watch_heal(self) -> None:
        """A partition healed now: poll until every steady peer sees every other alive."""
        sim = self.cluster.sim
        healed = sim.now
        steady = {i: p for i, p in self.cluster.peers.items() if not self.cluster.is_frozen(i)}

        def poll() -> None:
            alive = self._steady(steady, healed)
            if _all_alive(alive):
                self.heal_times.append(sim.now - healed)
            elif sim.now >= healed + self.heal_bound:
                self.fail(f"the partition healed at t={healed:.3f}; after {self.heal_bound:.1f}"
                          f" s some peers still do not see each other alive: "
                          f"{not_alive(alive)[:6]}")
            else:
                sim.call_at(sim.now + HEAL_POLL, poll)

        sim.call_at(healed + HEAL_POLL, poll)

    def _steady(self, steady: dict[int, PeerMachine], since: float) -> list[PeerMachine]:
        """Those of ``steady`` still running, and not frozen since ``since``."""
        cluster = self.cluster
        return [p for i, p in steady.items() if cluster.peers.get(i) is p
                and cluster.log.frozen_time(p.node_id, since, math.inf) == 0.0]


def _all_alive(peers: list[PeerMachine]) -> bool:
    return not not_alive(peers, first=True)


def not_alive(peers: list[PeerMachine], first: bool = False) -> list[tuple[str, str, str]]:
    """(observer, subject, status) for each pair where the observer does not see it alive."""
    bad = []
    for a in peers:
        table = a.members.table
        for b in peers:
            entry = table.get(b.node_id)
            status = None if entry is None else entry.status
            if a is not b and status is not MemberStatus.ALIVE:
                bad.append((a.name, b.name, str(status)))
                if first:
                    return bad
    return bad
