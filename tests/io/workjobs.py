"""Task functions for the worker pool tests; worker processes import this module by name."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from pathlib import Path


class JobError(Exception):
    """An exception type defined by a job, to check qualified names in error reports."""


def add(a: int, b: int) -> int:
    return a + b


def noop() -> None:
    return None


def fail(message: str) -> None:
    raise JobError(message)


def crash_on(x: int, bad: int) -> int:
    """Return x, except for ``bad``, which kills the worker process without a word."""
    if x == bad:
        os._exit(1)
    return x


def segfault() -> None:
    ctypes.string_at(0)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def sleep_recording_pid(pid_file: str, seconds: float) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)


def pid() -> int:
    return os.getpid()


def length(data: bytes) -> int:
    return len(data)


def reversed_bytes(data: bytes) -> bytes:
    return data[::-1]


def unencodable() -> object:
    return object()


def exits() -> None:
    raise SystemExit(3)


async def coroutine() -> int:
    return 1


def sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def nap(index: int, seconds: float) -> int:
    """Sleep ``seconds``; return ``index``."""
    time.sleep(seconds)
    return index


def fork_then_sleep(pid_file: str, seconds: float) -> None:
    """Fork a child that sleeps 60 s holding every pipe the worker has (its pid goes to
    ``pid_file``), then sleep ``seconds`` in the worker."""
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    Path(pid_file).write_text(str(child))
    time.sleep(seconds)


def fork_then_die(pid_file: str) -> None:
    """Fork a child that sleeps 60 s holding the worker's pipes, then kill the worker."""
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    Path(pid_file).write_text(str(child))
    os._exit(5)
