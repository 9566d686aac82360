"""Suspicion timeouts, local health and the piggyback queue."""

from __future__ import annotations

import math

import pytest

from p2pcluster._proto.awareness import Awareness
from p2pcluster._proto.broadcast import BroadcastQueue, retransmit_limit
from p2pcluster._proto.messages import Alive, Suspect
from p2pcluster._proto.suspicion import Suspicion, suspicion_bounds
from p2pcluster._proto.wire import update_size


@pytest.mark.parametrize(("n", "expected_min"), [(1, 2.0), (10, 2.0), (100, 4.0), (1000, 6.0)])
def test_suspicion_bounds_follow_memberlist(n: int, expected_min: float) -> None:
    low, high = suspicion_bounds(4, 6, n, 0.5)
    assert low == pytest.approx(expected_min)  # 4 * max(1, log10 n) * 0.5
    assert high == pytest.approx(6 * expected_min)


def test_timeout_shrinks_with_confirmations() -> None:
    s = Suspicion(10.0, b"a", k=2, minimum=2.0, maximum=12.0)
    assert s.timeout() == 12.0 and s.deadline() == 22.0
    assert s.confirm(b"b")
    expected = 12.0 - 10.0 * math.log(2) / math.log(3)
    assert s.timeout() == pytest.approx(expected)
    assert not s.confirm(b"b")  # the same peer counts once
    assert not s.confirm(b"a")  # the first suspecter is already counted
    assert s.confirm(b"c")
    assert s.timeout() == pytest.approx(2.0)
    assert not s.confirm(b"d")  # no more than k


def test_no_confirmations_expected_means_min_at_once() -> None:
    assert Suspicion(0.0, b"a", k=0, minimum=1.5, maximum=9.0).timeout() == 1.5


def test_awareness_saturates_and_scales() -> None:
    a = Awareness(8)
    a.apply(-1)
    assert a.score == 0 and a.scale(0.5) == 0.5
    for _ in range(20):
        a.apply(1)
    assert a.score == 8 and a.scale(0.5) == 4.5


@pytest.mark.parametrize(("n", "limit"), [(1, 4), (9, 4), (10, 8), (99, 8), (100, 12),
                                          (1000, 16)])
def test_retransmit_limit(n: int, limit: int) -> None:
    assert retransmit_limit(4, n) == limit  # 4 * ceil(log10(n + 1))


def alive(i: int, meta: bytes = b"") -> Alive:
    return Alive(bytes([i]) * 16, 0, f"n{i}", "10.0.0.1", 1, meta)


def test_least_sent_first_then_newest() -> None:
    q = BroadcastQueue(1)
    for i in range(3):
        q.add(alive(i))
    first = q.select(2 * update_size(alive(0)) + 10, n=1000)
    assert [u.node[0] for u in first] == [2, 1]  # newest first among the unsent
    second = q.select(10_000, n=1000)
    assert [u.node[0] for u in second] == [0, 2, 1]  # the unsent one before the sent


def test_each_update_goes_out_at_most_the_limit() -> None:
    q = BroadcastQueue(2)
    q.add(alive(1))
    sent = sum(len(q.select(10_000, n=9)) for _ in range(10))
    assert sent == retransmit_limit(2, 9) == 2
    assert len(q) == 0


def test_newer_news_replaces_older() -> None:
    q = BroadcastQueue(4)
    q.add(alive(1))
    q.select(10_000, n=9)
    q.add(Suspect(bytes([1]) * 16, 0, b"x"))
    assert len(q) == 1
    assert q.select(10_000, n=9) == [Suspect(bytes([1]) * 16, 0, b"x")]


def test_budget_is_respected() -> None:
    q = BroadcastQueue(4)
    for i in range(50):
        q.add(alive(i, b"m" * 100))
    budget = 1000
    chosen = q.select(budget, n=50)
    assert sum(update_size(u) for u in chosen) <= budget
    assert len(chosen) == budget // update_size(alive(0, b"m" * 100))


def test_first_goes_first_and_is_not_counted() -> None:
    q = BroadcastQueue(1)
    q.add(alive(1))
    buddy = Suspect(bytes([9]) * 16, 3, b"s")
    assert q.select(10_000, n=9, first=buddy) == [buddy, alive(1)]
