"""A result blob as the control client assembles it from chunks, or maps it from a memfd
(`_controlblobs.Incoming`)."""

from __future__ import annotations

import mmap
import os

import pytest

np = pytest.importorskip("numpy")

from p2pcluster import ProtocolError  # noqa: E402
from p2pcluster._controlblobs import Incoming, in_memory  # noqa: E402
from p2pcluster._jobs import unpack  # noqa: E402
from p2pcluster._packed import ALIGN  # noqa: E402
from p2pcluster._proto.control import CODEC  # noqa: E402
from p2pcluster._proto.wiretypes import TaskStatus  # noqa: E402
from p2pcluster._shm import RESIZING, available  # noqa: E402
from p2pcluster._values import encode_value  # noqa: E402


def _blob(value: object) -> bytes:
    payload = encode_value(value)
    return payload if isinstance(payload, bytes) else payload.flat()


@pytest.mark.parametrize("chunk", [7, 1000, 1 << 20])
def test_chunks_assemble_into_an_aligned_buffer_that_is_decoded_in_place(chunk: int) -> None:
    arr = np.random.default_rng(1).standard_normal(100_000)
    data = _blob({"a": arr, "n": 3})
    incoming = Incoming(len(data))
    for start in range(0, len(data), chunk):
        incoming.add(data[start:start + chunk])
    assert incoming.filled == len(data) and bytes(incoming.data) == data
    got = unpack(TaskStatus.OK, incoming.data, "p")
    assert got["n"] == 3 and np.array_equal(got["a"], arr)
    assert got["a"].flags.writeable
    assert got["a"].flags.aligned
    whole = np.frombuffer(incoming.data, np.uint8)
    if chunk >= 1000:  # the first chunk reaches the array's start: it is placed aligned
        assert got["a"].ctypes.data % ALIGN == 0
        got["a"][:] = 0.0  # a view of the client's own buffer, not a copy
        assert not unpack(TaskStatus.OK, incoming.data, "p")["a"].any()
    else:  # placed where it fell: a view if NumPy counts that aligned, else a copy
        start = whole.ctypes.data + data.index(arr.tobytes()[:64])
        assert np.shares_memory(got["a"], whole) == (start % arr.dtype.alignment == 0)


def test_a_refused_blob_is_counted_not_kept_and_an_overrun_is_an_error() -> None:
    refused = Incoming(10, "too large")
    refused.add(b"x" * 6)
    refused.add(b"y" * 4)
    assert refused.filled == 10 and len(refused.data) == 0
    with pytest.raises(ProtocolError, match="past its announced size"):
        refused.add(b"z")
    kept = Incoming(4)
    kept.add(b"ab")
    with pytest.raises(ProtocolError, match="past its announced size"):
        kept.add(b"cde")


@pytest.mark.skipif(not available(), reason="needs memfds (Linux)")
def test_a_result_in_a_memfd_is_mapped_writable_and_decoded_in_place() -> None:
    arr = np.random.default_rng(2).standard_normal(300_000)
    part = in_memory(1, encode_value({"a": arr}), seals=RESIZING)  # as the daemon sends it
    message = CODEC.decode(part.frame)
    fd = os.dup(part.fd)
    part.close()  # the daemon lets go of it once sent
    incoming = Incoming.mapped(message, fd)
    assert incoming.filled == incoming.size == message.size
    with pytest.raises(OSError):
        os.fstat(fd)  # mapped, and the descriptor let go of
    got = unpack(TaskStatus.OK, incoming.data, "p")["a"]
    assert np.array_equal(got, arr) and got.ctypes.data % ALIGN == 0
    assert isinstance(incoming.data.obj, mmap.mmap)
    got[:] = 0.0  # the caller's own: writable, and a view of the mapping, not a copy
    assert not unpack(TaskStatus.OK, incoming.data, "p")["a"].any()


@pytest.mark.skipif(not available(), reason="needs memfds (Linux)")
def test_where_descriptors_are_scarce_a_result_is_read_out_not_mapped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A mapping holds a descriptor while it lives: past half of the limit, the client
    reads the memfd into a buffer of its own, placed as a chunked result is."""
    import p2pcluster._controlblobs as controlblobs

    monkeypatch.setattr(controlblobs, "descriptors_scarce", lambda: True)
    arr = np.random.default_rng(3).standard_normal(400_000)  # 3.2 MB: several reads
    part = in_memory(1, encode_value({"a": arr, "n": 2}), seals=RESIZING)
    message = CODEC.decode(part.frame)
    fd = os.dup(part.fd)
    part.close()
    incoming = Incoming.mapped(message, fd)
    with pytest.raises(OSError):
        os.fstat(fd)  # read, and the descriptor let go of
    assert isinstance(incoming.data.obj, bytearray) and incoming.filled == message.size
    got = unpack(TaskStatus.OK, incoming.data, "p")
    assert np.array_equal(got["a"], arr) and got["a"].ctypes.data % ALIGN == 0
    assert got["n"] == 2 and got["a"].flags.writeable


@pytest.mark.skipif(not available(), reason="needs memfds (Linux)")
def test_a_result_memfd_over_the_limit_or_of_a_size_that_could_change_is_closed_unread(
        ) -> None:
    part = in_memory(1, b"r" * 2_000_000, seals=RESIZING)
    message = CODEC.decode(part.frame)
    fd = os.dup(part.fd)
    refused = Incoming.mapped(message, fd, "too large")
    assert refused.refused == "too large" and len(refused.data) == 0
    with pytest.raises(OSError):
        os.fstat(fd)
    fd = os.memfd_create("unsealed")
    os.ftruncate(fd, message.offset + message.size)
    with pytest.raises(ProtocolError, match="not sealed against resizing"):
        Incoming.mapped(message, fd)
    with pytest.raises(OSError):
        os.fstat(fd)
    part.close()
