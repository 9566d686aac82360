"""Unit tests of the stealing machine: one rule per test, messages in, messages out."""

from __future__ import annotations

import random

import pytest

from p2pcluster._proto.messages import (
    CancelJob,
    HeldTasks,
    Holding,
    JobSpec,
    JobTasks,
    Results,
    StealGrant,
    StealRequest,
    TaskItem,
    TaskResult,
    TasksMoved,
    TaskStatus,
    WorkAvailable,
)
from p2pcluster._proto.ownership import ids_from_runs, runs_from_ids
from p2pcluster._proto.policy import WorkPolicy
from p2pcluster._proto.stealing import ENDED_JOBS_KEPT, StealingMachine
from p2pcluster._proto.workevents import (
    Batch,
    JobDropped,
    JobFinished,
    PushValue,
    ResultsReady,
    SendWork,
)

A, B, C = b"A" * 16, b"B" * 16, b"C" * 16


def machine(node: bytes, slots: int = 1, *peers: bytes) -> StealingMachine:
    m = StealingMachine(node, slots, random.Random(1))
    for p in peers:
        m.peer_up(0.0, p, 0)
    return m


def spec(owner: bytes = A, job: bytes = b"j1") -> JobSpec:
    return JobSpec(job, owner, "mod", "fn", None, (), None)


def ok(*ids: int) -> tuple[TaskResult, ...]:
    return tuple(TaskResult(i, TaskStatus.OK, b"\x00") for i in ids)


def tasks(n: int) -> list[tuple[int, bytes]]:
    return [(i, b"\x80") for i in range(n)]


def msgs(m: StealingMachine, cls: type) -> list:  # type: ignore[type-arg]
    return [o for o in m.take_outputs() if isinstance(o.msg, cls)]


def test_submit_hints_idle_peers_and_a_steal_takes_half_oldest_first() -> None:
    owner = machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(11))
    hints = msgs(owner, WorkAvailable)
    assert [h.dst for h in hints] == [B] and hints[0].msg.queue == 10  # 1 slot free
    assert owner.take(0.0, 1) is not None  # the local slot takes task 0
    owner.receive(0.0, StealRequest(B, 1))
    (grant,) = msgs(owner, StealGrant)
    ids = [t.id for t in grant.msg.jobs[0].tasks]
    assert ids == [1, 2, 3, 4, 5]  # half of the 10 unstarted, oldest first
    assert all(t.moves == 1 for t in grant.msg.jobs[0].tasks)
    assert grant.msg.queue == 5
    assert {owner.owner.holders(b"j1")[i] for i in ids} == {B}


def test_an_idle_peer_steals_only_when_someone_has_a_surplus() -> None:
    thief = machine(B, 1, A, C)
    assert thief.take(0.0, 1) is None
    assert thief.take_outputs() == []  # nobody advertises work: no request
    thief.peer_queue(0.0, C, 7)
    (req,) = thief.take_outputs()
    assert req.dst == C and isinstance(req.msg, StealRequest)
    thief.peer_queue(0.0, A, 9)  # one request at a time
    assert thief.take_outputs() == []


def test_a_workload_that_fits_the_free_slots_advertises_nothing() -> None:
    owner = machine(A, 4, B)
    owner.submit(0.0, spec(), tasks(4))
    assert owner.surplus() == 0
    assert owner.take_outputs() == []


def busy(m: StealingMachine) -> None:
    """Occupy ``m``'s one slot with a task of a job of its own, so grants stay queued."""
    m.submit(0.0, JobSpec(b"own", m.node_id, "mod", "fn", None, (), None), [(0, b"\x80")])
    assert m.take(0.0, 1) is not None
    m.take_outputs()


def test_tasks_that_moved_twice_are_neither_advertised_nor_granted() -> None:
    thief = machine(C, 1, A, B)
    busy(thief)  # its slot is busy, so the grant stays queued
    grant = StealGrant(B, 0, (JobTasks(spec(), tuple(TaskItem(i, 2, b"") for i in range(6))),))
    thief.receive(0.0, grant)
    assert thief.queue_length() == 6 and thief.surplus() == 0
    thief.receive(0.0, StealRequest(A, 1))
    (answer,) = msgs(thief, StealGrant)
    assert answer.msg.jobs == ()


