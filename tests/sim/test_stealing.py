"""The work-stealing machine on the seeded simulator: every property of the execution issue."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from p2pcluster._proto.eligibility import Dist, JobNeeds
from p2pcluster._proto.messages import Results
from p2pcluster._proto.policy import WorkPolicy
from p2pcluster._proto.wiretypes import PlacementKind

from .stealsim import SimEnv, StealSim

TASK = 0.01  # seconds per task in the balance scenarios


def flat(job: bytes, tid: int) -> float:
    return TASK


def assert_exactly_once(sim: StealSim, job: bytes, n: int) -> None:
    delivered = sim.record.delivered[job]
    assert sorted(delivered) == list(range(n)), f"missing results (seed {sim.seed})"
    assert set(delivered.values()) == {1}, f"a result delivered twice (seed {sim.seed})"


@pytest.mark.parametrize("n", [2, 3, 4, 8, 16, 32, 64])
@pytest.mark.parametrize("seed", [1, 2])
def test_one_owner_balances_1000_tasks(n: int, seed: int) -> None:
    sim = StealSim(n, seed=seed * 1000 + n)
    job = sim.submit(0, 1000, flat)
    makespan = sim.run_until_done(job)
    ideal = 1000 * TASK / n
    assert makespan <= 1.15 * ideal + 2 * TASK, (makespan, ideal, sim.seed)
    executed = [p.executed[job] for p in sim.peers]
    assert min(executed) >= 0.8 * 1000 / n, (executed, sim.seed)
    assert_exactly_once(sim, job, 1000)
    assert max(sim.record.moves.values()) <= 2
    assert sim.record.max_moves_field <= 2


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_straggler_4x_slower_gets_a_quarter_of_the_share(seed: int) -> None:
    speeds = [1.0, 1.0, 1.0, 0.25]
    sim = StealSim(4, seed=seed, speeds=speeds)
    job = sim.submit(0, 1000, flat)
    makespan = sim.run_until_done(job)
    ideal = 1000 * TASK / sum(speeds)
    # The straggler may start one last task just before the end: 4 x TASK of slack.
    assert makespan <= 1.1 * ideal + 4 * TASK, (makespan, ideal)
    slow, fast = sim.peers[3].executed[job], min(p.executed[job] for p in sim.peers[:3])
    assert slow < 0.4 * fast, (slow, fast)
    assert_exactly_once(sim, job, 1000)


@pytest.mark.parametrize("n", [2, 5, 16])
def test_each_task_moves_at_most_twice_even_when_peers_keep_stealing(n: int) -> None:
    # Uneven costs and a straggler give thieves every reason to re-steal.
    rng = random.Random(n)
    costs = [rng.lognormvariate(0, 1) * 0.005 for _ in range(2000)]
    sim = StealSim(n, seed=n, speeds=[0.3 if i == 1 else 1.0 for i in range(n)])
    job = sim.submit(0, 2000, lambda _j, tid: costs[tid])
    sim.run_until_done(job)
    assert max(sim.record.moves.values()) <= 2
    assert sim.record.max_moves_field <= 2
    assert sum(1 for v in sim.record.moves.values() if v == 2) > 0  # re-steals did happen
    assert_exactly_once(sim, job, 2000)


def test_lognormal_costs_in_submit_order_stay_near_the_greedy_bound() -> None:
    """W3 on the simulator: 64 lognormal tasks, 2 peers of 1 slot, largest near the end."""
    rng = random.Random(12345)
    raw = [rng.lognormvariate(0, 1) for _ in range(64)]
    costs = [c * 3.2 / sum(raw) for c in raw]
    sim = StealSim(2, seed=12345, latency=0.0003, jitter=0.0002)
    job = sim.submit(0, 64, lambda _j, tid: costs[tid])
    makespan = sim.run_until_done(job)
    bound = max(sum(costs) / 2, *costs)
    assert makespan <= 1.15 * bound, makespan / bound


@pytest.mark.parametrize("n_tasks", [1, 3, 4])
def test_a_trivial_workload_causes_no_steals(n_tasks: int) -> None:
    sim = StealSim(5, seed=n_tasks, slots=4)
    job = sim.submit(0, n_tasks, flat)
    sim.run_until_done(job)
    sim.run_quiet()
    assert sim.record.steal_requests == 0
    assert sim.record.grants == []
    assert sim.peers[0].executed[job] == n_tasks


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_holder_dies_and_every_result_still_arrives_exactly_once(seed: int) -> None:
    sim = StealSim(4, seed=seed)
    job = sim.submit(0, 1000, flat)
    sim.run_until(0.5 + seed * 0.1)
    victim = 1 + seed % 3
    holding = sim.peers[victim].machine.queue_length() + len(sim.peers[victim].running)
    assert holding > 0
    sim.crash(victim)
    sim.run_until_done(job)
    assert_exactly_once(sim, job, 1000)
    assert sim.peers[0].machine.statistics().requeued >= holding
    assert max(sim.record.moves.values()) <= 2 + 2  # two moves before, two after a requeue


def test_a_thief_dies_right_after_a_re_steal_and_nothing_is_lost() -> None:
    """The owner learns of the move only from the victim: kill the new holder at once."""
    for seed in range(20):
        sim = StealSim(3, seed=seed, speeds=[1.0, 1.0, 0.5])
        job = sim.submit(0, 300, flat)
        # Run until some task has moved twice, then kill its holder.
        while not any(v == 2 for v in sim.record.moves.values()):
            sim._step()
        holder = sim.record.grants[-1][2]
        if holder == 0:
            continue
        sim.crash(holder)
        sim.run_until_done(job)
        assert_exactly_once(sim, job, 300)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_owner_dies_and_all_its_work_is_dropped(seed: int) -> None:
    sim = StealSim(4, seed=seed, detect=2.0)
    job = sim.submit(0, 2000, flat)
    sim.run_until(0.4)
    sim.crash(0)
    crash = sim.now
    sim.run_quiet()
    last_detection = crash + 2.0 + 0.5
    for peer in sim.peers[1:]:
        assert peer.machine.queue_length() == 0
        assert not peer.running
    # The first peer to detect the death may steal the others' queues and drop them; either
    # way every queued task of the job was dropped somewhere, none was run to the end.
    assert sum(p.machine.statistics().dropped for p in sim.peers[1:]) > 0
    assert any(d[2] == job for d in sim.record.dropped)
    late = [b for b in sim.record.batches_started if b[2] == job and b[0] > last_detection]
    assert late == [], "a peer started the dead owner's task after detecting its death"
    assert job not in sim.record.finished


def test_a_peer_that_joins_mid_job_gets_work_within_one_steal_round() -> None:
    sim = StealSim(2, seed=7)
    job = sim.submit(0, 1000, flat)
    sim.run_until(1.0)
    newcomer = sim.join()
    joined = sim.now
    sim.run_until_done(job)
    first = min(t for t, _, dst, n in sim.record.grants if dst == newcomer and n > 0)
    # One steal round: the request and the grant, each at most latency + jitter.
    assert first - joined <= 2 * (sim.latency + sim.jitter) + 1e-9
    assert sim.peers[newcomer].executed[job] > 100
    assert_exactly_once(sim, job, 1000)


def test_cancel_stops_the_job_everywhere() -> None:
    sim = StealSim(4, seed=3)
    job = sim.submit(0, 2000, flat)
    sim.run_until(0.3)
    sim.cancel(0, job)
    cancelled = sim.now
    sim.run_quiet()
    reach = 2 * (sim.latency + sim.jitter)
    late = [b for b in sim.record.batches_started if b[2] == job and b[0] > cancelled + reach]
    assert late == []
    assert all(p.machine.queue_length() == 0 and not p.running for p in sim.peers)
    assert {d[1] for d in sim.record.dropped if d[2] == job} == {0, 1, 2, 3}


def test_two_jobs_from_two_owners_both_finish() -> None:
    sim = StealSim(6, seed=11)
    a = sim.submit(0, 500, flat, job=b"job-a")
    b = sim.submit(3, 500, flat, job=b"job-b")
    sim.run_until_done(a)
    sim.run_until_done(b)
    assert_exactly_once(sim, a, 500)
    assert_exactly_once(sim, b, 500)


def test_the_same_seed_replays_the_same_schedule() -> None:
    def trace(seed: int) -> list[tuple[float, int, int, int]]:
        sim = StealSim(8, seed=seed)
        job = sim.submit(0, 1000, flat)
        sim.run_until(0.2)
        sim.crash(5)
        sim.run_until_done(job)
        return sim.record.grants

    assert trace(42) == trace(42)
    assert trace(42) != trace(43)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_results_lost_on_a_broken_link_are_run_again_within_two_reports(seed: int) -> None:
    """A holder's results vanish in transit (its link to the owner broke under them); the
    holder stays alive, so membership never says a word. Its holding reports no longer name
    those tasks, and the owner runs them again: nothing waits forever, nothing is doubled."""
    lost: list[object] = []

    def lose(src: int, dst: int, msg: object) -> bool:
        if src == 1 and isinstance(msg, Results) and len(lost) < 3:
            lost.append(msg)
            return True
        return False

    sim = StealSim(3, seed=seed, lose=lose)
    job = sim.submit(0, 600, flat)
    end = sim.run_until_done(job, timeout=60.0)
    assert len(sim.record.lost) == 3
    assert_exactly_once(sim, job, 600)
    # without losses the job takes 600 x 10 ms / 3 peers = 2 s; two reports are 2 s more
    assert end <= 600 * TASK / 3 + 2 * sim.policy.report_interval + 1.0, (end, seed)


def test_a_holder_cut_off_from_the_owner_loses_its_tasks_after_the_lease() -> None:
    """Everything peer 2 sends to the owner is lost from t = 0.5 s on, yet membership keeps
    it alive: the owner stops hearing from it, and after lease_timeout runs its tasks."""
    sim = StealSim(3, seed=5, policy=WorkPolicy(lease_timeout=3.0),
                   lose=lambda src, dst, msg: src == 2 and dst == 0 and sim.now > 0.5)
    job = sim.submit(0, 900, flat)
    end = sim.run_until_done(job, timeout=60.0)
    assert_exactly_once(sim, job, 900)
    assert sim.peers[0].machine.statistics().leases_expired >= 1
    assert end <= 0.5 + 3.0 + 900 * TASK / 2 + 1.0


SLOW, FAST = 0.02, 0.0001  # seconds per task, before or after the change
N_SLOW, N_FAST = 400, 40_000  # 8 s of slow tasks, 4 s of fast ones


def changing(slow_first: bool) -> tuple[int, Callable[[bytes, int], float]]:
    """A job whose task times change 200-fold once: its size, and its cost function."""
    if slow_first:
        return N_SLOW + N_FAST, lambda job, tid: SLOW if tid < N_SLOW else FAST
    return N_FAST + N_SLOW, lambda job, tid: FAST if tid < N_FAST else SLOW


@pytest.mark.parametrize("slow_first", [True, False])
def test_batch_sizes_follow_task_times_that_change_mid_job(slow_first: bool) -> None:
    # One peer, so that only batch sizing is at work. The estimate halves its error with each
    # batch measured: batches hold batch_target (20 ms) of the new tasks within a dozen
    # batches of the change (about a hundred tasks, when they turn fast). A running mean of
    # all task times would still be off by 40x at the end of the job.
    sim = StealSim(1, seed=1)
    n, cost = changing(slow_first)
    job = sim.submit(0, n, cost)
    sim.run_until_done(job)
    assert_exactly_once(sim, job, n)
    target = WorkPolicy().batch_target
    starts, sizes, first = [], [], 0
    for _, _, _, size in sim.record.batches_started:
        starts.append(first)
        sizes.append(size)
        first += size
    new_time = FAST if slow_first else SLOW
    ideal = max(1, round(target / new_time))
    # After the change, and while the queue is long enough that the quarter-of-the-queue
    # cap (half of it stays stealable) does not bind:
    after = [size for start, size in zip(starts, sizes, strict=True)
             if start >= (N_SLOW if slow_first else N_FAST) and n - start >= 8 * ideal]
    settled = after[12:]  # past the adjustment
    assert len(settled) > 10, after
    assert all(ideal / 2 <= size <= ideal * 2 for size in settled), (ideal, after[:12])


@pytest.mark.parametrize("slow_first", [True, False])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_four_peers_balance_a_job_whose_task_times_change(slow_first: bool, seed: int) -> None:
    # Slow tasks first (say, largest first): thieves take them from the front and cannot
    # pass on what moved twice, so a victim gives tasks on their last move only as many as
    # the thief starts at once. Fast tasks first: the batch that meets the slow tasks was
    # sized for fast ones, and gives back what it has not started after max_batch_time.
    sim = StealSim(4, seed=seed)
    n, cost = changing(slow_first)
    job = sim.submit(0, n, cost)
    makespan = sim.run_until_done(job)
    bound = (N_SLOW * SLOW + N_FAST * FAST) / 4
    assert makespan <= 1.1 * bound, (makespan, bound, sim.seed)
    assert_exactly_once(sim, job, n)
    assert max(sim.record.moves.values()) <= 2


# --- placement: a peer that cannot run a job never receives its tasks -------------------------

NUMPY = JobNeeds("3.11.7", (Dist("numpy", "2.5.5"),))


def news(sim: StealSim, kind: PlacementKind, job: bytes | None = None
         ) -> list[tuple[int, tuple[str, ...]]]:
    """(peer index, reasons) of each news of ``kind`` (about ``job``) an owner gave."""
    return [(sim.index_of(n.peer), n.reasons) for _, _, n in sim.record.news
            if n.kind == kind and job in (None, n.job)]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_peer_without_the_distribution_never_receives_the_jobs_tasks(seed: int) -> None:
    # Peer 3 lacks numpy, peer 4 has another major version; peers 1 and 2 have another
    # patch release (enough). A straggler (peer 1) makes thieves rob thieves: second moves.
    envs = [SimEnv(versions={"numpy": "2.5.5"}), SimEnv(versions={"numpy": "2.5.1"}),
            SimEnv(versions={"numpy": "2.5.9"}), SimEnv(), SimEnv(versions={"numpy": "1.26.4"})]
    sim = StealSim(5, seed=seed, envs=envs, speeds=[1.0, 0.3, 1.0, 1.0, 1.0])
    job = sim.submit(0, 1500, flat, needs=NUMPY)
    other = sim.submit(1, 400, flat, job=b"other")  # needs nothing: everyone takes it
    sim.run_until_done(job)
    sim.run_until_done(other)
    assert_exactly_once(sim, job, 1500)
    assert_exactly_once(sim, other, 400)
    for excluded in (3, 4):
        assert sim.record.received[(excluded, job)] == 0, sim.seed
        assert sim.peers[excluded].executed[job] == 0
        assert sim.record.received[(excluded, b"other")] > 0  # the gate is per job
    assert all(sim.peers[i].executed[job] > 0 for i in (0, 1, 2))
    assert sum(1 for v in sim.record.moves.values() if v == 2) > 0  # thieves robbed thieves
    assert sorted(news(sim, PlacementKind.EXCLUDED)) == [
        (3, ("numpy missing",)), (4, ("numpy 1.26.4 (here 2.5.5)",))]
    assert news(sim, PlacementKind.UNRUNNABLE) == []


def test_strict_versions_and_the_python_minor_version_exclude_too() -> None:
    envs = [SimEnv(versions={"numpy": "2.5.5"}), SimEnv(versions={"numpy": "2.5.1"}),
            SimEnv("3.12.1", versions={"numpy": "2.5.5"}), SimEnv(versions={"numpy": "2.5.5"})]
    sim = StealSim(4, seed=5, envs=envs)
    strict = JobNeeds("3.11.7", (Dist("numpy", "2.5.5"),), strict=True)
    job = sim.submit(0, 800, flat, needs=strict)
    sim.run_until_done(job)
    assert_exactly_once(sim, job, 800)
    assert [sim.record.received[(i, job)] for i in (1, 2)] == [0, 0]
    assert sim.peers[3].executed[job] > 0
    assert sorted(news(sim, PlacementKind.EXCLUDED)) == [
        (1, ("numpy 2.5.1 (here 2.5.5)",)), (2, ("Python 3.12.1 (here 3.11.7)",))]


def test_the_owner_runs_alone_what_no_other_peer_can_and_fails_what_none_can() -> None:
    envs = [SimEnv(versions={"numpy": "2.5.5"}), SimEnv(), SimEnv()]
    sim = StealSim(3, seed=2, envs=envs)
    job = sim.submit(0, 300, flat, needs=NUMPY)
    sim.run_until_done(job)
    assert sim.peers[0].executed[job] == 300
    assert news(sim, PlacementKind.ALONE) == [(0, ())]
    scipy = JobNeeds("3.11.7", (Dist("scipy", "1.14.0"),))
    doomed = sim.submit(0, 300, flat, job=b"doomed", needs=scipy)
    sim.run_quiet()
    assert doomed not in sim.record.finished and not sim.record.delivered[doomed]
    assert sorted(news(sim, PlacementKind.EXCLUDED, job)) == [
        (1, ("numpy missing",)), (2, ("numpy missing",))]
    assert sorted(news(sim, PlacementKind.EXCLUDED, doomed)) == [
        (0, ("scipy missing",)), (1, ("scipy missing",)), (2, ("scipy missing",))]
    assert news(sim, PlacementKind.UNRUNNABLE) == [(0, ())]
    assert not any(sim.record.received[(i, doomed)] for i in (1, 2))
    assert (0, doomed, "cancelled") in [d[1:] for d in sim.record.dropped]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tasks_that_require_a_tag_run_only_there_and_wait_while_it_is_down(seed: int) -> None:
    gpu = SimEnv(tags=frozenset({"gpu"}))
    sim = StealSim(4, seed=seed, envs=[SimEnv(), SimEnv(), gpu, SimEnv()], detect=1.0)
    needs = JobNeeds("3.11.7", tags=("gpu",))
    job = sim.submit(0, 600, flat, needs=needs)
    sim.run_until(1.0)
    assert sim.peers[2].executed[job] > 0
    sim.crash(2)
    sim.run_until(20.0)  # the gpu peer is dead: nothing runs its tasks, nothing is lost
    assert job not in sim.record.finished
    waiting = news(sim, PlacementKind.WAITING)
    assert waiting == [(0, ("no live peer has tag gpu",))], waiting
    newcomer = sim.join(env=gpu)
    sim.run_until_done(job)
    assert_exactly_once(sim, job, 600)
    assert news(sim, PlacementKind.RESUMED) == [(0, ())]
    for plain in (0, 1, 3):
        assert sim.peers[plain].executed[job] == 0 and sim.record.received[(plain, job)] == 0
    assert sim.peers[2].executed[job] + sim.peers[newcomer].executed[job] >= 600
