"""The exception hierarchy.

Pure: importable from the sans-IO core. Everything p2pcluster raises on purpose derives from
:class:`P2PClusterError`. Anything that arrives from the network and cannot be accepted raises a
:class:`ProtocolError` subclass, and nothing else: receive loops catch exactly that class.

A task that failed on a peer arrives as a :class:`TaskError` (or :class:`PoisonTaskError`,
:class:`TaskTimeoutError`); :func:`task_error` makes it an instance of the original exception
class too, when this process can name that class without importing anything.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class P2PClusterError(Exception):
    """Base class of every error p2pcluster raises on purpose."""


class ConfigError(P2PClusterError, ValueError):
    """A configuration value (argument, environment variable or TOML key) is invalid."""


class SecretError(P2PClusterError):
    """The cluster secret is missing, malformed, or stored unsafely."""


class SubmitError(P2PClusterError, ValueError):
    """A function or an argument cannot be sent to the cluster; the message says how to fix it."""


class ClusterError(P2PClusterError):
    """The cluster itself failed under a :class:`~p2pcluster.Cluster`: its connection to the
    daemon broke, or its embedded peer stopped. Every unfinished future and iterator fails
    with it (``__cause__`` says why), and every later call raises it."""


class ValueTooLarge(SubmitError):
    """A task's argument is larger than ``max_value_size`` where it would have to go; the
    message names both sizes and the setting. (A task whose *result* is too large fails with
    a :class:`~p2pcluster.TaskError` of type ``ValueTooLarge`` instead.)"""


class UnsendableResult(P2PClusterError, TypeError):
    """A task returned a value that cannot travel back (CBOR cannot carry it). Raised in the
    worker; the submitter gets it as a :class:`~p2pcluster.TaskError` that is also this
    class. The message names the value's class and the job file it comes from, and says how
    to fix it."""


class AddressInUse(P2PClusterError, OSError):
    """The peer's port is taken on this machine, by another peer or another program. Also an
    ``OSError`` with ``errno`` ``EADDRINUSE``, as the failed bind was."""


class NameTaken(P2PClusterError):
    """Another live peer of the cluster, on another machine, has this peer's name and started
    first; this peer leaves. The message names the other peer's address."""


class ProtocolError(P2PClusterError):
    """Bytes from the network were refused. The one exception the decoders raise."""


class DecodeError(ProtocolError):
    """Malformed CBOR, trailing bytes, or a missing, extra or mistyped field."""


class NumPyUnavailable(DecodeError):
    """A value holds a NumPy array or scalar, and NumPy is not installed where it arrived.
    A task that fails with it makes its peer take no more tasks of that job."""


class UnknownMessageType(DecodeError):
    """The type code is not one this version knows."""


class UnsupportedVersion(DecodeError):
    """The protocol version is not one this version speaks."""


class MessageTooLarge(ProtocolError):
    """A datagram, frame or container exceeds its size limit."""


class AuthenticationError(ProtocolError):
    """AEAD verification failed: wrong key, wrong cluster name, or tampered bytes."""


class UnknownKey(AuthenticationError):
    """The key id names no key in our keyring."""


class ReplayError(ProtocolError):
    """A datagram was seen before, or its timestamp is outside the replay window."""


class ClockSkew(ReplayError):
    """An authentic datagram's timestamp is outside the replay window. ``offset`` is the
    sender's clock minus ours, in seconds (positive: the sender's is ahead); ``sender`` its
    node id. The timestamp is authenticated, so the offset can be trusted."""

    def __init__(self, message: str, offset: float, sender: bytes) -> None:
        super().__init__(message)
        self.offset = offset
        self.sender = sender


class Misdirected(ProtocolError):
    """A datagram sealed for another node id: it reached a peer that restarted (with a new
    id) at an address the sender still knows, or it was recorded on its way elsewhere."""


class HandshakeError(ProtocolError):
    """A stream handshake failed: the peer holds another secret or broke the protocol."""


class TaskError(P2PClusterError):
    """A task raised an exception on a peer.

    ``type_name`` is the original exception's type (``"ZeroDivisionError"``, or
    ``"module.Class"``), ``remote_message`` its message, ``remote_traceback`` the traceback as
    formatted on the peer, and ``peer`` the name of the peer that ran it. ``str()`` shows all
    of it; ``args`` is ``(remote_message,)``.

    :func:`~._jobs.unpack` raises a subclass that is *also* the original exception class when this
    process can name that class without importing anything (see :func:`task_error`), so
    ``except ValueError`` catches a remote ``ValueError``.
    """

    def __init__(self, type_name: str, message: str, traceback: str, peer: str) -> None:
        super().__init__(message)  # the original class's __init__, in a combined class
        self.args = (message,)
        self.type_name = type_name
        self.remote_message = message
        self.remote_traceback = traceback
        self.peer = peer

    def __str__(self) -> str:
        text = f"{self.type_name}: {self.remote_message} (on peer {self.peer})"
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        kind = type(self).__dict__.get("_kind", type(self))
        return task_error, (kind, self.type_name, self.remote_message, self.remote_traceback,
                            self.peer)


