"""VirtualNetwork on trio's autojump clock: latency, loss, duplication, reordering, partitions."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from p2pcluster.testing import LinkConditions, VirtualNetwork


async def _pair(net: VirtualNetwork):  # type: ignore[no-untyped-def]
    a = await net.host("10.0.0.1").open_datagram(("0.0.0.0", 7946))
    b = await net.host("10.0.0.2").open_datagram(("0.0.0.0", 7946))
    return a, b


async def _drain(sock, seconds: float) -> list[bytes]:  # type: ignore[no-untyped-def]
    got = []
    with trio.move_on_after(seconds):
        while True:
            got.append((await sock.receive())[0])
    return got


async def test_latency_is_exact(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(seed=1, conditions=LinkConditions(latency=0.25))
    a, b = await _pair(net)
    start = trio.current_time()
    await a.send(b"x", b.local_address)
    await b.receive()
    assert trio.current_time() - start == pytest.approx(0.25)


async def test_loss_and_duplication(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(seed=2, conditions=LinkConditions(loss=0.3, duplicate=0.2))
    a, b = await _pair(net)
    for i in range(2000):
        await a.send(i.to_bytes(2, "big"), b.local_address)
    got = await _drain(b, 1.0)
    survived = len(set(got))
    assert 0.66 * 2000 < survived < 0.74 * 2000
    dup_ratio = (len(got) - survived) / survived
    assert 0.15 < dup_ratio < 0.25


async def test_jitter_reorders(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(seed=3, conditions=LinkConditions(latency=0.001, jitter=0.05))
    a, b = await _pair(net)
    for i in range(100):
        await a.send(bytes([i]), b.local_address)
    got = await _drain(b, 1.0)
    assert sorted(got) == [bytes([i]) for i in range(100)]
    assert got != sorted(got)


async def test_same_seed_same_fate(autojump_clock: trio.testing.MockClock) -> None:
    fates = []
    for _ in range(2):
        net = VirtualNetwork(seed=4, conditions=LinkConditions(loss=0.5))
        a, b = await _pair(net)
        for i in range(200):
            await a.send(bytes([i]), b.local_address)
        fates.append(await _drain(b, 1.0))
    assert fates[0] == fates[1]


async def test_partition_drops_datagrams_and_stalls_streams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = VirtualNetwork(seed=5)
    a, b = await _pair(net)
    listener = await net.host("10.0.0.2").open_listener(("0.0.0.0", 7946))
    client = await net.host("10.0.0.1").open_stream(listener.local_address)
    server, _ = await listener.accept()
    net.partition(["10.0.0.1"], ["10.0.0.2"])
    await a.send(b"lost", b.local_address)
    await client.send_all(b"held")
    with trio.move_on_after(30):
        await server.receive_some()
        pytest.fail("bytes crossed a partition")
    assert await _drain(b, 1.0) == []
    with trio.move_on_after(10) as scope:
        await net.host("10.0.0.1").open_stream(listener.local_address)
    assert scope.cancelled_caught  # a connect blocks while partitioned
    net.heal()
    assert await server.receive_some() == b"held"  # TCP delivers once healed
    await a.send(b"ok", b.local_address)
    assert (await b.receive())[0] == b"ok"


async def test_one_way_block(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(seed=6)
    a, b = await _pair(net)
    net.block("10.0.0.1", "10.0.0.2")
    await a.send(b"x", b.local_address)
    await b.send(b"y", a.local_address)
    assert await _drain(b, 1.0) == []
    assert await _drain(a, 1.0) == [b"y"]
    net.unblock("10.0.0.1", "10.0.0.2")
    await a.send(b"z", b.local_address)
    assert await _drain(b, 1.0) == [b"z"]


async def test_per_link_conditions(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(seed=7)
    net.set_link("10.0.0.1", "10.0.0.2", LinkConditions(latency=2.0))
    a, b = await _pair(net)
    start = trio.current_time()
    await a.send(b"slow", b.local_address)
    await b.receive()
    assert trio.current_time() - start == pytest.approx(2.0)
    await b.send(b"fast", a.local_address)
    await a.receive()
    assert trio.current_time() - start == pytest.approx(2.001)
