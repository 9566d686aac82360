"""SecureWire over both transports: sealed datagrams, handshaken streams, and every drop."""

from __future__ import annotations

import errno
import logging
import os
import random
import time
from dataclasses import replace

import pytest
import trio
import trio.testing

from p2pcluster import Config, HandshakeError, ProtocolError
from p2pcluster._cpu import cpu_has_aes
from p2pcluster._proto.envelope import Keyring
from p2pcluster._proto.handshake import HELLO_SIZE, ClientHandshake
from p2pcluster._proto.messages import Ack, Nack, Ping, PushPull
from p2pcluster._rejections import Rejections
from p2pcluster._secure import SecureStream, SecureWire
from p2pcluster.testing import VirtualNetwork

from .conftest import Hosts

SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))
CONFIG = Config.local(handshake_timeout=2.0)


def wire(transport, secret: bytes = SECRET, cluster: str = "default", **kw) -> SecureWire:  # type: ignore[no-untyped-def]
    return SecureWire(transport, Keyring.from_secrets([secret], cluster), CONFIG,
                      node_id=os.urandom(16), **kw)


async def test_sealed_datagrams_round_trip(hosts: Hosts) -> None:
    wa, wb = wire(hosts.a), wire(hosts.b)
    a = await wa.open_datagram((hosts.a_ip, 0))
    b = await wb.open_datagram((hosts.b_ip, 0))
    with trio.fail_after(5):
        await a.send(Ping(seq=1, target=b"t"), b.local_address, wb.node_id)
        assert await b.receive() == (Ping(seq=1, target=b"t"), a.local_address, wa.node_id)
    sa, sb = wa.statistics(), wb.statistics()
    assert sa.datagrams_sent == 1 and sb.datagrams_received == 1
    assert sa.datagram_bytes_sent == sb.datagram_bytes_received > 77


async def _expect_drop_then_valid(receiver, sender, raw: bytes, hosts: Hosts) -> None:  # type: ignore[no-untyped-def]
    """Inject ``raw``, then a valid message: receive() returns only the valid one."""
    await sender.socket.send(raw, receiver.local_address)
    await sender.send(Nack(seq=99), receiver.local_address, receiver.wire.node_id)
    with trio.fail_after(5):
        msg, *_ = await receiver.receive()
    assert msg == Nack(seq=99)


@pytest.mark.parametrize(("client", "server", "aes"), [
    ("aes-256-gcm", "auto", None), ("aes-256-gcm", "aes-256-gcm", True),
    ("chacha20-poly1305", "aes-256-gcm", False), ("aes-256-gcm", "chacha20-poly1305", False)])
async def test_streams_use_aes_gcm_when_both_peers_offer_it(
        hosts: Hosts, client: str, server: str, aes: bool | None) -> None:
    """``stream_cipher`` decides the offer; "auto" offers AES-256-GCM on a CPU with AES
    instructions. Messages travel either way."""
    wa = SecureWire(hosts.a, Keyring.from_secrets([SECRET], "default"),
                    replace(CONFIG, stream_cipher=client), node_id=os.urandom(16))
    wb = SecureWire(hosts.b, Keyring.from_secrets([SECRET], "default"),
                    replace(CONFIG, stream_cipher=server), node_id=os.urandom(16))
    listener = await hosts.b.open_listener((hosts.b_ip, 0))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.serve, listener, _echo)
            async with await wa.connect(listener.local_address) as stream:
                await stream.send(Ping(seq=1, target=b"x"))
                assert await stream.receive() == Ping(seq=1, target=b"x")
            nursery.cancel_scope.cancel()
    expected = cpu_has_aes() if aes is None else aes
    assert wa.statistics().streams_aes_gcm == wb.statistics().streams_aes_gcm == expected


