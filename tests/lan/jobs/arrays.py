"""LAN test job: NumPy arrays through `p2pcluster run`, plain and shared.

    p2pcluster run tests/lan/jobs/arrays.py map COUNT MEGABYTES
    p2pcluster run tests/lan/jobs/arrays.py shared MEGABYTES TASKS SECONDS
    p2pcluster run --local tests/lan/jobs/arrays.py changed MEGABYTES MARKER
    p2pcluster run tests/lan/jobs/arrays.py result MEGABYTES

``map`` sums COUNT float64 arrays of MEGABYTES each on the cluster and compares each sum
with the one computed here, bit for bit. ``shared`` shares one float64 array of MEGABYTES and
runs TASKS tasks that each sum one slice of it (sleeping SECONDS first), and compares. Both
print a JSON object: whether every value is exact, the hosts that ran the tasks, the wall
time, and this process's peak RSS (MiB). ``changed`` submits three arrays of MEGABYTES, refills
the first and sorts the second right after, creates the file MARKER, and prints each task's
outcome: ``["ok", exact, host]`` or ``[error type, message]``. ``result`` has one task make
a float64 array of MEGABYTES on the peer that runs it, and compares it with the same array
made here: whether it is exact, and the host that made it.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any

import numpy as np


def total(arr: Any) -> list[Any]:
    return [float(np.sum(arr)), os.environ.get("P2P_TEST_HOST", "?")]


def slice_total(arr: Any, index: int, parts: int, seconds: float) -> list[Any]:
    time.sleep(seconds)
    step = len(arr) // parts
    return [float(np.sum(arr[index * step:(index + 1) * step])),
            os.environ.get("P2P_TEST_HOST", "?"), bool(arr.flags.writeable)]


def made(megabytes: int) -> list[Any]:
    arr = np.random.default_rng(megabytes).standard_normal(megabytes * 2**20 // 8)
    return [arr, os.environ.get("P2P_TEST_HOST", "?")]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _map(cluster: Any, count: int, megabytes: int) -> dict[str, Any]:
    n = megabytes * 2**20 // 8
    arrays = [np.random.default_rng(i).standard_normal(n) for i in range(count)]
    expected = [float(np.sum(a)) for a in arrays]
    start = time.monotonic()
    got = list(cluster.map(total, arrays))
    wall = time.monotonic() - start
    return {"exact": [g[0] for g in got] == expected, "hosts": sorted({g[1] for g in got}),
            "wall": wall, "bytes": sum(a.nbytes for a in arrays), "peak_mb": _peak_mb()}


def _shared(cluster: Any, megabytes: int, tasks: int, seconds: float) -> dict[str, Any]:
    arr = np.random.default_rng(0).standard_normal(megabytes * 2**20 // 8)
    start = time.monotonic()
    handle = cluster.share(arr)
    again = cluster.share(arr)  # the same bytes: the same handle, nothing sent
    step = len(arr) // tasks
    expected = [float(np.sum(arr[i * step:(i + 1) * step])) for i in range(tasks)]
    got = list(cluster.map(slice_total, [handle] * tasks, range(tasks), [tasks] * tasks,
                           [seconds] * tasks))
    return {"exact": [g[0] for g in got] == expected, "same_handle": again == handle,
            "hosts": sorted({g[1] for g in got}), "writeable": any(g[2] for g in got),
            "wall": time.monotonic() - start, "bytes": int(arr.nbytes),
            "peak_mb": _peak_mb()}


def _changed(cluster: Any, megabytes: int, marker: str) -> dict[str, Any]:
    n = megabytes * 2**20 // 8
    arrays = [np.random.default_rng(i).standard_normal(n) for i in range(3)]
    expected = float(np.sum(arrays[2]))
    futures = [cluster.submit(total, arr) for arr in arrays]
    arrays[0][:] = 1.0
    arrays[1].sort()
    open(marker, "w").close()
    outcomes: list[list[Any]] = []
    for future in futures:
        try:
            value, host = future.result()
            outcomes.append(["ok", value == expected, host])
        except Exception as exc:
            outcomes.append([getattr(exc, "type_name", type(exc).__name__), str(exc)])
    return {"outcomes": outcomes}


def main(cluster: Any, kind: str, *args: str) -> dict[str, Any]:
    if kind == "map":
        return _map(cluster, int(args[0]), int(args[1]))
    if kind == "changed":
        return _changed(cluster, int(args[0]), args[1])
    if kind == "result":
        got, host = cluster.submit(made, int(args[0])).result()
        return {"exact": bool(np.array_equal(got, made(int(args[0]))[0])), "host": host}
    return _shared(cluster, int(args[0]), int(args[1]), float(args[2]))
