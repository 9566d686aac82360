"""LAN test job: N tasks that each take SECONDS until a stop file exists, then none.

    p2pcluster run tests/lan/jobs/paced.py N SECONDS STOPFILE

A test that must do something *while* a job runs (a secret rotation) creates STOPFILE when
done: the job spans whatever the test did, however long that took, and then finishes fast.
Task ``i`` appends ``start I`` to ``STOPFILE.started`` and returns ``[i * i, host]`` (``host``
is ``$P2P_TEST_HOST``); ``main`` returns what tally.py's does.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Any


def square(i: int, seconds: float, stopfile: str) -> list[Any]:
    with Path(stopfile + ".started").open("a") as log:
        log.write(f"start {i}\n")
    if not Path(stopfile).exists():
        time.sleep(seconds)
    return [i * i, os.environ.get("P2P_TEST_HOST", "unknown")]


def main(cluster: Executor, n: str, seconds: str, stopfile: str) -> dict[str, Any]:
    count = int(n)
    results = list(cluster.map(square, range(count), [float(seconds)] * count,
                               [stopfile] * count))
    values = [value for value, _ in results]
    return {"n": count, "sum": sum(values), "values": values,
            "hosts": [host for _, host in results]}
