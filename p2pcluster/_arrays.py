"""NumPy arrays and scalars as CBOR: RFC 8746 where it reaches, one tag of ours where not.

Imported only when a NumPy object is encoded or an array tag decoded, so NumPy stays an
optional dependency (``pip install 'p2pcluster[numpy]'``).

Encoding (``docs/protocol.md``, section 9):

- An array of unsigned or signed integers (8 to 64 bits) or IEEE floats (16, 32, 64 bits),
  in either byte order, with no zero-length dimension, is RFC 8746's multi-dimensional array
  ``40([shape, T(data)])`` (row-major) or ``1040([shape, T(data)])`` (column-major, for a
  Fortran-ordered array), ``T`` the typed-array tag of its element type and byte order
  (64-86). Any CBOR library that knows RFC 8746 reads it. A 0-d array has the shape ``[]``.
- What RFC 8746 has no tag for (``bool``, complex, ``longdouble``) or cannot shape (a
  dimension of length 0) is :data:`TAG_NDARRAY` ``([dtype, shape, fortran, data])``:
  NumPy's dtype string (``"<c16"``), the shape, whether the data is column-major, and the
  raw bytes; a ``longdouble`` adds its format (``[mantissa bits, exponent bits]``) and is
  refused where the receiver's differs (x87 80-bit against IEEE quad, say).
- A NumPy scalar (``np.float64(1.5)``, ``np.int8(3)``) is :data:`TAG_SCALAR` around the 0-d
  array of it, so it comes back as the same NumPy type.

Round trips are exact: dtype, byte order, shape, memory order and values. An array that is
neither C- nor Fortran-contiguous (a strided view) goes as a contiguous copy in C order.
``object``, structured, string and date dtypes are refused with a message that says what
to send instead. Decoding checks everything against the bytes it got: a dtype outside the
numeric kinds, a shape whose size does not match the data, an unknown typed-array tag: each
is a :class:`~p2pcluster.DecodeError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._errors import DecodeError
from ._packed import Tagged, cbor_head

__all__ = [
    "ARRAY_TAGS", "TAG_NDARRAY", "TAG_SCALAR", "Unsupported", "array_item", "decode_tag",
    "scalar_bytes", "scalar_item", "scalar_of", "scalar_types", "small_bytes",
]

ROW_MAJOR = 40
COLUMN_MAJOR = 1040
#: Our own tags (unregistered, in CBOR's first-come-first-served range): "p2pA", "p2pS".
TAG_NDARRAY = 0x70327041
TAG_SCALAR = 0x70327053

#: RFC 8746 typed-array tags and the NumPy dtype each carries (68 is uint8 "clamped").
_TAG_DTYPE: dict[int, str] = {
    64: "|u1", 65: ">u2", 66: ">u4", 67: ">u8", 68: "|u1", 69: "<u2", 70: "<u4", 71: "<u8",
    72: "|i1", 73: ">i2", 74: ">i4", 75: ">i8", 77: "<i2", 78: "<i4", 79: "<i8",
    80: ">f2", 81: ">f4", 82: ">f8", 84: "<f2", 85: "<f4", 86: "<f8",
}
_DTYPE_TAG = {dtype: tag for tag, dtype in _TAG_DTYPE.items() if tag != 68}
_TAG_NP_DTYPE = {tag: np.dtype(text) for tag, text in _TAG_DTYPE.items()}
#: The CBOR of a scalar of each tagged dtype, up to its bytes: TAG_SCALAR, tag 40 around
#: [[], typed array], the typed array's tag and its byte string's head (see scalar_bytes).
_SCALAR_PREFIX = {
    text: (cbor_head(6, TAG_SCALAR) + cbor_head(6, ROW_MAJOR) + b"\x82\x80" + cbor_head(6, tag)
           + cbor_head(2, np.dtype(text).itemsize))
    for text, tag in _DTYPE_TAG.items()}
_PREFIX_DTYPE = {prefix: np.dtype(text) for text, prefix in _SCALAR_PREFIX.items()}
#: Every tag this module decodes (76, 83 and 87 are refused: reserved, binary128).
ARRAY_TAGS = frozenset({ROW_MAJOR, COLUMN_MAJOR, TAG_NDARRAY, TAG_SCALAR, 76, 83, 87,
                        *_TAG_DTYPE})
_DTYPE_TEXT = re.compile(r"[<>|][biufc][0-9]{1,2}")
_MAX_DIMS = 64

#: Puts an array's bytes in the encoding: in-band bytes, or a marker for a buffer kept apart.
DataItem = Callable[[memoryview], bytes]


class Unsupported(Exception):
    """An array or scalar that cannot travel, with what to do instead (for an argument,
    for a result)."""

    def __init__(self, what: str, fix_argument: str, fix_result: str) -> None:
        super().__init__(what)
        self.what = what
        self.fix_argument = fix_argument
        self.fix_result = fix_result


def scalar_types() -> list[type]:
    """The NumPy scalar types that travel (each needs an encoder of its own: ``float64``
    and ``complex128`` are subclasses of Python's, which cbor2 would encode as plain)."""
    kinds = ("b", "i", "u", "f", "c")
    return sorted({t for t in np.sctypeDict.values()
                   if isinstance(t, type) and issubclass(t, np.generic)
                   and np.dtype(t).kind in kinds}, key=lambda t: t.__name__)


# --- encoding -------------------------------------------------------------------------------

_FIXES: dict[str, tuple[str, str, str]] = {
    "O": ("of dtype object, whose elements are Python objects rather than numbers",
          "convert it to a numeric dtype (arr.astype(float)), or to a list with arr.tolist()",
          "return arr.astype(float) (a numeric dtype) or arr.tolist() instead"),
    "V": ("of the structured dtype {dtype}",
          "send each field as an array of its own (arr['x'], arr['y'], ...)",
          "return each field as an array of its own, in a dict or a list"),
    "U": ("of strings ({dtype})", "send arr.tolist() (a list of str) instead",
          "return arr.tolist() instead"),
    "S": ("of byte strings ({dtype})", "send arr.tolist() (a list of bytes) instead",
          "return arr.tolist() instead"),
    "M": ("of dates ({dtype})", "send arr.astype('int64') with its unit, or arr.tolist()",
          "return arr.astype('int64') with its unit, or arr.tolist(), instead"),
    "m": ("of durations ({dtype})", "send arr.astype('int64') with its unit",
          "return arr.astype('int64') with its unit instead"),
}


def _check_dtype(dtype: np.dtype[Any]) -> None:
    if dtype.kind in "biufc" and dtype.fields is None:
        return
    kind = "V" if dtype.fields is not None else dtype.kind
    what, fix_argument, fix_result = _FIXES.get(kind, (
        "of dtype {dtype}", "convert it to a numeric dtype", "return a numeric dtype"))
    raise Unsupported(what.format(dtype=dtype), fix_argument, fix_result)


def _contiguous(arr: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], bool]:
    """The array with its data contiguous, and whether that is column-major."""
    if arr.flags.c_contiguous:
        return arr, False
    if arr.flags.f_contiguous:
        return arr, True
    return np.ascontiguousarray(arr), False


