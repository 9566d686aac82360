"""Arguments and results as CBOR: encoding, strict decoding, and what to say when it fails.

Arguments and results travel as CBOR with cbor2's standard tags: ``None``, ``bool``, ``int``,
``float``, ``str``, ``bytes``, lists, tuples (which come back as **lists**), dicts, sets,
``datetime`` with a timezone, ``date``, ``Decimal``, ``Fraction``, ``UUID``, ``complex`` and
the ``ipaddress`` types; NumPy arrays and scalars as RFC 8746 typed arrays (:mod:`._arrays`,
NumPy imported only when one is seen), their data kept out of the encoder when large
(:mod:`._packed`); and handles of shared values (:mod:`._shared`), in task arguments only.
Decoding accepts exactly those tags: cbor2 has no tag that runs code, and we also refuse the
odd ones (regular expressions, e-mail messages, shared and string references) and every
unknown tag. So decoding network bytes never runs code.

A value that cannot travel is refused with a message that names it (``argument 2``, ``the
result of make_point``), its class (a class of a job file by the job file's name, see
:func:`class_name`), and how to fix it: :class:`~p2pcluster.SubmitError` for an argument, at
submit time; :class:`~p2pcluster.UnsendableResult` for a result, in the worker.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import cbor2

from ._errors import DecodeError, NumPyUnavailable, P2PClusterError, SubmitError, UnsendableResult
from ._loader import JobLoader
from ._packed import (
    MAX_BUFFERS,
    OUT_OF_BAND,
    SPLICE_BYTES,
    SPLICED,
    Packed,
    Payload,
    Tagged,
    decode_input,
    marker,
    splice,
    split_markers,
    uses_prefix,
)
from ._shared import TAG_HANDLE, Shared

__all__ = [
    "class_name", "decode_call", "decode_value", "encode_call", "encode_error", "encode_shared",
    "encode_value",
]

#: The tags of :mod:`._arrays` (RFC 8746, and ours: "p2pA", "p2pS"), known without NumPy.
_ARRAY_TAGS = frozenset({40, 1040, 0x70327041, 0x70327053, *range(64, 88)})


class _Unencodable(Exception):
    """Internal: raised by the encoder hooks, turned into a SubmitError. ``what``, when
    given, says why (else the class of ``obj`` does); ``fixes`` says what to do, for an
    argument and for a result."""

    def __init__(self, obj: Any, what: str = "", fixes: tuple[str, str] | None = None) -> None:
        super().__init__(obj)
        self.obj = obj
        self.what = what
        self.fixes = fixes


class _Packer:
    """What one encoding collects: array data kept out of band, shared values used."""

    def __init__(self, *, out_of_band: bool, handles: bool) -> None:
        self.out_of_band = out_of_band
        self.handles = handles
        self.buffers: list[memoryview] = []
        self.uses: list[bytes] = []
        self.spliced: list[bytes] = []  #: large byte strings, put back in by finish()

    def splice(self, string: bytes) -> bytes:
        """What to encode in place of a large byte string, which :meth:`finish` puts back."""
        self.spliced.append(string)
        return marker(SPLICED + len(self.spliced) - 1)

    def data(self, view: memoryview) -> bytes:
        """An array's bytes in the encoding: a marker for a large one, kept apart."""
        if self.out_of_band and view.nbytes >= OUT_OF_BAND and len(self.buffers) < MAX_BUFFERS:
            self.buffers.append(view)
            return marker(len(self.buffers) - 1)
        return bytes(view)

    def finish(self, data: bytes) -> Payload:
        if self.uses:  # [args, kwargs] becomes [digests, args, kwargs]
            data = uses_prefix(self.uses) + data[1:]
        if self.spliced:  # last: the copies above are of the small encoding
            data = splice(data, self.spliced)
        return split_markers(data, self.buffers) if self.buffers else data


_local = threading.local()  # the packer of the encoding under way in this thread
_IN_BAND = _Packer(out_of_band=False, handles=False)


def _packer() -> _Packer:
    packer: _Packer | None = getattr(_local, "packer", None)
    return packer or _IN_BAND


def _encode_numpy(encoder: cbor2.CBOREncoder, obj: Any) -> None:
    import numpy as np

    _arrays = _ARRAYS or _import_arrays()
    if isinstance(obj, np.generic) and (raw := _arrays.scalar_bytes(obj)) is not None:
        encoder.write(raw)
        return
    if type(obj) is np.ndarray and (raw := _arrays.small_bytes(obj, OUT_OF_BAND)) is not None:
        encoder.write(raw)  # in-band in any encoding: the same bytes as the long way
        return
    packer = _packer()
    try:
        item = (_arrays.scalar_item(obj, packer.data) if isinstance(obj, np.generic)
                else _arrays.array_item(obj, packer.data))
    except _arrays.Unsupported as exc:
        raise _Unencodable(obj, exc.what, (exc.fix_argument, exc.fix_result)) from None
    encoder.encode(item)


