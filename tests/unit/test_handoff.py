"""A large value with no array to cut out crosses a worker's pipe in a segment (FlatRef)."""

from __future__ import annotations

import os

import pytest

from p2pcluster import ProtocolError
from p2pcluster._handoff import (
    FLAT_IN_SEGMENT,
    FlatRef,
    let_go,
    open_args,
    open_ref,
    open_results,
    read_flat,
    to_ref,
)
from p2pcluster._proto.wiretypes import TaskStatus
from p2pcluster._shm import available
from p2pcluster._values import decode_value, encode_value

pytestmark = pytest.mark.skipif(not available(), reason="needs memfds (Linux)")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_large_value_without_arrays_goes_in_a_segment_and_reads_back_exactly() -> None:
    data = os.urandom(FLAT_IN_SEGMENT + 17)
    payload = encode_value([data, "x"])
    ref, placed = to_ref(payload)
    assert isinstance(ref, FlatRef) and ref.size == len(payload)
    assert placed is not None and placed.segment is not None and placed.segment.fd == ref.fd
    before = _fds()
    got = open_ref(ref)
    assert got == payload and isinstance(got, bytes)
    assert decode_value(got) == [data, "x"]
    assert _fds() == before  # read, not mapped: no descriptor held


def test_a_smaller_value_stays_on_the_pipe() -> None:
    payload = encode_value(bytes(FLAT_IN_SEGMENT // 2))
    assert to_ref(payload) == (payload, None)


def test_a_flat_argument_is_let_go_of_at_once() -> None:
    """The worker reads it (it maps nothing), so the peer may reuse its segment right away."""
    payload = encode_value(b"\x01" * FLAT_IN_SEGMENT)
    small = encode_value(3)
    ref, _placed = to_ref(payload)
    assert isinstance(ref, FlatRef)
    payloads, segments = open_args([ref, small])
    assert payloads == [payload, small]
    assert let_go(segments) == [ref.fd]


def test_a_flat_result_is_read_and_named_for_the_worker_to_drop() -> None:
    payload = encode_value(b"\x02" * (FLAT_IN_SEGMENT + 1))
    ref, _placed = to_ref(payload)
    assert isinstance(ref, FlatRef)
    outcomes, mapped = open_results([(TaskStatus.OK, ref)], lambda t, m: b"")
    assert outcomes == [(TaskStatus.OK, payload)]
    assert mapped == [ref.fd]


def test_a_segment_of_another_size_than_announced_is_refused() -> None:
    payload = encode_value(b"\x03" * FLAT_IN_SEGMENT)
    ref, _placed = to_ref(payload)
    assert isinstance(ref, FlatRef)
    with pytest.raises(ProtocolError, match="announced size"):
        read_flat(ref._replace(size=ref.size + 1))


def test_a_result_whose_worker_is_gone_becomes_an_error() -> None:
    payload = encode_value(b"\x04" * FLAT_IN_SEGMENT)
    ref, placed = to_ref(payload)
    assert isinstance(ref, FlatRef) and placed is not None and placed.segment is not None
    placed.segment.close()  # as when the worker died: its descriptors are gone
    outcomes, _ = open_results([(TaskStatus.OK, ref)], lambda t, m: f"{t}: {m}".encode())
    assert outcomes[0][0] == TaskStatus.ERROR
    assert outcomes[0][1].startswith(b"OSError: the result was lost")
