"""The pure Simulation, proved with the codec and a trivial ping/ack machine."""

from __future__ import annotations

import pytest

from p2pcluster._proto.messages import Ping
from p2pcluster._proto.outputs import SendDatagram
from p2pcluster.testing import LinkConditions, Simulation
from p2pcluster.testing._sim import reset_registry

from .pingack import PingAckNode


def build(seed: int, n: int = 5, *, conditions: LinkConditions | None = None,
          sync_every: int = 0, trace: bool = False) -> tuple[Simulation, list[PingAckNode]]:
    sim = Simulation(seed, conditions=conditions, trace=trace)
    addrs = [(f"10.0.0.{i}", 7946) for i in range(1, n + 1)]
    nodes = []
    for addr in addrs:
        node = PingAckNode(addr, [a for a in addrs if a != addr], sim.random(str(addr)),
                           sync_every=sync_every)
        nodes.append(node)
        sim.add(addr, node)
    return sim, nodes


NOISY = LinkConditions(latency=0.002, jitter=0.01, loss=0.1, duplicate=0.05)


def test_pings_are_acked_over_the_codec() -> None:
    sim, nodes = build(1)
    sim.run_until(10.0)
    for node in nodes:
        assert len(node.sent) > 50
        assert set(node.acked) == set(node.sent) - {max(node.sent)} or set(node.acked) == set(
            node.sent)
        assert all(rtt == pytest.approx(0.002) for rtt in node.acked.values())
    assert sim.now == 10.0


def test_same_seed_same_trace() -> None:
    a, _ = build(42, conditions=NOISY, sync_every=5, trace=True)
    b, _ = build(42, conditions=NOISY, sync_every=5, trace=True)
    a.run_until(30.0)
    b.run_until(30.0)
    assert a.trace == b.trace
    assert a.trace_digest() == b.trace_digest()
    assert len(a.trace) > 1000


def test_different_seed_different_trace() -> None:
    a, _ = build(42, conditions=NOISY)
    b, _ = build(43, conditions=NOISY)
    a.run_until(30.0)
    b.run_until(30.0)
    assert a.trace_digest() != b.trace_digest()


def test_loss_and_duplication_follow_the_conditions() -> None:
    sim, nodes = build(7, n=2, conditions=LinkConditions(loss=0.2))
    sim.run_until(200.0)
    sent = sum(len(n.sent) for n in nodes)
    acked = sum(len(n.acked) for n in nodes)
    # An ack needs two datagrams to survive: 0.8 ** 2 = 0.64.
    assert 0.58 < acked / sent < 0.70
    sim, nodes = build(7, n=2, conditions=LinkConditions(duplicate=0.5))
    sim.run_until(100.0)
    received = sum(sim.stats(n.me).msgs_received for n in nodes)
    sent = sum(sim.stats(n.me).msgs_sent for n in nodes)
    assert 1.4 < received / sent < 1.6


def test_jitter_reorders_datagrams() -> None:
    sim = Simulation(3, conditions=LinkConditions(latency=0.001, jitter=0.05))
    arrivals: list[int] = []

    class Sink(PingAckNode):
        def receive(self, now, src, msg, sender):  # type: ignore[no-untyped-def]
            arrivals.append(msg.seq)

    sink = Sink(("10.0.0.2", 1), [], sim.random("sink"))
    sender = Sink(("10.0.0.1", 1), [], sim.random("sender"))
    sim.add(sink.me, sink)
    sim.add(sender.me, sender)
    for i in range(50):
        sender._out.append(SendDatagram(sink.me, Ping(seq=i, target=b""), sink.node_id))
    sim.call_at(0.0, lambda: sim.flush(sender.me))
    sim.run_until(1.0)
    assert sorted(arrivals) == list(range(50))
    assert arrivals != list(range(50))


def test_partition_and_heal() -> None:
    sim, nodes = build(5, n=4)
    a, b = [n.me[0] for n in nodes[:2]], [n.me[0] for n in nodes[2:]]
    sim.network.partition(a, b)
    before = {n.me: n.pings_received for n in nodes}
    sim.run_until(20.0)
    for node in nodes:  # only pings from the own half arrive, and only they are acked
        ok = {s for s in node.sent if s in node.acked}
        assert len(ok) < len(node.sent) * 0.7
    sim.network.heal()
    acked = {n.me: len(n.acked) for n in nodes}
    sim.run_until(40.0)
    assert all(len(n.acked) - acked[n.me] > 100 for n in nodes)
    assert all(n.pings_received > before[n.me] for n in nodes)