def test_a_re_steal_is_reported_to_the_owner() -> None:
    middle = machine(B, 1, A, C)
    busy(middle)
    middle.receive(0.0, StealGrant(A, 0, (JobTasks(spec(A), tuple(TaskItem(i, 1, b"") for i in range(4))),)))  # noqa: E501
    middle.take_outputs()
    middle.receive(0.0, StealRequest(C, 1))
    out = middle.take_outputs()
    moved = [o for o in out if isinstance(o.msg, TasksMoved)]
    assert [(o.dst, o.msg.holder, o.msg.ids) for o in moved] == [(A, C, (0, 1))]
    grant = next(o for o in out if isinstance(o.msg, StealGrant))
    assert [t.moves for t in grant.msg.jobs[0].tasks] == [2, 2]


def test_results_are_delivered_once_and_duplicates_counted() -> None:
    owner = machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(3))
    owner.take_outputs()
    owner.receive(0.0, Results(b"j1", B, 0, ok(0, 1)))
    owner.receive(0.0, Results(b"j1", B, 0, ok(1)))
    events = owner.take_events()
    assert [e.results for e in events if isinstance(e, ResultsReady)] == [ok(0, 1)]
    assert owner.statistics().duplicates == 1
    owner.receive(0.0, Results(b"j1", C, 0, ok(2)))
    assert any(isinstance(e, JobFinished) for e in owner.take_events())


def test_a_dead_holder_s_tasks_go_back_to_the_front_of_the_owner_s_queue() -> None:
    owner = machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(10))
    owner.take(0.0, 1)
    owner.receive(0.0, StealRequest(B, 1))
    owner.take_outputs()
    owner.peer_down(1.0, B)
    assert [q.item.id for q in owner.queue][:5] == [1, 2, 3, 4, 5]
    assert all(q.item.moves == 0 for q in owner.queue)
    assert owner.statistics().requeued == 5


def test_a_move_to_a_peer_known_dead_is_requeued_at_once() -> None:
    owner = machine(A, 1, B, C)
    owner.submit(0.0, spec(), tasks(10))
    owner.take(0.0, 1)
    owner.receive(0.0, StealRequest(B, 1))
    owner.peer_down(1.0, C)
    owner.receive(1.0, TasksMoved(b"j1", C, (1, 2)))
    assert owner.owner.holders(b"j1")[1] == A
    assert [q.item.id for q in owner.queue][:2] == [1, 2]


def test_the_owner_s_death_drops_its_queued_and_running_tasks() -> None:
    thief = machine(B, 2, A)
    thief.receive(0.0, StealGrant(A, 0, (JobTasks(spec(A), tuple(TaskItem(i, 1, b"") for i in range(5))),)))  # noqa: E501
    batch = thief.take(0.0, 2)
    assert batch is not None
    thief.take_events()
    thief.peer_down(1.0, A)
    assert thief.queue_length() == 0
    assert thief.take_events() == [JobDropped(b"j1", "its owner left or died")]
    thief.finished(1.5, batch, list(ok(0, 1)))
    assert thief.take_outputs() == []  # results for a dead owner are thrown away


def test_cancel_tells_every_peer_that_held_tasks() -> None:
    owner = machine(A, 1, B, C)
    owner.submit(0.0, spec(), tasks(10))
    owner.take(0.0, 1)
    owner.receive(0.0, StealRequest(B, 1))
    owner.take_outputs()
    owner.cancel(0.1, b"j1")
    assert [o.dst for o in msgs(owner, CancelJob)] == [B]
    assert owner.queue_length() == 0
    assert JobDropped(b"j1", "cancelled") in owner.take_events()
    # A late result or move for the ended job is answered with CancelJob.
    owner.receive(0.2, Results(b"j1", C, 0, ok(7)))
    assert [o.dst for o in msgs(owner, CancelJob)] == [C]


def test_an_unanswered_steal_times_out_and_moves_on() -> None:
    thief = machine(B, 1, A, C)
    thief.peer_queue(0.0, A, 5)
    (req,) = thief.take_outputs()
    assert thief.next_deadline() == pytest.approx(thief.policy.steal_timeout)
    thief.peer_queue(0.1, C, 5)
    thief.tick(thief.policy.steal_timeout)
    (again,) = thief.take_outputs()
    assert again.dst != req.dst


def test_a_failed_grant_returns_its_tasks() -> None:
    owner = machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(10))
    owner.take(0.0, 1)
    owner.receive(0.0, StealRequest(B, 1))
    (grant,) = msgs(owner, StealGrant)
    owner.grant_failed(0.1, grant.msg)
    assert [q.item.id for q in owner.queue] == list(range(1, 10))
    assert set(owner.owner.holders(b"j1").values()) == {A}


