"""The membership machine, driven by hand: outputs inspected, time passed explicitly."""

from __future__ import annotations

import random

import pytest

from p2pcluster import Config
from p2pcluster._proto import wire
from p2pcluster._proto.membership import EventKind, MemberStatus
from p2pcluster._proto.messages import (
    Ack,
    Alive,
    Dead,
    Gossip,
    Left,
    MemberState,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Suspect,
)
from p2pcluster._proto.outputs import Address, SendDatagram, StreamRequest
from p2pcluster._proto.swim import MembershipMachine
from p2pcluster._proto.sync import MAX_CANDIDATES

CONFIG = Config.lan()
A, S, D, L = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT


def machine(i: int = 0, *, config: Config = CONFIG, peers: int = 0) -> MembershipMachine:
    m = MembershipMachine(config, node_id=bytes([i]) * 16, name=f"n{i}", host=f"10.0.0.{i}",
                          port=7946, rng=random.Random(i), now=0.0)
    states = tuple(MemberState(bytes([p]) * 16, 0, f"n{p}", f"10.0.0.{p}", 7946, b"", 0)
                   for p in range(1, peers + 1) if p != i)
    if states:
        m.handle_request(0.0, ("10.0.0.1", 7946), PushPull(False, b"", states))
    m.take_outputs()
    m.take_events()
    m.broadcasts.discard(m.node_id)
    for p in range(1, peers + 1):
        m.broadcasts.discard(bytes([p]) * 16)
    return m


def node_at(src: tuple[str, int]) -> bytes:
    """The node id of the peer at ``src`` in these tests: peer i is 10.0.0.i."""
    return bytes([int(src[0].rsplit(".", 1)[1])]) * 16


def rx(m: MembershipMachine, now: float, src: tuple[str, int], msg: Message,
       sender: bytes | None = None) -> None:
    """``msg`` arrives at ``m`` from ``src``, sent by ``sender`` (default: the node there)."""
    m.receive(now, src, msg, sender or node_at(src))


def sent(m: MembershipMachine, kind: type) -> list[SendDatagram]:
    return [o for o in m.take_outputs() if isinstance(o, SendDatagram) and isinstance(o.msg, kind)]


def test_ping_is_acked_only_for_our_id() -> None:
    m = machine(1)
    rx(m, 0.0, ("10.0.0.9", 7946), Ping(seq=5, target=m.node_id))
    (out,) = sent(m, Ack)  # and a push-pull with this unknown sender
    assert out == SendDatagram(("10.0.0.9", 7946), Ack(seq=5, updates=out.msg.updates),
                               node_at(("10.0.0.9", 7946)))  # type: ignore[union-attr]
    rx(m, 0.0, ("10.0.0.9", 7946), Ping(seq=6, target=b"someone else"))
    assert m.take_outputs() == []  # no ack; and no second push-pull so soon


def run_to_probe(m: MembershipMachine) -> Ping:
    """Tick until the machine sends a probe; return it."""
    t = 0.0
    while t < 5:
        m.tick(t)
        pings = [o.msg for o in m.take_outputs() if isinstance(o.msg, Ping)]  # type: ignore[union-attr]
        if pings:
            return pings[0]  # type: ignore[return-value]
        t = m.next_deadline()  # type: ignore[assignment]
    raise AssertionError("no probe")


def test_probe_round_robin_visits_everyone() -> None:
    m = machine(0, peers=5)
    targets = []
    t = 0.0
    while len(targets) < 10:
        m.tick(t)
        for out in m.take_outputs():
            if isinstance(out.msg, Ping):
                targets.append(out.msg.target)
                rx(m, t, out.dst, Ack(out.msg.seq))  # type: ignore[arg-type]
        t = m.next_deadline()  # type: ignore[assignment]
    assert set(targets[:5]) == set(targets[5:]) == {bytes([p]) * 16 for p in range(1, 6)}


