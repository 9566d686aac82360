"""What a worker process runs: one batch of calls to one function, results as CBOR.

This module is imported inside trio-parallel's worker processes, so it stays light: no trio,
no network layer, only :mod:`p2pcluster._code` and cbor2. A worker respawned after a crash
pays for little more than the interpreter.

Every outcome is ``(status, payload)``: ``OK`` with the encoded result, or ``ERROR`` with the
CBOR map ``{"type", "message", "traceback"}``. Nothing a task does is allowed to escape as an
exception, not even ``SystemExit``: trio-parallel would carry it back into the peer's own
process and raise it there.
"""

from __future__ import annotations

import time
import traceback
import types
from collections.abc import Callable, Sequence
from typing import Any

from ._code import FunctionRef, decode_call, encode_value, load_function

__all__ = ["ERROR", "OK", "encode_error", "run_batch", "warm_up"]

OK = 0
ERROR = 1


def encode_error(type_name: str, message: str, tb: str = "") -> bytes:
    """The payload of an ``ERROR`` (and of the pool's ``POISON`` and ``TIMEOUT``)."""
    return encode_value({"type": type_name, "message": message, "traceback": tb})


def run_batch(
    cache_root: str, ref_wire: Sequence[Any], payloads: Sequence[bytes]
) -> tuple[list[tuple[int, bytes]], float]:
    """Call the function ``ref_wire`` names once per payload, in order.

    Returns the outcomes and the seconds spent in this process, loading included. If the
    function cannot be loaded, every payload gets the same ``ERROR``.
    """
    start = time.perf_counter()
    try:
        fn = load_function(FunctionRef.from_wire(ref_wire), cache_root)
    except BaseException as exc:
        failed = (ERROR, _load_error(ref_wire, exc))
        return [failed] * len(payloads), time.perf_counter() - start
    outcomes = [_call(fn, payload) for payload in payloads]
    return outcomes, time.perf_counter() - start


def warm_up() -> None:
    """A no-op that makes a fresh worker import this module (and cbor2) before any task."""


def _call(fn: Callable[..., Any], payload: bytes) -> tuple[int, bytes]:
    try:
        args, kwargs = decode_call(payload)
        return OK, encode_value(_check_sync(fn, fn(*args, **kwargs)))
    except BaseException as exc:
        return ERROR, _exception_payload(exc)


def _check_sync(fn: Callable[..., Any], result: Any) -> Any:
    if isinstance(result, types.CoroutineType):
        result.close()
        raise TypeError(
            f"{getattr(fn, '__qualname__', fn)} is an async function; a task must be a "
            "plain (sync) function"
        )
    return result


def _type_name(exc: BaseException) -> str:
    t = type(exc)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not lose the error
        return f"<{_type_name(exc)}: str() failed>"


def _exception_payload(exc: BaseException, message: str | None = None) -> bytes:
    tb = exc.__traceback__.tb_next if exc.__traceback__ else None  # skip our own frame
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return encode_error(_type_name(exc), _message(exc) if message is None else message, text)


def _load_error(ref_wire: Sequence[Any], exc: BaseException) -> bytes:
    name = ".".join(str(part) for part in ref_wire[:2]) if len(ref_wire) >= 2 else "?"
    if isinstance(exc, ImportError | AttributeError):
        message = (
            f"{name} could not be imported on this peer ({_type_name(exc)}: {_message(exc)}). "
            "Install the module on every peer, or ship it with --include."
        )
    else:
        message = f"loading {name} on this peer failed: {_type_name(exc)}: {_message(exc)}"
    return _exception_payload(exc, message)