def test_two_batches_per_slot_while_the_queue_is_long_then_one() -> None:
    owner = machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(3))
    first = owner.take(0.0, 1)  # queue 2 >= 2 per slot: a second batch may go
    second = owner.take(0.0, 1)
    assert first is not None and second is not None
    assert owner.take(0.0, 1) is None  # queue 1: only one batch per slot now, and two are out
    owner.finished(0.1, first, list(ok(0)))
    assert owner.take(0.1, 1) is None  # still one out: the last task stays stealable
    owner.finished(0.2, second, list(ok(1)))
    assert owner.take(0.2, 1) is not None


def test_a_batch_leaves_half_the_queue_stealable_unless_the_job_sets_a_chunksize() -> None:
    owner = machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(100))
    batch = owner.take(0.0, 1000)
    # A quarter of the queue per slot: two batches leave half.
    assert batch is not None and len(batch.items) == 25
    fixed = JobSpec(b"j2", A, "mod", "fn", None, (), None, chunksize=40)
    other = machine(A, 1, B)
    other.submit(0.0, fixed, tasks(100))
    batch = other.take(0.0, 3)
    assert batch is not None and len(batch.items) == 40
    assert batch.time_limit is None  # the user's chunksize is not cut short



def test_a_batch_cut_short_gives_its_unstarted_tasks_back_to_the_front() -> None:
    owner = machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(40))
    batch = owner.take(0.0, 4)
    assert batch is not None and batch.time_limit == WorkPolicy().max_batch_time
    assert [i.id for i in batch.items] == [0, 1, 2, 3]
    # The worker ran two tasks, reached the time limit, and did not start 2 and 3.
    owner.finished(0.6, batch, list(ok(0, 1)), 0.6, batch.items[2:])
    assert [q.item.id for q in owner.queue][:4] == [2, 3, 4, 5]
    assert owner.statistics().tasks_given_back == 2
    again = owner.take(0.6, 1)
    assert again is not None and [i.id for i in again.items] == [2]


def test_tasks_given_back_after_the_job_ended_are_dropped() -> None:
    thief = machine(B, 1, A)
    thief.receive(0.0, StealGrant(A, 0, (JobTasks(spec(), tuple(
        TaskItem(i, 1, b"\x80") for i in range(4))),)))
    batch = thief.take(0.0, 4)
    assert batch is not None
    thief.receive(0.1, CancelJob(b"j1"))
    thief.finished(0.6, batch, [], 0.6, batch.items[1:])
    assert len(thief.queue) == 0


def test_results_of_our_own_job_that_ended_long_ago_go_nowhere() -> None:
    """A batch of our own job that ends after the job did, once the job is no longer among
    the ended jobs remembered (a client that left with more jobs running than that), is not
    sent to ourselves over the network."""
    owner = machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(2))
    batch = owner.take(0.0, 2)
    assert batch is not None
    owner.cancel(0.1, b"j1")
    for n in range(ENDED_JOBS_KEPT):  # the ended job falls out of those remembered
        owner.submit(0.2, spec(job=n.to_bytes(4, "big")), [])
        owner.cancel(0.2, n.to_bytes(4, "big"))
    owner.take_outputs()
    owner.finished(0.3, batch, list(ok(0, 1)), 0.2)
    assert [o for o in owner.take_outputs() if o.dst == A] == []


def test_batches_follow_the_measured_task_time() -> None:
    owner = machine(A, 1)
    owner.submit(0.0, spec(), tasks(100_000))
    first = owner.take(0.0)
    assert first is not None and len(first.items) == 1  # nothing measured yet
    owner.finished(0.0, first, list(ok(0)), 0.0001)  # 0.1 ms a task: 200 fill 20 ms
    fast = owner.take(0.0)
    assert fast is not None and len(fast.items) == 200
    ids = [i.id for i in fast.items]
    owner.finished(0.0, fast, list(ok(*ids)), 200 * 0.02)  # now 20 ms a task
    slow = owner.take(0.0)
    assert slow is not None and len(slow.items) == 1  # (0.1 + 20) / 2 ms: one task


def test_tasks_on_their_last_move_go_only_as_many_as_the_thief_starts_at_once() -> None:
    # B holds tasks of A's job that moved once; C steals from B: their next move is the
    # last (max_moves 2), so B gives two batches' worth per slot of C, not half its queue.
    holder = machine(B, 1, A, C)
    holder.receive(0.0, StealGrant(A, 0, (JobTasks(spec(), tuple(
        TaskItem(i, 1, b"\x80") for i in range(1000))),)))
    holder.take_outputs()
    holder.receive(0.0, StealRequest(C, 2))
    (grant,) = msgs(holder, StealGrant)
    moved = grant.msg.jobs[0].tasks
    assert len(moved) == 2 * 2 * 1  # slots x batches_per_slot x batch size (1 unmeasured)
    assert all(t.moves == 2 for t in moved)