def test_failed_probe_goes_indirect_then_suspects() -> None:
    m = machine(0, peers=5)
    ping = run_to_probe(m)
    start = m.prober.probe.end_at - CONFIG.probe_interval  # type: ignore[union-attr]
    m.tick(start + CONFIG.probe_timeout)
    outs = m.take_outputs()
    reqs = [o for o in outs if isinstance(o, SendDatagram) and isinstance(o.msg, PingReq)]
    tcp = [o for o in outs if isinstance(o, StreamRequest)]
    assert len(reqs) == CONFIG.indirect_checks
    assert all(r.msg.target == ping.target and r.msg.seq == ping.seq for r in reqs)  # type: ignore[union-attr]
    assert ping.target not in {bytes([int(r.dst[0].split(".")[-1])]) * 16 for r in reqs}
    assert len(tcp) == 1 and tcp[0].msg == Ping(ping.seq, ping.target)
    rx(m, start + 0.3, reqs[0].dst, Nack(ping.seq))  # one helper answered
    m.tick(start + CONFIG.probe_interval)
    assert m.table.get(ping.target).status == S  # type: ignore[union-attr]
    assert m.statistics().suspicions == 1
    assert m.awareness.score == CONFIG.indirect_checks - 1  # two nacks missing


def test_late_direct_ack_within_the_period_counts() -> None:
    m = machine(0, peers=3)
    ping = run_to_probe(m)
    start = m.prober.probe.end_at - CONFIG.probe_interval  # type: ignore[union-attr]
    m.tick(start + CONFIG.probe_timeout)
    m.take_outputs()
    rx(m, start + 0.45, ("10.0.0.1", 7946), Ack(ping.seq))
    m.tick(start + CONFIG.probe_interval)
    assert m.table.get(ping.target).status == A  # type: ignore[union-attr]


def test_helper_relays_ack_or_nacks_at_80_percent() -> None:
    helper = machine(2, peers=3)
    rx(helper, 1.0, ("10.0.0.1", 7946), PingReq(seq=77, target=b"t" * 16, host="10.0.0.3",
                                                     port=7946))
    (ping,) = sent(helper, Ping)
    assert ping.dst == ("10.0.0.3", 7946) and ping.msg.target == b"t" * 16  # type: ignore[union-attr]
    nack_at = 1.0 + 0.8 * CONFIG.probe_timeout
    helper.tick(nack_at - 0.001)
    assert sent(helper, Nack) == []
    helper.tick(nack_at)
    (nack,) = sent(helper, Nack)
    assert nack == SendDatagram(("10.0.0.1", 7946), Nack(77), node_at(("10.0.0.1", 7946)))
    rx(helper, 1.3, ("10.0.0.3", 7946), Ack(ping.msg.seq),  # type: ignore[union-attr]
       sender=b"x" * 16)
    assert sent(helper, Ack) == []  # an ack from another node than the target is no proof
    rx(helper, 1.3, ("10.0.0.3", 7946), Ack(ping.msg.seq), sender=b"t" * 16)  # type: ignore[union-attr]
    (ack,) = sent(helper, Ack)
    assert ack.dst == ("10.0.0.1", 7946) and ack.msg.seq == 77  # type: ignore[union-attr]


def test_buddy_system_puts_the_suspicion_first() -> None:
    m = machine(0, peers=2)
    for p in (1, 2):
        rx(m, 0.0, ("10.0.0.5", 7946), Gossip((Suspect(bytes([p]) * 16, 0, b"z" * 16),)))
    m.take_outputs()
    ping = run_to_probe(m)
    assert ping.updates[0] == Suspect(ping.target, 0, b"z" * 16)


def test_refutation() -> None:
    m = machine(1, peers=3)
    rx(m, 0.0, ("10.0.0.2", 7946), Ping(1, m.node_id, (Suspect(m.node_id, 0, b"x"),)))
    (ack,) = m.take_outputs()
    assert m.incarnation == 1
    assert ack.msg.updates[0] == Alive(m.node_id, 1, "n1", "10.0.0.1", 7946, b"")  # type: ignore[union-attr]
    assert m.statistics().refutations == 1 and m.awareness.score == 1
    rx(m, 0.0, ("10.0.0.2", 7946), Gossip((Suspect(m.node_id, 0, b"y"),)))
    assert m.incarnation == 1  # a stale suspicion needs no new refutation...
    (correction,) = m.take_outputs()  # ...but its sender missed ours: tell it directly
    assert correction == SendDatagram(("10.0.0.2", 7946), Gossip(
        (Alive(m.node_id, 1, "n1", "10.0.0.1", 7946, b""),)), node_at(("10.0.0.2", 7946)))
    rx(m, 0.0, ("10.0.0.2", 7946), Gossip((Dead(m.node_id, 0, b"y"),)))
    assert m.incarnation == 2  # dead overrides any incarnation, so it is always refuted