def _encode_handle(encoder: cbor2.CBOREncoder, handle: Shared) -> None:
    packer = _packer()
    if not packer.handles:
        raise _Unencodable(handle, "(the handle of a shared value, which only task arguments "
                           "may hold)", ("pass the value itself", "return the value itself"))
    if handle.digest not in packer.uses:
        packer.uses.append(handle.digest)
    encoder.encode(Tagged(TAG_HANDLE, handle.digest))


def _encode_bytes(encoder: cbor2.CBOREncoder, string: bytes) -> None:
    """A byte string; a large one, in a value whose encoding finishes (:meth:`_Packer.finish`),
    as a marker that the finish replaces with the bytes, in one copy."""
    packer: _Packer | None = getattr(_local, "packer", None)
    if packer is None or len(string) < SPLICE_BYTES:
        encoder.encode_bytes(string)
    else:
        encoder.encode_bytes(packer.splice(string))


def _encode_tagged(encoder: cbor2.CBOREncoder, tagged: Tagged) -> None:
    encoder.encode_length(6, tagged.tag)
    encoder.encode(tagged.value)


def _refuse(encoder: cbor2.CBOREncoder, obj: Any) -> None:
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(obj, numpy.ndarray):  # a subclass: memmap, masked...
        _encode_numpy(encoder, obj)
        return
    raise _Unencodable(obj)


def _encode_datetime(encoder: cbor2.CBOREncoder, obj: datetime) -> None:
    if obj.utcoffset() is None:
        raise _Unencodable(obj)
    encoder.encode_datetime(obj)


_ENCODERS: dict[type, Callable[[cbor2.CBOREncoder, Any], Any]] = {
    datetime: _encode_datetime,
    type(re.compile("")): _refuse,
    cbor2.CBORTag: _refuse,
    cbor2.CBORSimpleValue: _refuse,
    type(cbor2.undefined): _refuse,
    Shared: _encode_handle,
    Tagged: _encode_tagged,
    bytes: _encode_bytes,
}
_WITH_NUMPY: list[dict[type, Callable[[cbor2.CBOREncoder, Any], Any]]] = []


def _encoders() -> dict[type, Callable[[cbor2.CBOREncoder, Any], Any]]:
    """Ours, and NumPy's types once NumPy is imported (never importing it ourselves)."""
    if "numpy" not in sys.modules:
        return _ENCODERS
    if not _WITH_NUMPY:
        import numpy as np

        from ._arrays import scalar_types

        _WITH_NUMPY.append({**_ENCODERS, np.ndarray: _encode_numpy,
                            **dict.fromkeys(scalar_types(), _encode_numpy)})
    return _WITH_NUMPY[0]
# Tags cbor2 decodes that we refuse (regexp, MIME, value sharing, string references); every
# tag cbor2 does not know is refused by the tag hook.
_REFUSED_TAGS: dict[int, Any] = dict.fromkeys((25, 28, 29, 35, 36, 256))
_ACCEPTED = (
    "None, bool, int, float, str, bytes, list, tuple (it arrives as a list), dict, set, "
    "datetime with a timezone, date, Decimal, Fraction, UUID, complex, IP addresses, and "
    "NumPy arrays and scalars of bool, integer, float and complex dtypes"
)


def _tag_hook(buffers: Sequence[memoryview], shared: Mapping[bytes, Any] | None
              ) -> Callable[[cbor2.CBORTag, bool], Any]:
    """Decodes our tags: arrays (their data in the CBOR, or buffer ``i`` of ``buffers``),
    and handles of shared values (the value itself, from ``shared``)."""

    def tag_hook(tag: cbor2.CBORTag, immutable: bool) -> Any:
        if tag.tag in _ARRAY_TAGS:
            return (_ARRAYS or _import_arrays()).decode_tag(tag.tag, tag.value, buffers)
        if tag.tag == TAG_HANDLE:
            return _resolve(tag.value, shared)
        raise ValueError(f"CBOR tag {tag.tag} is not allowed")

    return tag_hook


#: The start of a NumPy scalar's CBOR (``TAG_SCALAR``), and the most bytes of one that
#: :func:`decode_value` reads at once (``_arrays.scalar_of``).
_SCALAR_HEAD = b"\xdap2pS"
_SCALAR_MOST = 32
#: :mod:`._arrays`, once imported (an import statement costs a few microseconds each time,
#: and a task's result may hold one scalar: three tags to decode).
_ARRAYS: Any = None