@pytest.mark.parametrize(("secret", "cluster"), [(OTHER, "default"), (SECRET, "lab")])
async def test_wrong_key_or_cluster_is_dropped_and_counted(
    hosts: Hosts, secret: bytes, cluster: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "p2pcluster.wire")
    wa, wb = wire(hosts.a, secret, cluster), wire(hosts.b)
    a = await wa.open_datagram((hosts.a_ip, 0))
    b = await wb.open_datagram((hosts.b_ip, 0))
    good = await wire(hosts.a).open_datagram((hosts.a_ip, 0))
    await _expect_drop_then_valid(b, good, wa.seal(Ack(seq=1), wb.node_id), hosts)
    assert wb.statistics().dropped_auth == 1
    assert wb.statistics().datagrams_received == 1
    assert "dropped datagram" in caplog.text
    assert wb.take_rejected() == Rejections({hosts.a_ip: 1})
    assert not wb.take_rejected()
    for s in (a, b, good):
        s.close()


async def test_replayed_datagram_is_dropped(hosts: Hosts) -> None:
    wa, wb = wire(hosts.a), wire(hosts.b)
    a = await wa.open_datagram((hosts.a_ip, 0))
    b = await wb.open_datagram((hosts.b_ip, 0))
    captured = wa.seal(Ack(seq=5), wb.node_id)
    await a.socket.send(captured, b.local_address)
    with trio.fail_after(5):
        assert (await b.receive())[0] == Ack(seq=5)
    await _expect_drop_then_valid(b, a, captured, hosts)
    assert wb.statistics().dropped_replay == 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty", "oversize"])
async def test_damaged_datagrams_are_dropped(hosts: Hosts, damage: str) -> None:
    wa, wb = wire(hosts.a), wire(hosts.b)
    a = await wa.open_datagram((hosts.a_ip, 0))
    b = await wb.open_datagram((hosts.b_ip, 0))
    data = bytearray(wa.seal(Ping(seq=3, target=b"abc"), wb.node_id))
    raw = {
        "flip": bytes(data[:30]) + bytes([data[30] ^ 4]) + bytes(data[31:]),
        "truncate": bytes(data[:-3]),
        "garbage": random.Random(0).randbytes(200),
        "empty": b"",
        "oversize": b"\x01" * 1500,
    }[damage]
    await _expect_drop_then_valid(b, a, raw, hosts)
    stats = wb.statistics()
    assert stats.dropped_auth + stats.dropped_oversize == 1


async def test_authentic_but_undecodable_is_dropped_as_malformed(hosts: Hosts) -> None:
    wa, wb = wire(hosts.a), wire(hosts.b)
    a = await wa.open_datagram((hosts.a_ip, 0))
    b = await wb.open_datagram((hosts.b_ip, 0))
    raw = wa._sealer.seal(b"\x83\x01\x18\xff\x00", time.time(), wb.node_id)  # type code 255
    await _expect_drop_then_valid(b, a, raw, hosts)
    assert wb.statistics().dropped_malformed == 1


async def _echo(stream: SecureStream) -> None:
    while (msg := await stream.receive()) is not None:
        await stream.send(msg)


async def test_streams_handshake_and_carry_messages(hosts: Hosts) -> None:
    wa, wb = wire(hosts.a), wire(hosts.b)
    listener = await hosts.b.open_listener((hosts.b_ip, 0))
    big = PushPull(join=True, sender=b"s", members=())
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.serve, listener, _echo)
            async with await wa.connect(listener.local_address) as stream:
                for msg in (Ping(seq=1, target=b"x"), big, Nack(seq=2)):
                    await stream.send(msg)
                    assert await stream.receive() == msg
            nursery.cancel_scope.cancel()
    assert wa.statistics().streams_opened == 1
    assert wb.statistics().streams_accepted == 1
    assert wb.statistics().handshakes_failed == 0