def test_a_stale_suspicion_is_corrected_at_its_sender() -> None:
    m = machine(0, peers=3)
    x = bytes([2]) * 16
    rx(m, 0.0, ("10.0.0.2", 7946), Gossip((Alive(x, 5, "n2", "10.0.0.2", 7946, b""),)))
    m.take_outputs()
    rx(m, 0.1, ("10.0.0.3", 7946), Gossip((Suspect(x, 4, b"z"),)))
    assert [o for o in m.take_outputs() if o.dst == ("10.0.0.3", 7946)] == []  # wave ongoing
    rx(m, 2.0, ("10.0.0.3", 7946), Gossip((Suspect(x, 4, b"z"),)))
    assert m.table.get(x).status == A  # type: ignore[union-attr]
    (out,) = m.take_outputs()
    assert out.dst == ("10.0.0.3", 7946) and out.msg.updates[0].incarnation == 5  # type: ignore[union-attr]
    assert m.statistics().corrections == 1


def test_suspicion_expires_into_death_and_confirmations_shorten_it() -> None:
    m = machine(0, peers=9)
    x = bytes([5]) * 16
    rx(m, 0.0, ("10.0.0.1", 7946), Gossip((Suspect(x, 0, b"a" * 16),)))
    suspicion = m.table.get(x).suspicion  # type: ignore[union-attr]
    assert suspicion.timeout() == pytest.approx(12.0)  # Max at N=10: 6 * 4 * 1 * 0.5
    for by in (b"b" * 16, b"c" * 16):
        rx(m, 0.1, ("10.0.0.1", 7946), Gossip((Suspect(x, 0, by),)))
    assert suspicion.timeout() == pytest.approx(2.0)  # Min after k = 2 confirmations
    m.tick(1.99)
    assert m.table.get(x).status == S  # type: ignore[union-attr]
    m.tick(2.0)
    assert m.table.get(x).status == D  # type: ignore[union-attr]
    assert [e.kind for e in m.take_events()] == [EventKind.FAIL]
    assert m.statistics().deaths_declared == 1


def test_piggyback_fills_but_never_exceeds_a_datagram() -> None:
    m = machine(0, peers=3)
    update_size = len(wire.encode(Gossip((Alive(b"x" * 16, 1, "n" * 20, "10.1.1.1", 7946,
                                                   b"m" * 30),)))) - 4
    for i in range(200):
        m.broadcasts.add(Alive(bytes([i]) * 16, 1, "n" * 20, "10.1.1.1", 7946, b"m" * 30))
    rx(m, 0.0, ("10.0.0.2", 7946), Ping(1, m.node_id))
    (ack,) = m.take_outputs()
    size = len(wire.encode(ack.msg)) + 41
    assert CONFIG.max_datagram_size - update_size < size <= CONFIG.max_datagram_size


def test_leave_tells_members_and_stops_probing() -> None:
    m = machine(0, peers=4)
    m.leave(1.0)
    gossip = sent(m, Gossip)
    assert len(gossip) == 4
    assert all(g.msg.updates[0] == Left(m.node_id, 0) for g in gossip)  # type: ignore[union-attr]
    m.tick(10.0)
    assert not [o for o in m.take_outputs() if isinstance(o.msg, Ping)]  # type: ignore[union-attr]
    assert m.me.status == L
    rx(m, 10.0, ("10.0.0.2", 7946), Gossip((Suspect(m.node_id, 0, b"x"),)))
    assert m.incarnation == 0  # a leaving peer does not refute, it repeats that it left


def test_join_push_pull_and_seed_retry() -> None:
    m = machine(7)
    m.join(0.0, [("10.0.0.1", 7946), ("10.0.0.7", 7946)])
    (req,) = m.take_outputs()  # our own address is skipped
    assert isinstance(req, StreamRequest) and req.msg.join  # type: ignore[union-attr]
    m.handle_reply(0.1, req.token, None)
    assert m.statistics().push_pulls_failed == 1
    retries = []
    t = 0.1
    while t <= 2.1:
        m.tick(t)
        retries += [o for o in m.take_outputs() if isinstance(o, StreamRequest)]
        t = m.next_deadline()  # type: ignore[assignment]
    assert [r.msg.join for r in retries] == [True]  # type: ignore[union-attr]


