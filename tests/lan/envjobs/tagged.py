"""Tasks that record where they ran; run with --requires TAG."""

from __future__ import annotations

import os
import time
from concurrent.futures import Executor
from typing import Any


def task(i: int) -> list[Any]:
    time.sleep(0.01)
    return [i * i, os.environ.get("P2P_TEST_HOST", "?")]


def main(cluster: Executor, n: str) -> dict[str, Any]:
    results = list(cluster.map(task, range(int(n))))
    return {"values": [v for v, _ in results], "hosts": [h for _, h in results]}