def _raw(arr: np.ndarray[Any, Any], fortran: bool) -> memoryview:
    """The bytes of a contiguous array, in memory order, without a copy."""
    if arr.size == 0:
        return memoryview(b"")
    return memoryview(arr.T if fortran else arr).cast("B")  # type: ignore[arg-type]


def _long_double_format() -> list[int]:
    info = np.finfo(np.longdouble)
    return [int(info.nmant), int(info.nexp)]


def array_item(arr: np.ndarray[Any, Any], data: DataItem) -> Tagged:
    """The CBOR of ``arr`` (see the module docstring); ``data`` places its bytes."""
    if type(arr) is not np.ndarray and not isinstance(arr, np.memmap):
        raise Unsupported("(a subclass of numpy.ndarray)",
                          "send np.asarray(value) (and its other parts, such as a mask, "
                          "as arrays of their own)", "return np.asarray(value) instead")
    dtype = arr.dtype
    _check_dtype(dtype)
    arr, fortran = _contiguous(arr)
    if fortran and arr.ndim < 2:
        fortran = False
    shape = list(arr.shape)
    tag = _DTYPE_TAG.get(dtype.str)
    if tag is not None and all(shape):
        return Tagged(COLUMN_MAJOR if fortran else ROW_MAJOR,
                             [shape, Tagged(tag, data(_raw(arr, fortran)))])
    content: list[Any] = [dtype.str, shape, fortran, data(_raw(arr, fortran))]
    if dtype.kind in "fc" and dtype.itemsize > (8 if dtype.kind == "f" else 16):
        content.append(_long_double_format())  # long double: its format varies by machine
    return Tagged(TAG_NDARRAY, content)


