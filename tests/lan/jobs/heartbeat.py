"""LAN test job: N tasks that each run SECONDS, beating every STEP seconds while they run.

    p2pcluster run tests/lan/jobs/heartbeat.py N SECONDS STEP LOGDIR

Task ``i`` appends ``beat I TIME`` (``time.time()``) to ``LOGDIR/<host>.log`` when it starts and
then every STEP seconds until SECONDS have passed, then ``end I TIME``, and returns ``i``;
``host`` is ``$P2P_TEST_HOST`` in the peer that runs it. A worker busy on this job therefore
leaves a line at least every STEP seconds: a test that sees no new line for much longer knows
that no worker of that host runs the job. ``main`` returns the sum of the task indices.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Executor
from pathlib import Path


def _append(logdir: str, host: str, line: str) -> None:
    with (Path(logdir) / f"{host}.log").open("a") as log:  # one write(2) per line, O_APPEND
        log.write(line + "\n")


def pulse(i: int, seconds: float, step: float, logdir: str) -> int:
    host = os.environ.get("P2P_TEST_HOST", "unknown")
    end = time.monotonic() + seconds
    while True:
        _append(logdir, host, f"beat {i} {time.time():.6f}")
        left = end - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(step, left))
    _append(logdir, host, f"end {i} {time.time():.6f}")
    return i


def main(cluster: Executor, n: str, seconds: str, step: str, logdir: str) -> int:
    count = int(n)
    return sum(cluster.map(pulse, range(count), [float(seconds)] * count,
                           [float(step)] * count, [logdir] * count))
