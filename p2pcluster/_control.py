"""The local control endpoint: how local commands talk to a running peer.

A Unix stream socket at ``$XDG_RUNTIME_DIR/p2pcluster/<cluster>.sock`` (falling back to a
private ``/tmp/p2pcluster-<uid>/`` directory), one per cluster name, mode 0600 in a 0700
directory; a connecting process of another user is refused (``SO_PEERCRED``). Several peers on
one machine (one per network namespace, say) each get their own ``XDG_RUNTIME_DIR`` or
``--control PATH``.

Messages are frames of a 4-byte big-endian length and one plain CBOR map (no tags). A request
is ``{"op": ..., ...}``; the daemon answers with one or more frames, each with ``"ok"``, and
closes the connection when done.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import stat
import struct
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import cbor2
import trio

from ._errors import P2PClusterError, ProtocolError
from ._proto.codec import decode_cbor

__all__ = ["ControlConnection", "NoDaemon", "control_path", "open_connection", "request",
           "serve_control"]

log = logging.getLogger("p2pcluster.control")
MAX_FRAME = 64 * 1024 * 1024
_LENGTH = struct.Struct(">I")

Reply = Callable[[Mapping[str, Any]], Awaitable[None]]
#: A handler gets the request and the connection; ``await connection(answer)`` replies, and a
#: streaming handler may keep replying, or read to notice that the client went away.
Handler = Callable[[Mapping[str, Any], "ControlConnection"], Awaitable[None]]


class NoDaemon(P2PClusterError):
    """No peer is running for this cluster on this machine."""


def control_path(cluster: str, environ: Mapping[str, str] | None = None) -> Path:
    """Where the control socket of ``cluster`` lives."""
    env = os.environ if environ is None else environ
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", cluster)
    runtime = env.get("XDG_RUNTIME_DIR")
    base = (Path(runtime) / "p2pcluster" if runtime
            else Path(tempfile.gettempdir()) / f"p2pcluster-{os.getuid()}")
    return base / f"{safe}.sock"


#: The longest path a Unix socket may have on Linux (sun_path is 108 bytes, NUL included).
MAX_SOCKET_PATH = 107


def _check_length(path: Path) -> None:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise P2PClusterError(
            f"the control socket path {path} is longer than the {MAX_SOCKET_PATH} bytes a "
            "Unix socket allows; set a shorter XDG_RUNTIME_DIR or pass --control PATH")


def _prepare_directory(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.parent.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise P2PClusterError(
            f"control directory {path.parent} must belong to you and not be writable by "
            f"others (mode {stat.S_IMODE(info.st_mode):04o}); fix it or pass --control PATH"
        )


def encode_frame(message: Mapping[str, Any]) -> bytes:
    data = cbor2.dumps(dict(message))
    return _LENGTH.pack(len(data)) + data


class ControlConnection:
    """One connection to or from the control socket: frames in, frames out."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = bytearray()

    async def __call__(self, message: Mapping[str, Any]) -> None:
        await self.send(message)

    async def send(self, message: Mapping[str, Any]) -> None:
        await self.stream.send_all(encode_frame(message))

    async def receive(self) -> dict[str, Any] | None:
        """The next message, or None when the other side closed."""
        while True:
            if len(self._buffer) >= _LENGTH.size:
                (length,) = _LENGTH.unpack_from(self._buffer)
                if length > MAX_FRAME:
                    raise ProtocolError(f"control frame of {length} bytes is too large")
                if len(self._buffer) >= _LENGTH.size + length:
                    data = bytes(self._buffer[_LENGTH.size:_LENGTH.size + length])
                    del self._buffer[:_LENGTH.size + length]
                    message = decode_cbor(data)
                    if not isinstance(message, dict):
                        raise ProtocolError("a control message is a CBOR map")
                    return message
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                if self._buffer:
                    raise ProtocolError("control connection closed inside a frame")
                return None
            self._buffer += chunk

    def __aiter__(self) -> ControlConnection:
        return self

    async def __anext__(self) -> dict[str, Any]:
        message = await self.receive()
        if message is None:
            raise StopAsyncIteration
        return message

    async def aclose(self) -> None:
        await self.stream.aclose()


async def open_connection(path: Path) -> ControlConnection:
    """Connect to a daemon's control socket; :class:`NoDaemon` if none answers."""
    _check_length(path)
    try:
        stream = await trio.open_unix_socket(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise NoDaemon(f"no control socket answers at {path}") from exc
    return ControlConnection(stream)


async def request(path: Path, message: Mapping[str, Any], *, timeout: float = 10.0
                  ) -> dict[str, Any]:
    """Send one request and return the first answer."""
    with trio.fail_after(timeout):
        connection = await open_connection(path)
        try:
            await connection.send(message)
            answer = await connection.receive()
        finally:
            await connection.aclose()
    if answer is None:
        raise P2PClusterError(f"the daemon at {path} closed the connection without answering")
    return answer


async def _claim(path: Path) -> None:
    """Make sure no live daemon owns ``path``; remove a stale socket left by a crash."""
    if not path.exists():
        return
    try:
        probe = await trio.open_unix_socket(str(path))
    except OSError:
        path.unlink(missing_ok=True)  # nobody listens: a crashed daemon's leftover
        return
    await probe.aclose()
    raise P2PClusterError(f"a p2pcluster peer is already running with control socket {path}; "
                          "stop it with `p2pcluster leave`, or use another --cluster")


def _peer_uid(sock: trio.socket.SocketType) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


async def serve_control(path: Path, handler: Handler, *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``path`` until cancelled; each connection's first frame goes to ``handler``.

    ``handler(request, reply)`` answers with ``await reply(message)``, as often as it likes;
    the connection closes when it returns. Raises :class:`~p2pcluster.P2PClusterError` if
    another daemon already serves ``path``.
    """
    _check_length(path)
    _prepare_directory(path)
    await _claim(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(16)
        inode = path.stat().st_ino
    except BaseException:
        sock.close()
        raise
    listener = trio.SocketListener(sock)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                nursery.start_soon(_serve_one, stream, handler)
    finally:
        with trio.CancelScope(shield=True):
            await listener.aclose()
        try:  # remove the socket unless another daemon has replaced it since
            if path.stat().st_ino == inode:
                path.unlink()
        except FileNotFoundError:
            pass


async def _serve_one(stream: trio.SocketStream, handler: Handler) -> None:
    connection = ControlConnection(stream)
    async with stream:
        uid = _peer_uid(stream.socket)
        if uid not in (os.getuid(), 0):
            log.warning("refused a control connection from uid %d", uid)
            return
        try:
            request_ = await connection.receive()
            if request_ is not None:
                await handler(request_, connection)
        except* (ProtocolError, trio.BrokenResourceError, OSError) as group:
            # The client went away (or sent garbage): that ends this connection, never the
            # daemon. except*, since a handler with a nursery (`submit`, which streams
            # results) raises these inside an ExceptionGroup.
            log.debug("control connection ended: %s", "; ".join(map(str, group.exceptions)))
