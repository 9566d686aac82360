"""The local control socket: where it lives, who may use it, and how frames cross it.

A Unix stream socket at ``$XDG_RUNTIME_DIR/p2pcluster/<cluster>.sock`` (falling back to a
private ``/tmp/p2pcluster-<uid>/`` directory), one per cluster name, mode 0600 in a 0700
directory. Several peers on one machine (one per network namespace, say) each get their own
``XDG_RUNTIME_DIR`` or ``--control PATH``.

Trust goes both ways, and is checked before a byte of a job moves:

- the daemon refuses a connecting process of another user (``SO_PEERCRED``), root excepted;
- a client refuses a socket whose directory is not its own with mode 0700, or whose
  listening process runs as another user (root excepted): under ``/tmp`` anyone may have
  created the path first, and a fake daemon would receive the job's code and forge its
  results (:class:`UntrustedDaemon`).

The frames, and the messages in them, are :mod:`._proto.control`'s. Either end may pass a
descriptor beside a frame (``SCM_RIGHTS``: a value in shared memory,
:class:`~._proto.control.SegmentBlob`); an end that takes them reads with ``recvmsg`` and
keeps the descriptors in the order they came, for the frames that announce them to take.
"""

from __future__ import annotations

import array
import logging
import os
import pwd
import secrets
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import cbor2
import trio

from ._errors import P2PClusterError, ProtocolError
from ._fastwrite import write_all
from ._gate import AcceptBackoff
from ._limits import open_files_text, raise_open_files
from ._places import control_path
from ._proto.codec import decode_cbor
from ._proto.control import CODEC, MAX_FRAME, ControlMessage
from ._shm import available as shm_available

__all__ = ["BACKLOG", "FramedStream", "NoDaemon", "UntrustedDaemon", "connect",
           "control_path", "serve_control"]

log = logging.getLogger("p2pcluster.control")
_LENGTH = struct.Struct(">I")
_RECEIVE = 1 << 20
#: Frames of this many bytes or more are read straight into a buffer of their own.
_DIRECT = 64 * 1024
#: Connections the kernel queues for the daemon: a client opens one, however many futures.
BACKLOG = 128
#: The longest path a Unix socket may have on Linux (sun_path is 108 bytes, NUL included).
MAX_SOCKET_PATH = 107
#: Descriptors a receiving end holds before the frames that announce them take them: more
#: is the other end sending descriptors nothing announces (a read returns those of one
#: send).
MOST_FDS = 16
_ANCILLARY = socket.CMSG_SPACE(MOST_FDS * array.array("i").itemsize)
_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0)  #: (Linux: no descriptor leaks to a child)


class NoDaemon(P2PClusterError):
    """No peer is running for this cluster on this machine."""


class UntrustedDaemon(P2PClusterError):
    """The control socket belongs to someone else: refused before anything was sent."""


def _check_length(path: Path) -> None:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise P2PClusterError(
            f"the control socket path {path} is longer than the {MAX_SOCKET_PATH} bytes a "
            "Unix socket allows; set a shorter XDG_RUNTIME_DIR or pass --control PATH")


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _directory_problem(directory: Path) -> str | None:
    """Why ``directory`` cannot hold our control socket, or None."""
    info = directory.stat()
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.getuid() or mode & 0o077:
        return (f"its directory {directory} belongs to {_user(info.st_uid)} with mode "
                f"{mode:04o}; it must be yours ({_user(os.getuid())}) with mode 0700")
    return None


