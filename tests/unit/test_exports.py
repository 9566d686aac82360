"""The public API: exactly these names, each re-exported from a private module."""

from __future__ import annotations

import p2pcluster
import p2pcluster.testing

PUBLIC = {
    "__version__", "Config", "P2PClusterError", "ConfigError", "SecretError", "ProtocolError",
    "DecodeError", "UnknownMessageType", "UnsupportedVersion", "MessageTooLarge",
    "AuthenticationError", "UnknownKey", "ReplayError", "HandshakeError", "WireStatistics",
    "serve_membership", "Membership", "Member", "MemberStatus", "MemberEvent", "EventKind",
    "MembershipStatistics", "Cluster", "open_peer", "Peer", "Job", "MemberInfo", "Progress",
    "PeerStatistics", "SubmitError", "TaskError", "PoisonTaskError", "TaskTimeoutError",
    "ValueTooLarge", "ClusterError", "TaskFuture", "MapIterator", "UnsendableResult",
    "AddressInUse", "NameTaken", "Shared", "SharingStatistics", "NumPyUnavailable",
}
TESTING = {"LinkConditions", "NetworkModel", "NodeStats", "Simulation", "VirtualHost",
           "VirtualNetwork", "SimCluster", "peer_address"}


def test_public_names() -> None:
    assert set(p2pcluster.__all__) == PUBLIC
    assert len(p2pcluster.__all__) == len(PUBLIC)
    for name in PUBLIC:
        assert hasattr(p2pcluster, name)


def test_testing_names() -> None:
    assert set(p2pcluster.testing.__all__) == TESTING


def test_public_objects_live_in_private_modules() -> None:
    for name in PUBLIC - {"__version__"}:
        module = getattr(p2pcluster, name).__module__
        assert module.startswith("p2pcluster._"), (name, module)


def test_protocol_errors_share_one_base() -> None:
    for name in ("DecodeError", "UnknownMessageType", "UnsupportedVersion", "MessageTooLarge",
                 "AuthenticationError", "UnknownKey", "ReplayError", "HandshakeError"):
        assert issubclass(getattr(p2pcluster, name), p2pcluster.ProtocolError)
    assert issubclass(p2pcluster.ProtocolError, p2pcluster.P2PClusterError)


def test_every_lazy_name_is_public_and_importing_the_package_is_light() -> None:
    import subprocess
    import sys

    assert set(p2pcluster._LAZY) <= PUBLIC
    code = ("import sys, p2pcluster; heavy = [m for m in ('trio', 'zeroconf', 'cryptography')"
            " if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
