"""One worker process, from the pool's side: starting it, its two pipes, the calls queued on
it, and the frames that cross the pipes.

A frame is a 4-byte big-endian length and a pickle: the pipes join the peer to its own
workers only, and nothing from the network is ever unpickled
(:mod:`._worker_main` is the other end).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Mapping
from typing import Any, NamedTuple

import trio

from ._taskoutput import TaskLabels

__all__ = ["Call", "CallTarget", "Crashed", "Resend", "WorkerProcess", "frame", "how_it_died",
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


class CallTarget(NamedTuple):
    """What a request runs: the function (as :meth:`FunctionRef.to_wire` gives it) and the
    largest result it may return."""

    ref: tuple[Any, ...]
    max_result: int
    where: str  #: whose limit max_result is, for the error
    time_limit: float | None  #: seconds after which a batch stops after its current task
    shared: Mapping[bytes, Any]  #: the shared values the calls use, by digest

    def request(self, cache_root: str, wires: list[Any],
                labels: TaskLabels | None) -> bytes:
        """The framed ``run`` request of one call, for the worker's pipe."""
        return frame(("run", cache_root, self.ref, wires, self.max_result, self.where,
                      self.time_limit, list(self.shared),
                      None if labels is None else (labels.job, list(labels.tasks))))


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
        self.shared: set[bytes] = set()  #: digests of the shared values it holds

    def outputs(self) -> list[tuple[str, trio.abc.ReceiveStream]]:
        """The worker's stdout and stderr, by name, where they are pipes to us."""
        streams = [("stdout", self.process.stdout), ("stderr", self.process.stderr)]
        return [(name, stream) for name, stream in streams if stream is not None]

    def kill(self) -> None:
        """Kill the worker and every process of its group: what a task forked dies with it."""
        self.killed = True
        self.kill_group()

    def kill_group(self) -> None:
        """SIGKILL the worker's process group (its pid: it leads a session of its own).

        Also right after the worker has died and been reaped: a pid that still names a live
        process group is not reused, so this reaches only what its tasks left behind.
        """
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
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


async def start_worker_process(main_module: str, *, label_output: bool = False
                               ) -> WorkerProcess:
    """``python -m main_module READ_FD WRITE_FD`` in a session of its own (a terminal's
    Ctrl-C reaches only the peer; the worker leads a process group that holds whatever its
    tasks fork, killed as one), its pipes open on our side. With ``label_output``, its
    stdout and stderr are pipes too (:meth:`WorkerProcess.outputs`)."""
    extra, output = (["--label-output"], subprocess.PIPE) if label_output else ([], None)
    child_read, parent_write = os.pipe()
    parent_read, child_write = os.pipe()
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", main_module, str(child_read), str(child_write), *extra],
            pass_fds=(child_read, child_write), stdin=subprocess.DEVNULL,
            stdout=output, stderr=output, start_new_session=True)
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
