"""Landing a received value in shared memory (`p2pcluster/_landing.py`), from real sealed
frames of a handshaken session pair, fed through a stand-in for the socket."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest

from p2pcluster import MessageTooLarge, ProtocolError
from p2pcluster._handoff import SegmentRef, to_ref
from p2pcluster._landing import Sums, land
from p2pcluster._packed import ALIGN, Packed
from p2pcluster._proto.handshake import Session
from p2pcluster._shm import available
from tests.proto.test_handshake import connect

np = pytest.importorskip("numpy")


class Frames:
    """What :func:`land` uses of a SecureStream: frames sealed by ``sender``, opened by
    ``receiver`` as a SecureStream would, then the end of the stream."""

    def __init__(self, sender: Session, receiver: Session, payload: bytes, chunk: int) -> None:
        self.session = receiver
        for at in range(0, len(payload), chunk):
            receiver.feed(sender.seal(payload[at:at + chunk]))

    async def receive_payload(self) -> bytes | None:
        return self.session.next_payload()

    async def receive_payload_into(self, dest: memoryview) -> int | None:
        return self.session.next_payload_into(dest)


def encoded(*values: Any) -> bytes:
    from p2pcluster._packed import as_bytes
    from p2pcluster._values import encode_shared

    return as_bytes(encode_shared(list(values)))


@pytest.mark.skipif(not available(), reason="memfds are Linux only")
@pytest.mark.parametrize("chunk", [1000, 65_536, 1 << 20])
async def test_a_value_lands_aligned_with_its_digest(chunk: int) -> None:
    rng = np.random.default_rng(chunk)
    array = rng.standard_normal(50_000)
    data = encoded(array, "text")
    c, s = connect(seed=chunk)
    landed = await land(Frames(c, s, data, chunk), len(data), digest=True)  # type: ignore[arg-type]
    assert landed.digest == hashlib.sha256(data).digest()
    payload = landed.payload
    assert isinstance(payload, Packed) and payload.segment is not None  # where it landed
    assert payload.flat() == data
    assert payload.offsets[0] % ALIGN == 0 and payload.buffers[0].nbytes == array.nbytes
    wire, _ = to_ref(payload)  # handed to a worker as it is
    assert isinstance(wire, SegmentRef) and wire.fd == payload.segment.fd


@pytest.mark.skipif(not available(), reason="memfds are Linux only")
async def test_a_value_whose_later_array_falls_unaligned_is_placed_anew() -> None:
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 9, 70_001, dtype=np.int8), rng.standard_normal(50_000)]
    data = encoded(*arrays, "text")
    c, s = connect()
    landed = await land(Frames(c, s, data, 65_536), len(data))  # type: ignore[arg-type]
    payload = landed.payload
    assert isinstance(payload, Packed) and payload.flat() == data
    wire, placed = to_ref(payload)
    assert isinstance(wire, SegmentRef) and placed is not None
    assert all(offset % ALIGN == 0 for offset in wire.offsets)
    assert wire.sizes == (arrays[0].nbytes, arrays[1].nbytes)


async def test_a_small_value_arrives_as_bytes() -> None:
    data = encoded(list(range(100)))
    c, s = connect()
    landed = await land(Frames(c, s, data, 64), len(data), digest=True)  # type: ignore[arg-type]
    assert landed.payload == data and landed.digest == hashlib.sha256(data).digest()


@pytest.mark.parametrize("digest", [False, True])
@pytest.mark.parametrize("size", [100, 200_000])
async def test_a_value_that_ends_early_or_runs_longer_is_refused(size: int,
                                                                 digest: bool) -> None:
    data = random.Random(size).randbytes(size)
    c, s = connect()
    with pytest.raises(ProtocolError, match="closed"):  # itself, not in an exception group
        await land(Frames(c, s, data, 4096), size + 1, digest=digest)  # type: ignore[arg-type]
    c, s = connect()
    with pytest.raises(MessageTooLarge):
        await land(Frames(c, s, data, 4096), size - 1, digest=digest)  # type: ignore[arg-type]


def _summed_args() -> tuple[bytes, Sums, list[int]]:
    """Two arrays' arguments as the owner sends them (its plain CBOR) with the sums from
    submit a ValueHeader carries, and a byte inside each array."""
    from p2pcluster._heldargs import checked, own_kind, spans
    from p2pcluster._jobs import encode_args

    rng = np.random.default_rng(5)
    value = encode_args((rng.standard_normal(20_000), "text", rng.standard_normal(30_000)), {})
    assert isinstance(value, Packed)
    sums = spans(checked(value))
    data = value.flat()
    for span, buffer in zip(sums, value.buffers, strict=True):  # where the arrays lie
        assert data[span.offset:span.offset + span.size] == buffer.tobytes()
    return data, Sums(own_kind(), sums), [span.offset + span.size // 2 for span in sums]


@pytest.mark.parametrize("chunk", [1000, 65_536])
@pytest.mark.parametrize("memfds", [True, False] if available() else [False])
async def test_arguments_are_checked_against_the_sums_from_submit_as_they_land(
        memfds: bool, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fetching peer checks what landed, in a segment or as bytes, frame by frame
    (frames of 1000 bytes straddle the arrays' ends): a value as the owner summed it
    passes, one whose array changed raises ArgumentChanged naming that array."""
    import p2pcluster._landing as landing
    from p2pcluster._heldargs import ArgumentChanged

    monkeypatch.setattr(landing, "available", lambda: memfds)
    segments: list[Any] = []
    create = landing.Segment.create
    monkeypatch.setattr(landing.Segment, "create",
                        lambda size: segments.append(create(size)) or segments[-1])
    data, sums, inside = _summed_args()
    c, s = connect()
    landed = await land(Frames(c, s, data, chunk), len(data), sums=sums)  # type: ignore[arg-type]
    assert (landed.payload.flat() if isinstance(landed.payload, Packed)
            else landed.payload) == data
    for index, at in enumerate(inside):
        changed = bytearray(data)
        changed[at] ^= 1
        c, s = connect()
        with pytest.raises(ArgumentChanged) as raised:
            await land(Frames(c, s, bytes(changed), chunk), len(data),  # type: ignore[arg-type]
                       sums=sums)
        assert raised.value.index == index
        assert all(segment.fd == -1 for segment in segments[1:])  # let go of at once
    assert len(segments) == (3 if memfds else 0)


