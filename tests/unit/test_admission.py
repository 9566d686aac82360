"""A large job comes into the owner's trio loop in parts: its calls are encoded, its tasks
admitted into the machine and its results decoded a part at a time, so that the loop goes
on answering probes meanwhile."""

from __future__ import annotations

import random

import trio

from p2pcluster._jobs import (
    IN_TRIO_PART,
    encode_map_args,
    encode_map_args_in_trio,
    unpack,
    unpack_in_trio,
)
from p2pcluster._ownedjob import admit
from p2pcluster._proto.messages import JobSpec, TaskStatus
from p2pcluster._proto.stealing import StealingMachine
from p2pcluster._proto.workevents import JobFinished
from p2pcluster._values import encode_value

A = b"A" * 16
SPEC = JobSpec(b"j1", A, "mod", "fn", None, (), None)


async def _until(condition, limit: int = 10_000) -> None:  # type: ignore[no-untyped-def]
    for _ in range(limit):
        if condition():
            return
        await trio.sleep(0)
    raise AssertionError("never came")


async def test_a_large_job_is_admitted_a_part_per_pass_of_the_loop() -> None:
    machine = StealingMachine(A, 0, random.Random(1))
    total = 3 * IN_TRIO_PART + 5
    seen: list[int] = []  # the queue's length each time another task ran
    flushed: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(len(machine.queue))
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.sleep(0)
        admit(machine, nursery, lambda: flushed.append(len(machine.queue)), SPEC,
              [(i, b"\x80") for i in range(total)])
        assert len(machine.queue) == IN_TRIO_PART  # the first part, at once
        await _until(lambda: len(machine.queue) == total)
        nursery.cancel_scope.cancel()
    assert flushed == [2 * IN_TRIO_PART, 3 * IN_TRIO_PART, total]
    assert sum(IN_TRIO_PART <= n < total for n in seen) >= 2  # it ran between the parts
    assert [q.item.id for q in machine.queue] == list(range(total))
    assert not any(isinstance(e, JobFinished) for e in machine.take_events())


async def test_a_job_cancelled_while_it_comes_in_takes_no_more_tasks() -> None:
    machine = StealingMachine(A, 0, random.Random(1))
    flushed: list[int] = []
    async with trio.open_nursery() as nursery:
        admit(machine, nursery, lambda: flushed.append(1), SPEC,
              [(i, b"\x80") for i in range(2 * IN_TRIO_PART + 1)])
        machine.cancel(0.0, b"j1")
    assert len(machine.queue) == 0 and not flushed
    assert machine.statistics().submitted == IN_TRIO_PART


async def test_the_calls_are_encoded_and_the_results_decoded_as_at_once() -> None:
    count = 3 * IN_TRIO_PART + 1
    passes = [0]

    async def watch() -> None:
        while True:
            passes[0] += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.sleep(0)
        before = passes[0]
        payloads = await encode_map_args_in_trio([range(count), "ab" * count])
        assert passes[0] - before >= 2  # the loop ran between parts
        assert payloads == encode_map_args([range(count), "ab" * count])
        results = [(int(TaskStatus.OK), encode_value(i), "peer") for i in range(count)]
        before = passes[0]
        values = await unpack_in_trio(iter(results))
        assert passes[0] - before >= 2
        assert values == [unpack(*r) for r in results] == list(range(count))
        nursery.cancel_scope.cancel()