def _prepare_directory(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    problem = _directory_problem(path.parent)
    if problem:
        raise P2PClusterError(f"cannot serve the control socket {path}: {problem}. Another "
                              "user may have created it: remove it, or pass --control PATH")


def peer_uid(sock: socket.socket | trio.socket.SocketType) -> int:
    """The user id of the process at the other end of a Unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


class FramedStream:
    """Frames over one control connection: plain CBOR maps (the greeting) and typed
    messages. Sends are serialised, so any task may send; one task receives. With
    ``fds``, it takes descriptors passed beside frames (:meth:`take_fd`)."""

    def __init__(self, stream: trio.SocketStream, *, fds: bool = False) -> None:
        self.stream = stream
        self._fd = stream.socket.fileno()
        self._buffer = bytearray()
        self._send_lock = trio.StrictFIFOLock()
        self._takes_fds = fds
        self._fds: list[int] = []  #: received, not yet taken, in order

    async def send_map(self, message: Mapping[str, Any]) -> None:
        await self.send_frame(cbor2.dumps(dict(message)))

    async def send_message(self, message: ControlMessage) -> None:
        await self.send_frame(CODEC.encode(message))

    async def send_frame(self, data: bytes) -> None:
        await self.send_raw(_LENGTH.pack(len(data)) + data)

    async def send_raw(self, data: bytes) -> None:
        """Bytes already framed."""
        await write_all(self._fd, self.stream.send_all, self._send_lock, data)

    async def send_frame_with_fd(self, data: bytes, fd: int) -> None:
        """One frame with descriptor ``fd`` beside its first byte (the other end gets a
        copy of it; ``fd`` stays the caller's)."""
        framed = _LENGTH.pack(len(data)) + data
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
        async with self._send_lock:
            sent = await self.stream.socket.sendmsg([framed], rights)
            if sent < len(framed):
                await self.stream.send_all(memoryview(framed)[sent:])

    def take_fd(self) -> int:
        """The earliest descriptor received and not yet taken (now the caller's to close);
        :class:`~p2pcluster.ProtocolError` if none came."""
        if not self._fds:
            raise ProtocolError("a frame announced a descriptor that did not come with it")
        return self._fds.pop(0)

    async def send_frames(self, frames: list[bytes]) -> None:
        """Several frames in one write (one system call, one wake-up at the other end)."""
        if frames:
            await self.send_raw(b"".join(part for frame in frames
                                         for part in (_LENGTH.pack(len(frame)), frame)))

    async def receive_frame(self) -> bytes | memoryview | None:
        """The next frame's bytes, or None when the other side closed between frames. The
        rest of a large frame is read straight into a buffer of its own size."""
        while True:
            if len(self._buffer) >= _LENGTH.size:
                (length,) = _LENGTH.unpack_from(self._buffer)
                if length > MAX_FRAME:
                    raise ProtocolError(f"control frame of {length} bytes exceeds {MAX_FRAME}")
                end = _LENGTH.size + length
                if len(self._buffer) >= end:
                    with memoryview(self._buffer) as view:
                        data = bytes(view[_LENGTH.size:end])
                    del self._buffer[:end]
                    return data
                if length >= _DIRECT:
                    return await self._receive_rest(length)
            chunk = await self._receive_some()
            if not chunk:
                if self._buffer:
                    raise ProtocolError("the control connection closed inside a frame")
                return None
            self._buffer += chunk

    async def _receive_rest(self, length: int) -> memoryview:
        """A frame of ``length`` bytes whose start is buffered: the rest read into it."""
        frame = bytearray(length)
        have = len(self._buffer) - _LENGTH.size
        frame[:have] = self._buffer[_LENGTH.size:]
        self._buffer.clear()
        with memoryview(frame) as view:
            while have < length:
                got = await self._receive_into(view[have:])
                if not got:
                    raise ProtocolError("the control connection closed inside a frame")
                have += got
        return memoryview(frame)

    async def _receive_some(self) -> bytes:
        if not self._takes_fds:
            return await self.stream.receive_some(_RECEIVE)
        data, ancillary, flags, _ = await self.stream.socket.recvmsg(
            _RECEIVE, _ANCILLARY, _CLOEXEC)
        self._keep_fds(ancillary, flags)
        return data

    async def _receive_into(self, view: memoryview) -> int:
        if not self._takes_fds:
            return await self.stream.socket.recv_into(view)
        got, ancillary, flags, _ = await self.stream.socket.recvmsg_into(
            [view], _ANCILLARY, _CLOEXEC)
        self._keep_fds(ancillary, flags)
        return got

    def _keep_fds(self, ancillary: list[tuple[int, int, bytes]], flags: int) -> None:
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
                self._fds.extend(fds)
        if flags & socket.MSG_CTRUNC:
            raise LostDescriptors(f"descriptors passed beside a frame were lost (more than "
                                  f"{MOST_FDS} in one send, or this process has no more: "
                                  f"{open_files_text()})")
        if len(self._fds) > MOST_FDS:
            raise ProtocolError(f"the other end passed more than {MOST_FDS} descriptors "
                                "that no frame announced")

    def close_fds(self) -> None:
        """Close the descriptors received that no frame took."""
        while self._fds:
            os.close(self._fds.pop())

    async def receive_map(self) -> dict[str, Any] | None:
        data = await self.receive_frame()
        if data is None:
            return None
        message = decode_cbor(data)
        if not isinstance(message, dict):
            raise ProtocolError("expected a CBOR map")
        return message

    async def receive_message(self) -> ControlMessage | None:
        data = await self.receive_frame()
        if data is None:
            return None
        message: ControlMessage = CODEC.decode(data)
        return message

    async def aclose(self) -> None:
        self.close_fds()
        await self.stream.aclose()


async def connect(path: Path, *, fds: bool = False) -> FramedStream:
    """Connect to the daemon at ``path`` after checking it is ours to trust (``fds``:
    taking descriptors it passes beside frames, :meth:`FramedStream.take_fd`; each large
    result mapped from one holds a descriptor while it lives, so this process's soft limit
    on open files is first raised to the hard one, as a peer does at start).

    Raises :class:`NoDaemon` if nothing answers there, and :class:`UntrustedDaemon` (naming
    the path and the owner found) if its directory or its process belongs to another user.
    """
    _check_length(path)
    if fds:
        raise_open_files()
    try:
        problem = _directory_problem(path.parent)
    except FileNotFoundError:
        raise NoDaemon(f"no control socket answers at {path}") from None
    if problem:
        raise UntrustedDaemon(f"refusing the control socket {path}: {problem}. Another user "
                              "may have created it: remove it, or pass --control PATH")
    try:
        stream = await trio.open_unix_socket(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise NoDaemon(f"no control socket answers at {path}") from exc
    uid = peer_uid(stream.socket)
    if uid not in (os.getuid(), 0):
        await stream.aclose()
        raise UntrustedDaemon(f"refusing the control socket {path}: the process listening "
                              f"there runs as {_user(uid)}, not as you ({_user(os.getuid())}) "
                              "or root")
    return FramedStream(stream, fds=fds)


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


Handler = Callable[[FramedStream], Awaitable[None]]


async def serve_control(path: Path, handler: Handler, *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``path`` until cancelled, running ``handler`` on each connection of this user
    (or root) in a task of its own; the connection closes when it returns.

    A connection's errors end that connection, never the server. Raises
    :class:`~p2pcluster.P2PClusterError` if another daemon already serves ``path``.
    """
    _check_length(path)
    _prepare_directory(path)
    await _claim(path)
    sock, inode = await _listen_at(path)
    listener = trio.SocketListener(sock)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            backoff = AcceptBackoff()  # out of descriptors (a flood on the port): wait, go on
            while True:
                stream = await backoff.accept(listener.accept)
                nursery.start_soon(_serve_one, stream, handler)
    finally:
        with trio.CancelScope(shield=True):
            await listener.aclose()
        try:  # remove the socket unless another daemon has replaced it since
            if path.stat().st_ino == inode:
                path.unlink()
        except FileNotFoundError:
            pass


async def _listen_at(path: Path) -> tuple[trio.socket.SocketType, int]:
    """A socket listening at ``path`` (mode 0600), and the inode it has there.

    It is bound and listening under a temporary name first, then renamed into place: a
    client that finds the path always finds a socket that accepts.
    """
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = path.with_name(f".{os.getpid()}-{secrets.token_hex(3)}")
    _check_length(staging)
    try:
        staging.unlink(missing_ok=True)
        await sock.bind(str(staging))
        os.chmod(staging, 0o600)
        sock.listen(BACKLOG)
        os.rename(staging, path)
        return sock, path.stat().st_ino
    except BaseException:
        sock.close()
        staging.unlink(missing_ok=True)
        raise


class LostDescriptors(ProtocolError):
    """The kernel dropped descriptors passed to this process: it had no room for them."""


async def _serve_one(stream: trio.SocketStream, handler: Handler) -> None:
    async with stream:
        uid = peer_uid(stream.socket)
        if uid not in (os.getuid(), 0):
            log.warning("refused a control connection from %s", _user(uid))
            return
        framed = FramedStream(stream, fds=shm_available())
        try:
            await handler(framed)
        except* (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError,
                 OSError) as group:
            # The client went away, or sent garbage: that ends this connection, never the
            # daemon. except*, since a handler with a nursery raises inside a group.
            text = "; ".join(map(str, group.exceptions))
            lost = any(isinstance(e, LostDescriptors) for e in group.exceptions)
            log.log(logging.WARNING if lost else logging.DEBUG,
                    "control connection ended: %s", text)
        finally:
            framed.close_fds()
