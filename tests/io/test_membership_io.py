"""serve_membership through the trio layer: VirtualNetwork on the autojump clock, and real
sockets on loopback. trio orders tasks randomly, so these assert properties, not traces."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from p2pcluster import Config, EventKind, Membership, MemberStatus, serve_membership
from p2pcluster._proto.envelope import Keyring
from p2pcluster.testing import LinkConditions, VirtualNetwork

SECRET = bytes(range(32))
RING = Keyring.from_secrets([SECRET], "default")
LAN = Config.lan()


@dataclass
class Peer:
    ip: str
    membership: Membership
    scope: trio.CancelScope
    events: list


async def _run_peer(net: VirtualNetwork, ip: str, seeds: list[tuple[str, int]],
                    ring: Keyring, config: Config, *,
                    task_status: trio.TaskStatus[Peer] = trio.TASK_STATUS_IGNORED) -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            membership = await nursery.start(lambda task_status: serve_membership(
                config, ring, transport=net.host(ip), seeds=seeds, advertise=ip,
                task_status=task_status))
            peer = Peer(ip, membership, scope, [])
            channel = membership.subscribe()

            async def collect() -> None:
                async for event in channel:
                    peer.events.append(event)

            nursery.start_soon(collect)
            task_status.started(peer)


@asynccontextmanager
async def cluster(n: int, net: VirtualNetwork, config: Config = LAN
                  ) -> AsyncIterator[tuple[trio.Nursery, list[Peer]]]:
    async with trio.open_nursery() as nursery:
        peers = []
        for i in range(n):
            seeds = [("10.0.0.1", 7946)] if i else []
            peers.append(await nursery.start(_run_peer, net, f"10.0.0.{i + 1}", seeds, RING,
                                             config))
        yield nursery, peers
        nursery.cancel_scope.cancel()


def alive_names(peer: Peer) -> set[str]:
    return {m.host for m in peer.membership.members() if m.status == MemberStatus.ALIVE}


async def wait_for(predicate, timeout: float) -> float:  # type: ignore[no-untyped-def]
    start = trio.current_time()
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)
    return trio.current_time() - start


async def test_bootstrap_events_and_statistics(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(seed=1)
    async with cluster(5, net) as (_, peers):
        ips = {p.ip for p in peers}
        await wait_for(lambda: all(alive_names(p) == ips for p in peers), timeout=10)
        await wait_for(lambda: len({p.membership.checksum() for p in peers}) == 1, timeout=10)
        await trio.sleep(5)
        for peer in peers:
            joined = {e.member.host for e in peer.events if e.kind == EventKind.JOIN}
            assert joined == ips - {peer.ip}
            stats = peer.membership.statistics()
            assert stats.probes > 0 and stats.messages_sent > 0 and stats.bytes_received > 0
            assert stats.dropped == 0


async def test_crash_is_detected_and_reported(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(seed=2)
    async with cluster(5, net) as (_, peers):
        await wait_for(lambda: all(len(alive_names(p)) == 5 for p in peers), timeout=10)
        victim = peers[3]
        victim.scope.cancel()  # the process vanishes: no leave
        survivors = [p for p in peers if p is not victim]
        took = await wait_for(lambda: all(
            any(e.kind == EventKind.FAIL and e.member.host == victim.ip for e in p.events)
            for p in survivors), timeout=60)
        assert took < 20
        for peer in survivors:
            assert not any(e.kind == EventKind.FAIL and e.member.host != victim.ip
                           for e in peer.events)


async def test_graceful_leave_is_left_not_failed(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(seed=3)
    async with cluster(4, net) as (_, peers):
        await wait_for(lambda: all(len(alive_names(p)) == 4 for p in peers), timeout=10)
        leaver = peers[2]
        await leaver.membership.leave()
        leaver.scope.cancel()
        others = [p for p in peers if p is not leaver]
        await wait_for(lambda: all(any(m.host == leaver.ip and m.status == MemberStatus.LEFT
                                       for m in p.membership.members()) for p in others),
                       timeout=5)
        await trio.sleep(60)
        for peer in others:
            kinds = {e.kind for e in peer.events if e.member.host == leaver.ip}
            assert kinds in ({EventKind.JOIN, EventKind.LEAVE}, {EventKind.LEAVE})


async def test_loss_causes_no_false_failure(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(seed=4, conditions=LinkConditions(latency=0.001, loss=0.1))
    async with cluster(6, net) as (_, peers):
        await wait_for(lambda: all(len(alive_names(p)) == 6 for p in peers), timeout=30)
        await trio.sleep(600)
        assert [e for p in peers for e in p.events if e.kind == EventKind.FAIL] == []


async def test_asymmetric_link(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(seed=5)
    async with cluster(5, net) as (_, peers):
        await wait_for(lambda: all(len(alive_names(p)) == 5 for p in peers), timeout=10)
        net.block("10.0.0.2", "10.0.0.3")
        await trio.sleep(120)
        assert [e for p in peers for e in p.events if e.kind == EventKind.FAIL] == []
        assert peers[1].membership.statistics().indirect_probes > 0


async def test_a_peer_with_another_secret_never_appears(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = VirtualNetwork(seed=6)
    async with cluster(3, net) as (nursery, peers):
        other = Keyring.from_secrets([bytes(32)], "default")
        await nursery.start(_run_peer, net, "10.0.0.9", [("10.0.0.1", 7946)], other, LAN)
        await trio.sleep(30)
        for peer in peers:
            assert "10.0.0.9" not in {m.host for m in peer.membership.members()}
        assert peers[0].membership.wire_statistics().handshakes_failed > 0


async def test_statistics_and_metadata_update(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(seed=7)
    async with cluster(3, net) as (_, peers):
        await wait_for(lambda: all(len(alive_names(p)) == 3 for p in peers), timeout=10)
        peers[0].membership.set_meta(b"queue=5")
        await wait_for(lambda: all(
            any(m.host == "10.0.0.1" and m.meta == b"queue=5" for m in p.membership.members())
            for p in peers[1:]), timeout=5)
        assert any(e.kind == EventKind.UPDATE for e in peers[1].events)
        with pytest.raises(ValueError, match="512"):
            peers[0].membership.set_meta(b"x" * 513)


async def test_real_sockets_on_loopback() -> None:
    """Three peers on 127.0.0.1 with their own ports, over real UDP and TCP."""
    config = Config.local(port=0)
    async with trio.open_nursery() as nursery:
        first = await nursery.start(lambda task_status: serve_membership(
            config, RING, task_status=task_status))
        others = [await nursery.start(lambda task_status: serve_membership(
            config, RING, seeds=[first.local_address], task_status=task_status))
            for _ in range(2)]
        peers = [first, *others]
        assert len({p.local_address for p in peers}) == 3
        with trio.fail_after(10):
            while not all(len([m for m in p.members() if m.status == MemberStatus.ALIVE]) == 3
                          for p in peers):
                await trio.sleep(0.05)
        with trio.fail_after(5):
            await others[0].leave()
        with trio.fail_after(10):
            while not all(any(m.address == others[0].local_address
                              and m.status == MemberStatus.LEFT for m in p.members())
                          for p in (first, others[1])):
                await trio.sleep(0.05)
        assert first.statistics().bytes_sent > 0
        nursery.cancel_scope.cancel()
