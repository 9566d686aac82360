"""Fixtures giving two hosts on either transport: real loopback sockets or a VirtualNetwork."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from p2pcluster._transport import Transport
from p2pcluster._trio_transport import TrioTransport
from p2pcluster.testing import VirtualNetwork


@dataclass
class Hosts:
    kind: str
    a: Transport
    a_ip: str
    b: Transport
    b_ip: str
    net: VirtualNetwork | None = None


@pytest.fixture(params=["real", "virtual"])
def hosts(request: pytest.FixtureRequest) -> Iterator[Hosts]:
    if request.param == "real":
        yield Hosts("real", TrioTransport(), "127.0.0.1", TrioTransport(), "127.0.0.1")
    else:
        net = VirtualNetwork(seed=1)
        yield Hosts("virtual", net.host("10.0.0.1"), "10.0.0.1", net.host("10.0.0.2"),
                    "10.0.0.2", net)
