"""Imports a sibling module and a sibling package; `p2pcluster run` ships both by itself."""

from __future__ import annotations

import os
from concurrent.futures import Executor
from typing import Any

import helper
from shapes import area


def task(i: int) -> list[Any]:
    return [helper.triple(i) + area.square(i), os.environ.get("P2P_TEST_HOST", "?")]


def main(cluster: Executor, n: str) -> dict[str, Any]:
    results = list(cluster.map(task, range(int(n))))
    return {"values": [v for v, _ in results], "hosts": [h for _, h in results]}
