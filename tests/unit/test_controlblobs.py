"""A client's value in shared memory, as the daemon takes it (`_controlblobs.Blobs`), and the
sealed memfd the client makes of it (`_controlblobs.in_memory`, `_shm.frozen_copy`)."""

from __future__ import annotations

import errno
import fcntl
import os

import pytest

np = pytest.importorskip("numpy")

from p2pcluster import ProtocolError  # noqa: E402
from p2pcluster._controlblobs import Blobs, Refused, in_memory  # noqa: E402
from p2pcluster._handoff import to_ref  # noqa: E402
from p2pcluster._packed import ALIGN, Packed  # noqa: E402
from p2pcluster._proto.control import CODEC, BlobRef, Chunk, Inline, SegmentBlob  # noqa: E402
from p2pcluster._proto.control import Blob as BlobAnnouncement  # noqa: E402
from p2pcluster._shm import Segment, SegmentStock, available, frozen_copy  # noqa: E402
from p2pcluster._values import decode_value, encode_value  # noqa: E402

pytestmark = pytest.mark.skipif(not available(), reason="needs memfds (Linux)")


def _handed_over(blob: int, value: object) -> tuple[SegmentBlob, int, Packed | bytes]:
    """What the client sends for ``value``: the frame's message and a copy of its fd."""
    payload = encode_value(value)
    part = in_memory(blob, payload)
    message = CODEC.decode(part.frame)
    assert isinstance(message, SegmentBlob)
    fd = os.dup(part.fd)  # (as the daemon's end of the socket gets one)
    part.close()
    return message, fd, payload


def _flat(payload: Packed | bytes) -> bytes:
    return payload if isinstance(payload, bytes) else payload.flat()


