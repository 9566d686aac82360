"""What a peer uses, from /proc: the machine's CPU, the memory of the peer and its workers,
the load average. Sampled every ``Config.usage_interval`` and published in the peer's
gossiped metadata (:class:`~._proto.meta.Usage`), so that every peer's dashboard shows
every machine's figures without asking.

Linux's /proc only, read directly: no dependency for three numbers. Where /proc is missing
(another system) the peer publishes none, and the dashboard shows dashes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NoReturn

import trio

from ._proto.meta import Usage

__all__ = ["CpuMeter", "child_pids", "load_average", "resident_kib", "serve_usage"]

log = logging.getLogger("p2pcluster.usage")
PROC = Path("/proc")
_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024 if hasattr(os, "sysconf") else 4


class CpuMeter:
    """The machine's CPU use between two calls, from the counters of ``/proc/stat``."""

    def __init__(self, stat: Path = PROC / "stat") -> None:
        self._stat = stat
        self._last = self._read()

    def _read(self) -> tuple[int, int]:
        """(busy, total) jiffies since boot, over every core."""
        with self._stat.open() as file:
            fields = [int(x) for x in file.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        total = sum(fields[:8])  # guest time is counted in user already
        return total - idle, total

    def percent(self) -> float:
        """Percent of all cores busy since the previous call (or since creation)."""
        busy, total = self._read()
        last_busy, last_total = self._last
        self._last = busy, total
        elapsed = total - last_total
        return 0.0 if elapsed <= 0 else 100.0 * (busy - last_busy) / elapsed


def resident_kib(pids: Iterable[int]) -> int:
    """The resident memory of these processes, in KiB (those gone are skipped)."""
    total = 0
    for pid in pids:
        try:
            with (PROC / str(pid) / "statm").open() as file:
                total += int(file.read().split()[1]) * _PAGE_KIB
        except (OSError, ValueError, IndexError):
            continue
    return total


def child_pids() -> list[int]:
    """The process ids of this process's children (its worker processes), from
    ``/proc/self/task/*/children``; [] where that cannot be read."""
    found: list[int] = []
    try:
        for task in (PROC / "self" / "task").iterdir():
            found += [int(pid) for pid in (task / "children").read_text().split()]
    except (OSError, ValueError):
        return found
    return found


def load_average() -> float:
    """The machine's 1-minute load average."""
    with (PROC / "loadavg").open() as file:
        return float(file.read().split()[0])


async def serve_usage(interval: float, workers: Callable[[], list[int]],
                      publish: Callable[[Usage], None]) -> None:
    """Every ``interval`` seconds, measure and ``publish`` (which must not block) this
    process's and its ``workers()``' usage. Returns at once if ``interval`` is 0 or /proc
    cannot be read."""
    if interval <= 0:
        return
    try:
        meter = CpuMeter()
        load_average()
    except (OSError, ValueError, IndexError) as exc:
        log.info("no CPU and memory figures for the dashboard: %s", exc)
        return
    await _measure(interval, meter, workers, publish)


async def _measure(interval: float, meter: CpuMeter, workers: Callable[[], list[int]],
                   publish: Callable[[Usage], None]) -> NoReturn:
    await trio.sleep(min(interval, 1.0))  # the first CPU figure needs some time to average
    while True:
        try:
            publish(Usage(meter.percent(), resident_kib([os.getpid(), *workers()]),
                          load_average()))
        except (OSError, ValueError, IndexError) as exc:  # /proc is not expected to fail
            log.debug("measuring usage failed: %s", exc)
        await trio.sleep(interval)
