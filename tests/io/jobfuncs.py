"""Task functions for tests/io/test_jobs.py.

The tests ship this file with ``include=[...]`` and import it as the top-level module
``jobfuncs``, the name a peer finds it under in its code cache. Worker processes are spawned
and import it again, so it imports nothing heavy.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def boom_at(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"boom {x}")  # the line a remote traceback must show
    return x


def crash() -> None:
    os._exit(3)


def record_and_sleep(directory: str, index: int, seconds: float) -> int:
    """Leave ``<pid>.<index>`` in ``directory`` as the task starts, then sleep."""
    Path(directory, f"{os.getpid()}.{index}").write_text(str(os.getpid()))
    time.sleep(seconds)
    return index


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def blob(size: int, seed: int) -> bytes:
    """``size`` bytes that depend on ``seed`` (cheap to make, cheap to check)."""
    block = seed.to_bytes(4, "big") * 16384  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def sleep_square(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x * x


def fork_and_sleep(pid_file: str, seconds: float) -> float:
    """Fork a child that sleeps a minute with the worker's pipes open (its pid goes to
    ``pid_file``), then sleep ``seconds``."""
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    Path(pid_file).write_text(str(child))
    time.sleep(seconds)
    return seconds


def chatter(x: int) -> int:
    """Print two lines on stdout (one with a forged log line and an escape sequence) and
    one, unfinished, on stderr."""
    print(f"out {x}")
    print(f"line {x}\n2026-01-01 00:00:00 ERROR forged\x1b[2J")
    import sys

    sys.stderr.write(f"err {x}")
    return x


def shout(x: int, bad: int = -1) -> int:
    """Print to stdout and stderr (the dashboard's job detail shows both), fail on ``bad``."""
    import sys

    print(f"shout {x}")
    print(f"whisper {x}", file=sys.stderr)
    if x == bad:
        raise ValueError("unlucky")
    return x