def test_one_way_block() -> None:
    sim, nodes = build(6, n=2)
    x, y = nodes
    sim.network.block(x.me[0], y.me[0])
    sim.run_until(10.0)
    assert y.pings_received == 0 and x.pings_received > 0
    assert not x.acked and not y.acked  # y's pings reach x, but x's acks are blocked


def test_pause_defers_everything_then_catches_up() -> None:
    sim, nodes = build(8, n=2)
    x, y = nodes
    sim.run_until(1.0)
    sim.pause(y.me, 1.5)
    seen = y.pings_received
    sim.run_until(2.4)
    assert y.pings_received == seen  # frozen: nothing processed
    sim.run_until(2.6)
    assert y.pings_received > seen  # woke at 2.5 and handled the backlog
    late = [rtt for rtt in x.acked.values() if rtt > 0.1]
    assert late and max(late) <= 1.5 + 0.01


def test_processing_delay() -> None:
    sim, nodes = build(9, n=2)
    x, y = nodes
    sim.set_processing_delay(y.me, 0.3)
    sim.run_until(20.0)
    assert x.acked
    assert all(rtt == pytest.approx(0.302) for rtt in x.acked.values())


def test_crash_and_restart() -> None:
    sim, nodes = build(10, n=3)
    x = nodes[0]
    sim.run_until(2.0)
    sim.crash(x.me)
    others = nodes[1:]
    counts = {n.me: len(n.acked) for n in others}
    sim.run_until(6.0)
    for n in others:  # pings to the crashed peer go unanswered
        assert len(n.sent) - len(n.acked) > 5
    fresh = PingAckNode(x.me, x.peers, sim.random("restarted"))
    sim.add(x.me, fresh)
    sim.run_until(10.0)
    assert fresh.pings_received > 0 and fresh.acked
    assert all(len(n.acked) > counts[n.me] for n in others)


def test_stream_requests_and_failures() -> None:
    sim, nodes = build(11, n=3, sync_every=3)
    sim.run_until(5.0)
    assert all(n.replies and all(r is not None for r in n.replies) for n in nodes)
    sim.crash(nodes[2].me)
    sim.run_until(15.0)
    failed = [r for n in nodes[:2] for r in n.replies if r is None]
    assert failed  # requests to the crashed peer fail after the stream timeout


def test_call_at_runs_in_order() -> None:
    sim = Simulation(0)
    log: list[float] = []
    for t in (3.0, 1.0, 2.0):
        sim.call_at(t, lambda t=t: log.append(t))
    sim.run_until(5.0)
    assert log == [1.0, 2.0, 3.0]


def test_oversized_datagram_is_a_bug() -> None:
    sim, nodes = build(12, n=2)
    nodes[0]._out.append(SendDatagram(nodes[1].me, Ping(seq=1, target=b"x" * 2000),
                                      nodes[1].node_id))
    with pytest.raises(AssertionError, match="limit") as info:
        sim.call_at(0.5, lambda: sim.flush(nodes[0].me))
        sim.run_until(1.0)
    assert "seed=12" in "".join(info.value.__notes__)


def test_failures_carry_the_seed() -> None:
    sim, _ = build(1234)

    def boom() -> None:
        raise RuntimeError("scripted failure")

    sim.call_at(1.0, boom)
    with pytest.raises(RuntimeError) as info:
        sim.run_until(2.0)
    assert "seed=1234" in info.value.__notes__[0]
    with pytest.raises(TimeoutError) as timeout:
        sim.run_until_true(lambda: False, timeout=0.5)
    assert "seed=1234" in timeout.value.__notes__[0]


def test_pytest_plugin_reports_seeds(pytester: pytest.Pytester) -> None:
    reset_registry()
    pytester.makepyfile("""
        from p2pcluster.testing import Simulation

        def test_fails():
            Simulation(seed=987654)
            assert False
    """)
    result = pytester.runpytest()  # the plugin loads through its pytest11 entry point
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*replay with Simulation(seed=...): 987654*"])


def test_a_machine_that_would_spin_is_reported() -> None:
    sim = Simulation(5)
    node = PingAckNode(("10.0.0.1", 1), [("10.0.0.2", 1)], sim.random("x"))
    node.tick = lambda now: None  # type: ignore[method-assign]  # never advances its deadline
    sim.add(node.me, node)
    with pytest.raises(AssertionError, match="spin forever"):
        sim.run_until(1.0)
