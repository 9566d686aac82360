"""One worker process, from the pool's side: starting it, its two pipes, the calls queued on
it, and the frames that cross the pipes.

A frame is a 4-byte big-endian length and a pickle: the pipes join the peer to its own
workers only, and nothing from the network is ever unpickled
(:mod:`._worker_main` is the other end).
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import subprocess
import sys
from collections import deque
from typing import Any

import trio

__all__ = ["Call", "Crashed", "Resend", "WorkerProcess", "frame", "how_it_died",
           "read_frame", "start_worker_process"]

_LENGTH = struct.Struct(">I")


class Crashed(Exception):
    """The worker died while running this call."""


class Resend(Exception):
    """The worker died (or was killed) before it ran this call: send it again."""


class Call:
    def __init__(self, frame: bytes) -> None:
        self.frame = frame
        self.done = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        if not self.done.is_set():
            self.result, self.error = result, error
            self.done.set()


def frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


class WorkerProcess:
    """One worker process, its two pipes, and the calls queued on it, oldest first."""

    def __init__(self, process: trio.Process, send: trio.lowlevel.FdStream,
                 receive: trio.lowlevel.FdStream) -> None:
        self.process = process
        self.send = send
        self.receive = receive
        self.pending: deque[Call] = deque()
        self.ready = False
        self.alive = True
        self.killed = False
        self.lock = trio.Lock()
        self.slot = 0  #: which of the pool's slots it fills (the pool numbers them)

    def kill(self) -> None:
        self.killed = True
        if self.process.returncode is None:
            self.process.kill()


def how_it_died(returncode: int | None) -> str:
    """A worker's end, in words: its signal or its exit code."""
    if returncode is None:
        return "the worker died"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


async def start_worker_process(main_module: str) -> WorkerProcess:
    """``python -m main_module READ_FD WRITE_FD`` in a session of its own (a terminal's
    Ctrl-C reaches only the peer), its pipes open on our side."""
    child_read, parent_write = os.pipe()
    parent_read, child_write = os.pipe()
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", main_module, str(child_read), str(child_write)],
            pass_fds=(child_read, child_write), stdin=subprocess.DEVNULL,
            start_new_session=True)
    finally:
        os.close(child_read)
        os.close(child_write)
    return WorkerProcess(process, trio.lowlevel.FdStream(parent_write),
                         trio.lowlevel.FdStream(parent_read))


async def read_frame(stream: trio.lowlevel.FdStream, buffer: bytearray) -> Any:
    """The next frame's object from ``stream`` (``buffer`` keeps what arrived past it), or
    None at the end of the stream."""
    while True:
        if len(buffer) >= _LENGTH.size:
            (n,) = _LENGTH.unpack_from(buffer)
            if len(buffer) >= _LENGTH.size + n:
                data = bytes(buffer[_LENGTH.size:_LENGTH.size + n])
                del buffer[:_LENGTH.size + n]
                return pickle.loads(data)
        chunk = await stream.receive_some(1 << 20)
        if not chunk:
            return None
        buffer += chunk