def _import_arrays() -> Any:
    global _ARRAYS  # noqa: PLW0603
    try:
        from . import _arrays
    except ImportError:
        raise NumPyUnavailable(
            "a NumPy array arrived, and NumPy is not installed on this peer: install "
            "it on every peer that runs such tasks (pip install 'p2pcluster[numpy]'); "
            "this peer takes no more tasks of this job") from None
    _ARRAYS = _arrays
    return _arrays


_PLAIN_HOOK = _tag_hook((), None)


def _resolve(digest: Any, shared: Mapping[bytes, Any] | None) -> Any:
    if type(digest) is not bytes or shared is None or digest not in shared:
        raise DecodeError("a shared value the task uses did not reach this peer "
                          f"(sha256 {digest.hex()[:16] if type(digest) is bytes else '?'})")
    return shared[digest]


def _dumps(value: Any) -> bytes:
    return cbor2.dumps(value, datetime_as_timestamp=False, encoders=_encoders(),
                       default=_refuse)


def _dumps_with(packer: _Packer, value: Any) -> bytes:
    _local.packer = packer
    try:
        return _dumps(value)
    finally:
        _local.packer = None


#: (test, how to fix an argument, how to fix a result), first match wins.
_HINTS: tuple[tuple[Callable[[Any], bool], str, str], ...] = (
    (lambda o: isinstance(o, datetime),
     "attach a timezone: dt.replace(tzinfo=timezone.utc), or dt.astimezone()",
     "attach a timezone before returning it: dt.replace(tzinfo=timezone.utc), or "
     "dt.astimezone()"),
    (lambda o: hasattr(o, "tolist"), "convert it with np.asarray() or .tolist(), or load the "
     "data inside the task",
     "return value.tolist() instead"),
    (dataclasses.is_dataclass, "convert it with dataclasses.asdict(), and rebuild it in the task",
     "return dataclasses.asdict(value) instead, and rebuild the object where you use it"),
    (lambda o: isinstance(o, enum.Enum), "send its .value or .name", "return its .value or .name"),
    (lambda o: hasattr(o, "read") or hasattr(o, "fileno"),
     "pass the path instead, and open the file inside the task",
     "return the path, or the content the caller needs, instead"),
    (callable, "pass its name, and look it up inside the task",
     "return its name, and look it up where you use it"),
)
_DEFAULT_HINTS = (
    "convert it to lists, dicts, str, bytes or numbers, or pass what is needed to load it (a "
    "path, a URL) and load the data inside the task",
    "return lists, dicts, str, bytes or numbers instead (for an object of your own, its "
    "fields, such as vars(value)), and rebuild the object where you use it",
)


def _hint(obj: Any, travel: str, exc: Exception | None = None) -> str:
    which = 0 if travel == "arguments" else 1
    if isinstance(exc, _Unencodable) and exc.fixes is not None:
        return exc.fixes[which]
    for test, *hints in _HINTS:
        if test(obj):
            return hints[which]
    return _DEFAULT_HINTS[which]


def _type_name(obj: Any) -> str:
    return class_name(type(obj))


def class_name(t: type) -> str:
    """How messages name a class: ``int``, ``decimal.Decimal``, and ``Point from job.py``
    for a class of a job file (never its ``p2pjob_`` module name)."""
    if t.__module__ == "builtins":
        return t.__qualname__
    loader = getattr(sys.modules.get(t.__module__), "__loader__", None)
    if isinstance(loader, JobLoader):
        return f"{t.__qualname__} from {loader.filename}"
    return f"{t.__module__}.{t.__qualname__}"


def _a(obj: Any) -> str:
    if isinstance(obj, type):
        return f"the class {class_name(obj)}"
    if inspect.isroutine(obj):
        return f"the function {getattr(obj, '__qualname__', obj)}"
    return f"a {_type_name(obj)}"


def _describe(where: str, value: Any, exc: Exception, *, travel: str) -> str:
    culprit = exc.obj if isinstance(exc, _Unencodable) else value
    what = f"it is {_a(value)}"
    if culprit is not value:
        what += f" containing {_a(culprit)}"
    if isinstance(exc, _Unencodable) and exc.what:
        what += f" {exc.what}" if culprit is value else f" ({exc.what})"
    elif isinstance(culprit, datetime):
        what += " without a timezone"
    elif not isinstance(exc, _Unencodable):
        what += f" ({exc})"
    verb = "sent to the cluster" if travel == "arguments" else "sent back"
    return (f"{where} cannot be {verb}: {what}, and {travel} travel as CBOR, "
            f"which carries {_ACCEPTED}. To fix it, {_hint(culprit, travel, exc)}.")