# --- large values, byte caps, holding reports and leases --------------------------------------

SMALL = WorkPolicy(inline_limit=100, message_bytes=1000, report_interval=1.0,
                   lease_timeout=5.0)


def small_machine(node: bytes, slots: int = 1, *peers: bytes) -> StealingMachine:
    m = StealingMachine(node, slots, random.Random(1), SMALL)
    for p in peers:
        m.peer_up(0.0, p, 0)
    return m


def test_a_grant_leaves_large_arguments_at_the_owner() -> None:
    owner = small_machine(A, 1, B)
    owner.submit(0.0, spec(), [(0, b"x" * 10), (1, b"y" * 500), (2, b"z" * 10)])
    owner.take(0.0, 1)  # task 0 runs here
    owner.receive(0.0, StealRequest(B, 1))
    (grant,) = msgs(owner, StealGrant)
    (task,) = grant.msg.jobs[0].tasks
    assert (task.id, task.payload, task.size, task.remote) == (1, b"", 500, True)
    assert owner.owner.payload(b"j1", 1) == b"y" * 500  # the thief fetches it from here
    owner.grant_failed(0.1, grant.msg)  # ... and a grant that fails gets it back
    front = owner.queue.front()
    assert front is not None and front.item.payload == b"y" * 500 and not front.item.remote


def test_arguments_the_driver_holds_stay_remote_through_grants_failures_and_deaths() -> None:
    owner = small_machine(A, 1, B)
    owner.submit(0.0, spec(), [(0, b"x" * 10), TaskItem(1, 0, b"", 500),
                               TaskItem(2, 0, b"", 700)])
    assert owner.take(0.0, 1) is not None  # task 0 runs here
    owner.receive(0.0, StealRequest(B, 1))
    (grant,) = msgs(owner, StealGrant)
    (task,) = grant.msg.jobs[0].tasks
    assert (task.id, task.payload, task.size) == (1, b"", 500)
    assert owner.owner.payload(b"j1", 1) == b""  # the driver serves it
    owner.grant_failed(0.1, grant.msg)  # back at the front, still remote, size kept
    front = owner.queue.front()
    assert front is not None and (front.item.id, front.item.size, front.item.remote) == (
        1, 500, True)
    owner.receive(0.2, StealRequest(B, 1))
    msgs(owner, StealGrant)
    owner.peer_down(1.0, B)  # requeued with its size
    assert [(q.item.id, q.item.size) for q in owner.queue] == [(1, 500), (2, 700)]
    batch = owner.take(1.0, 1)  # the owner runs it itself: still remote, fetched locally
    assert batch is not None and [(t.id, t.size) for t in batch.items] == [(1, 500)]


def test_grants_and_batches_are_capped_in_bytes() -> None:
    owner = small_machine(A, 1, B)
    owner.submit(0.0, spec(), [(i, b"p" * 90) for i in range(40)])
    batch = owner.take(0.0, 1000)
    assert batch is not None and len(batch.items) == 10  # a quarter of the queue per slot
    other = small_machine(A, 1, B)
    other.submit(0.0, JobSpec(b"j2", A, "m", "f", None, (), None, chunksize=40),
                 [(i, b"p" * 90) for i in range(40)])
    batch = other.take(0.0, 1000)
    assert batch is not None and sum(len(t.payload) for t in batch.items) <= 1000
    other.receive(0.0, StealRequest(B, 1))
    (grant,) = msgs(other, StealGrant)
    assert sum(len(t.payload) for t in grant.msg.jobs[0].tasks) <= 1000 + 100


def _thief_running(tasks: int) -> tuple[StealingMachine, Batch]:
    """B, granted ``tasks`` tasks of A's job, running them all in one batch."""
    thief = small_machine(B, 1, A)
    thief.receive(0.0, StealGrant(A, 0, (JobTasks(spec(A), tuple(
        TaskItem(i, 1, b"\x80") for i in range(tasks))),)))
    batch = thief.take(0.0, tasks)
    assert batch is not None
    thief.take_outputs()
    return thief, batch


