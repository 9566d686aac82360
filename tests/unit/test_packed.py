"""Values with large array data kept apart (heads and buffers), and cut back apart."""

from __future__ import annotations

from typing import Any

import pytest

np = pytest.importorskip("numpy")

from p2pcluster._packed import OUT_OF_BAND, Packed, as_bytes, unpack_flat, uses  # noqa: E402
from p2pcluster._shared import Shared, digest_of  # noqa: E402
from p2pcluster._values import (  # noqa: E402
    decode_call,
    decode_value,
    encode_call,
    encode_shared,
    encode_value,
)


def same(a: Any, b: Any) -> bool:
    return a.dtype.str == b.dtype.str and a.shape == b.shape and np.array_equal(a, b)


def test_large_arrays_stay_out_of_the_encoding_and_join_into_plain_cbor() -> None:
    big = np.arange(100_000, dtype=">f8").reshape(1000, 100)
    value = {"a": big, "b": [np.arange(3), b"x" * OUT_OF_BAND], "c": np.asfortranarray(big)}
    packed = encode_value(value)
    assert isinstance(packed, Packed) and len(packed.buffers) == 2
    assert packed.layout[1] == big.nbytes and sum(packed.layout) == len(packed)
    flat = as_bytes(packed)
    for decoded in (decode_value(packed), decode_value(flat), decode_value(unpack_flat(flat))):
        assert same(decoded["a"], big) and same(decoded["c"], big)
        assert decoded["c"].flags.f_contiguous
        assert decoded["b"][1] == b"x" * OUT_OF_BAND  # bytes stay bytes


def test_unpack_flat_cuts_only_typed_array_data_without_copying() -> None:
    arr = np.ones(50_000)
    flat = as_bytes(encode_value([arr, b"\xd8\x56" * 70_000, np.zeros(10)]))
    cut = unpack_flat(flat)
    assert isinstance(cut, Packed) and len(cut.buffers) == 1
    assert cut.buffers[0].obj is flat  # a view of the received bytes
    back = decode_value(cut)
    assert same(back[0], arr) and back[1] == b"\xd8\x56" * 70_000 and same(back[2], np.zeros(10))
    small = as_bytes(encode_value([1, 2, 3]))
    assert unpack_flat(small) is small
    assert unpack_flat(b"\x5a\xff\xff\xff\xff" + bytes(OUT_OF_BAND)) == (
        b"\x5a\xff\xff\xff\xff" + bytes(OUT_OF_BAND))  # truncated: left to the decoder


def test_a_call_with_handles_lists_its_shared_values_first() -> None:
    shared_value = np.arange(10)
    payload = as_bytes(encode_shared(shared_value))
    handle = Shared(digest_of(payload), len(payload))
    call = encode_call((handle, 5), {"again": [handle]})
    assert uses(call) == (handle.digest,)
    args, kwargs = decode_call(call, shared={handle.digest: shared_value})
    assert args[0] is shared_value and kwargs["again"][0] is shared_value
    assert uses(encode_call((1,), {})) == ()


def test_large_byte_strings_are_spliced_into_exactly_the_encoders_cbor() -> None:
    """A byte string of SPLICE_BYTES or more is written as a marker and put back whole
    after encoding (one copy): the bytes are those cbor2 writes, beside arrays kept apart,
    handles and small byte strings, in a call, a result and a shared value."""
    import cbor2

    from p2pcluster._packed import SPLICE_BYTES

    big, other = bytes(range(256)) * (SPLICE_BYTES // 256 + 1), b"\x09" * SPLICE_BYTES
    arr = np.arange(20_000.0)
    handle = Shared(digest_of(b"x"), 1)
    call = encode_call((big, arr, b"small", handle), {"k": other, "again": big})
    assert isinstance(call, Packed) and len(call.buffers) == 1  # only the array is apart
    args, kwargs = decode_call(call, shared={handle.digest: "the value"})
    assert args[0] == big and same(args[1], arr) and list(args[2:]) == [b"small", "the value"]
    assert kwargs == {"k": other, "again": big}
    assert encode_value([big, other]) == cbor2.dumps([big, other])
    assert encode_shared(big) == cbor2.dumps(big)
    assert encode_value(big[:SPLICE_BYTES - 1]) == cbor2.dumps(big[:SPLICE_BYTES - 1])
