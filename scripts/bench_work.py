"""Task functions for scripts/bench_tasks.py, importable by every system it measures.

p2pcluster peers get this file through ``Cluster(include=[.../bench_work.py])``; Dask workers
and the multiprocessing pool import it from ``scripts/`` (the benchmark puts that directory on
their path). Only the standard library, so that importing it costs nothing measurable.

``spin`` burns CPU in a busy loop timed with :func:`time.perf_counter` rather than sleeping:
a sleeping task would let a system overlap tasks on one worker and look better than it is.
"""

from __future__ import annotations

import os
import time

__all__ = ["noop", "spin", "spin_pid"]


def noop(x: int) -> int:
    """The cheapest possible task: what a system spends around it is all overhead."""
    return x


def spin(seconds: float) -> float:
    """Keep one core busy for ``seconds`` of wall time; return the time actually spent."""
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        pass
    return time.perf_counter() - start


def spin_pid(seconds: float) -> int:
    """Spin like :func:`spin`, then return the worker's process id (to count workers used)."""
    spin(seconds)
    return os.getpid()