def retried(m: MembershipMachine, start: float, until: float) -> list[Address]:
    """The addresses the join retries ask between ``start`` and ``until``."""
    asked: list[Address] = []
    t = start
    while t <= until:
        m.tick(t)
        asked += [o.dst for o in m.take_outputs() if isinstance(o, StreamRequest)]
        t = m.next_deadline()  # type: ignore[assignment]
    return asked


def test_introduced_candidates_add_to_the_seeds_and_never_replace_them() -> None:
    # Anyone on the LAN can publish an mDNS record: it must not cut us off the seeds.
    seed = ("10.0.0.1", 7946)
    m = machine(7)
    m.join(0.0, [seed])
    m.take_outputs()
    m.introduce(0.5, [("6.6.6.6", 7946)])
    (req,) = m.take_outputs()  # the candidate is tried at once
    assert req.dst == ("6.6.6.6", 7946) and req.msg.join  # type: ignore[union-attr]
    asked = retried(m, 0.5, 2.1)
    assert asked == [seed, ("6.6.6.6", 7946)]
    fakes = [(f"6.6.{i // 256}.{i % 256}", 7946) for i in range(100)]
    for i, fake in enumerate(fakes):
        m.introduce(2.2 + i / 1000, [fake])
    m.take_outputs()
    asked = retried(m, 2.3, 4.4)
    assert asked == [seed, *fakes[-MAX_CANDIDATES:]]  # bounded; the seed stays first


def test_a_flood_of_candidates_costs_at_most_max_candidates_exchanges_at_once() -> None:
    m = machine(7, peers=3)  # we know peers: no retries, only the introductions
    fakes = [(f"6.6.{i // 256}.{i % 256}", 7946) for i in range(200)]
    for fake in fakes:
        m.introduce(0.0, [fake])
    asked = [o for o in m.take_outputs() if isinstance(o, StreamRequest)]
    assert [r.dst for r in asked] == fakes[:MAX_CANDIDATES]
    for request in asked[:3]:  # three of them fail: room for three more
        m.handle_reply(0.5, request.token, None)
    m.introduce(1.0, fakes[-5:])
    assert [o.dst for o in m.take_outputs() if isinstance(o, StreamRequest)] == fakes[-3:]


def test_push_pull_merge_suspects_what_the_remote_holds_dead() -> None:
    m = machine(0, peers=3)
    x = bytes([2]) * 16
    reply = m.handle_request(0.0, ("10.0.0.1", 7946),
                             PushPull(False, b"r" * 16, (MemberState(x, 0, "n2", "10.0.0.2",
                                                                     7946, b"", 2),)))
    assert isinstance(reply, PushPull) and len(reply.members) == 4
    assert m.table.get(x).status == S  # type: ignore[union-attr]


def test_a_relayed_suspicion_is_not_a_confirmation() -> None:
    m = machine(0, peers=9)
    x = bytes([5]) * 16
    rx(m, 0.0, ("10.0.0.1", 7946), Gossip((Suspect(x, 0, b"a" * 16),)))
    for sender in (b"p" * 16, b"q" * 16):
        m.handle_request(0.1, ("10.0.0.2", 7946), PushPull(False, sender, (
            MemberState(x, 0, "n5", "10.0.0.5", 7946, b"", 1),)))
    assert m.table.get(x).suspicion.confirmations == 0  # type: ignore[union-attr]


def test_reconnect_push_pull_goes_to_a_dead_member() -> None:
    m = machine(0, peers=2)
    rx(m, 0.0, ("10.0.0.1", 7946), Gossip((Dead(bytes([2]) * 16, 0, b"x"),)))
    m.take_outputs()
    outs = []
    t = 0.0
    while t <= CONFIG.reconnect_interval:
        m.tick(t)
        for out in m.take_outputs():
            outs.append(out)
            if isinstance(out.msg, Ping):  # peer 1 is healthy
                rx(m, t, out.dst, Ack(out.msg.seq))
        t = m.next_deadline()  # type: ignore[assignment]
    assert m.table.get(bytes([1]) * 16).status == A  # type: ignore[union-attr]
    pulls = [o for o in outs if isinstance(o, StreamRequest) and isinstance(o.msg, PushPull)]
    assert [p.dst for p in pulls] == [("10.0.0.2", 7946)]


