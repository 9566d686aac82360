"""p2pcluster: a peer-to-peer compute cluster for a LAN.

The public API is re-exported here; every other module is private. The errors and the
version load at once; everything else loads on first use (PEP 562), so that commands such as
`p2pcluster members` start without importing the whole library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import AddressInUse as AddressInUse
from ._errors import AuthenticationError as AuthenticationError
from ._errors import ClusterError as ClusterError
from ._errors import ConfigError as ConfigError
from ._errors import DecodeError as DecodeError
from ._errors import HandshakeError as HandshakeError
from ._errors import MessageTooLarge as MessageTooLarge
from ._errors import NameTaken as NameTaken
from ._errors import NumPyUnavailable as NumPyUnavailable
from ._errors import P2PClusterError as P2PClusterError
from ._errors import PoisonTaskError as PoisonTaskError
from ._errors import ProtocolError as ProtocolError
from ._errors import ReplayError as ReplayError
from ._errors import SecretError as SecretError
from ._errors import SubmitError as SubmitError
from ._errors import TaskError as TaskError
from ._errors import TaskTimeoutError as TaskTimeoutError
from ._errors import UnknownKey as UnknownKey
from ._errors import UnknownMessageType as UnknownMessageType
from ._errors import UnsendableResult as UnsendableResult
from ._errors import UnsupportedVersion as UnsupportedVersion
from ._errors import ValueTooLarge as ValueTooLarge
from ._version import __version__ as __version__

if TYPE_CHECKING:
    from ._cluster import Cluster as Cluster
    from ._config import Config as Config
    from ._futures import MapIterator as MapIterator
    from ._futures import Progress as Progress
    from ._futures import TaskFuture as TaskFuture
    from ._memberinfo import MemberInfo as MemberInfo
    from ._membership import Membership as Membership
    from ._membership import MembershipStatistics as MembershipStatistics
    from ._membership import serve_membership as serve_membership
    from ._peer import Job as Job
    from ._peer import Peer as Peer
    from ._peer import PeerStatistics as PeerStatistics
    from ._peer import open_peer as open_peer
    from ._proto.membership import EventKind as EventKind
    from ._proto.membership import Member as Member
    from ._proto.membership import MemberEvent as MemberEvent
    from ._proto.messages import MemberStatus as MemberStatus
    from ._secure import WireStatistics as WireStatistics
    from ._shared import Shared as Shared
    from ._sharing import SharingStatistics as SharingStatistics

_LAZY = {
    "Shared": "._shared",
    "SharingStatistics": "._sharing",
    "Config": "._config",
    "Cluster": "._cluster",
    "MemberInfo": "._cluster",
    "Progress": "._futures",
    "TaskFuture": "._futures",
    "MapIterator": "._futures",
    "open_peer": "._peer",
    "Peer": "._peer",
    "Job": "._peer",
    "PeerStatistics": "._peer",
    "serve_membership": "._membership",
    "Membership": "._membership",
    "MembershipStatistics": "._membership",
    "Member": "._proto.membership",
    "MemberEvent": "._proto.membership",
    "EventKind": "._proto.membership",
    "MemberStatus": "._proto.messages",
    "WireStatistics": "._secure",
}

__all__ = [
    "__version__",
    "Config",
    # running work
    "Cluster",
    "open_peer",
    "Peer",
    "Job",
    "MemberInfo",
    "Progress",
    "TaskFuture",
    "MapIterator",
    "PeerStatistics",
    # membership
    "serve_membership",
    "Membership",
    "Member",
    "MemberStatus",
    "MemberEvent",
    "EventKind",
    "MembershipStatistics",
    # data
    "Shared",
    "SharingStatistics",
    # errors
    "P2PClusterError",
    "ClusterError",
    "ConfigError",
    "SecretError",
    "AddressInUse",
    "NameTaken",
    "SubmitError",
    "ValueTooLarge",
    "TaskError",
    "PoisonTaskError",
    "TaskTimeoutError",
    "UnsendableResult",
    "ProtocolError",
    "DecodeError",
    "NumPyUnavailable",
    "UnknownMessageType",
    "UnsupportedVersion",
    "MessageTooLarge",
    "AuthenticationError",
    "UnknownKey",
    "ReplayError",
    "HandshakeError",
    # statistics
    "WireStatistics",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'p2pcluster' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