async def test_arrays_in_a_sealed_memfd_are_held_as_views_of_it_not_copies() -> None:
    blobs = Blobs(2**31, "peer d1")
    message, fd, payload = _handed_over(1, {"x": np.arange(300_000.0), "n": 7})
    await blobs.adopt(message, fd)
    value = blobs.value(BlobRef(1, message.size))
    assert isinstance(value, Packed) and value.segment is not None
    assert value.flat() == _flat(payload)
    assert all(b.readonly for b in value.buffers)  # nobody writes what the job holds
    # ... mapped through a read-only descriptor: a shared mapping through a writable one
    # of a write-sealed memfd fails before Linux 6.7, even read-only
    assert fcntl.fcntl(value.segment.fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
    assert value.offsets[0] % ALIGN == 0  # the client placed the first array aligned
    wire, keep = to_ref(value)  # a worker maps that very memfd: no copy on its way
    assert keep is value and f"/fd/{value.segment.fd}" in wire.path  # type: ignore[union-attr]
    with pytest.raises(ProtocolError, match="not received whole"):
        blobs.value(BlobRef(1, message.size))  # consumed


async def test_a_value_whose_later_array_falls_unaligned_is_still_exact() -> None:
    """Only the first array can be placed aligned; a worker gets the value placed anew
    (one copy) when a later one is not (as for a value another peer sent)."""
    arrays = [np.arange(300_000, dtype=np.float64), np.ones((200, 300), dtype=np.int32)]
    blobs = Blobs(2**31, "peer d1")
    message, fd, payload = _handed_over(1, {"xs": arrays, "n": 7})
    await blobs.adopt(message, fd)
    value = blobs.value(BlobRef(1, message.size))
    assert isinstance(value, Packed) and value.flat() == _flat(payload)


async def test_a_value_without_large_arrays_in_a_memfd_is_held_in_place() -> None:
    """Not copied out: a plain packed value in the client's memfd, which the daemon's
    workers read from there (a FlatRef) and which decodes whole."""
    blobs = Blobs(2**31, "peer d1")
    message, fd, payload = _handed_over(4, b"z" * 2_000_000)
    await blobs.adopt(message, fd)
    held = blobs.value(BlobRef(4, message.size))
    assert isinstance(held, Packed) and held.plain and held.segment is not None
    assert held.flat() == _flat(payload)
    assert decode_value(held) == b"z" * 2_000_000
    small_message, small_fd, small = _handed_over(5, b"z" * 300_000)
    await blobs.adopt(small_message, small_fd)
    assert blobs.value(BlobRef(5, small_message.size)) == _flat(small)  # under 1 MiB: bytes


def test_the_client_s_memfd_can_neither_change_nor_be_resized() -> None:
    fd = frozen_copy([b"head", memoryview(b"x" * 100)], 104, offset=60)
    try:
        assert os.pread(fd, 200, 0) == bytes(60) + b"head" + b"x" * 100
        for change in (lambda: os.pwrite(fd, b"y", 70), lambda: os.ftruncate(fd, 10),
                       lambda: os.ftruncate(fd, 1000)):
            with pytest.raises(PermissionError) as refused:
                change()
            assert refused.value.errno == errno.EPERM
    finally:
        os.close(fd)
    with pytest.raises(ValueError, match="3 bytes written, 5 announced"):
        frozen_copy([b"abc"], 5)


async def test_a_memfd_that_could_still_change_or_is_not_as_announced_is_refused() -> None:
    blobs = Blobs(2**31, "peer d1")
    unsealed = Segment.create(2_000_000)  # sealed against resizing only
    fd = os.dup(unsealed.fd)
    with pytest.raises(ProtocolError, match="not sealed against resizing and writes"):
        await blobs.adopt(SegmentBlob(1, 2_000_000, 0), fd)
    with pytest.raises(OSError):
        os.fstat(fd)  # closed by the refusal
    message, fd, _ = _handed_over(2, b"q" * 2_000_000)
    with pytest.raises(ProtocolError, match="announced as"):
        await blobs.adopt(SegmentBlob(2, message.size + 1, message.offset), fd)
    with pytest.raises(ProtocolError, match="that is not one"):
        await blobs.adopt(SegmentBlob(3, 10, 0), os.open("/dev/null", os.O_RDONLY))


async def test_a_memfd_over_the_limit_is_closed_unread_and_the_job_told_why() -> None:
    blobs = Blobs(1_000_000, "peer d1")
    message, fd, _ = _handed_over(1, b"q" * 2_000_000)
    await blobs.adopt(message, fd)
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(Refused, match=r"2,000,00\d bytes, over the limit of 1,000,000"):
        blobs.value(BlobRef(1, message.size))


async def test_a_blob_number_announced_twice_is_a_protocol_error() -> None:
    blobs = Blobs(2**31, "peer d1")
    blobs.announce(BlobAnnouncement(1, 3))
    blobs.chunk(Chunk(1, b"abc"))
    message, fd, _ = _handed_over(1, b"q" * 2_000_000)
    with pytest.raises(ProtocolError, match="announced twice"):
        await blobs.adopt(message, fd)
    with pytest.raises(OSError):
        os.fstat(fd)
    assert blobs.value(BlobRef(1, 3)) == b"abc"
    assert blobs.value(Inline(b"small")) == b"small"


def test_a_read_only_segment_never_goes_back_to_the_stock() -> None:
    """Values are received into the stock's segments: a client's value, mapped read-only
    and still held by its job, must never be one of them."""
    stock = SegmentStock()
    message, fd, _ = _handed_over(1, b"q" * 2_000_000)
    import mmap

    stock.give(Segment.adopt(fd, message.offset + message.size, access=mmap.ACCESS_READ))
    writable = Segment.create(2_000_000)
    stock.give(writable)
    assert stock.take(2_000_000) is writable
    assert stock.take(2_000_000) is not writable and stock.reused == 1


async def test_a_value_the_daemon_cannot_map_fails_its_job_not_the_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of memory maps (``vm.max_map_count``), say: the job that uses it fails, saying
    why; the connection and the client's other jobs go on."""
    def no_more_maps(fd: int, size: int, **_: object) -> Segment:
        os.close(fd)
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(Segment, "adopt", staticmethod(no_more_maps))
    blobs = Blobs(2**31, "peer d1")
    message, fd, _ = _handed_over(1, b"q" * 2_000_000)
    await blobs.adopt(message, fd)
    with pytest.raises(Refused, match=r"peer d1 could not map a value of 2,000,00\d bytes"):
        blobs.value(BlobRef(1, message.size))


def test_past_most_waiting_a_value_goes_into_a_memfd_only_as_it_is_sent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A client makes a memfd of a large value at submit while fewer than MOST_WAITING are
    waiting to go; past that, it copies the value now and makes the memfd as it sends it.
    Small values, and values to an end without memfds, go in chunks."""
    import p2pcluster._outbox as outbox
    from p2pcluster._controlblobs import InMemory, waiting

    monkeypatch.setattr(outbox, "MOST_WAITING", waiting() + 2)
    arr = np.ones(1 << 18)  # 2 MiB
    data = encode_value(arr)
    assert isinstance(data, Packed)
    made = [outbox.value_part(i, data, segments=True) for i in (1, 2, 3)]
    assert [type(p).__name__ for p in made] == ["InMemory", "InMemory", "Later"]
    later = made[2]
    assert isinstance(later, outbox.Later) and later.blob == 3
    arr[:] = 2.0  # the copy was made at the call: what is sent is the value as it was
    assert later.data == _flat(encode_value(np.ones(1 << 18)))
    first = made[0]
    assert isinstance(first, InMemory)
    first.close()
    again = outbox.value_part(4, data, segments=True)  # room again
    assert isinstance(again, InMemory)
    for small in (outbox.value_part(5, b"s" * 200_000, segments=True),
                  outbox.value_part(6, data, segments=False)):
        assert not isinstance(small, InMemory | outbox.Later)  # chunk frames, to come
    for part in (made[1], again):
        assert isinstance(part, InMemory)
        part.close()
    assert waiting() == outbox.MOST_WAITING - 2


def _no_memfd(*args: object, **kwargs: object) -> object:
    raise OSError(24, "Too many open files")


class _Frames:
    """A control stream that keeps the frames sent on it."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def send_frames(self, frames: list[bytes]) -> None:
        self.frames += frames


async def test_a_value_that_gets_no_memfd_as_it_is_sent_goes_in_chunks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Made as it is sent, a memfd may not be had (no descriptor left, say): the value
    goes in chunk frames instead, and the connection lives on."""
    import p2pcluster._outbox as outbox

    monkeypatch.setattr(outbox, "in_memory", _no_memfd)
    stream = _Frames()
    box = object.__new__(outbox.Outbox)
    box._stream = stream  # type: ignore[assignment]  # (only _send is exercised)
    data = bytes(range(256)) * 4096  # 1 MiB
    await box._send(outbox.Later(7, data))
    messages = [CODEC.decode(f) for f in stream.frames]
    assert isinstance(messages[0], BlobAnnouncement) and messages[0].size == len(data)
    assert b"".join(m.data for m in messages[1:] if isinstance(m, Chunk)) == data


async def test_a_result_that_gets_no_memfd_goes_to_the_client_in_chunks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's side alike: a large result whose memfd cannot be made (no descriptor
    left, say) goes in chunk frames, and the connection lives on."""
    import p2pcluster._control_server as control_server

    monkeypatch.setattr(control_server, "in_memory", _no_memfd)
    session = object.__new__(control_server.ControlSession)  # (only _blob is exercised)
    stream = _Frames()
    session._stream = stream  # type: ignore[assignment]
    session._segments, session._next_blob = True, 0
    session._out, session._out_bytes = [], 0
    data = bytes(range(256)) * 8192  # 2 MiB
    ref = await session._blob(data)
    assert ref == BlobRef(1, len(data))
    messages = [CODEC.decode(f) for f in stream.frames]
    assert isinstance(messages[0], BlobAnnouncement) and messages[0].size == len(data)
    assert b"".join(m.data for m in messages[1:] if isinstance(m, Chunk)) == data