def test_ack_to_a_pinger_we_hold_dead_tells_it() -> None:
    m = machine(0, peers=2)
    rx(m, 0.0, ("10.0.0.1", 7946), Gossip((Dead(bytes([2]) * 16, 3, b"x"),)))
    m.take_outputs()
    m.broadcasts = type(m.broadcasts)(4)
    rx(m, 0.0, ("10.0.0.2", 7946), Ping(9, m.node_id))
    (ack,) = m.take_outputs()
    assert ack.msg.updates == (Dead(bytes([2]) * 16, 3, bytes([2]) * 16),)  # type: ignore[union-attr]


def test_set_meta_raises_incarnation_and_gossips() -> None:
    m = machine(0, peers=1)
    m.set_meta(0.0, b"new")
    assert m.incarnation == 1
    m.tick(m.next_deadline())  # type: ignore[arg-type]
    updates = [u for o in m.take_outputs() for u in getattr(o.msg, "updates", ())]
    assert Alive(m.node_id, 1, "n0", "10.0.0.0", 7946, b"new") in updates


def test_a_new_address_is_gossiped_and_taken_by_the_others() -> None:
    m = machine(0, peers=1)
    m.set_host(0.0, "10.0.1.50")
    assert m.incarnation == 1 and m.me.host == "10.0.1.50"
    m.tick(m.next_deadline())  # type: ignore[arg-type]
    updates = [u for o in m.take_outputs() for u in getattr(o.msg, "updates", ())]
    moved = Alive(m.node_id, 1, "n0", "10.0.1.50", 7946, b"")
    assert moved in updates
    m.set_host(1.0, "10.0.1.50")  # no change, no news
    assert m.incarnation == 1

    other = machine(1, peers=1)
    other.handle_request(1.0, ("10.0.0.0", 7946), PushPull(False, b"", (
        MemberState(m.node_id, 0, "n0", "10.0.0.0", 7946, b"", 0),)))
    assert [e.kind for e in other.take_events()] == [EventKind.JOIN]
    rx(other, 2.0, ("10.0.1.50", 7946), Gossip((moved,)), sender=m.node_id)
    entry = other.table.get(m.node_id)
    assert entry is not None and (entry.host, entry.status) == ("10.0.1.50", A)
    assert [e.kind for e in other.take_events()] == [EventKind.UPDATE]
    assert other.table.at_address(("10.0.1.50", 7946)) is entry
    assert other.table.at_address(("10.0.0.0", 7946)) is None


def test_local_health_stretches_the_period() -> None:
    m = machine(0, peers=3)
    m.awareness.apply(3)
    run_to_probe(m)
    probe = m.prober.probe
    assert probe is not None
    assert probe.end_at - (probe.timeout_at - 4 * CONFIG.probe_timeout) == pytest.approx(
        4 * CONFIG.probe_interval)


@pytest.mark.parametrize(("n", "fanout"), [(2, 3), (10, 6), (100, 9), (1000, 12)])
def test_gossip_fanout_spends_most_of_the_budget_in_the_first_round(n: int,
                                                                   fanout: int) -> None:
    m = machine(0)
    states = tuple(MemberState(i.to_bytes(16, "big"), 0, f"n{i}", f"10.1.{i // 256}.{i % 256}",
                               7946, b"", 0) for i in range(1, n))
    m.handle_request(0.0, ("10.0.0.1", 7946), PushPull(False, b"", states))
    assert m.table.live_count == n
    assert m.gossip_fanout() == fanout


def test_fresh_news_on_an_idle_peer_is_gossiped_at_once_then_rate_limited() -> None:
    m = machine(0, peers=9)
    for t in (1.0, 2.0, 3.0):  # a quiet peer ticks (probes) without spending gossip rounds
        m.tick(t)
        m.take_outputs()
    x = bytes([5]) * 16
    rx(m, 3.5, ("10.0.0.1", 7946), Ack(0, (Suspect(x, 0, b"a" * 16),)))
    assert m.next_deadline() <= 3.5  # type: ignore[operator]
    m.tick(3.5)
    first = sent(m, Gossip)
    assert len(first) == m.gossip_fanout()
    rx(m, 3.6, ("10.0.0.1", 7946), Ack(0, (Suspect(bytes([6]) * 16, 0, b"a" * 16),)))
    m.tick(3.6)
    assert sent(m, Gossip) == []  # the next round waits for gossip_interval
    m.tick(3.5 + CONFIG.gossip_interval)
    assert sent(m, Gossip)


