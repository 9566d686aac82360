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


# --- descriptors beside frames (a value in shared memory) ------------------------------------


def _fd_pair() -> tuple[FramedStream, FramedStream]:
    a, b = trio.socket.socketpair()
    return FramedStream(trio.SocketStream(a), fds=True), FramedStream(trio.SocketStream(b))


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("test")
    os.write(fd, data)
    return fd


def _content(fd: int) -> bytes:
    return os.pread(fd, os.fstat(fd).st_size, 0)


async def test_descriptors_arrive_beside_their_frames_in_order() -> None:
    reader, writer = _fd_pair()
    first, second = _memfd(b"first"), _memfd(b"second")
    big = os.urandom(3 * 2**20)

    async def write() -> None:
        await writer.send_frame(b"before")
        await writer.send_frame_with_fd(b"one", first)
        await writer.send_frame(big)  # read straight into a buffer of its own (recvmsg_into)
        await writer.send_frame_with_fd(b"two", second)
        os.close(first)
        os.close(second)  # the reader holds copies of its own

    got = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        for _ in range(4):
            frame = await reader.receive_frame()
            assert frame is not None
            got.append(bytes(frame))
    assert got == [b"before", b"one", big, b"two"]
    fds = [reader.take_fd(), reader.take_fd()]
    assert [_content(fd) for fd in fds] == [b"first", b"second"]
    for fd in fds:
        assert os.get_inheritable(fd) is False  # close-on-exec: never leaks into a worker
        os.close(fd)
    with pytest.raises(ProtocolError, match="did not come with it"):
        reader.take_fd()


async def test_a_stream_that_takes_no_descriptors_reads_frames_as_before() -> None:
    writer, reader = _fd_pair()  # (the second end takes none)
    fd = _memfd(b"x")
    await writer.send_frame_with_fd(b"frame", fd)
    os.close(fd)
    assert bytes(await reader.receive_frame() or b"") == b"frame"
    with pytest.raises(ProtocolError):
        reader.take_fd()


async def test_descriptors_nothing_announces_end_the_connection_and_are_closed() -> None:
    from p2pcluster._control import MOST_FDS

    reader, writer = _fd_pair()
    fd = _memfd(b"x")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(MOST_FDS + 1):
        await writer.send_frame_with_fd(b"f", fd)
    os.close(fd)
    with pytest.raises(ProtocolError, match="descriptors that no frame announced"):
        for _ in range(MOST_FDS + 1):
            await reader.receive_frame()
    await reader.aclose()
    assert len(os.listdir("/proc/self/fd")) < before  # theirs closed, and the socket