def _pushed_and_sent(thief: StealingMachine) -> tuple[list[PushValue], list[Results]]:
    out = thief.take_outputs()
    return ([o for o in out if isinstance(o, PushValue)],
            [o.msg for o in out if isinstance(o, SendWork) and isinstance(o.msg, Results)])


def test_large_results_are_pushed_and_small_ones_batched_within_the_byte_cap() -> None:
    thief, batch = _thief_running(4)
    results = [TaskResult(0, 0, b"a" * 600), TaskResult(1, 0, b"b" * 60),
               TaskResult(2, 0, b"c" * 50), TaskResult(3, 0, b"d" * 50)]
    thief.finished(0.1, batch, results)
    pushes, sent = _pushed_and_sent(thief)
    assert [(p.dst, p.result.id) for p in pushes] == [(A, 0)]
    assert sorted(r.id for m in sent for r in m.results) == [1, 2, 3]
    assert thief.statistics().results_pushed == 1


def test_a_result_held_by_the_driver_is_pushed_with_its_value_whatever_its_size() -> None:
    """The driver keeps a large result's payload outside the machine (in shared memory):
    the result comes with an empty payload, and the PushValue hands the held value back,
    sized by it. A held value is pushed even if small (it is not here to go inline)."""
    thief, batch = _thief_running(3)
    big, tiny = bytearray(b"v" * 700), b"w" * 10
    thief.finished(0.1, batch, [TaskResult(0, 0, b""), TaskResult(1, 0, b""),
                                TaskResult(2, 0, b"x" * 20)], held={0: big, 1: tiny})
    pushes, sent = _pushed_and_sent(thief)
    assert [(p.result.id, p.result.payload, p.value) for p in pushes] == [
        (0, b"", big), (1, b"", tiny)]
    assert pushes[0].value is big  # the driver's own object, not a copy
    assert [r.id for m in sent for r in m.results] == [2]
    thief.tick(1.0)
    (report,) = [o.msg for o in thief.take_outputs() if isinstance(o.msg, Holding)]
    assert {0, 1} <= ids_from_runs(report.jobs[0].runs, 10)  # held here while they travel


def test_results_of_a_job_owned_here_are_never_held_outside_the_machine() -> None:
    owner = small_machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(2))
    batch = owner.take(0.0, 1)
    assert batch is not None
    with pytest.raises(ValueError, match="owned here"):
        owner.finished(0.1, batch, [TaskResult(0, 0, b"")], held={0: b"v" * 700})


def test_a_holder_reports_what_it_holds_and_the_owner_requeues_what_is_missing_twice(
) -> None:
    owner = small_machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(10))
    owner.take(0.0, 1)
    owner.receive(0.0, StealRequest(B, 1))
    (grant,) = msgs(owner, StealGrant)
    thief = small_machine(B, 1, A)
    thief.receive(0.0, grant.msg)
    batch = thief.take(0.0, 1)
    assert batch is not None
    assert thief.next_deadline() == 1.0
    thief.tick(1.0)
    (report,) = [o.msg for o in thief.take_outputs() if isinstance(o.msg, Holding)]
    assert report.sender == B
    held = ids_from_runs(report.jobs[0].runs, 100)
    assert held == {1, 2, 3, 4, 5}
    # The thief loses task 5 (say its result went out on a link that broke): two reports
    # without it, and the owner queues it again; one report alone is not enough.
    lossy = Holding(B, (HeldTasks(b"j1", runs_from_ids({1, 2, 3, 4})),))
    owner.receive(1.0, lossy)
    assert owner.owner.holders(b"j1")[5] == B
    owner.receive(2.0, lossy)
    assert owner.owner.holders(b"j1")[5] == A
    assert owner.statistics().requeued == 1


def test_a_silent_holder_loses_its_tasks_after_the_lease_timeout() -> None:
    owner = small_machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(10))
    owner.take(0.0, 1)
    owner.receive(0.0, StealRequest(B, 1))
    owner.take_outputs()
    deadline = owner.next_deadline()
    assert deadline is not None
    while deadline is not None and deadline < 5.0:
        owner.tick(deadline)
        assert set(owner.owner.holders(b"j1").values()) == {A, B}
        deadline = owner.next_deadline()
    owner.tick(5.0)
    assert set(owner.owner.holders(b"j1").values()) == {A}
    assert owner.statistics().leases_expired == 1


