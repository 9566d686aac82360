"""Task functions of scripts/bench_data.py (shipped to p2pcluster peers, imported by Dask's
workers by reference). NumPy is imported in the functions."""

from __future__ import annotations

from typing import Any


def total(arr: Any) -> float:
    import numpy as np

    return float(np.sum(arr))


def slice_total(arr: Any, index: int, parts: int) -> float:
    import numpy as np

    step = len(arr) // parts
    return float(np.sum(arr[index * step:(index + 1) * step]))


def make(nbytes: int) -> Any:
    import numpy as np

    return np.ones(nbytes // 8)
