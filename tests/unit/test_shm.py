"""Shared-memory segments: who owns a descriptor when a mapping fails, and values read out
of another process's segment where descriptors are scarce."""

from __future__ import annotations

import gc
import os

import pytest

from p2pcluster import ProtocolError
from p2pcluster._handoff import read_ref, to_ref
from p2pcluster._packed import Packed
from p2pcluster._shm import Segment, available, read_at

pytestmark = pytest.mark.skipif(not available(), reason="needs memfds (Linux)")


def test_a_failed_mapping_leaves_the_descriptor_to_its_caller() -> None:
    """The half-made segment never closes the descriptor when it is collected: its caller
    closes it, and by then the number may belong to another file of the process."""
    fd = os.memfd_create("empty", os.MFD_CLOEXEC)
    with pytest.raises(ValueError):
        Segment(fd, 4096)  # an empty file cannot be mapped
    gc.collect()
    os.fstat(fd)  # still open: closed by its owner alone
    os.close(fd)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_value_read_out_of_a_segment_is_exact_aligned_and_holds_no_descriptor() -> None:
    first, second = bytes(range(256)) * 400, b"\x07" * 300_001
    packed = Packed([b"h0", b"h1", b"h2"], [memoryview(first), memoryview(second)])
    ref, placed = to_ref(packed)
    assert placed is not None and not isinstance(ref, bytes)
    before = _open_fds()
    got = read_ref(ref)
    assert _open_fds() == before
    assert got.heads == packed.heads and got.segment is None
    assert [bytes(b) for b in got.buffers] == [first, second]
    assert all(not b.readonly for b in got.buffers)
    assert placed.segment is not None
    placed.segment.close()


def test_reading_past_a_segment_s_end_is_an_error_not_a_short_value() -> None:
    fd = os.memfd_create("short", os.MFD_CLOEXEC)
    try:
        os.write(fd, b"x" * 1000)
        view = memoryview(bytearray(1500))
        read_at(fd, view[:600], 400)  # exactly to the end
        assert bytes(view[:600]) == b"x" * 600
        with pytest.raises(ProtocolError, match="ended early"):
            read_at(fd, view, 0)
    finally:
        os.close(fd)
