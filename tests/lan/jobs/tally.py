"""LAN test job: N tasks of SECONDS each, recording which peer ran each one.

    p2pcluster run tests/lan/jobs/tally.py N SECONDS LOGDIR

Task ``i`` sleeps SECONDS and returns ``[i * i, host]``, where ``host`` is ``$P2P_TEST_HOST``
in the peer that ran it (the tests set it per daemon; its worker processes inherit it).
Around the sleep the task appends ``start I TIME`` and ``end I TIME`` (``time.time()``) to
``LOGDIR/<host>.log``, so a test can follow each host's progress while the job runs.

``main`` returns ``{"n": N, "sum": ..., "values": [...], "hosts": [...]}``: the value and the
host of the result the owner kept, by task index. The sum of ``i * i`` over ``range(N)`` is
``(N - 1) * N * (2 * N - 1) / 6``.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Any


def _append(logdir: str, host: str, line: str) -> None:
    with (Path(logdir) / f"{host}.log").open("a") as log:  # one write(2) per line, O_APPEND
        log.write(line + "\n")


def square(i: int, seconds: float, logdir: str) -> list[Any]:
    host = os.environ.get("P2P_TEST_HOST", "unknown")
    _append(logdir, host, f"start {i} {time.time():.6f}")
    time.sleep(seconds)
    _append(logdir, host, f"end {i} {time.time():.6f}")
    return [i * i, host]


def main(cluster: Executor, n: str, seconds: str, logdir: str) -> dict[str, Any]:
    count = int(n)
    results = list(cluster.map(square, range(count), [float(seconds)] * count,
                               [logdir] * count))
    values = [value for value, _ in results]
    return {"n": count, "sum": sum(values), "values": values,
            "hosts": [host for _, host in results]}
