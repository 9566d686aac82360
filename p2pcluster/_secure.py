"""Authenticated, encrypted messaging over any :class:`~p2pcluster._transport.Transport`.

:class:`SecureWire` seals every datagram (:mod:`._proto.envelope`) and runs the handshake on
every stream (:mod:`._proto.handshake`), both bound to this peer's node id and the other's.
Whatever fails authentication, replays, or does not decode is dropped with a debug log line
and a counter in :meth:`SecureWire.statistics`; a datagram receive loop never raises
:class:`~p2pcluster.ProtocolError`. Unauthenticated traffic is tallied in bounded memory
(:meth:`SecureWire.take_rejected`); an authentic datagram from a clock outside the replay
window is warned about, with the offset, at most once a minute per sender.

The keyring can change while the wire runs (:meth:`SecureWire.set_keyring`): a rotation. The
wire seals toward each peer with a key that peer showed it holds
(:mod:`._proto.keychoice`), retries a handshake with its other keys when a server closes at
its hello, and ends the streams opened under a key dropped from the ring.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any

import trio

from ._config import Config
from ._cpu import cpu_has_aes
from ._errors import (
    ClockSkew,
    DecodeError,
    HandshakeError,
    MessageTooLarge,
    Misdirected,
    ProtocolError,
    ReplayError,
)
from ._gate import ConnectLimits, HandshakeGate, serve_streams
from ._pacing import Pacer
from ._proto import wire
from ._proto.envelope import ClusterKey, DatagramOpener, DatagramSealer, Entropy, Keyring
from ._proto.handshake import (
    AES_256_GCM,
    HELLO_SIZE,
    PROOF_SIZE,
    ClientHandshake,
    ServerHandshake,
)
from ._proto.keychoice import KeyChoice
from ._proto.messages import Message
from ._rejections import Rejections, RejectionTally
from ._transport import Address, StreamListener, Transport
from ._wirechannels import (
    ClosedDuringHandshake,
    Incoming,
    SecureDatagramChannel,
    SecureStream,
    receive_exactly,
)

__all__ = ["Incoming", "SecureDatagramChannel", "SecureStream", "SecureWire", "WireStatistics"]

log = logging.getLogger("p2pcluster.wire")
#: Seconds between two warnings about one sender's clock.
CLOCK_WARNING_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class WireStatistics:
    """Counters of one :class:`SecureWire`. ``dropped_*`` datagrams never reached a handler.

    ``dropped_auth`` counts wrong keys, unknown key ids, tampering and truncation;
    ``dropped_misdirected`` datagrams sealed for another node id (a peer that restarted at
    an address the sender still knows); ``dropped_skew`` authentic datagrams whose timestamp
    is outside the replay window (a clock off), ``dropped_replay`` replays;
    ``dropped_malformed`` datagrams that authenticated but did not decode (a peer of another
    version, or a bug). ``handshakes_refused`` counts connections closed unread because their
    address had ``max_handshakes_per_host`` in progress; ``handshake_retries`` handshakes we
    tried again under another key; ``streams_revoked`` streams ended by a key's revocation;
    ``streams_aes_gcm`` the streams opened or accepted that use AES-256-GCM (the others use
    ChaCha20-Poly1305, see ``Config.stream_cipher``).
    """

    datagrams_sent: int = 0
    datagrams_received: int = 0
    datagram_bytes_sent: int = 0
    datagram_bytes_received: int = 0
    dropped_auth: int = 0
    dropped_misdirected: int = 0
    dropped_skew: int = 0
    dropped_replay: int = 0
    dropped_malformed: int = 0
    dropped_oversize: int = 0
    streams_opened: int = 0
    streams_accepted: int = 0
    handshakes_failed: int = 0
    handshakes_refused: int = 0
    handshake_retries: int = 0
    streams_revoked: int = 0
    streams_aes_gcm: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    frames_rejected: int = 0
    stream_bytes_sent: int = 0
    stream_bytes_received: int = 0


def _drop_counter(exc: ProtocolError) -> str:
    if isinstance(exc, ClockSkew):
        return "dropped_skew"
    if isinstance(exc, ReplayError):
        return "dropped_replay"
    if isinstance(exc, Misdirected):
        return "dropped_misdirected"
    if isinstance(exc, MessageTooLarge):
        return "dropped_oversize"
    if isinstance(exc, DecodeError):
        return "dropped_malformed"
    return "dropped_auth"


#: Drops that authenticated: not an outsider's doing, so not tallied as rejected traffic.
_AUTHENTIC = frozenset({"dropped_skew", "dropped_replay", "dropped_malformed",
                        "dropped_misdirected"})


class SecureWire:
    """Opens sealed datagram channels and handshaken streams for node ``node_id``.

    ``wall_clock`` stamps datagrams for the replay window (it must agree across peers, so it
    is the Unix time by default, plus ``config.clock_offset``); ``entropy`` supplies nonces
    and ephemeral keys.
    """

    def __init__(self, transport: Transport, keyring: Keyring, config: Config, *,
                 node_id: bytes, wall_clock: Callable[[], float] | None = None,
                 entropy: Entropy = os.urandom) -> None:
        self.transport = transport
        self.config = config
        self.node_id = node_id
        offset = config.clock_offset
        self._wall_clock = wall_clock or (lambda: time.time() + offset)
        self._entropy = entropy
        self._counters: Counter[str] = Counter()
        self._rejected = RejectionTally()
        self._clock_warnings = Pacer(CLOCK_WARNING_INTERVAL)
        self._keys = KeyChoice()
        self._connects = ConnectLimits(config.max_handshakes_per_host)
        self._streams: weakref.WeakSet[SecureStream] = weakref.WeakSet()
        self._offer_aes = config.stream_cipher == "aes-256-gcm" or (
            config.stream_cipher == "auto" and cpu_has_aes())
        self._sealer = DatagramSealer(keyring, entropy, node_id)
        self._opener = DatagramOpener(keyring, node_id, window=config.replay_window,
                                      cache_size=config.replay_cache_size,
                                      max_size=config.max_datagram_size)

    @property
    def keyring(self) -> Keyring:
        return self._sealer.keyring

    def set_keyring(self, keyring: Keyring) -> None:
        """Switch keys live (a rotation): seal with the new current key (toward peers that
        hold it), accept every key listed, and end the streams opened under a key that is
        no longer listed: a revoked key is refused at once."""
        self._sealer.keyring = keyring
        self._opener.keyring = keyring
        for stream in list(self._streams):
            if not keyring.holds(stream.key_id):
                stream.revoke()
                self.count("streams_revoked")

    def statistics(self) -> WireStatistics:
        return WireStatistics(**{f.name: self._counters[f.name]
                                 for f in fields(WireStatistics)})

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` of :class:`WireStatistics` (the wire's channels
        and streams report their traffic here)."""
        self._counters[name] += n

    def take_rejected(self) -> Rejections:
        """Unauthenticated traffic refused since the last call (datagrams and handshakes
        that failed, connections refused at the gate), by source host: most likely peers
        holding another secret or cluster name. Bounded however many sources there are
        (:mod:`._rejections`); the daemon sums them up in one line per interval."""
        return self._rejected.take()

    def keys_held_by(self, node: bytes) -> frozenset[bytes]:
        """The key ids ``node`` showed it holds in its latest authentic message."""
        return self._keys.held_by(node)

    # --- datagrams ------------------------------------------------------------------------

    async def open_datagram(self, bind: Address) -> SecureDatagramChannel:
        """Bind a UDP socket whose traffic is sealed and checked."""
        return SecureDatagramChannel(self, await self.transport.open_datagram(bind))

    def seal(self, msg: Message, to: bytes) -> bytes:
        """The datagram carrying ``msg`` to node ``to``, under a key it holds."""
        key = self._keys.for_node(self.keyring, to)
        data = self._sealer.seal(wire.encode(msg), self._wall_clock(), to, key)
        if len(data) > self.config.max_datagram_size:
            raise MessageTooLarge(
                f"{type(msg).__name__} needs {len(data)} bytes; the datagram limit is "
                f"{self.config.max_datagram_size}"
            )
        return data

    def open(self, data: bytes, src: Address) -> Incoming | None:
        """The message in ``data``, or None (counted and logged) if it must be dropped."""
        try:
            opened = self._opener.open(data, self._wall_clock())
            msg = wire.decode(opened.payload)
        except ProtocolError as exc:
            self._dropped(exc, src)
            return None
        self._keys.heard(opened.origin, src)
        self.count("datagrams_received")
        self.count("datagram_bytes_received", len(data))
        return Incoming(msg, src, opened.origin.node)

    def _dropped(self, exc: ProtocolError, src: Address) -> None:
        counter = _drop_counter(exc)
        self.count(counter)
        # Unauthenticated junk: one debug line per source and interval (spoofed sources
        # cannot flood the log); the daemon sums the tally up (take_rejected).
        if counter in _AUTHENTIC or self._rejected.note(src[0]):
            log.debug("dropped datagram from %s:%d (%s): %s", *src, counter, exc)
        if isinstance(exc, ClockSkew) and self._clock_warnings.due(exc.sender,
                                                                    trio.current_time()):
            log.warning(
                "datagrams from %s:%d (node %s) are stamped %+.1f s from our clock, outside "
                "the %g s replay window, and are dropped: synchronise the clocks (NTP); "
                "clock_offset can correct a clock that cannot be fixed", *src,
                exc.sender.hex()[:8], exc.offset, self.config.replay_window)

    # --- streams --------------------------------------------------------------------------

    async def connect(self, dst: Address) -> SecureStream:
        """Connect to ``dst`` and complete the handshake within ``handshake_timeout``,
        under a key the peer there is known to hold, then (if it closes at our hello) under
        each other key of ours.

        Raises :class:`~p2pcluster.HandshakeError` if the peer holds none of our keys, and
        ``OSError`` or :class:`~p2pcluster.HandshakeError` (on timeout) if it is unreachable.
        """
        failure: HandshakeError | None = None
        with trio.move_on_after(self.config.handshake_timeout) as scope:
            async with self._connects.slot(dst):
                for attempt, key in enumerate(self._keys.for_address(self.keyring, dst)):
                    if attempt:
                        self.count("handshake_retries")
                    try:
                        return await self._connect_with(dst, key)
                    except ClosedDuringHandshake as exc:
                        failure = exc
                        if exc.received:
                            break
                    except HandshakeError as exc:
                        failure = exc
                        break
        self.count("handshakes_failed")
        if scope.cancelled_caught or failure is None:
            raise HandshakeError(f"no handshake with {dst[0]}:{dst[1]} within "
                                 f"{self.config.handshake_timeout:g} s")
        self._rejected.note(dst[0])
        raise failure

    async def _connect_with(self, dst: Address, key: ClusterKey) -> SecureStream:
        handshake = ClientHandshake(self.keyring, self._entropy, node_id=self.node_id,
                                    max_frame=self.config.max_frame_size, key=key,
                                    offer_aes=self._offer_aes)
        stream = await self.transport.open_stream(dst)
        try:
            await stream.send_all(handshake.hello())
            session, proof = handshake.receive(await receive_exactly(stream, HELLO_SIZE))
            await stream.send_all(proof)
        except HandshakeError:
            await trio.aclose_forcefully(stream)
            raise
        except (trio.BrokenResourceError, OSError) as exc:
            await trio.aclose_forcefully(stream)
            raise HandshakeError(f"handshake with {dst[0]}:{dst[1]} failed: {exc}") from exc
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        self._keys.heard(session.origin, dst)
        self.count("streams_opened")
        return self._track(SecureStream(self, stream, session, dst))

    def _track(self, stream: SecureStream) -> SecureStream:
        self._streams.add(stream)
        if stream.session.cipher == AES_256_GCM:
            self.count("streams_aes_gcm")
        return stream

    async def accept(self, stream: trio.abc.Stream, src: Address) -> SecureStream | None:
        """Run the server side of the handshake; None (counted, logged) if it fails.

        The hello must arrive within ``hello_timeout`` and the proof within
        ``handshake_timeout``; nothing but their exact sizes is read."""
        handshake = ServerHandshake(self.keyring, self._entropy, node_id=self.node_id,
                                    max_frame=self.config.max_frame_size,
                                    offer_aes=self._offer_aes)
        session, why, waiting = None, "no handshake within handshake_timeout", False
        with trio.move_on_after(self.config.handshake_timeout):
            try:
                with trio.fail_after(self.config.hello_timeout):
                    hello = await receive_exactly(stream, HELLO_SIZE)
                reply = handshake.receive(hello)
                waiting = True  # for the proof, after an authentic hello
                await stream.send_all(reply)
                proof = await receive_exactly(stream, PROOF_SIZE)
                waiting = False  # a failure from here on is the proof's
                session = handshake.finish(proof)
            except trio.TooSlowError:
                why = "no hello within hello_timeout"
            except (ProtocolError, trio.BrokenResourceError, OSError) as exc:
                why = str(exc) or type(exc).__name__
        if session is None:
            self._failed(src, why, abandoned=waiting and self._keys.knows_host(src[0]))
            await trio.aclose_forcefully(stream)
            return None
        self._keys.heard(session.origin)  # not its address: the client's port is ephemeral
        self.count("streams_accepted")
        return self._track(SecureStream(self, stream, session, src))

    def _failed(self, src: Address, why: str, *, abandoned: bool) -> None:
        """Count a handshake that failed. One the client gave up on after an authentic
        hello, from a peer's host, is no outsider's: connections that waited in the backlog
        while this process was paused (stopped, suspended, swapping), whose peers stopped
        waiting. The others are tallied as rejected traffic, with one debug line per source
        and interval; the daemon sums them up."""
        self.count("handshakes_failed")
        if abandoned:
            log.debug("handshake from %s:%d abandoned by the peer after an authentic hello: "
                      "it gave up waiting for this process (paused, or too slow)", *src)
        elif self._rejected.note(src[0]):
            log.debug("handshake from %s:%d failed: %s", *src, why)

    async def serve(self, listener: StreamListener,
                    handler: Callable[[SecureStream], Awaitable[Any]], *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept streams forever, handshake each, and run ``handler`` on it in a task.

        Handshakes in progress are capped (``_gate.py``). A stream is closed when its handler
        returns. :class:`~p2pcluster.ProtocolError` from a handler is logged and counted,
        never propagated; other errors propagate.
        """
        gate = HandshakeGate(self.config.max_handshakes, self.config.max_handshakes_per_host)

        async def serve_one(stream: trio.abc.Stream, src: Address) -> None:
            try:
                secure = await self.accept(stream, src)
            finally:
                gate.release(src[0])
            if secure is not None:
                await self._handle(secure, handler)

        def refused(src: Address) -> None:
            self.count("handshakes_refused")
            self._rejected.note(src[0])

        await serve_streams(listener, gate, serve_one, refused=refused, task_status=task_status)

    async def _handle(self, secure: SecureStream,
                      handler: Callable[[SecureStream], Awaitable[Any]]) -> None:
        async with secure:
            try:
                await handler(secure)
            except (ProtocolError, trio.BrokenResourceError) as exc:
                log.debug("stream from %s:%d ended: %s", *secure.remote, exc)
