"""CBOR <-> messages, strictly.

A message is the CBOR array ``[version, type, field1, field2, ...]`` with its fields in
declaration order. A nested record is the array of its fields; a member of a union is
``[type, field1, ...]``. Decoding accepts exactly that: definite lengths only, no semantic tags,
no duplicate map keys, no trailing bytes, exact field counts, exact Python types (a ``bool`` is
not an ``int``), and every :class:`~.messages.Limit`. Anything else raises
:class:`~p2pcluster.ProtocolError` (a :class:`~p2pcluster.DecodeError` or
:class:`~p2pcluster.MessageTooLarge`) and nothing else.

The per-class encoders and decoders are compiled once, from the type hints, when a
:class:`Codec` is made. The peer protocol's codec is :mod:`.wire`; the control protocol's is in
:mod:`.control`. This module knows no message of either, so a program that speaks only one
does not import the other's classes.
"""

from __future__ import annotations

import io
import math
import operator
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import cbor2

from .._errors import DecodeError, MessageTooLarge, UnknownMessageType, UnsupportedVersion
from .wiretypes import Limit

__all__ = ["Codec", "FieldSpec", "compile_encoder", "decode_cbor", "record_specs"]

#: Nesting deeper than this is refused (ours never exceeds 4).
MAX_DEPTH = 8
#: Tags cbor2 would decode on its own; each is mapped to None, which makes cbor2 refuse it.
_BUILTIN_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261,
                 1004, 43000, 55799)
_NO_SEMANTIC_TAGS: dict[int, Any] = dict.fromkeys(_BUILTIN_TAGS)


def _refuse_tag(tag: Any, immutable: bool) -> Any:
    raise ValueError(f"semantic tag {tag.tag} is not allowed")


Decoder = Callable[[Any], Any]
Encoder = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """How one field is checked: its name, its base Python type and its limits.

    ``kind`` is one of ``int float bool str bytes optional tuple record union``; ``items``
    holds the element spec (``optional``, ``tuple``), the record's fields, or the union's
    members as ``(type code, class, fields)``. Exposed so tests can derive data from it.
    """

    name: str
    kind: str
    limit: Limit | None = None
    items: Any = None
    cls: type | None = None


# Decoders are compiled with the static path of their field ("Ping.updates[]"), so an error
# names the field without formatting a string for every field of every message.


def _fail(path: str, why: str) -> typing.NoReturn:
    raise DecodeError(f"{path}: {why}")


def _check_len(path: str, n: int, limit: Limit | None) -> None:
    if limit is not None and limit.max_len is not None and n > limit.max_len:
        raise MessageTooLarge(f"{path}: length {n} exceeds {limit.max_len}")


def _expect(v: Any, pytype: type, path: str) -> None:
    if type(v) is not pytype:
        _fail(path, f"expected {pytype.__name__}, got {type(v).__name__}")


def _int_decoder(limit: Limit | None, path: str) -> Decoder:
    lo = limit.lo if limit else None
    hi = limit.hi if limit else None

    def decode_int(v: Any) -> Any:
        _expect(v, int, path)
        if lo is not None and v < lo:
            _fail(path, f"{v} is below {lo}")
        if hi is not None and v > hi:
            _fail(path, f"{v} is above {hi}")
        return v

    return decode_int


def _sized_decoder(pytype: type, limit: Limit | None, path: str) -> Decoder:
    """str or bytes; a str's length limit counts UTF-8 bytes; a printable str's characters
    are all printable."""
    cap = limit.max_len if limit else None
    printable = limit is not None and limit.printable

    def decode_sized(v: Any) -> Any:
        if type(v) is not pytype:
            _expect(v, pytype, path)
        if cap is not None and len(v) > cap // 4:  # cheap test first: UTF-8 is <= 4x chars
            _check_len(path, len(v.encode()) if pytype is str else len(v), limit)
        if printable and not v.isprintable():
            _fail(path, f"{v!r} has a control character")
        return v

    return decode_sized


def _plain_decoder(pytype: type, path: str) -> Decoder:
    def decode_plain(v: Any) -> Any:
        _expect(v, pytype, path)
        return v

    return decode_plain


