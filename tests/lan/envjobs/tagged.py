"""Tasks that record where they ran; run with --requires TAG.

    p2pcluster run --requires TAG tagged.py N SECONDS LOGDIR

Task ``i`` sleeps SECONDS, appends ``end I`` to ``LOGDIR/<host>.log`` and returns
``[i * i, host]`` (``host`` is ``$P2P_TEST_HOST`` where it ran).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Any


def task(i: int, seconds: float, logdir: str) -> list[Any]:
    host = os.environ.get("P2P_TEST_HOST", "?")
    time.sleep(seconds)
    with (Path(logdir) / f"{host}.log").open("a") as log:
        log.write(f"end {i}\n")
    return [i * i, host]


def main(cluster: Executor, n: str, seconds: str, logdir: str) -> dict[str, Any]:
    count = int(n)
    results = list(cluster.map(task, range(count), [float(seconds)] * count,
                               [logdir] * count))
    return {"values": [v for v, _ in results], "hosts": [h for _, h in results]}