def scalar_bytes(value: np.generic) -> bytes | None:
    """The CBOR of a scalar whose dtype has an RFC 8746 tag (ints, uints, floats but
    ``longdouble``), written at once: the bytes :func:`scalar_item` encodes to, without its
    items (a task returning ``arr.mean()`` pays this per result: ``encode_value`` of one
    took 19 us here, now 6.4). None for the others."""
    prefix = _SCALAR_PREFIX.get(value.dtype.str)
    return None if prefix is None else prefix + value.tobytes()


def small_bytes(arr: np.ndarray[Any, Any], limit: int) -> bytes | None:
    """The CBOR of a C-ordered array under ``limit`` bytes (those travel in the encoding
    itself) whose dtype has an RFC 8746 tag, written at once: the bytes :func:`array_item`
    encodes to, without its items, behind a head kept per dtype and shape (a task returning
    ``np.arange(10)`` pays this per result: ``encode_value`` of one took 14 to 16 us here,
    now 4.3 to 6.1). None for any other array."""
    if type(arr) is not np.ndarray or arr.nbytes >= limit or not arr.flags.c_contiguous:
        return None
    key = (arr.dtype, arr.shape)
    head = _SMALL_HEADS.get(key)
    if head is None:
        if len(_SMALL_HEADS) >= _SMALL_HEADS_KEPT:
            _SMALL_HEADS.clear()
        head = _SMALL_HEADS[key] = _small_head(arr)
    return head + arr.tobytes() if head else None


#: The heads :func:`small_bytes` wrote, by dtype and shape (b"": no short way for those).
_SMALL_HEADS: dict[tuple[np.dtype[Any], tuple[int, ...]], bytes] = {}
_SMALL_HEADS_KEPT = 1024


def _small_head(arr: np.ndarray[Any, Any]) -> bytes:
    tag = _DTYPE_TAG.get(arr.dtype.str)
    if tag is None or not all(arr.shape):
        return b""
    return b"".join([cbor_head(6, ROW_MAJOR), b"\x82", cbor_head(4, arr.ndim),
                     *[cbor_head(0, d) for d in arr.shape], cbor_head(6, tag),
                     cbor_head(2, arr.nbytes)])


def scalar_of(data: bytes | bytearray | memoryview) -> np.generic | None:
    """The scalar that :func:`scalar_bytes` wrote as the whole of ``data``, read at once
    (a result that is one scalar: decoding it through its three tags took 11 us here);
    None for any other value."""
    data = bytes(data)  # (a few bytes; a memoryview's slices could not be looked up)
    for itemsize in (8, 4, 2, 1):
        dtype = _PREFIX_DTYPE.get(data[:-itemsize])
        if dtype is not None and dtype.itemsize == itemsize:
            return np.frombuffer(data, dtype, 1, len(data) - itemsize)[0]  # type: ignore[no-any-return]
    return None


def scalar_item(value: np.generic, data: DataItem) -> Tagged:
    """The CBOR of a NumPy scalar: :data:`TAG_SCALAR` around its 0-d array."""
    return Tagged(TAG_SCALAR, array_item(np.asarray(value), data))


# --- decoding -------------------------------------------------------------------------------


def _buffer(data: Any, buffers: Sequence[memoryview]) -> memoryview | bytes:
    """A typed array's bytes: in the CBOR itself, or buffer ``data`` kept apart."""
    if type(data) is bytes:
        return data
    if type(data) is int and 0 <= data < len(buffers):
        return buffers[data]
    raise DecodeError("an array's data is neither bytes nor a buffer of the value")


