"""Frames over a control connection (`_control.FramedStream`), on a real Unix socket pair:
small frames, and large ones whose rest is read straight into a buffer of their own."""

from __future__ import annotations

import os
import struct

import pytest
import trio

from p2pcluster import ProtocolError
from p2pcluster._control import FramedStream


def _pair() -> tuple[FramedStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return FramedStream(trio.SocketStream(a)), trio.SocketStream(b)


def _framed(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


@pytest.mark.parametrize("sizes", [[0, 1, 100], [64 * 1024 - 1, 64 * 1024, 5],
                                   [3 * 2**20 + 7, 10, 2**20, 2 * 2**20]])
async def test_frames_of_any_size_arrive_whole_and_in_order(sizes: list[int]) -> None:
    frames = [os.urandom(n) for n in sizes]
    wire = b"".join(_framed(f) for f in frames)
    reader, writer = _pair()
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:

        async def write() -> None:  # odd pieces: frames split anywhere, several in one
            for start in range(0, len(wire), 40_000):
                await writer.send_all(wire[start:start + 40_000])
            await writer.aclose()

        nursery.start_soon(write)
        while (frame := await reader.receive_frame()) is not None:
            got.append(bytes(frame))
    assert got == frames


async def test_a_connection_that_closes_inside_a_large_frame_is_an_error() -> None:
    reader, writer = _pair()
    await writer.send_all(_framed(os.urandom(200_000))[:150_000])
    await writer.aclose()
    with pytest.raises(ProtocolError, match="inside a frame"):
        await reader.receive_frame()