def test_probe_numbers_are_random_64_bit_and_an_ack_must_come_from_the_target() -> None:
    """An on-path replay of an old Ack (or one from another node) cannot keep a crashed
    peer alive: probe numbers are fresh random 64-bit values, and the Ack's authenticated
    sender must be the target (or a helper relaying for it)."""
    m = machine(0, peers=3)
    ping = run_to_probe(m)
    start = m.prober.probe.end_at - CONFIG.probe_interval  # type: ignore[union-attr]
    target_addr = ("10.0.0." + str(ping.target[0]), 7946)
    rx(m, start + 0.1, target_addr, Ack(ping.seq), sender=b"\x09" * 16)  # not the target
    assert m.prober.probe is not None
    rx(m, start + 0.1, target_addr, Ack(ping.seq + 1))  # the target, but not this probe
    assert m.prober.probe is not None
    rx(m, start + 0.2, target_addr, Ack(ping.seq))
    assert m.prober.probe is None
    seqs = set()
    t = start
    for _ in range(20):
        m.tick(t)
        for out in m.take_outputs():
            if isinstance(out.msg, Ping):
                seqs.add(out.msg.seq)
                rx(m, t, out.dst, Ack(out.msg.seq))
        t = m.next_deadline()  # type: ignore[assignment]
    assert len(seqs) >= 5 and max(seqs) > 2**40


def test_a_datagram_from_an_unknown_peer_starts_an_exchange_with_it() -> None:
    # A peer whose every Alive was lost would stay unknown here until a periodic push-pull
    # (30 s at the LAN preset); its first datagram is proof enough to ask it for its table.
    m = machine(1, peers=3)
    stranger = ("10.0.0.9", 7946)
    rx(m, 1.0, stranger, Ping(seq=5, target=b"z" * 16))
    (req,) = [o for o in m.take_outputs() if isinstance(o, StreamRequest)]
    assert req.dst == stranger and isinstance(req.msg, PushPull)
    rx(m, 2.0, stranger, Ping(seq=6, target=b"z" * 16))
    assert not [o for o in m.take_outputs() if isinstance(o, StreamRequest)]  # once per 5 s
    rx(m, 6.5, stranger, Ping(seq=7, target=b"z" * 16))
    assert [o.dst for o in m.take_outputs() if isinstance(o, StreamRequest)] == [stranger]
    rx(m, 7.0, ("10.0.0.2", 7946), Ping(seq=8, target=b"z" * 16))  # a member we know
    assert not [o for o in m.take_outputs() if isinstance(o, StreamRequest)]
    assert m.statistics().stranger_push_pulls == 2


def test_a_suspicion_unrefuted_for_half_its_minimum_pings_the_suspect_itself() -> None:
    # Soak seed 3: a suspicion heard just before a partition, with the suspect on our side and
    # nobody telling it, expired 18 s later into a false death. Our own ping carries it.
    m = machine(0, peers=9)
    x = bytes([5]) * 16
    rx(m, 0.0, ("10.0.0.1", 7946), Gossip((Suspect(x, 3, b"a" * 16),)))
    m.take_outputs()
    minimum = m.table.get(x).suspicion.minimum  # type: ignore[union-attr]
    m.tick(minimum / 2 - 0.01)
    assert not [o for o in sent(m, Ping) if o.dst == ("10.0.0.5", 7946)]
    m.tick(minimum / 2)
    (ping,) = [o for o in sent(m, Ping) if o.dst == ("10.0.0.5", 7946)]
    assert ping.msg.target == x and ping.msg.updates[0] == Suspect(x, 3, b"a" * 16)  # type: ignore[union-attr]
    # The suspect's Ack brings its refutation: the suspicion ends, and no second ping goes.
    rx(m, minimum / 2 + 0.01, ("10.0.0.5", 7946),
       Ack(ping.msg.seq, (Alive(x, 4, "n5", "10.0.0.5", 7946, b""),)))  # type: ignore[union-attr]
    assert m.table.get(x).status == A  # type: ignore[union-attr]
    assert m.statistics().suspect_pings == 1


def test_a_refuted_suspicion_sends_no_ping_of_its_own() -> None:
    m = machine(0, peers=9)
    x = bytes([5]) * 16
    rx(m, 0.0, ("10.0.0.1", 7946), Gossip((Suspect(x, 3, b"a" * 16),)))
    rx(m, 0.1, ("10.0.0.1", 7946), Gossip((Alive(x, 4, "n5", "10.0.0.5", 7946, b""),)))
    m.take_outputs()
    m.tick(10.0)
    assert m.statistics().suspect_pings == 0
