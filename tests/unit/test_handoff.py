"""A large value with no array to cut out crosses a worker's pipe in a segment (FlatRef)."""

from __future__ import annotations

import os

import pytest

from p2pcluster import ProtocolError
from p2pcluster._handoff import (
    FLAT_IN_SEGMENT,
    FlatRef,
    cut_in_place,
    let_go,
    open_args,
    open_ref,
    open_results,
    read_flat,
    to_ref,
)
from p2pcluster._packed import Packed, uses
from p2pcluster._proto.wiretypes import TaskStatus
from p2pcluster._shared import Shared
from p2pcluster._shm import Segment, SegmentStock, available
from p2pcluster._values import decode_call, decode_value, encode_call, encode_value

pytestmark = pytest.mark.skipif(not available(), reason="needs memfds (Linux)")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_large_value_without_arrays_goes_in_a_segment_and_reads_back_exactly() -> None:
    data = os.urandom(FLAT_IN_SEGMENT + 17)
    payload = encode_value([data, "x"])
    ref, placed = to_ref(payload)
    assert isinstance(ref, FlatRef) and ref.length == ref.size == len(payload)
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


def test_a_flat_result_is_mapped_and_named_for_the_worker_to_drop() -> None:
    """The peer maps a large plain result (to seal it to its owner from there), as it
    maps one with arrays: a plain packed value, which decodes whole."""
    payload = encode_value(b"\x02" * (FLAT_IN_SEGMENT + 1))
    ref, placed = to_ref(payload)
    assert isinstance(ref, FlatRef) and placed is not None and placed.segment is not None
    outcomes, mapped = open_results([(TaskStatus.OK, ref)], lambda t, m: b"")
    assert mapped == [ref.fd]
    [(status, got)] = outcomes
    assert status == TaskStatus.OK and isinstance(got, Packed) and got.plain
    assert got.segment is not None and got.segment.view.readonly
    placed.segment.close()  # the worker drops its own: the mapping here lives on
    assert got.flat() == payload and decode_value(got) == b"\x02" * (FLAT_IN_SEGMENT + 1)


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


def test_a_large_plain_value_reaches_a_worker_from_where_it_landed() -> None:
    """A call of megabytes of bytes (and a handle) received into a segment is cut in place
    as a plain packed value: its shared values can be read from its first bytes, it decodes
    joined, and a worker reads it from that segment (no copy on the peer)."""
    handle = Shared(b"\x05" * 32, 10)
    data = os.urandom(FLAT_IN_SEGMENT + 3)
    call = encode_call((data, handle), {"n": 1})
    assert isinstance(call, bytes)
    pad = 40
    segment = Segment.create(pad + len(call) + 100)
    segment.view[pad:pad + len(call)] = call
    value = cut_in_place(segment.view[pad:pad + len(call)], segment, pad)
    assert isinstance(value, Packed) and value.plain and value.segment is segment
    assert uses(value) == (handle.digest,)
    assert value.flat() == call and len(value) == len(call)
    assert decode_call(value, shared={handle.digest: "v"}) == ((data, "v"), {"n": 1})
    ref, kept = to_ref(value)
    assert isinstance(ref, FlatRef) and kept is value
    assert (ref.fd, ref.size, ref.offset, ref.length) == (segment.fd, segment.size, pad,
                                                          len(call))
    payloads, segments = open_args([ref])
    assert payloads == [call] and let_go(segments) == [segment.fd]
    stock = SegmentStock()
    stock.give(segment)  # the worker let go of it: the peer may receive into it again
    assert stock.take(segment.size) is segment
    assert decode_value(encode_value(b"small")) == b"small"


def test_a_plain_value_whose_segment_lost_its_descriptor_is_copied_on_its_way() -> None:
    call = encode_call((bytes(FLAT_IN_SEGMENT),), {})
    assert isinstance(call, bytes)
    segment = Segment.create(len(call))
    segment.view[:] = call
    value = cut_in_place(segment.view, segment, 0)
    segment.close()  # as a daemon does where descriptors are scarce
    ref, kept = to_ref(value)
    assert isinstance(ref, FlatRef) and kept is not None and kept.segment is not segment
    assert read_flat(ref) == call


def test_a_flat_ref_outside_its_segment_is_refused() -> None:
    ref, _placed = to_ref(encode_value(b"\x06" * FLAT_IN_SEGMENT))
    assert isinstance(ref, FlatRef)
    with pytest.raises(ProtocolError, match="outside"):
        read_flat(ref._replace(offset=10))


def test_a_flat_result_is_read_where_descriptors_are_scarce(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import p2pcluster._handoff as handoff

    monkeypatch.setattr(handoff, "descriptors_scarce", lambda: True)
    payload = encode_value(b"\x08" * FLAT_IN_SEGMENT)
    ref, _placed = to_ref(payload)
    before = _fds()
    outcomes, mapped = open_results([(TaskStatus.OK, ref)], lambda t, m: b"")
    assert outcomes == [(TaskStatus.OK, payload)] and mapped == [ref.fd]
    assert _fds() == before