def _float_decoder(path: str) -> Decoder:
    """A float, but not NaN: it equals nothing, not even itself, so no field may hold it."""

    def decode_float(v: Any) -> Any:
        _expect(v, float, path)
        if math.isnan(v):
            _fail(path, "NaN is not allowed")
        return v

    return decode_float


def _build_spec(name: str, hint: Any) -> FieldSpec:
    limit = None
    if typing.get_origin(hint) is typing.Annotated:
        hint, *extras = typing.get_args(hint)
        limit = next((e for e in extras if isinstance(e, Limit)), None)
    origin = typing.get_origin(hint)
    if hint in (int, float, bool, str, bytes):
        return FieldSpec(name, hint.__name__, limit)
    if origin is tuple:
        elem, ellipsis = typing.get_args(hint)
        assert ellipsis is Ellipsis, "only tuple[X, ...] is supported"
        return FieldSpec(name, "tuple", limit, _build_spec(f"{name}[]", elem))
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(hint)
        if type(None) in args:
            (inner,) = [a for a in args if a is not type(None)]
            return FieldSpec(name, "optional", limit, _build_spec(name, inner))
        members = tuple((cls.TYPE, cls, record_specs(cls)) for cls in args)
        return FieldSpec(name, "union", limit, members)
    if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        return FieldSpec(name, "record", limit, record_specs(hint), hint)
    raise TypeError(f"field {name}: unsupported type {hint!r}")


_SPECS: dict[type, tuple[FieldSpec, ...]] = {}


def record_specs(cls: type) -> tuple[FieldSpec, ...]:
    """The field specs of a message or record class, in wire order."""
    specs = _SPECS.get(cls)
    if specs is None:
        hints = typing.get_type_hints(cls, include_extras=True)
        specs = tuple(_build_spec(f.name, hints[f.name]) for f in fields(cls))
        _SPECS[cls] = specs
    return specs



def _compile_decoder(spec: FieldSpec, path: str) -> Decoder:  # noqa: PLR0911 - one per kind
    if spec.kind == "int":
        return _int_decoder(spec.limit, path)
    if spec.kind in ("str", "bytes"):
        return _sized_decoder(str if spec.kind == "str" else bytes, spec.limit, path)
    if spec.kind == "float":
        return _float_decoder(path)
    if spec.kind == "bool":
        return _plain_decoder(bool, path)
    if spec.kind == "optional":
        inner = _compile_decoder(spec.items, path)
        return lambda v: None if v is None else inner(v)
    if spec.kind == "tuple":
        return _tuple_decoder(spec, path)
    if spec.kind == "record":
        return _record_decoder(spec.cls, spec.items, path)  # type: ignore[arg-type]
    if spec.kind == "union":
        return _union_decoder(spec, path)
    raise AssertionError(spec.kind)


def _tuple_decoder(spec: FieldSpec, path: str) -> Decoder:
    elem = _compile_decoder(spec.items, path + "[]")
    limit = spec.limit

    def decode_tuple(v: Any) -> Any:
        if type(v) is not list:
            _fail(path, f"expected array, got {type(v).__name__}")
        _check_len(path, len(v), limit)
        return tuple([elem(x) for x in v])

    return decode_tuple


def _record_decoder(cls: type, specs: tuple[FieldSpec, ...], path: str,
                    offset: int = 0) -> Decoder:
    decoders = [_compile_decoder(s, f"{path}.{s.name}") for s in specs]
    n = len(decoders) + offset

    def decode_record(v: Any) -> Any:
        if type(v) is not list:
            _fail(path, f"expected array, got {type(v).__name__}")
        if len(v) != n:
            _fail(path, f"{cls.__name__} needs {n - offset} fields, got {len(v) - offset}")
        # map(call, ...) rather than a comprehension: no frame per record (hot path)
        return cls(*map(operator.call, decoders, v[offset:] if offset else v))

    return decode_record


def _union_decoder(spec: FieldSpec, path: str) -> Decoder:
    by_code = {code: _record_decoder(cls, specs, f"{path}<{cls.__name__}>", 1)
               for code, cls, specs in spec.items}

    def decode_union(v: Any) -> Any:
        if type(v) is not list or not v:
            _fail(path, "expected a non-empty array")
        code = v[0]
        dec = by_code.get(code) if type(code) is int else None
        if dec is None:
            raise UnknownMessageType(f"{path}: unknown record type {code!r}")
        return dec(v)

    return decode_union


