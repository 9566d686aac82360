"""Landing a received value in shared memory (`p2pcluster/_landing.py`), from real sealed
frames of a handshaken session pair, fed through a stand-in for the socket."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest

from p2pcluster import MessageTooLarge, ProtocolError
from p2pcluster._landing import land
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
    arrays = [rng.integers(0, 9, 70_001, dtype=np.int8), rng.standard_normal(50_000)]
    data = encoded(*arrays, "text")
    c, s = connect(seed=chunk)
    landed = await land(Frames(c, s, data, chunk), len(data), digest=True)  # type: ignore[arg-type]
    assert landed.digest == hashlib.sha256(data).digest()
    payload = landed.payload
    assert isinstance(payload, Packed) and payload.segment is not None
    assert payload.flat() == data
    assert all(offset % ALIGN == 0 for offset in payload.offsets)
    assert [b.nbytes for b in payload.buffers] == [a.nbytes for a in arrays]


async def test_a_small_value_arrives_as_bytes() -> None:
    data = encoded(list(range(100)))
    c, s = connect()
    landed = await land(Frames(c, s, data, 64), len(data), digest=True)  # type: ignore[arg-type]
    assert landed.payload == data and landed.digest == hashlib.sha256(data).digest()


@pytest.mark.parametrize("size", [100, 200_000])
async def test_a_value_that_ends_early_or_runs_longer_is_refused(size: int) -> None:
    data = random.Random(size).randbytes(size)
    c, s = connect()
    with pytest.raises(ProtocolError, match="closed"):
        await land(Frames(c, s, data, 4096), size + 1)  # type: ignore[arg-type]
    c, s = connect()
    with pytest.raises(MessageTooLarge):
        await land(Frames(c, s, data, 4096), size - 1)  # type: ignore[arg-type]
