"""Writes that skip the scheduler when the kernel takes the bytes at once.

trio's ``send_all`` yields to the scheduler even when the socket or pipe has room, so every
small message costs a turn of the event loop. On the hot paths of small tasks (a request to a
worker, a result to a client) that turn is most of the latency. :func:`write_all` tries one
non-blocking ``write`` first, with the stream's lock taken without waiting, and falls back to
``send_all`` for whatever the kernel did not take, or when another task is sending.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import trio

__all__ = ["write_all"]

SendAll = Callable[[bytes | memoryview], Awaitable[None]]


async def write_all(fd: int, send_all: SendAll, lock: trio.Lock | trio.StrictFIFOLock,
                    data: bytes) -> None:
    """Send ``data`` whole through ``send_all`` (the stream of file descriptor ``fd``, whose
    sends ``lock`` serialises), writing straight to ``fd`` when nothing else is sending.

    Errors are ``send_all``'s: a failed direct write falls back to it, which raises them.
    """
    if lock.locked():
        async with lock:
            await send_all(data)
        return
    lock.acquire_nowait()
    try:
        try:
            written = os.write(fd, data)
        except OSError:  # full (EAGAIN), or broken: send_all waits, or raises trio's error
            written = 0
        if written < len(data):
            await send_all(memoryview(data)[written:])
    finally:
        lock.release()