def test_a_push_that_fails_leaves_the_task_out_of_the_next_reports() -> None:
    thief = small_machine(B, 1, A)
    thief.receive(0.0, StealGrant(A, 0, (JobTasks(spec(A), (TaskItem(0, 1, b"\x80"),)),)))
    batch = thief.take(0.0, 1)
    assert batch is not None
    thief.finished(0.1, batch, [TaskResult(0, 0, b"r" * 500)])
    thief.take_outputs()
    thief.tick(1.0)
    (report,) = [o.msg for o in thief.take_outputs() if isinstance(o.msg, Holding)]
    assert ids_from_runs(report.jobs[0].runs, 10) == {0}  # still ours while it travels
    thief.push_done(1.5, b"j1", 0, delivered=False)
    for t in (2.0, 3.0):  # two empty reports: the owner needs both to run it again
        thief.tick(t)
        (report,) = [o.msg for o in thief.take_outputs() if isinstance(o.msg, Holding)]
        assert report.jobs == ()
    assert thief.next_deadline() is None and thief.statistics().results_lost == 1


def test_runs_round_trip() -> None:
    ids = {0, 1, 2, 7, 9, 10}
    assert runs_from_ids(ids) == (0, 3, 7, 1, 9, 2)
    assert ids_from_runs(runs_from_ids(ids), 10) == ids
    with pytest.raises(ValueError):
        ids_from_runs((0, 100), 10)


def test_many_small_results_are_split_into_messages_within_the_byte_cap() -> None:
    thief = small_machine(B, 1, A)
    chunky = JobSpec(b"j1", A, "mod", "fn", None, (), None, chunksize=30)
    thief.receive(0.0, StealGrant(A, 0, (JobTasks(chunky, tuple(
        TaskItem(i, 1, b"\x80") for i in range(30))),)))
    batch = thief.take(0.0, 30)
    assert batch is not None
    thief.take_outputs()
    thief.finished(0.1, batch, [TaskResult(t.id, 0, b"r" * 90) for t in batch.items])
    sent = [o.msg for o in thief.take_outputs() if isinstance(o.msg, Results)]
    assert len(sent) >= 2
    assert all(sum(len(r.payload) for r in m.results) <= 1000 for m in sent)
    assert sorted(r.id for m in sent for r in m.results) == [t.id for t in batch.items]


def test_a_declined_job_goes_back_to_its_owner_and_is_never_taken_again() -> None:
    """A peer that cannot run a job (no NumPy for its arrays) drops its queued tasks of it,
    its reports stop naming them so the owner runs them elsewhere, and later grants of that
    job are dropped on arrival."""
    owner = small_machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(10))
    owner.take(0.0, 1)
    owner.receive(0.0, StealRequest(B, 1))
    (grant,) = msgs(owner, StealGrant)
    thief = small_machine(B, 1, A)
    thief.receive(0.0, grant.msg)
    batch = thief.take(0.0, 1)
    assert batch is not None and [i.id for i in batch.items] == [1]
    failed = TaskResult(1, TaskStatus.ERROR, b"\xa0")
    thief.finished(0.1, batch, [failed], 0.1)
    thief.decline(0.1, b"j1")
    assert len(thief.queue) == 0 and thief.statistics().dropped == 4
    for o in thief.take_outputs():
        if isinstance(o.msg, Results):
            owner.receive(0.1, o.msg)
    for now in (1.0, 2.0):
        thief.tick(now)
        for report in [o.msg for o in thief.take_outputs() if isinstance(o.msg, Holding)]:
            owner.receive(now, report)
        owner.tick(now)
    assert set(owner.owner.holders(b"j1").values()) == {A}  # tasks 2-5 are the owner's again
    assert owner.statistics().requeued == 4
    # A later grant of the same job is dropped; one of another job is taken.
    thief.receive(3.0, StealGrant(A, 0, (JobTasks(spec(), (TaskItem(7, 1, b"\x80"),)),
                                         JobTasks(spec(job=b"j2"), (TaskItem(0, 1, b"\x80"),)))))
    assert [(q.spec.job, q.item.id) for q in thief.queue] == [(b"j2", 0)]
    owner.decline(3.0, b"j1")  # an owner never declines its own job
    assert len(owner.queue) > 0
    # Its steal requests name the declined job, and a victim grants none of its tasks.
    fresh = small_machine(C, 1, A)
    fresh.decline(3.0, b"j1")
    fresh.peer_queue(3.0, A, 9)
    assert fresh.take(3.0, 1) is None
    (request,) = msgs(fresh, StealRequest)
    assert request.msg.declined == (b"j1",)
    owner.submit(3.0, spec(job=b"j3"), tasks(6))
    owner.receive(3.0, request.msg)
    (grant,) = msgs(owner, StealGrant)
    assert {jt.spec.job for jt in grant.msg.jobs} == {b"j3"}