async def test_sums_that_do_not_fit_the_value_or_were_not_offered_are_refused() -> None:
    from p2pcluster._proto.messages import ArraySum, SumKind

    data, sums, _ = _summed_args()
    first, last = sums.spans
    outside = ArraySum(len(data) - last.size + 1, last.size, last.sum)
    for bad in (Sums(sums.kind, [first, outside]), Sums(sums.kind, [last, first]),
                Sums(SumKind.NONE, sums.spans), Sums(99, sums.spans)):
        c, s = connect()
        with pytest.raises(ProtocolError, match=r"lies outside|did not offer"):
            await land(Frames(c, s, data, 65_536), len(data), sums=bad)  # type: ignore[arg-type]


@pytest.mark.skipif(not available(), reason="memfds are Linux only")
def test_a_worker_lets_go_only_of_the_segments_nothing_keeps() -> None:
    from p2pcluster._handoff import let_go, open_args
    from p2pcluster._shm import Segment

    held = [Segment.create(4096), Segment.create(8192)]
    wires = [SegmentRef((b"\x81", b""), s.path(), s.size, (0,), (1024,), s.fd) for s in held]
    payloads, segments = open_args([*wires, b"plain"])
    assert set(segments) == {s.fd for s in held} and payloads[2] == b"plain"
    first = payloads[0]
    assert isinstance(first, Packed)
    kept = np.frombuffer(first.buffers[0], dtype=np.uint8)  # a task keeps a view
    del payloads, first
    assert let_go(segments) == [held[1].fd]
    assert kept.sum() == 0  # still mapped, still readable


def test_the_segment_stock_reuses_what_fits_and_holds_little() -> None:
    from p2pcluster._shm import STEP, SegmentStock

    stock = SegmentStock(most=2, most_bytes=4 * STEP)
    a = stock.take(STEP + 1)
    assert a.size == 2 * STEP  # rounded up, so that a value of about that size fits again
    stock.give(a)
    assert stock.take(STEP + 100) is a and stock.reused == 1
    assert stock.take(STEP + 100) is not a  # not in the stock twice
    stock.give(a)
    assert stock.take(100) is not a  # far too large for a small value
    big = stock.take(5 * STEP)
    stock.give(big)  # over most_bytes: not kept
    assert stock.take(5 * STEP) is not big


@pytest.mark.skipif(not available(), reason="memfds are Linux only")
def test_a_segment_two_arguments_share_is_let_go_only_if_both_are() -> None:
    from p2pcluster._handoff import let_go, open_args
    from p2pcluster._shm import Segment

    held = Segment.create(4096)
    wire = SegmentRef((b"\x81", b""), held.path(), held.size, (0,), (1024,), held.fd)
    payloads, segments = open_args([wire, wire])
    second = payloads[1]
    assert isinstance(second, Packed)
    kept = np.frombuffer(second.buffers[0], dtype=np.uint8)
    del payloads, second
    assert let_go(segments) == []
    assert kept.sum() == 0


@pytest.mark.skipif(not available(), reason="memfds are Linux only")
async def test_a_segment_from_the_stock_is_not_allocated_again(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new segment's pages are allocated ahead of the frames, once: landing in it again
    (from the stock) walks none of its pages, and the value still lands whole."""
    import os

    from p2pcluster._shm import SegmentStock

    calls: list[int] = []
    real = os.posix_fallocate

    def counting(fd: int, offset: int, length: int) -> None:
        calls.append(length)
        real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", counting)
    stock = SegmentStock()
    for round_ in range(3):
        data = encoded(np.full(300_000, float(round_)))
        c, s = connect(seed=round_)
        payload = (await land(Frames(c, s, data, 65_536), len(data),  # type: ignore[arg-type]
                              stock=stock)).payload
        assert isinstance(payload, Packed) and payload.flat() == data
        assert payload.segment is not None and payload.segment.allocated
        segment = payload.segment
        del payload
        stock.give(segment)
    assert len(calls) == 1 and stock.reused == 2
