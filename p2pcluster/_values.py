"""Arguments and results as CBOR: encoding, strict decoding, and what to say when it fails.

Arguments and results travel as CBOR with cbor2's standard tags: ``None``, ``bool``, ``int``,
``float``, ``str``, ``bytes``, lists, tuples (which come back as **lists**), dicts, sets,
``datetime`` with a timezone, ``date``, ``Decimal``, ``Fraction``, ``UUID``, ``complex`` and
the ``ipaddress`` types. Decoding accepts exactly those tags: cbor2 has no tag that runs code,
and we also refuse the odd ones (regular expressions, e-mail messages, shared and string
references) and every unknown tag. So decoding network bytes never runs code.

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
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import cbor2

from ._errors import DecodeError, SubmitError, UnsendableResult
from ._loader import JobLoader

__all__ = [
    "class_name", "decode_call", "decode_value", "encode_call", "encode_error", "encode_value",
]


class _Unencodable(Exception):
    """Internal: raised by the encoder hooks, turned into a SubmitError."""

    def __init__(self, obj: Any) -> None:
        super().__init__(obj)
        self.obj = obj


def _refuse(encoder: cbor2.CBOREncoder, obj: Any) -> None:
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
}
# Tags cbor2 decodes that we refuse (regexp, MIME, value sharing, string references); every
# tag cbor2 does not know goes to _refuse_tag.
_REFUSED_TAGS: dict[int, Any] = dict.fromkeys((25, 28, 29, 35, 36, 256))
_ACCEPTED = (
    "None, bool, int, float, str, bytes, list, tuple (it arrives as a list), dict, set, "
    "datetime with a timezone, date, Decimal, Fraction, UUID, complex and IP addresses"
)


def _refuse_tag(tag: cbor2.CBORTag, immutable: bool) -> Any:
    raise ValueError(f"CBOR tag {tag.tag} is not allowed")


def _dumps(value: Any) -> bytes:
    return cbor2.dumps(value, datetime_as_timestamp=False, encoders=_ENCODERS, default=_refuse)


#: (test, how to fix an argument, how to fix a result), first match wins.
_HINTS: tuple[tuple[Callable[[Any], bool], str, str], ...] = (
    (lambda o: isinstance(o, datetime),
     "attach a timezone: dt.replace(tzinfo=timezone.utc), or dt.astimezone()",
     "attach a timezone before returning it: dt.replace(tzinfo=timezone.utc), or "
     "dt.astimezone()"),
    (lambda o: hasattr(o, "tolist"), "convert it with .tolist(), or load the data inside the task",
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


def _hint(obj: Any, travel: str) -> str:
    which = 0 if travel == "arguments" else 1
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
    if isinstance(culprit, datetime):
        what += " without a timezone"
    elif not isinstance(exc, _Unencodable):
        what += f" ({exc})"
    verb = "sent to the cluster" if travel == "arguments" else "sent back"
    return (f"{where} cannot be {verb}: {what}, and {travel} travel as CBOR, "
            f"which carries {_ACCEPTED}. To fix it, {_hint(culprit, travel)}.")


def _try_dumps(value: Any) -> Exception | None:
    try:
        _dumps(value)
    except (_Unencodable, cbor2.CBOREncodeError, ValueError, TypeError, RecursionError) as exc:
        return exc
    return None


def encode_call(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bytes:
    """Encode a call's arguments as ``[args, kwargs]``; :class:`SubmitError` names a bad one."""
    try:
        return _dumps([args, dict(kwargs)])
    except (_Unencodable, cbor2.CBOREncodeError, ValueError, TypeError, RecursionError):
        pass  # find the culprit: only on this error path is each argument encoded alone
    named = [(f"argument {i}", a) for i, a in enumerate(args)]
    named += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for where, value in named:
        exc = _try_dumps(value)
        if exc is not None:
            raise SubmitError(_describe(where, value, exc, travel="arguments")) from None
    raise SubmitError("the arguments cannot be sent to the cluster (they refer to each other)")


def encode_value(value: Any, *, what: str = "the result") -> bytes:
    """Encode one value (a task's result); :class:`UnsendableResult` says why it cannot be."""
    try:
        return _dumps(value)
    except (_Unencodable, cbor2.CBOREncodeError, ValueError, TypeError, RecursionError) as exc:
        raise UnsendableResult(_describe(what, value, exc, travel="results")) from None


def encode_error(type_name: str, message: str, tb: str = "") -> bytes:
    """The payload of a failed task: ``TaskStatus.ERROR``, ``POISON`` or ``TIMEOUT``."""
    return encode_value({"type": type_name, "message": message, "traceback": tb})


def decode_value(data: bytes) -> Any:
    """Decode one value; refuse odd and unknown tags with :class:`~p2pcluster.DecodeError`.

    Bytes after the value go unnoticed: ``cbor2.loads`` does not report them, and it is four
    times faster than a ``CBORDecoder`` that would. The frame that carries a payload already
    delimits it, so nothing is lost but a check for a sender's bug.
    """
    try:
        return cbor2.loads(
            data, semantic_decoders=_REFUSED_TAGS, tag_hook=_refuse_tag, allow_indefinite=False
        )
    except Exception as exc:  # any failure of cbor2 on foreign bytes is the sender's
        raise DecodeError(f"malformed value: {exc}") from exc


def decode_call(data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The inverse of :func:`encode_call`; tuples among the arguments arrive as lists."""
    obj = decode_value(data)
    if type(obj) is not list or len(obj) != 2 or type(obj[0]) is not list:
        raise DecodeError("a call is [args, kwargs]")
    kwargs = obj[1]
    if type(kwargs) is not dict or (kwargs and not all(type(k) is str for k in kwargs)):
        raise DecodeError("a call's keyword arguments are a map of str")
    return tuple(obj[0]), kwargs
