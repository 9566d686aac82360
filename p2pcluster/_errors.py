"""The exception hierarchy.

Pure: importable from the sans-IO core. Everything p2pcluster raises on purpose derives from
:class:`P2PClusterError`. Anything that arrives from the network and cannot be accepted raises a
:class:`ProtocolError` subclass, and nothing else: receive loops catch exactly that class.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


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


class HandshakeError(ProtocolError):
    """A stream handshake failed: the peer holds another secret or broke the protocol."""


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
