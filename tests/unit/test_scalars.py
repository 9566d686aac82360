"""NumPy scalars and small arrays: the short way to encode those of a tagged dtype writes what
the long way (tags around a list) does, byte for byte, and they decode to the same type
and value."""

from __future__ import annotations

from typing import Any

import pytest

np = pytest.importorskip("numpy")
cbor2 = pytest.importorskip("cbor2")

from p2pcluster import _arrays, _values  # noqa: E402
from p2pcluster._packed import Tagged, cbor_head  # noqa: E402
from p2pcluster._values import decode_value, encode_value  # noqa: E402


def _long_way(value: Any) -> bytes:
    def tagged(encoder: Any, item: Tagged) -> None:
        encoder.encode_length(6, item.tag)
        encoder.encode(item.value)

    return cbor2.dumps(_arrays.scalar_item(value, bytes), encoders={Tagged: tagged})


@pytest.mark.parametrize("kind", _arrays.scalar_types(), ids=lambda t: t.__name__)
def test_a_scalar_encodes_as_its_0d_array_would_and_decodes_to_its_dtype(kind: type) -> None:
    short = _arrays.scalar_bytes(kind(0)) is not None
    for value in (kind(0), kind(3), kind(-1) if np.dtype(kind).kind in "ifc" else kind(1)):
        encoded = encode_value(value)
        back = decode_value(encoded)
        assert isinstance(back, np.generic) and back.dtype == value.dtype and back == value
        if not short:  # the long way itself (a long double's padding bytes are not the
            continue   # same from one encoding to the next: nothing to compare bytes with)
        assert encoded == _long_way(value)
        inside = _long_way(value)  # also inside a list and a map: [value, {"x": value}]
        assert encode_value([value, {"x": value}]) == b"\x82" + inside + b"\xa1\x61x" + inside


def test_the_short_way_covers_every_tagged_dtype_and_only_those() -> None:
    short = {t for t in _arrays.scalar_types() if _arrays.scalar_bytes(t(1)) is not None}
    assert {np.dtype(t).kind for t in short} == {"i", "u", "f"}
    assert np.float64 in short and np.int8 in short and np.float16 in short
    assert not {np.bool_, np.complex128, np.longdouble} & short


def _long_way_array(value: Any) -> bytes:
    def tagged(encoder: Any, item: Tagged) -> None:
        encoder.encode_length(6, item.tag)
        encoder.encode(item.value)

    return cbor2.dumps(_arrays.array_item(value, bytes), encoders={Tagged: tagged})


_SHAPES = [(), (1,), (10,), (3, 3), (2, 3, 4), (1, 24), (300, 2)]


@pytest.mark.parametrize("dtype", ["|u1", "<u2", ">u4", "<u8", "|i1", ">i2", "<i4", ">i8",
                                   "<f2", ">f4", "<f8", ">f8"])
def test_a_small_array_of_a_tagged_dtype_encodes_as_the_long_way_would(dtype: str) -> None:
    """The short way (a head kept per dtype and shape) writes the long way's bytes, twice
    over (once writing the head, once reusing it), inside other values too, and decodes
    back to the same dtype, shape and values."""
    for shape in _SHAPES:
        value = (np.arange(int(np.prod(shape)), dtype=np.int64) % 100).astype(dtype)
        value = value.reshape(shape)
        assert _arrays.small_bytes(value, 1 << 16) is not None
        for _ in range(2):
            encoded = encode_value(value)
            assert encoded == _long_way_array(value)
            assert encode_value({"a": [value]}) == b"\xa1\x61a\x81" + encoded
        back = decode_value(encoded)
        assert back.dtype == value.dtype and back.shape == value.shape
        assert np.array_equal(back, value)


@pytest.mark.parametrize("value", [
    np.zeros((4, 3), order="F"), np.arange(20.0)[::2], np.zeros((0, 3)), np.ones(3, bool),
    np.zeros(2, np.complex128), np.zeros(2, np.longdouble), np.zeros(1 << 14),
    np.ma.masked_array([1.0, 2.0]), np.zeros(3, "U3"),
], ids=["fortran", "strided", "empty", "bool", "complex", "longdouble", "large", "masked",
        "text"])
def test_the_short_way_leaves_every_other_array_to_the_long_way(value: Any) -> None:
    assert _arrays.small_bytes(value, 1 << 16) is None
    assert _arrays.small_bytes(np.zeros(1 << 13), 1 << 16) is None  # 64 KiB: not under


@pytest.mark.parametrize("kind", _arrays.scalar_types(), ids=lambda t: t.__name__)
def test_a_result_that_is_one_scalar_is_read_at_once_as_its_tags_would_decode(
    kind: type
) -> None:
    """A whole value that is one scalar of a tagged dtype is read without its tags: the same
    dtype and value as through them (inside a list); anything else goes through them."""
    assert cbor_head(6, _arrays.TAG_SCALAR) == _values._SCALAR_HEAD  # (no NumPy there)
    short = _arrays.scalar_bytes(kind(0)) is not None
    for value in (kind(0), kind(3), kind(1)):
        encoded = encode_value(value)
        assert (_arrays.scalar_of(encoded) is not None) == short
        at_once, through_tags = decode_value(encoded), decode_value(encode_value([value]))[0]
        assert at_once.dtype == through_tags.dtype == value.dtype
        assert type(at_once) is type(through_tags) and at_once == through_tags == value
        for other in (encoded[:-1], encoded + b"\x00", b"\x82" + encoded + encoded):
            assert _arrays.scalar_of(other) is None
        for held in (bytearray(encoded), memoryview(bytearray(encoded))):  # not only bytes
            back = decode_value(held)  # type: ignore[arg-type]
            assert back.dtype == value.dtype and back == value