async def test_frames_already_received_still_give_other_tasks_a_turn(hosts: Hosts) -> None:
    """A stream reads its socket directly and waits only when no bytes have arrived, so it
    takes a turn of the scheduler once per frame itself: 16 frames already waiting in the
    socket are opened with the receiving side's other tasks running in between."""
    wa, wb = wire(hosts.a), wire(hosts.b)
    listener = await hosts.b.open_listener((hosts.b_ip, 0))
    frames = [bytes([i]) * 4096 for i in range(16)]  # 64 KiB: the socket holds them all
    sent, ticks, during, got = trio.Event(), 0, [], []

    async def receive(stream: SecureStream) -> None:
        await sent.wait()
        await trio.sleep(0.2)  # the last bytes are across
        for _ in frames:
            got.append(await stream.receive_payload())
            during.append(ticks)

    async def tick() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0)
            ticks += 1

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.serve, listener, receive)
            async with await wa.connect(listener.local_address) as stream:
                for frame in frames:
                    await stream.send_payload(frame)
                sent.set()
                nursery.start_soon(tick)
                while len(got) < len(frames):
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert got == frames
    assert during[-1] - during[0] >= len(frames) // 2  # about one turn per frame


@pytest.mark.parametrize(("secret", "cluster"), [(OTHER, "default"), (SECRET, "lab")])
async def test_handshake_with_another_secret_fails_cleanly_on_both_sides(
    hosts: Hosts, secret: bytes, cluster: str
) -> None:
    wa, wb = wire(hosts.a, secret, cluster), wire(hosts.b)
    listener = await hosts.b.open_listener((hosts.b_ip, 0))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.serve, listener, _echo)
            with pytest.raises(HandshakeError, match="secret"):
                await wa.connect(listener.local_address)
            assert wa.statistics().handshakes_failed == 1
            while wb.statistics().handshakes_failed == 0:
                await trio.sleep(0.01)
            # The server goes on serving peers that hold the secret.
            async with await wire(hosts.a).connect(listener.local_address) as good:
                await good.send(Nack(seq=1))
                assert await good.receive() == Nack(seq=1)
            nursery.cancel_scope.cancel()


async def _raw_client(hosts: Hosts, address):  # type: ignore[no-untyped-def]
    """A client that does the handshake by hand, so a test can send damaged frames."""
    stream = await hosts.a.open_stream(address)
    client = ClientHandshake(Keyring.from_secrets([SECRET], "default"),
                             random.Random(1).randbytes, node_id=b"r" * 16,
                             max_frame=CONFIG.max_frame_size)
    await stream.send_all(client.hello())
    reply = b""
    while len(reply) < HELLO_SIZE:
        reply += await stream.receive_some()
    session, proof = client.receive(reply)
    await stream.send_all(proof)
    return stream, session


@pytest.mark.parametrize("damage", ["flip", "truncate", "undecodable"])
async def test_damaged_frames_end_the_stream_not_the_server(hosts: Hosts, damage: str) -> None:
    wb = wire(hosts.b)
    listener = await hosts.b.open_listener((hosts.b_ip, 0))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.serve, listener, _echo)
            stream, session = await _raw_client(hosts, listener.local_address)
            frame = bytearray(session.seal(b"\x83\x01\x04\x05"))  # a valid Nack(5)
            if damage == "flip":
                frame[7] ^= 1
            elif damage == "truncate":
                del frame[-5:]
            else:
                frame = bytearray(session.seal(b"\x83\x01\x18\xff\x00"))
            await stream.send_all(bytes(frame))
            await stream.aclose()
            while wb.statistics().frames_rejected == 0:
                await trio.sleep(0.01)
            async with await wire(hosts.a).connect(listener.local_address) as good:
                await good.send(Nack(seq=1))
                assert await good.receive() == Nack(seq=1)
            nursery.cancel_scope.cancel()


async def test_client_sees_tampering_as_protocol_error(hosts: Hosts) -> None:
    wb = wire(hosts.b)
    listener = await hosts.b.open_listener((hosts.b_ip, 0))

    async def corrupt(stream: SecureStream) -> None:
        frame = bytearray(stream.session.seal(b"\x83\x01\x04\x05"))
        frame[-1] ^= 1
        await stream.stream.send_all(bytes(frame))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.serve, listener, corrupt)
            wa = wire(hosts.a)
            async with await wa.connect(listener.local_address) as stream:
                with pytest.raises(ProtocolError):
                    await stream.receive()
            assert wa.statistics().frames_rejected == 1
            nursery.cancel_scope.cancel()


