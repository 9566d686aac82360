"""Work messages speak only for the authenticated peer, and only an owner cancels its job."""

from __future__ import annotations

import random

from p2pcluster._proto.messages import (
    CancelJob,
    Holding,
    JobSpec,
    JobTasks,
    Results,
    StealGrant,
    StealRequest,
    TaskItem,
    TasksMoved,
    WorkAvailable,
)
from p2pcluster._proto.stealing import StealingMachine
from p2pcluster._proto.workevents import JobDropped
from p2pcluster._proto.workorigin import claimed_node, refusal

A, B, C = b"A" * 16, b"B" * 16, b"C" * 16  # A owns the job, B holds its tasks, C is another


def spec(owner: bytes = A, job: bytes = b"j1") -> JobSpec:
    return JobSpec(job, owner, "mod", "fn", None, (), None)


def holder_with_tasks() -> StealingMachine:
    """B, holding 3 queued tasks of A's job (granted by A) and running one."""
    b = StealingMachine(B, 1, random.Random(1))
    b.peer_up(0.0, A, 0)
    items = tuple(TaskItem(i, 0, b"\x80", 1) for i in range(4))
    b.receive(0.0, StealGrant(A, 0, (JobTasks(spec(), items),)))
    assert b.take(0.0, 1) is not None
    b.take_outputs()
    return b


def test_messages_that_name_another_sender_are_refused() -> None:
    for msg in (Results(b"j1", C, 0, ()), Holding(C, ()), WorkAvailable(C, 3),
                StealRequest(C, 1), StealGrant(C, 0, ())):
        assert claimed_node(msg) == C
        assert refusal(msg, C, lambda job: None) is None
        why = refusal(msg, B, lambda job: None)
        assert why is not None and C.hex()[:8] in why


def test_a_moved_holder_is_a_third_peer_and_not_checked() -> None:
    assert refusal(TasksMoved(b"j1", C, (1,)), B, lambda job: None) is None


def test_only_the_owner_cancels_a_job() -> None:
    b = holder_with_tasks()
    assert b.owner_of(b"j1") == A
    assert b.owner_of(b"other") is None
    forged = CancelJob(b"j1")
    why = refusal(forged, C, b.owner_of)
    assert why is not None and "only its owner" in why
    assert refusal(forged, A, b.owner_of) is None
    # What the refusal protects: the cancel, if handled, drops the job here.
    b.receive(0.0, forged)
    assert any(isinstance(e, JobDropped) for e in b.take_events())
    assert b.queue_length() == 0


def test_the_owner_is_found_from_a_queued_task_alone() -> None:
    b = StealingMachine(B, 1, random.Random(1))
    items = tuple(TaskItem(i, 0, b"\x80", 1) for i in range(2))
    b.receive(0.0, StealGrant(A, 0, (JobTasks(spec(), items),)))
    assert b.owner_of(b"j1") == A
    assert refusal(CancelJob(b"j1"), C, b.owner_of) is not None


def test_a_cancel_for_a_job_with_nothing_here_is_let_through() -> None:
    b = StealingMachine(B, 1, random.Random(1))
    assert refusal(CancelJob(b"gone"), C, b.owner_of) is None