class PoisonTaskError(TaskError):
    """A task crashed its worker process three times (a segfault, ``os._exit``...); it is
    not retried again."""


class TaskTimeoutError(TaskError, TimeoutError):
    """A task ran longer than the job's ``timeout`` and its worker was stopped."""


def task_error(kind: type[TaskError], type_name: str, message: str, traceback: str,
               peer: str) -> TaskError:
    """A ``kind`` (:class:`TaskError` or a subclass) for a remote exception of ``type_name``.

    A plain :class:`TaskError` becomes a cached subclass of both ``kind`` and the original
    class when :func:`original_class` finds it and the two combine: the original's
    ``__init__`` must accept the message alone. Otherwise (``UnicodeDecodeError``, classes
    with required arguments or clashing layouts) the error is a plain ``kind``.
    """
    original = original_class(type_name) if kind is TaskError else None
    combined = _combined(kind, original) if original is not None else None
    if combined is not None:
        try:
            return combined(type_name, message, traceback, peer)
        except Exception:  # an __init__ that wants more than the message alone
            pass
    return kind(type_name, message, traceback, peer)


#: Exception classes a TaskError never takes on (see :func:`original_class`).
_NEVER_COMBINED = (TaskError, StopIteration, StopAsyncIteration)


def original_class(type_name: str) -> type[Exception] | None:
    """The ``Exception`` subclass ``type_name`` names in this process, or None.

    ``type_name`` is a builtin's bare name or ``module.qualname``. Only builtins and modules
    already in ``sys.modules`` count (a job file is, under its ``p2pjob_`` name): nothing is
    imported, and no module ``__getattr__`` runs. ``BaseException`` subclasses that are not
    ``Exception`` (``SystemExit``, ``KeyboardInterrupt``) never count, and neither do
    ``StopIteration`` and ``StopAsyncIteration``, which would silently end a ``for`` loop
    over ``cluster.map`` instead of raising.
    """
    parts = type_name.split(".")
    splits = [(".".join(parts[:i]), parts[i:]) for i in range(len(parts) - 1, 0, -1)]
    for module_name, names in splits if len(parts) > 1 else [("builtins", parts)]:
        obj: Any = sys.modules.get(module_name)
        for name in names:
            obj = _member(obj, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            return None if issubclass(obj, _NEVER_COMBINED) else obj
    return None


def _member(obj: Any, name: str) -> Any:
    try:
        return vars(obj).get(name)
    except TypeError:  # None, or an object without __dict__
        return None


_COMBINED: dict[tuple[type, type], type[TaskError] | None] = {}
_MAX_COMBINED = 256  # classes kept; job files come and go in a long-lived process


def _combined(kind: type[TaskError], original: type[Exception]) -> type[TaskError] | None:
    """``kind[original]``, a subclass of both, made once; None if they do not combine."""
    key = (kind, original)
    if key not in _COMBINED:
        if len(_COMBINED) >= _MAX_COMBINED:
            _COMBINED.clear()
        name = f"{kind.__name__}[{original.__qualname__}]"
        try:
            _COMBINED[key] = type(name, (kind, original),
                                  {"_kind": kind, "__module__": kind.__module__})
        except Exception:  # layout or MRO conflicts, a refusing __init_subclass__
            _COMBINED[key] = None
    return _COMBINED[key]


def too_large(what: str, size: int, limit: int, where: str) -> str:
    """The one wording of a value over a limit: both sizes, where, and the setting."""
    return (f"{what}: {size:,} bytes, over the limit of {limit:,} bytes on {where} "
            "(max_value_size: raise it with P2PCLUSTER_MAX_VALUE_SIZE or "
            "Config(max_value_size=...) there)")


@contextmanager
def single_errors() -> Iterator[None]:
    """Re-raise an exception group that holds one exception as that exception.

    A context manager that yields inside a trio nursery would otherwise hand its caller an
    ``ExceptionGroup`` for an error raised in the caller's own ``with`` block."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if leaf is group:
            raise
        leaf.__suppress_context__ = True
        raise leaf from leaf.__cause__