async def test_handshake_timeout(autojump_clock: trio.testing.MockClock) -> None:
    """A listener that accepts but never answers: connect gives up after the timeout."""
    net = VirtualNetwork(seed=1)
    listener = await net.host("10.0.0.2").open_listener(("0.0.0.0", 7946))
    wa = wire(net.host("10.0.0.1"))
    start = trio.current_time()
    with pytest.raises(HandshakeError, match="within"):
        await wa.connect(listener.local_address)
    assert trio.current_time() - start == pytest.approx(CONFIG.handshake_timeout)


async def test_key_rotation_live(hosts: Hosts) -> None:
    old = Keyring.from_secrets([SECRET], "default")
    both = Keyring.from_secrets([OTHER, SECRET], "default")
    wa = SecureWire(hosts.a, old, CONFIG, node_id=b"a" * 16)
    wb = SecureWire(hosts.b, old, CONFIG, node_id=b"b" * 16)
    a = await wa.open_datagram((hosts.a_ip, 0))
    b = await wb.open_datagram((hosts.b_ip, 0))
    wb.set_keyring(both)  # b promotes the new key first; it still reads the old
    with trio.fail_after(5):
        await a.send(Nack(seq=1), b.local_address, wb.node_id)
        assert (await b.receive())[0] == Nack(seq=1)
        # b has heard a show only the old key: it seals toward a with the old one.
        await b.send(Nack(seq=2), a.local_address, wa.node_id)
        assert (await a.receive())[0] == Nack(seq=2)
        assert wb.keys_held_by(wa.node_id) == {old.primary.key_id}
        wa.set_keyring(both)
        await a.send(Nack(seq=3), b.local_address, wb.node_id)
        assert (await b.receive())[0] == Nack(seq=3)
        assert wb.keys_held_by(wa.node_id) == {both.primary.key_id}  # a sealed with the new
        # Both promoted: b now seals with the new key, and the old can be revoked.
        new_only = Keyring.from_secrets([OTHER], "default")
        wa.set_keyring(new_only)
        await b.send(Nack(seq=4), a.local_address, wa.node_id)
        assert (await a.receive())[0] == Nack(seq=4)
    assert wa.statistics().dropped_auth == 0 and wb.statistics().dropped_auth == 0


async def test_a_revoked_key_is_refused_at_once(hosts: Hosts) -> None:
    both = Keyring.from_secrets([SECRET, OTHER], "default")
    wa = wire(hosts.a, OTHER)  # a seals with what b is about to revoke
    wb = SecureWire(hosts.b, both, CONFIG, node_id=os.urandom(16))
    a = await wa.open_datagram((hosts.a_ip, 0))
    b = await wb.open_datagram((hosts.b_ip, 0))
    good = await wire(hosts.a).open_datagram((hosts.a_ip, 0))
    with trio.fail_after(5):
        await a.send(Nack(seq=1), b.local_address, wb.node_id)
        assert (await b.receive())[0] == Nack(seq=1)
    wb.set_keyring(Keyring.from_secrets([SECRET], "default"))
    await _expect_drop_then_valid(b, good, wa.seal(Nack(seq=2), wb.node_id), hosts)
    assert wb.statistics().dropped_auth == 1


async def test_a_stream_under_a_revoked_key_ends(hosts: Hosts) -> None:
    both = Keyring.from_secrets([SECRET, OTHER], "default")
    wb = SecureWire(hosts.b, both, CONFIG, node_id=os.urandom(16))
    listener = await hosts.b.open_listener((hosts.b_ip, 0))
    ended = trio.Event()

    async def hold(stream: SecureStream) -> None:
        try:
            await stream.receive()
        finally:
            ended.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.serve, listener, hold)
            async with await wire(hosts.a, OTHER).connect(listener.local_address) as stream:
                await trio.sleep(0.1)
                wb.set_keyring(Keyring.from_secrets([SECRET], "default"))
                await ended.wait()
                assert await stream.receive() is None  # the server shut it
            assert wb.statistics().streams_revoked == 1
            nursery.cancel_scope.cancel()