def test_a_busy_peer_steals_ahead_into_its_workers_pipes_and_no_further() -> None:
    thief = machine(B, 1, A)
    owner = machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(3))
    assert owner.take(0.0, 1) is not None  # the owner's worker runs task 0
    thief.receive(0.0, WorkAvailable(A, 2))
    (request,) = msgs(thief, StealRequest)
    owner.receive(0.0, request.msg)
    (grant,) = msgs(owner, StealGrant)
    thief.receive(0.0, grant.msg)
    first = thief.take(0.0)
    assert first is not None and thief.busy == 1
    # Its one slot is busy and its queue empty: it steals ahead, while the owner has work.
    (ahead,) = msgs(thief, StealRequest)
    assert ahead.msg.slots == 0
    owner.receive(0.0, ahead.msg)
    (grant,) = msgs(owner, StealGrant)
    assert len(grant.msg.jobs[0].tasks) == 1
    thief.receive(0.0, grant.msg)
    # What it stole goes into the worker's pipe at once, where nobody steals it back...
    second = thief.take(0.0)
    assert second is not None and thief.busy == 2 and thief.surplus() == 0
    # ...and with the pipe full it asks for nothing more.
    thief.receive(0.0, WorkAvailable(A, 5))
    assert msgs(thief, StealRequest) == []


def test_stale_metadata_never_hides_a_surplus_the_victim_told_itself() -> None:
    """Seen with joblib: the owner kept one or two batches queued without a pause, so its
    surplus never went back to 0 and it sent no new hint; its metadata, published at most
    every meta_interval, said 0 from an earlier moment; the thief believed it, sat idle for
    a third of a second while the owner ran the batches alone, and stole again only at the
    next publication. A surplus the victim told directly now wins over metadata saying 0."""
    thief = machine(B, 1, A)
    owner = machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(3))
    assert owner.take(0.0, 1) is not None
    thief.receive(0.0, WorkAvailable(A, 2))
    batches = []
    for _ in range(2):  # a grant to run now, then one stolen ahead into the worker's pipe
        (request,) = msgs(thief, StealRequest)
        owner.receive(0.0, request.msg)
        (grant,) = msgs(owner, StealGrant)
        thief.receive(0.0, grant.msg)
        batches.append(thief.take(0.0))
    assert None not in batches and thief.busy == 2
    owner.submit(0.1, spec(job=b"j2"), tasks(1))
    (hint,) = msgs(owner, WorkAvailable)
    thief.receive(0.1, hint.msg)  # its pipe is full: it notes the surplus, asks nothing
    assert msgs(thief, StealRequest) == []
    thief.peer_up(0.2, A, 0)  # metadata the owner published before that submit
    # Its running batch ends: room in the pipe again, and the owner said it has work.
    first = batches[0]
    thief.finished(0.3, first, [TaskResult(t.id, TaskStatus.OK, b"\x01")
                                for t in first.items], 0.1)
    (request,) = msgs(thief, StealRequest)
    assert request.dst == A and request.msg.slots == 0
    # An answer of nothing is believed, and so is metadata after it: no more asking.
    thief.receive(0.3, StealGrant(A, 0, ()))
    thief.peer_up(0.4, A, 0)
    thief.receive(0.4, WorkAvailable(A, 0))
    assert msgs(thief, StealRequest) == []


def test_an_owner_keeps_its_last_queued_tasks_out_of_its_pipe_for_thieves() -> None:
    owner = machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(2))
    assert owner.take(0.0) is not None
    assert owner.take(0.0) is None  # one queued: it stays stealable
    assert owner.surplus() == 1
    policy = WorkPolicy(batches_per_slot=1)  # no pipe: no stealing ahead either
    thief = StealingMachine(B, 1, random.Random(1), policy)
    thief.peer_up(0.0, A, 0)
    thief.receive(0.0, WorkAvailable(A, 2))
    (request,) = msgs(thief, StealRequest)
    owner.receive(0.0, request.msg)
    (grant,) = msgs(owner, StealGrant)
    thief.receive(0.0, grant.msg)
    assert thief.take(0.0) is not None
    thief.receive(0.0, WorkAvailable(A, 1))
    assert msgs(thief, StealRequest) == []


