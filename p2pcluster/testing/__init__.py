"""Test helpers for p2pcluster and for code built on it. Public API.

- :class:`Simulation`: sans-IO machines on a virtual clock, bit-for-bit reproducible by seed.
- :class:`VirtualNetwork`: an in-memory network for trio code, usually under ``MockClock``.
- :class:`LinkConditions`: latency, jitter, loss and duplication of a link, for both.
- :class:`SimCluster`: membership machines on a :class:`Simulation`, with fault helpers.

Installing p2pcluster registers a pytest plugin that prints the seed of every
:class:`Simulation` created by a failing test.
"""

from ._membership import SimCluster as SimCluster
from ._membership import peer_address as peer_address
from ._network import LinkConditions as LinkConditions
from ._network import NetworkModel as NetworkModel
from ._sim import NodeStats as NodeStats
from ._sim import Simulation as Simulation
from ._vnet import VirtualHost as VirtualHost
from ._vnet import VirtualNetwork as VirtualNetwork

__all__ = [
    "LinkConditions",
    "NetworkModel",
    "NodeStats",
    "SimCluster",
    "Simulation",
    "VirtualHost",
    "VirtualNetwork",
    "peer_address",
]