_FAILURES = (_Unencodable, cbor2.CBOREncodeError, ValueError, TypeError, RecursionError)


def _try_dumps(value: Any) -> Exception | None:
    try:
        _dumps_with(_Packer(out_of_band=False, handles=True), value)
    except _FAILURES as exc:
        return exc
    return None


def encode_call(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Payload:
    """Encode a call's arguments as ``[args, kwargs]`` (``[digests, args, kwargs]`` when it
    uses shared values), its large arrays kept apart (a :class:`~._packed.Packed`);
    :class:`SubmitError` names a bad argument."""
    packer = _Packer(out_of_band=True, handles=True)
    try:
        return packer.finish(_dumps_with(packer, [args, dict(kwargs)]))
    except _FAILURES:
        pass  # find the culprit: only on this error path is each argument encoded alone
    named = [(f"argument {i}", a) for i, a in enumerate(args)]
    named += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for where, value in named:
        exc = _try_dumps(value)
        if exc is not None:
            raise SubmitError(_describe(where, value, exc, travel="arguments")) from None
    raise SubmitError("the arguments cannot be sent to the cluster (they refer to each other)")


def encode_value(value: Any, *, what: str = "the result") -> Payload:
    """Encode one value (a task's result), its large arrays kept apart;
    :class:`UnsendableResult` says why it cannot be."""
    packer = _Packer(out_of_band=True, handles=False)
    try:
        return packer.finish(_dumps_with(packer, value))
    except _FAILURES as exc:
        raise UnsendableResult(_describe(what, value, exc, travel="results")) from None


def encode_shared(value: Any) -> Payload:
    """Encode a value to share; :class:`SubmitError` says why it cannot be."""
    packer = _Packer(out_of_band=True, handles=False)
    try:
        return packer.finish(_dumps_with(packer, value))
    except _FAILURES as exc:
        raise SubmitError(_describe("the value to share", value, exc, travel="arguments")
                          ) from None


def encode_error(type_name: str, message: str, tb: str = "") -> bytes:
    """The payload of a failed task: ``TaskStatus.ERROR``, ``POISON`` or ``TIMEOUT``."""
    return _dumps({"type": type_name, "message": message, "traceback": tb})


def decode_value(payload: Payload, *, shared: Mapping[bytes, Any] | None = None) -> Any:
    """Decode one value; refuse odd and unknown tags with :class:`~p2pcluster.DecodeError`
    (:class:`~p2pcluster.NumPyUnavailable` for an array where NumPy is missing). The arrays
    of a packed value are its buffers themselves, not copies. ``shared`` holds the shared
    values a call's handles name, decoded.

    Bytes after the value go unnoticed: ``cbor2.loads`` does not report them, and it is four
    times faster than a ``CBORDecoder`` that would. The frame that carries a payload already
    delimits it, so nothing is lost but a check for a sender's bug.
    """
    buffers: Sequence[memoryview] = ()
    data: bytes | memoryview
    if isinstance(payload, Packed) and payload.plain:
        data = payload.flat()
    elif isinstance(payload, Packed):
        buffers = payload.buffers
        data = decode_input(payload.heads, [b.nbytes for b in buffers])
    else:
        data = payload
        if len(data) <= _SCALAR_MOST and data[:5] == _SCALAR_HEAD and (
                scalar := (_ARRAYS or _import_arrays()).scalar_of(data)) is not None:
            return scalar
    hook = _PLAIN_HOOK if not buffers and shared is None else _tag_hook(buffers, shared)
    try:
        return cbor2.loads(
            data, semantic_decoders=_REFUSED_TAGS, tag_hook=hook, allow_indefinite=False
        )
    except Exception as exc:  # any failure of cbor2 on foreign bytes is the sender's
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, P2PClusterError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise DecodeError(f"malformed value: {exc}") from exc


def decode_call(payload: Payload, *, shared: Mapping[bytes, Any] | None = None
                ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The inverse of :func:`encode_call`; tuples among the arguments arrive as lists, and
    each handle of a shared value as the value (from ``shared``)."""
    obj = decode_value(payload, shared=shared)
    if type(obj) is list and len(obj) == 3 and type(obj[0]) is list:
        obj = obj[1:]  # [digests, args, kwargs]: the digests were for the peer
    if type(obj) is not list or len(obj) != 2 or type(obj[0]) is not list:
        raise DecodeError("a call is [args, kwargs]")
    kwargs = obj[1]
    if type(kwargs) is not dict or (kwargs and not all(type(k) is str for k in kwargs)):
        raise DecodeError("a call's keyword arguments are a map of str")
    return tuple(obj[0]), kwargs