def _same(v: Any) -> Any:
    return v


def compile_encoder(spec: FieldSpec) -> Encoder:
    if spec.kind in ("int", "float", "bool", "str", "bytes"):
        return _same
    if spec.kind == "optional":
        inner = compile_encoder(spec.items)
        return lambda v: None if v is None else inner(v)
    if spec.kind == "tuple":
        elem = compile_encoder(spec.items)
        return lambda v: [elem(x) for x in v]
    if spec.kind == "record":
        return _record_encoder(spec.items)
    if spec.kind == "union":
        by_cls = {cls: (code, _record_encoder(specs)) for code, cls, specs in spec.items}

        def encode_union(v: Any) -> Any:
            code, enc = by_cls[type(v)]
            return [code, *enc(v)]

        return encode_union
    raise AssertionError(spec.kind)


def _record_encoder(specs: tuple[FieldSpec, ...]) -> Callable[[Any], list[Any]]:
    names = [s.name for s in specs]
    encoders = [compile_encoder(s) for s in specs]
    if len(names) == 1:
        (name,), (enc,) = names, encoders
        return lambda v: [enc(getattr(v, name))]
    fields_of = operator.attrgetter(*names)
    if all(enc is _same for enc in encoders):  # scalars only: no call per field
        return lambda v: list(fields_of(v))
    return lambda v: list(map(operator.call, encoders, fields_of(v)))


class Codec:
    """Strict CBOR for one family of top-level messages: ``[version, type, fields...]``.

    The peer protocol is one family (:data:`WIRE`); the local control protocol
    (:mod:`.control`) is another, with its own type codes and version, checked by the same
    compiled decoders.
    """

    def __init__(self, classes: Mapping[int, type], *, version: int,
                 supported: frozenset[int]) -> None:
        self.classes = dict(classes)
        self.version = version
        self.supported = supported
        self._encoders = {cls: _record_encoder(record_specs(cls)) for cls in classes.values()}
        self._decoders = {code: _record_decoder(cls, record_specs(cls), cls.__name__, 2)
                          for code, cls in classes.items()}

    def encode(self, msg: Any) -> bytes:
        """Encode ``msg`` as CBOR. Does not check limits: :meth:`decode` of the result does."""
        return cbor2.dumps([self.version, msg.TYPE, *self._encoders[type(msg)](msg)])

    def decode(self, data: bytes | memoryview, *, max_size: int | None = None) -> Any:
        """Decode one message; raise :class:`~p2pcluster.ProtocolError` on anything amiss."""
        if max_size is not None and len(data) > max_size:
            raise MessageTooLarge(f"message of {len(data)} bytes exceeds {max_size}")
        obj = decode_cbor(data)
        if type(obj) is not list or len(obj) < 2:
            raise DecodeError("a message is an array [version, type, fields...]")
        version, code = obj[0], obj[1]
        if type(version) is not int or version not in self.supported:
            raise UnsupportedVersion(f"protocol version {version!r} is not supported")
        dec = self._decoders.get(code) if type(code) is int else None
        if dec is None:
            raise UnknownMessageType(f"unknown message type {code!r}")
        return dec(obj)

    def iter_specs(self) -> Iterator[tuple[int, type, tuple[FieldSpec, ...]]]:
        """Every top-level message class with its field specs, by type code."""
        for code, cls in sorted(self.classes.items()):
            yield code, cls, record_specs(cls)


def decode_cbor(data: bytes | memoryview) -> Any:
    """Decode one plain CBOR item (no tags, definite lengths), with nothing after it."""
    buf = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(
            buf,
            semantic_decoders=_NO_SEMANTIC_TAGS,
            tag_hook=_refuse_tag,
            max_depth=MAX_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        ).decode()
    except Exception as exc:  # any failure of cbor2 on foreign bytes is the sender's
        raise DecodeError(f"malformed CBOR: {exc}") from exc
    if buf.tell() != len(data):
        raise DecodeError(f"{len(data) - buf.tell()} trailing bytes after the CBOR item")
    return obj
