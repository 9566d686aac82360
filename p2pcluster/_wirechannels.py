"""The wire's channels: a sealed UDP socket and a handshaken stream of whole messages.

Both belong to a :class:`~._secure.SecureWire`, which seals and opens what they carry and
counts their traffic. A :class:`SecureStream` knows its peer (:attr:`SecureStream.peer`, the
node id the handshake authenticated); when the key it was opened under is revoked, the
stream ends (:meth:`SecureStream.revoke`).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import trio

from ._errors import AuthenticationError, HandshakeError, ProtocolError
from ._proto import wire
from ._proto.handshake import FRAME_OVERHEAD, Session
from ._proto.messages import Message
from ._transport import Address, DatagramSocket

if TYPE_CHECKING:
    from ._secure import SecureWire

__all__ = ["ClosedDuringHandshake", "Incoming", "SecureDatagramChannel", "SecureStream",
           "receive_exactly"]

_RECEIVE_CHUNK = 65536
#: Bytes read at once while a large frame arrives (fewer reads and loop turns per frame).
_LARGE_RECEIVE = 1024 * 1024
T = TypeVar("T")


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
            with self.session.seal_reusing(payload) as frame:  # sent whole before the next
                await self._send_all(frame)
                size = len(frame)
        self.wire.count("frames_sent")
        self.wire.count("stream_bytes_sent", size)

    async def _send_all(self, frame: memoryview) -> None:
        """Send ``frame`` whole: on a socket, written straight to it, waiting only when the
        kernel has no room (trio's ``send_all`` takes a turn of the scheduler for every
        partial write, several per 1 MiB frame; taking the send lock was this send's
        checkpoint). A failed write falls back to ``send_all``, which raises trio's error."""
        if not isinstance(self.stream, trio.SocketStream):
            await self.stream.send_all(frame)
            return
        sock, sent = self.stream.socket, 0
        while sent < len(frame):
            try:
                sent += os.write(sock.fileno(), frame[sent:])
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
            except OSError:
                await self.stream.send_all(frame[sent:])
                return

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
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            self._check()
            payload = self._counted(session.next_payload)
            if payload is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return payload
            if not await self._feed(self._wanted()):
                return None

    async def receive_payload_into(self, dest: memoryview) -> int | None:
        """Open the next frame straight into the start of ``dest``; its payload size, or None
        when the peer closed cleanly. Raises as :meth:`receive` does, and if the payload is
        longer than ``dest``."""
        session = self.session
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            self._check()
            size = self._counted(lambda: session.next_payload_into(dest))
            if size is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return size
            if not await self._feed(self._wanted()):
                return None

    def _wanted(self) -> int:
        """How much to read: the rest of a large frame (up to :data:`_LARGE_RECEIVE`) in one
        go, else :data:`_RECEIVE_CHUNK`."""
        ahead = self.session.next_size()
        if ahead is None:
            return _RECEIVE_CHUNK
        rest = ahead + FRAME_OVERHEAD - self.session.buffered
        return max(_RECEIVE_CHUNK, min(_LARGE_RECEIVE, rest))

    def _counted(self, step: Callable[[], T | None]) -> T | None:
        """``step()``, counting a frame it opens or rejects."""
        try:
            opened = step()
        except ProtocolError:
            self.wire.count("frames_rejected")
            raise
        if opened is not None:
            self.wire.count("frames_received")
        return opened

    async def _feed(self, most: int) -> bool:
        """Read up to ``most`` bytes into the session; False at a clean end of stream."""
        count = await self._receive_into(most)
        self._check()
        if not count:
            if self.session.buffered:
                self.wire.count("frames_rejected")
                raise AuthenticationError(
                    f"stream closed inside a frame ({self.session.buffered} bytes buffered)")
            return False
        self.wire.count("stream_bytes_received", count)
        return True

    async def _receive_into(self, most: int) -> int:
        """Read up to ``most`` bytes into the session's buffer; how many (0 at the end). A
        socket stream reads straight into it, with a plain ``readv``, waiting only when
        nothing has arrived: trio's ``recv_into`` takes a turn of the scheduler for every
        read, several per 1 MiB frame (the callers take one per frame). Another stream's
        bytes are copied in."""
        if not isinstance(self.stream, trio.SocketStream):
            with self._revocable():
                data = await self.stream.receive_some(most)
            self._check()
            self.session.feed(data)
            return len(data)
        sock = self.stream.socket
        with self.session.receive_space(most) as room:
            while True:
                try:
                    count = os.readv(sock.fileno(), [room])
                    break
                except BlockingIOError:
                    with self._revocable():
                        await trio.lowlevel.wait_readable(sock)
                    self._check()
                except OSError as exc:  # translated as SocketStream.receive_some does
                    if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                        raise trio.ClosedResourceError("this socket was already closed") from None
                    raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        self.session.received(count)
        return count

    def _revocable(self) -> trio.CancelScope:
        """The scope around a wait for bytes, which :meth:`revoke` cancels."""
        self._receiving = trio.CancelScope()
        return self._receiving

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