async def test_a_client_retries_with_the_key_the_server_holds(hosts: Hosts) -> None:
    """a promoted the new key before b added it: a's first hello (new key) is closed
    unanswered, and a tries again with the old key, which b holds."""
    wa = SecureWire(hosts.a, Keyring.from_secrets([OTHER, SECRET], "default"), CONFIG,
                    node_id=os.urandom(16))
    wb = wire(hosts.b, SECRET)
    listener = await hosts.b.open_listener((hosts.b_ip, 0))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.serve, listener, _echo)
            async with await wa.connect(listener.local_address) as stream:
                await stream.send(Nack(seq=1))
                assert await stream.receive() == Nack(seq=1)
                assert stream.peer == wb.node_id
            assert wa.statistics().handshake_retries == 1
            # Next time a starts with the key b showed.
            async with await wa.connect(listener.local_address):
                pass
            assert wa.statistics().handshake_retries == 1
            nursery.cancel_scope.cancel()


async def test_a_datagram_for_another_node_is_dropped(hosts: Hosts) -> None:
    """Recorded on its way to one peer, a datagram is dropped by any other."""
    wa, wb, wc = wire(hosts.a), wire(hosts.b), wire(hosts.b)
    a = await wa.open_datagram((hosts.a_ip, 0))
    b = await wb.open_datagram((hosts.b_ip, 0))
    captured = wa.seal(Nack(seq=7), wc.node_id)
    await _expect_drop_then_valid(b, a, captured, hosts)
    assert wb.statistics().dropped_misdirected == 1
    assert not wb.take_rejected()  # authentic: not an outsider's traffic


async def test_a_clock_300_s_off_is_warned_about_with_its_offset(
    hosts: Hosts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "p2pcluster.wire")
    wa = wire(hosts.a, wall_clock=lambda: time.time() + 300)
    wb = wire(hosts.b)
    a = await wa.open_datagram((hosts.a_ip, 0))
    b = await wb.open_datagram((hosts.b_ip, 0))
    for seq in range(20):
        await a.send(Nack(seq=seq), b.local_address, wb.node_id)
    good = await wire(hosts.a).open_datagram((hosts.a_ip, 0))
    await _expect_drop_then_valid(b, good, wa.seal(Nack(seq=99), wb.node_id), hosts)
    assert wb.statistics().dropped_skew == 21
    warnings = [r for r in caplog.records if "replay window" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited: one a minute per sender
    assert "+300." in warnings[0].getMessage() and wa.node_id.hex()[:8] in warnings[0].getMessage()


# --- the gate before authentication ----------------------------------------------------------


async def test_a_silent_connection_is_closed_after_the_hello_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = VirtualNetwork(seed=1)
    wb = wire(net.host("10.0.0.2"))
    listener = await net.host("10.0.0.2").open_listener(("0.0.0.0", 7946))
    async with trio.open_nursery() as nursery:
        await nursery.start(wb.serve, listener, _echo)
        start = trio.current_time()
        silent = await net.host("10.0.0.1").open_stream(listener.local_address)
        assert await silent.receive_some() == b""  # the server closed it
        assert trio.current_time() - start == pytest.approx(CONFIG.hello_timeout, abs=0.1)
        assert wb.statistics().handshakes_failed == 1
        nursery.cancel_scope.cancel()


async def test_a_replayed_hello_then_a_huge_frame_buffers_nothing(hosts: Hosts) -> None:
    """An outsider replays a recorded ClientHello, then announces a 64 MiB frame: the server
    reads only the proof's exact size and closes the connection."""
    wb = wire(hosts.b)
    listener = await hosts.b.open_listener((hosts.b_ip, 0))
    recorded = ClientHandshake(Keyring.from_secrets([SECRET], "default"),
                               random.Random(3).randbytes, node_id=b"r" * 16,
                               max_frame=CONFIG.max_frame_size).hello()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.serve, listener, _echo)
            raw = await hosts.a.open_stream(listener.local_address)
            await raw.send_all(recorded)
            reply = b""
            while len(reply) < HELLO_SIZE:
                reply += await raw.receive_some()
            await raw.send_all((64 << 20).to_bytes(4, "big") + b"\0" * 60)
            with pytest.raises(trio.BrokenResourceError):
                for _ in range(1000):  # the server has closed: writing fails soon
                    await raw.send_all(b"\0" * 65536)
                    await trio.sleep(0)
            assert wb.statistics().handshakes_failed == 1
            assert wb.statistics().stream_bytes_received == 0
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("peer_host", [True, False])
async def test_a_handshake_abandoned_after_an_authentic_hello_is_tallied_only_from_outsiders(
        hosts: Hosts, peer_host: bool) -> None:
    """A connection that waited in the backlog while the server was paused: the client
    sent its hello and gave up before the proof. From a host a peer's authentic datagrams
    came from, that is no outsider's traffic (no warning about another secret or a
    prober); from any other host (a replayed hello, say), it is tallied as before."""
    wa, wb = wire(hosts.a), wire(hosts.b)
    listener = await hosts.b.open_listener((hosts.b_ip, 0))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.serve, listener, _echo)
            if peer_host:
                a = await wa.open_datagram((hosts.a_ip, 0))
                b = await wb.open_datagram((hosts.b_ip, 0))
                await a.send(Nack(seq=1), b.local_address, wb.node_id)
                await b.receive()
            raw = await hosts.a.open_stream(listener.local_address)
            await raw.send_all(ClientHandshake(
                Keyring.from_secrets([SECRET], "default"), random.Random(4).randbytes,
                node_id=wa.node_id, max_frame=CONFIG.max_frame_size).hello())
            await raw.aclose()  # it gave up waiting
            while wb.statistics().handshakes_failed == 0:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert wb.take_rejected() == (Rejections({}) if peer_host else Rejections({hosts.a_ip: 1}))