def test_an_owner_stealing_back_its_own_task_gets_the_arguments_its_grant_left_behind() -> None:
    """The task's arguments never left the owner (over inline_limit): a thief that grants
    it back sends it without them, and the owner cannot fetch from itself (a hang, seen with
    joblib's 1.3 MB batches, before the owner put them back)."""
    owner = StealingMachine(A, 1, random.Random(1), WorkPolicy(inline_limit=4))
    owner.peer_up(0.0, B, 0)
    big = b"\x80" * 64
    owner.submit(0.0, spec(), [(i, big) for i in range(3)])
    assert owner.take(0.0, 1) is not None
    owner.receive(0.0, StealRequest(B, 1))
    (grant,) = msgs(owner, StealGrant)
    taken = grant.msg.jobs[0].tasks
    assert taken and all(t.remote for t in taken)  # the arguments stayed at the owner
    # B grants one back to the owner (a re-steal: the owner ran out of work).
    back = StealGrant(B, 0, (JobTasks(spec(), taken[:1]),))
    owner.receive(0.0, back)
    item = next(q for q in owner.queue if q.item.id == taken[0].id).item
    assert not item.remote and item.payload == big


def test_a_job_admitted_in_parts_ends_only_after_its_last_part() -> None:
    owner = machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(2), more=True)
    owner.receive(0.0, Results(b"j1", B, 0, ok(0, 1)))  # every task so far is done
    assert not any(isinstance(e, JobFinished) for e in owner.take_events())
    assert owner.extend(0.1, spec(), [(2, b"\x80"), (3, b"\x80")], more=True)
    assert owner.extend(0.2, spec(), [(4, b"\x80")])  # the last part
    assert owner.statistics().submitted == 5 and owner.owner.remaining(b"j1") == 3
    owner.receive(0.3, Results(b"j1", B, 0, ok(2, 3)))
    assert not any(isinstance(e, JobFinished) for e in owner.take_events())
    owner.receive(0.3, Results(b"j1", B, 0, ok(4)))
    assert any(isinstance(e, JobFinished) for e in owner.take_events())


def test_an_empty_last_part_ends_a_job_whose_tasks_are_all_done() -> None:
    owner = machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(1), more=True)
    owner.receive(0.0, Results(b"j1", B, 0, ok(0)))
    assert owner.extend(0.1, spec(), [])
    assert any(isinstance(e, JobFinished) for e in owner.take_events())


def test_a_part_of_a_cancelled_job_is_not_queued_and_says_so() -> None:
    owner = machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(2), more=True)
    owner.cancel(0.1, b"j1")
    assert not owner.extend(0.2, spec(), [(2, b"\x80")], more=True)
    assert len(owner.queue) == 0 and owner.statistics().submitted == 2


def test_only_a_job_submitted_with_more_to_come_is_extended() -> None:
    owner = machine(A, 1, B)
    owner.submit(0.0, spec(), tasks(2))
    with pytest.raises(ValueError, match="more tasks to follow"):
        owner.extend(0.1, spec(), [(2, b"\x80")])
    with pytest.raises(ValueError, match="more tasks to follow"):
        owner.extend(0.1, spec(job=b"j2"), [(0, b"\x80")])


def test_a_grant_holds_at_most_grant_tasks_and_leaves_the_rest_in_order() -> None:
    owner = StealingMachine(A, 0, random.Random(1), WorkPolicy(grant_tasks=100))
    owner.peer_up(0.0, B, 0)
    owner.submit(0.0, spec(), tasks(1000))
    owner.receive(0.0, StealRequest(B, 1))
    (grant,) = msgs(owner, StealGrant)
    assert [t.id for t in grant.msg.jobs[0].tasks] == list(range(100))
    assert [q.item.id for q in owner.queue] == list(range(100, 1000))
    assert owner.queue.movable == 900


def test_a_grant_passes_over_tasks_that_may_not_move_and_keeps_their_place() -> None:
    owner = machine(A, 0, B)
    owner.receive(0.0, StealGrant(C, 0, (JobTasks(spec(C, b"jc"), tuple(
        TaskItem(i, 2, b"\x80") for i in range(3))),)))  # stuck: moved twice already
    owner.submit(0.0, spec(), tasks(4))
    owner.receive(0.0, StealRequest(B, 1))
    (grant,) = msgs(owner, StealGrant)
    assert [(jt.spec.job, [t.id for t in jt.tasks]) for jt in grant.msg.jobs] == [
        (b"j1", [0, 1])]
    assert [(q.spec.job, q.item.id) for q in owner.queue] == [
        (b"jc", 0), (b"jc", 1), (b"jc", 2), (b"j1", 2), (b"j1", 3)]
