"""Imports the test distribution p2ptestdist (installed for some peers only)."""

from __future__ import annotations

import os
import time
from concurrent.futures import Executor
from typing import Any


def task(i: int) -> list[Any]:
    import p2ptestdist

    time.sleep(0.01)
    return [p2ptestdist.twice(i), os.environ.get("P2P_TEST_HOST", "?")]


def main(cluster: Executor, n: str) -> dict[str, Any]:
    results = list(cluster.map(task, range(int(n))))
    return {"values": [v for v, _ in results], "hosts": [h for _, h in results]}
