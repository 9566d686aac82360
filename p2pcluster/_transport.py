"""The I/O boundary: what the trio layer needs from a network.

Two implementations pass the same conformance suite (``tests/io/test_transport_conformance.py``):
:class:`~p2pcluster._trio_transport.TrioTransport` on real sockets, and
:class:`~p2pcluster.testing.VirtualNetwork` hosts in memory. Everything above this line
(security, membership, work) is written once against these Protocols.
"""

from __future__ import annotations

from typing import Protocol

import trio

Address = tuple[str, int]


class DatagramSocket(Protocol):
    """A bound UDP-like socket. Datagrams may be lost, duplicated or reordered."""

    @property
    def local_address(self) -> Address: ...

    async def send(self, data: bytes, dst: Address) -> None:
        """Send one datagram. Unreachable destinations are silently dropped."""

    async def receive(self) -> tuple[bytes, Address]:
        """The next datagram and its source address."""

    def close(self) -> None:
        """Close the socket; a blocked ``receive`` raises ``trio.ClosedResourceError``."""


class StreamListener(Protocol):
    """A bound TCP-like listener."""

    @property
    def local_address(self) -> Address: ...

    async def accept(self) -> tuple[trio.abc.Stream, Address]:
        """The next incoming stream and the peer's address."""

    async def aclose(self) -> None: ...


class Transport(Protocol):
    """Opens sockets for one host."""

    async def open_datagram(self, bind: Address) -> DatagramSocket:
        """Bind a datagram socket (port 0: any free port)."""

    async def open_listener(self, bind: Address) -> StreamListener:
        """Bind a stream listener."""

    async def open_stream(self, dst: Address) -> trio.abc.Stream:
        """Connect a stream; raises ``OSError`` if refused. May block while unreachable."""