def _array(dtype: np.dtype[Any], data: memoryview | bytes) -> np.ndarray[Any, Any]:
    if len(data) % dtype.itemsize:
        raise DecodeError(f"{len(data)} bytes are no whole number of {dtype} elements")
    if isinstance(data, bytes):  # in-band: a writable copy of a small array
        return np.frombuffer(bytearray(data), dtype)
    arr = np.frombuffer(data, dtype)
    # A value decoded from one flat buffer (a result through the control socket) has only
    # its first array placed aligned; a later one may sit at any byte. NumPy computes on
    # an unaligned array slowly, and some libraries refuse it: such an array is copied.
    return arr if arr.flags.aligned else arr.copy()


def _shaped(flat: np.ndarray[Any, Any], dims: Any, fortran: bool) -> np.ndarray[Any, Any]:
    """``flat`` in the shape ``dims``, which must be a list of at most 64 sizes whose
    product is its size."""
    if not isinstance(dims, list | tuple) or len(dims) > _MAX_DIMS:
        raise DecodeError("an array's shape is not a list of at most 64 sizes")
    count = 1
    for d in dims:
        if type(d) is not int or d < 0:
            raise DecodeError("an array's shape is not a list of at most 64 sizes")
        count *= d
    if count != flat.size:
        raise DecodeError(f"an array of shape {tuple(dims)} cannot hold {flat.size} elements")
    if len(dims) == 1 and not fortran:
        return flat  # already of that shape
    return flat.reshape(dims, order="F" if fortran else "C")


def _dtype(text: Any) -> np.dtype[Any]:
    if type(text) is not str or not _DTYPE_TEXT.fullmatch(text):
        raise DecodeError(f"unsupported array dtype {text!r}")
    try:
        dtype = np.dtype(text)
    except TypeError:
        raise DecodeError(f"unsupported array dtype {text!r}") from None
    if dtype.kind not in "biufc" or dtype.str != text:
        raise DecodeError(f"unsupported array dtype {text!r}")
    return dtype


def _ndarray(content: Any, buffers: Sequence[memoryview]) -> np.ndarray[Any, Any]:
    if not isinstance(content, list | tuple) or len(content) not in (4, 5):
        raise DecodeError("a NumPy array is [dtype, shape, fortran, data(, format)]")
    dtype = _dtype(content[0])
    if type(content[2]) is not bool:
        raise DecodeError("an array's memory order is not a boolean")
    if len(content) == 5 and list(content[4]) != _long_double_format():
        raise DecodeError(f"this peer's long double has another format ({_long_double_format()}"
                          f" bits) than the sender's ({list(content[4])}); send float64")
    return _shaped(_array(dtype, _buffer(content[3], buffers)), content[1], content[2])


def _multi(tag: int, content: Any) -> np.ndarray[Any, Any]:
    if not isinstance(content, list | tuple) or len(content) != 2:
        raise DecodeError("a multi-dimensional array is [dimensions, elements]")
    dims, elements = content
    flat = elements if isinstance(elements, np.ndarray) else np.array(elements)
    if flat.ndim != 1 or flat.dtype.kind not in "biufc":
        raise DecodeError("a multi-dimensional array's elements are not one flat array of "
                          "numbers")
    return _shaped(flat, dims, tag == COLUMN_MAJOR)


def decode_tag(tag: int, content: Any, buffers: Sequence[memoryview]) -> Any:
    """The array or scalar of one of :data:`ARRAY_TAGS`."""
    dtype = _TAG_NP_DTYPE.get(tag)
    if dtype is not None:
        return _array(dtype, _buffer(content, buffers))
    if tag in (ROW_MAJOR, COLUMN_MAJOR):
        return _multi(tag, content)
    if tag == TAG_NDARRAY:
        return _ndarray(content, buffers)
    if tag == TAG_SCALAR:
        if not isinstance(content, np.ndarray) or content.ndim != 0:
            raise DecodeError("a NumPy scalar holds a 0-d array")
        return content[()]
    raise DecodeError(f"typed-array tag {tag} is not supported (reserved, or binary128)")