async def test_handshakes_per_source_are_capped(autojump_clock: trio.testing.MockClock) -> None:
    config = Config.local(max_handshakes=8, max_handshakes_per_host=3)
    net = VirtualNetwork(seed=1)
    wb = SecureWire(net.host("10.0.0.2"), Keyring.from_secrets([SECRET], "default"), config,
                    node_id=os.urandom(16))
    listener = await net.host("10.0.0.2").open_listener(("0.0.0.0", 7946))
    async with trio.open_nursery() as nursery:
        await nursery.start(wb.serve, listener, _echo)
        idle = [await net.host("10.0.0.1").open_stream(listener.local_address)
                for _ in range(5)]
        await trio.sleep(0.1)
        assert wb.statistics().handshakes_refused == 2
        assert wb.take_rejected().hosts == {"10.0.0.1": 2}
        # Another host still gets in, and completes its handshake.
        other = wire(net.host("10.0.0.3"))
        async with await other.connect(listener.local_address) as stream:
            await stream.send(Nack(seq=1))
            assert await stream.receive() == Nack(seq=1)
        for s in idle:
            await s.aclose()
        nursery.cancel_scope.cancel()


class _ExhaustedListener:
    """A real listener whose first accepts fail as a process out of descriptors does."""

    def __init__(self, inner, failures: int) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.failures = failures

    @property
    def local_address(self):  # type: ignore[no-untyped-def]
        return self.inner.local_address

    async def accept(self):  # type: ignore[no-untyped-def]
        if self.failures:
            self.failures -= 1
            await trio.sleep(0)
            raise OSError(errno.EMFILE, "Too many open files")
        return await self.inner.accept()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_accept_survives_running_out_of_descriptors(
    hosts: Hosts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "p2pcluster.wire")
    wb = wire(hosts.b)
    listener = _ExhaustedListener(await hosts.b.open_listener((hosts.b_ip, 0)), 5)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(wb.serve, listener, _echo)
            async with await wire(hosts.a).connect(listener.local_address) as stream:
                await stream.send(Nack(seq=1))
                assert await stream.receive() == Nack(seq=1)
            nursery.cancel_scope.cancel()
    lines = [r for r in caplog.records if "cannot accept" in r.getMessage()]
    assert len(lines) == 1 and "EMFILE" in lines[0].getMessage()
