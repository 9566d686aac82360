"""Argument streams kept between batches: the last one given back for an owner and address
is taken within the linger, at most ``most`` wait per owner, and every stream given back is
closed in the end."""

from __future__ import annotations

import trio
import trio.testing

from p2pcluster._idlestreams import IdleStreams

OWNER, OTHER = b"o" * 16, b"x" * 16
ADDRESS = ("10.0.0.1", 7946)


class _Stream:
    def __init__(self) -> None:
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


async def test_the_stream_given_back_last_is_taken_within_the_linger(
        autojump_clock: trio.testing.MockClock) -> None:
    idle = IdleStreams(linger=5.0, most=2)
    first, second = _Stream(), _Stream()
    idle.give(OWNER, ADDRESS, first)  # type: ignore[arg-type]
    idle.give(OWNER, ADDRESS, second)  # type: ignore[arg-type]
    assert idle.take(OTHER, ADDRESS) is None  # another owner at that address
    assert idle.take(OWNER, ("10.0.0.2", 7946)) is None
    assert idle.take(OWNER, ADDRESS) is second
    await trio.sleep(5.0)
    assert idle.take(OWNER, ADDRESS) is None  # first waited too long
    assert len(idle) == 0


async def test_streams_over_most_or_past_the_linger_are_closed_and_the_rest_at_the_end(
        autojump_clock: trio.testing.MockClock) -> None:
    idle = IdleStreams(linger=5.0, most=2)
    streams = [_Stream() for _ in range(4)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(idle.serve)
        for stream in streams[:3]:
            idle.give(OWNER, ADDRESS, stream)  # type: ignore[arg-type]
        await trio.sleep(4.0)
        idle.give(OTHER, ADDRESS, streams[3])  # type: ignore[arg-type]
        await trio.sleep(1.5)  # the reaper ran at 5 s: the first three are older than 5 s
        assert [s.closed for s in streams] == [True, True, True, False]
        assert len(idle) == 1
        nursery.cancel_scope.cancel()
    assert streams[3].closed  # closed as serve() ended
    assert len(idle) == 0
