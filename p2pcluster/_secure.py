"""Authenticated, encrypted messaging over any :class:`~p2pcluster._transport.Transport`.

:class:`SecureWire` seals every datagram (:mod:`._proto.envelope`) and runs the handshake on
every stream (:mod:`._proto.handshake`). Whatever fails authentication, replays, or does not
decode is dropped with a debug log line and a counter in :meth:`SecureWire.statistics`; a
datagram receive loop never raises :class:`~p2pcluster.ProtocolError`.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any

import trio

from ._config import Config
from ._errors import (
    AuthenticationError,
    DecodeError,
    HandshakeError,
    MessageTooLarge,
    ProtocolError,
    ReplayError,
)
from ._proto import wire
from ._proto.envelope import DatagramOpener, DatagramSealer, Entropy, Keyring
from ._proto.handshake import HELLO_SIZE, ClientHandshake, ServerHandshake, Session
from ._proto.messages import Message
from ._rejections import Rejections, RejectionTally
from ._transport import Address, DatagramSocket, StreamListener, Transport

__all__ = ["SecureDatagramChannel", "SecureStream", "SecureWire", "WireStatistics"]

log = logging.getLogger("p2pcluster.wire")
_RECEIVE_CHUNK = 65536


@dataclass(frozen=True, slots=True)
class WireStatistics:
    """Counters of one :class:`SecureWire`. ``dropped_*`` datagrams never reached a handler.

    ``dropped_auth`` counts wrong keys, unknown key ids, tampering and truncation;
    ``dropped_malformed`` counts datagrams that authenticated but did not decode (a peer of
    another version, or a bug).
    """

    datagrams_sent: int = 0
    datagrams_received: int = 0
    datagram_bytes_sent: int = 0
    datagram_bytes_received: int = 0
    dropped_auth: int = 0
    dropped_replay: int = 0
    dropped_malformed: int = 0
    dropped_oversize: int = 0
    streams_opened: int = 0
    streams_accepted: int = 0
    handshakes_failed: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    frames_rejected: int = 0
    stream_bytes_sent: int = 0
    stream_bytes_received: int = 0


def _drop_counter(exc: ProtocolError) -> str:
    if isinstance(exc, ReplayError):
        return "dropped_replay"
    if isinstance(exc, MessageTooLarge):
        return "dropped_oversize"
    if isinstance(exc, DecodeError):
        return "dropped_malformed"
    return "dropped_auth"


class SecureWire:
    """Opens sealed datagram channels and handshaken streams for one peer.

    ``wall_clock`` stamps datagrams for the replay window (it must agree across peers, so it
    is the Unix time by default); ``entropy`` supplies nonces and ephemeral keys.
    """

    def __init__(self, transport: Transport, keyring: Keyring, config: Config, *,
                 wall_clock: Callable[[], float] = time.time,
                 entropy: Entropy = os.urandom) -> None:
        self.transport = transport
        self.config = config
        self._wall_clock = wall_clock
        self._entropy = entropy
        self._counters: Counter[str] = Counter()
        self._rejected = RejectionTally()  # host -> refused packets and handshakes, bounded
        self._sealer = DatagramSealer(keyring, entropy)
        self._opener = DatagramOpener(keyring, window=config.replay_window,
                                      cache_size=config.replay_cache_size,
                                      max_size=config.max_datagram_size)

    @property
    def keyring(self) -> Keyring:
        return self._sealer.keyring

    def set_keyring(self, keyring: Keyring) -> None:
        """Switch keys live (a rotation): seal with the new primary, accept all listed."""
        self._sealer.keyring = keyring
        self._opener.keyring = keyring

    def statistics(self) -> WireStatistics:
        return WireStatistics(**{f.name: self._counters[f.name]
                                 for f in fields(WireStatistics)})

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` of :class:`WireStatistics` (the wire's channels
        and streams report their traffic here)."""
        self._counters[name] += n

    def take_rejected(self) -> Rejections:
        """Hosts whose datagrams failed authentication or whose handshakes failed, with
        counts, since the last call: most likely peers holding another secret or cluster
        name. Bounded however many sources there are (:mod:`._rejections`); the daemon sums
        them up in one line per interval."""
        return self._rejected.take()

    # --- datagrams ------------------------------------------------------------------------

    async def open_datagram(self, bind: Address) -> SecureDatagramChannel:
        """Bind a UDP socket whose traffic is sealed and checked."""
        return SecureDatagramChannel(self, await self.transport.open_datagram(bind))

    def seal(self, msg: Message) -> bytes:
        data = self._sealer.seal(wire.encode(msg), self._wall_clock())
        if len(data) > self.config.max_datagram_size:
            raise MessageTooLarge(
                f"{type(msg).__name__} needs {len(data)} bytes; the datagram limit is "
                f"{self.config.max_datagram_size}"
            )
        return data

    def open(self, data: bytes, src: Address) -> Message | None:
        """The message in ``data``, or None (counted and logged) if it must be dropped."""
        try:
            msg = wire.decode(self._opener.open(data, self._wall_clock()))
        except ProtocolError as exc:
            counter = _drop_counter(exc)
            self.count(counter)
            # Unauthenticated junk: one line per source and interval (spoofed sources cannot
            # flood the log); the daemon sums the tally up (take_rejected).
            if counter == "dropped_replay" or self._rejected.note(src[0]):
                log.debug("dropped datagram from %s:%d (%s): %s", *src, counter, exc)
            return None
        self.count("datagrams_received")
        self.count("datagram_bytes_received", len(data))
        return msg

    # --- streams --------------------------------------------------------------------------

    async def connect(self, dst: Address) -> SecureStream:
        """Connect to ``dst`` and complete the handshake within ``handshake_timeout``.

        Raises :class:`~p2pcluster.HandshakeError` if the peer holds another secret, and
        ``OSError`` or :class:`~p2pcluster.HandshakeError` (on timeout) if it is unreachable.
        """
        handshake = ClientHandshake(self.keyring, self._entropy,
                                    max_frame=self.config.max_frame_size)
        with trio.move_on_after(self.config.handshake_timeout) as scope:
            stream = await self.transport.open_stream(dst)
            try:
                await stream.send_all(handshake.hello())
                reply, rest = await _receive_exactly(stream, HELLO_SIZE)
                session, proof = handshake.receive(reply)
                await stream.send_all(proof)
            except (HandshakeError, trio.BrokenResourceError, OSError) as exc:
                self.count("handshakes_failed")
                self._rejected[dst[0]] += 1
                await trio.aclose_forcefully(stream)
                if isinstance(exc, HandshakeError):
                    raise
                raise HandshakeError(f"handshake with {dst[0]}:{dst[1]} failed: {exc}") from exc
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        if scope.cancelled_caught:
            self.count("handshakes_failed")
            raise HandshakeError(f"no handshake with {dst[0]}:{dst[1]} within "
                                 f"{self.config.handshake_timeout:g} s")
        self.count("streams_opened")
        session.feed(rest)
        return SecureStream(self, stream, session, dst)

    async def accept(self, stream: trio.abc.Stream, src: Address) -> SecureStream | None:
        """Run the server side of the handshake; None (counted, logged) if it fails."""
        handshake = ServerHandshake(self.keyring, self._entropy,
                                    max_frame=self.config.max_frame_size)
        secure = None
        with trio.move_on_after(self.config.handshake_timeout):
            try:
                hello, rest = await _receive_exactly(stream, HELLO_SIZE)
                session, reply = handshake.receive(hello)
                await stream.send_all(reply)
                secure = SecureStream(self, stream, session, src)
                session.feed(rest)
                await secure.wait_established()
            except (ProtocolError, trio.BrokenResourceError, OSError) as exc:
                log.debug("handshake from %s:%d failed: %s", *src, exc)
                secure = None
        if secure is None or not secure.established:
            self.count("handshakes_failed")
            self._rejected[src[0]] += 1
            await trio.aclose_forcefully(stream)
            return None
        self.count("streams_accepted")
        return secure

    async def serve(self, listener: StreamListener,
                    handler: Callable[[SecureStream], Awaitable[Any]], *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept streams forever, handshake each, and run ``handler`` on it in a task.

        A stream is closed when its handler returns. :class:`~p2pcluster.ProtocolError` from a
        handler is logged and counted, never propagated; other errors propagate.
        """
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream, src = await listener.accept()
                nursery.start_soon(self._serve_one, stream, src, handler)

    async def _serve_one(self, stream: trio.abc.Stream, src: Address,
                         handler: Callable[[SecureStream], Awaitable[Any]]) -> None:
        secure = await self.accept(stream, src)
        if secure is None:
            return
        async with secure:
            try:
                await handler(secure)
            except (ProtocolError, trio.BrokenResourceError) as exc:
                log.debug("stream from %s:%d ended: %s", *src, exc)


class SecureDatagramChannel:
    """A UDP socket that sends and receives messages, sealed."""

    def __init__(self, wire: SecureWire, sock: DatagramSocket) -> None:
        self.wire = wire
        self.socket = sock

    @property
    def local_address(self) -> Address:
        return self.socket.local_address

    async def send(self, msg: Message, dst: Address) -> None:
        data = self.wire.seal(msg)
        await self.socket.send(data, dst)
        self.wire.count("datagrams_sent")
        self.wire.count("datagram_bytes_sent", len(data))

    async def receive(self) -> tuple[Message, Address]:
        """The next valid message; invalid datagrams are dropped and counted, never raised."""
        while True:
            data, src = await self.socket.receive()
            msg = self.wire.open(data, src)
            if msg is not None:
                return msg, src

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

    @property
    def established(self) -> bool:
        return self.session.established

    async def __aenter__(self) -> SecureStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def send(self, msg: Message) -> None:
        await self.send_payload(wire.encode(msg))

    async def send_payload(self, payload: bytes | bytearray | memoryview) -> None:
        """Send one frame. Safe to call from several tasks: frames never interleave."""
        async with self._send_lock:
            frame = self.session.seal(payload)
            await self.stream.send_all(frame)
        self.wire.count("frames_sent")
        self.wire.count("stream_bytes_sent", len(frame))

    async def receive(self) -> Message | None:
        """The next message, or None when the peer closed cleanly.

        Raises :class:`~p2pcluster.ProtocolError` (after counting it) if a frame is tampered
        with, truncated, oversized or does not decode: the stream is then unusable.
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
            try:
                payload = session.next_payload()
            except ProtocolError:
                self.wire.count("frames_rejected")
                raise
            if payload is not None:
                self.wire.count("frames_received")
                return payload
            data = await self.stream.receive_some(_RECEIVE_CHUNK)
            if not data:
                if session.buffered:
                    self.wire.count("frames_rejected")
                    raise AuthenticationError(
                        f"stream closed inside a frame ({session.buffered} bytes buffered)"
                    )
                return None
            self.wire.count("stream_bytes_received", len(data))
            session.feed(bytes(data))

    async def wait_established(self) -> None:
        """(Server side) read until the client's proof has been checked."""
        while not self.session.poll_proof():
            data = await self.stream.receive_some(_RECEIVE_CHUNK)
            if not data:
                raise HandshakeError("peer closed the stream before proving its key")
            self.session.feed(bytes(data))

    async def aclose(self) -> None:
        await self.stream.aclose()


async def _receive_exactly(stream: trio.abc.Stream, n: int) -> tuple[bytes, bytes]:
    """``n`` bytes from ``stream`` and whatever arrived after them."""
    buf = bytearray()
    while len(buf) < n:
        data = await stream.receive_some(_RECEIVE_CHUNK)
        if not data:
            raise HandshakeError(
                "peer closed the connection during the handshake: it probably holds another "
                "cluster secret or cluster name"
            )
        buf += data
    return bytes(buf[:n]), bytes(buf[n:])
