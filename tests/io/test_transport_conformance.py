"""One conformance suite for every Transport: the real one and the virtual one."""

from __future__ import annotations

import pytest
import trio

from .conftest import Hosts


async def test_datagram_round_trip(hosts: Hosts) -> None:
    a = await hosts.a.open_datagram((hosts.a_ip, 0))
    b = await hosts.b.open_datagram((hosts.b_ip, 0))
    assert a.local_address[0] == hosts.a_ip and a.local_address[1] > 0
    with trio.fail_after(5):
        await a.send(b"hello", b.local_address)
        data, src = await b.receive()
        assert (data, src) == (b"hello", a.local_address)
        await b.send(b"back", src)
        assert await a.receive() == (b"back", b.local_address)
    a.close()
    b.close()


async def test_datagram_to_nobody_is_silently_dropped(hosts: Hosts) -> None:
    a = await hosts.a.open_datagram((hosts.a_ip, 0))
    probe = await hosts.b.open_datagram((hosts.b_ip, 0))
    nobody = probe.local_address
    probe.close()
    await a.send(b"lost", nobody)  # no exception
    a.close()


async def test_close_wakes_a_blocked_receiver(hosts: Hosts) -> None:
    a = await hosts.a.open_datagram((hosts.a_ip, 0))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            async def receiver() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await a.receive()

            nursery.start_soon(receiver)
            await trio.sleep(0.01)
            a.close()


async def test_bind_conflict(hosts: Hosts) -> None:
    a = await hosts.a.open_datagram((hosts.a_ip, 0))
    with pytest.raises(OSError):
        await hosts.a.open_datagram(a.local_address)
    a.close()


async def test_stream_both_ways_and_eof(hosts: Hosts) -> None:
    listener = await hosts.b.open_listener((hosts.b_ip, 0))
    with trio.fail_after(5):
        client = await hosts.a.open_stream(listener.local_address)
        server, peer = await listener.accept()
        assert peer[0] == hosts.a_ip
        await client.send_all(b"x" * 100_000)
        got = bytearray()
        while len(got) < 100_000:
            got += await server.receive_some(65536)
        assert got == b"x" * 100_000
        await server.send_all(b"reply")
        assert await client.receive_some(100) == b"reply"
        await client.aclose()
        assert await server.receive_some(100) == b""
        await server.aclose()
    await listener.aclose()


async def test_connect_refused(hosts: Hosts) -> None:
    listener = await hosts.b.open_listener((hosts.b_ip, 0))
    addr = listener.local_address
    await listener.aclose()
    with trio.fail_after(5), pytest.raises(OSError):
        await hosts.a.open_stream(addr)
