"""The nearest neighbours of query points in a shared dataset: NumPy arrays on the cluster.

    p2pcluster run examples/arrays.py [ROWS [QUERIES]]      # defaults: 100000 256
    python examples/arrays.py                               # self-test, no cluster needed

Needs NumPy on every peer (``pip install 'p2pcluster[numpy]'``). The dataset is ROWS points
in 8 dimensions (float64, from a seeded generator: 6.4 MB at the default). ``cluster.share``
sends it to each peer once, however many of that peer's tasks use it; every task receives
the array itself (read-only), not the handle. The queries go out in blocks of 16 rows, each
block an array argument, and each task returns two arrays for its block: the index of each
query's nearest point (int64) and the distance to it (float64). With the default arguments
it prints

    {"rows": 100000, "queries": 256, "tasks": 16, "index_sum": 12658691, "mean_distance": 0.800189}

The answer is the same whichever peer runs which block. About 1 s on two worker processes;
``p2pcluster run`` takes about 2 s in all. Run the file itself to check the cluster's way
(blocks, shared data) against one pass over all the queries at once.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future
from typing import Any

import numpy as np

DIMENSIONS = 8
BLOCK = 16  # query rows per task


def dataset(rows: int, seed: int = 0) -> np.ndarray[Any, Any]:
    """``rows`` points in :data:`DIMENSIONS` dimensions, the same for the same seed."""
    return np.random.default_rng(seed).standard_normal((rows, DIMENSIONS))


def nearest(data: np.ndarray[Any, Any], queries: np.ndarray[Any, Any]) -> list[Any]:
    """``[index, distance]``: for each query row, the nearest row of ``data`` and how far."""
    index = np.empty(len(queries), dtype=np.int64)
    distance = np.empty(len(queries), dtype=np.float64)
    for i, query in enumerate(queries):
        squared = ((data - query) ** 2).sum(axis=1)
        index[i] = squared.argmin()
        distance[i] = np.sqrt(squared[index[i]])
    return [index, distance]


def summary(rows: int, queries: int, tasks: int, index: np.ndarray[Any, Any],
            distance: np.ndarray[Any, Any]) -> dict[str, Any]:
    return {"rows": rows, "queries": queries, "tasks": tasks, "index_sum": int(index.sum()),
            "mean_distance": round(float(distance.mean()), 6)}


def main(cluster: Any, rows: str = "100000", queries: str = "256") -> dict[str, Any]:
    n, q = int(rows), int(queries)
    if n < 1 or q < 1:
        raise ValueError("ROWS and QUERIES must be positive")
    data = cluster.share(dataset(n))  # a small handle; each peer fetches the array once
    points = dataset(q, seed=1)
    blocks = [points[start:start + BLOCK] for start in range(0, q, BLOCK)]
    results = list(cluster.map(nearest, [data] * len(blocks), blocks))
    index = np.concatenate([index for index, _ in results])
    distance = np.concatenate([distance for _, distance in results])
    return summary(n, q, len(blocks), index, distance)


class _InProcess(Executor):
    """Runs each task at once, in this process: enough to test ``main`` without a cluster."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future

    def share(self, value: Any) -> Any:
        return value


def self_test() -> None:
    for rows, queries in ((1, 1), (50, 17), (100000, 256)):
        got = main(_InProcess(), str(rows), str(queries))
        data, points = dataset(rows), dataset(queries, seed=1)
        # Every distance at once, by |d|^2 - 2 d.q + |q|^2, a different way to the same answer.
        squared = ((data**2).sum(axis=1)[None, :] - 2 * points @ data.T
                   + (points**2).sum(axis=1)[:, None])
        index = squared.argmin(axis=1)
        distance = np.sqrt(((data[index] - points) ** 2).sum(axis=1))
        expected = summary(rows, queries, -(-queries // BLOCK), index, distance)
        assert got == expected, f"{rows} rows, {queries} queries: {got} != {expected}"
    print("arrays: self-test passed")


if __name__ == "__main__":
    self_test()
