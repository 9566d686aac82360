"""The real :class:`~p2pcluster._transport.Transport`: UDP and TCP on trio sockets (IPv4)."""

from __future__ import annotations

import errno

import trio

from ._transport import Address

__all__ = ["TrioTransport"]

_RECV_SIZE = 65536  # larger than any datagram we accept, so oversize ones are seen whole


class TrioDatagramSocket:
    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._sock = sock

    @property
    def local_address(self) -> Address:
        host, port = self._sock.getsockname()[:2]
        return host, port

    async def send(self, data: bytes, dst: Address) -> None:
        try:
            await self._sock.sendto(data, dst)
        except OSError as exc:
            # UDP is best effort: an unreachable peer is the membership layer's business.
            if exc.errno not in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED,
                                 errno.EPERM, errno.EADDRNOTAVAIL, errno.ENETDOWN):
                raise

    async def receive(self) -> tuple[bytes, Address]:
        while True:
            try:
                data, src = await self._sock.recvfrom(_RECV_SIZE)
            except ConnectionRefusedError:  # an ICMP error for an earlier send: ignore
                continue
            return data, (src[0], src[1])

    def close(self) -> None:
        self._sock.close()


class TrioListener:
    def __init__(self, listener: trio.SocketListener) -> None:
        self._listener = listener

    @property
    def local_address(self) -> Address:
        host, port = self._listener.socket.getsockname()[:2]
        return host, port

    async def accept(self) -> tuple[trio.abc.Stream, Address]:
        stream = await self._listener.accept()
        host, port = stream.socket.getpeername()[:2]
        return stream, (host, port)

    async def aclose(self) -> None:
        await self._listener.aclose()


class TrioTransport:
    """Real sockets. ``open_stream`` sets TCP_NODELAY (our frames are whole messages)."""

    async def open_datagram(self, bind: Address) -> TrioDatagramSocket:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        try:
            await sock.bind(bind)
        except BaseException:
            sock.close()
            raise
        return TrioDatagramSocket(sock)

    async def open_listener(self, bind: Address) -> TrioListener:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        try:
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
            await sock.bind(bind)
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        return TrioListener(trio.SocketListener(sock))

    async def open_stream(self, dst: Address) -> trio.abc.Stream:
        return await trio.open_tcp_stream(*dst)
