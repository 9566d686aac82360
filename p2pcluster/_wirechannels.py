"""The wire's channels: a sealed UDP socket and a handshaken stream of whole messages.

Both belong to a :class:`~._secure.SecureWire`, which seals and opens what they carry and
counts their traffic. A :class:`SecureStream` knows its peer (:attr:`SecureStream.peer`, the
node id the handshake authenticated); when the key it was opened under is revoked, the
stream ends (:meth:`SecureStream.revoke`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import trio

from ._errors import AuthenticationError, HandshakeError, ProtocolError
from ._proto import wire
from ._proto.handshake import Session
from ._proto.messages import Message
from ._transport import Address, DatagramSocket

if TYPE_CHECKING:
    from ._secure import SecureWire

__all__ = ["ClosedDuringHandshake", "Incoming", "SecureDatagramChannel", "SecureStream",
           "receive_exactly"]

_RECEIVE_CHUNK = 65536


class ClosedDuringHandshake(HandshakeError):
    """The peer closed the connection during the handshake, after ``received`` bytes (a
    server closes at once, unanswered, at a hello under a key it does not hold)."""

    def __init__(self, received: int) -> None:
        super().__init__("peer closed the connection during the handshake: it probably holds "
                         "another cluster secret or cluster name")
        self.received = received


class Incoming(NamedTuple):
    """An authentic datagram's message, where it came from, and its sender's node id."""

    msg: Message
    src: Address
    sender: bytes


class SecureDatagramChannel:
    """A UDP socket that sends and receives messages, sealed."""

    def __init__(self, wire: SecureWire, sock: DatagramSocket) -> None:
        self.wire = wire
        self.socket = sock

    @property
    def local_address(self) -> Address:
        return self.socket.local_address

    async def send(self, msg: Message, dst: Address, to: bytes) -> None:
        """Send ``msg`` to node ``to`` at ``dst`` (another node there drops it)."""
        data = self.wire.seal(msg, to)
        await self.socket.send(data, dst)
        self.wire.count("datagrams_sent")
        self.wire.count("datagram_bytes_sent", len(data))

    async def receive(self) -> Incoming:
        """The next valid message; invalid datagrams are dropped and counted, never raised."""
        while True:
            data, src = await self.socket.receive()
            incoming = self.wire.open(data, src)
            if incoming is not None:
                return incoming

    def close(self) -> None:
        self.socket.close()


class SecureStream:
    """A handshaken stream of whole messages. Use ``async with`` or :meth:`aclose`."""

    def __init__(self, wire: SecureWire, stream: trio.abc.Stream, session: Session,
                 remote: Address) -> None:
        self.wire = wire
        self.stream = stream
        self.session = session
        self.remote = remote
        self._send_lock = trio.StrictFIFOLock()
        self._revoked = False
        self._receiving = trio.CancelScope()  #: around a wait for bytes; revoke cancels it

    @property
    def peer(self) -> bytes:
        """The node id of the peer, as the handshake authenticated it."""
        return self.session.origin.node

    @property
    def key_id(self) -> bytes:
        """The key the session was opened under."""
        return self.session.origin.key_id

    def revoke(self) -> None:
        """The session's key was revoked: end the stream. A receive that waits wakes and
        raises, as does every later send or receive."""
        self._revoked = True
        self._receiving.cancel()

    def _check(self) -> None:
        if self._revoked:
            raise AuthenticationError("the key of this session was revoked")

    async def __aenter__(self) -> SecureStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def send(self, msg: Message) -> None:
        await self.send_payload(wire.encode(msg))

    async def send_payload(self, payload: bytes | bytearray | memoryview) -> None:
        """Send one frame. Safe to call from several tasks: frames never interleave."""
        async with self._send_lock:
            self._check()
            frame = self.session.seal(payload)
            await self.stream.send_all(frame)
        self.wire.count("frames_sent")
        self.wire.count("stream_bytes_sent", len(frame))

    async def receive(self) -> Message | None:
        """The next message, or None when the peer closed cleanly.

        Raises :class:`~p2pcluster.ProtocolError` (after counting it) if a frame is tampered
        with, truncated, oversized or does not decode, or the session's key was revoked: the
        stream is then unusable.
        """
        payload = await self.receive_payload()
        if payload is None:
            return None
        try:
            return wire.decode(payload)
        except ProtocolError:
            self.wire.count("frames_rejected")
            raise

    async def receive_payload(self) -> bytes | None:
        session = self.session
        while True:
            self._check()
            try:
                payload = session.next_payload()
            except ProtocolError:
                self.wire.count("frames_rejected")
                raise
            if payload is not None:
                self.wire.count("frames_received")
                return payload
            self._receiving = trio.CancelScope()
            with self._receiving:
                data = await self.stream.receive_some(_RECEIVE_CHUNK)
            self._check()
            if not data:
                if session.buffered:
                    self.wire.count("frames_rejected")
                    raise AuthenticationError(
                        f"stream closed inside a frame ({session.buffered} bytes buffered)"
                    )
                return None
            self.wire.count("stream_bytes_received", len(data))
            session.feed(bytes(data))

    async def aclose(self) -> None:
        await self.stream.aclose()


async def receive_exactly(stream: trio.abc.Stream, n: int) -> bytes:
    """Exactly ``n`` bytes from ``stream``, never reading past them (a handshake buffers no
    more than its own sizes). :class:`HandshakeError` if the stream ends first."""
    buf = bytearray()
    while len(buf) < n:
        data = await stream.receive_some(n - len(buf))
        if not data:
            raise ClosedDuringHandshake(len(buf))
        buf += data
    return bytes(buf)
