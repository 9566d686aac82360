"""Task functions on NumPy arrays, for tests/io/test_arrays.py and tests/lan.

Shipped with ``include=[...]`` and imported by peers as the top-level module ``arrayfuncs``.
NumPy is imported inside the functions, so a peer without NumPy can still load this file.
"""

from __future__ import annotations

from typing import Any


def echo(value: Any) -> Any:
    """The argument, as the task received it."""
    return value


def describe(arr: Any) -> list[Any]:
    """What the task sees of an array: its type, dtype, shape, order and writability."""
    return [type(arr).__name__, arr.dtype.str, list(arr.shape),
            bool(arr.flags.f_contiguous and not arr.flags.c_contiguous),
            bool(arr.flags.writeable)]


def total(arr: Any) -> float:
    import numpy as np

    return float(np.sum(arr))


def ramp(n: int, seed: int) -> Any:
    """``n`` float64 values, ``seed`` and up: a result made on the peer."""
    import numpy as np

    return np.arange(n, dtype=np.float64) + seed


def scaled(arr: Any, factor: float) -> Any:
    return arr * factor


def nbytes(*values: Any) -> int:
    return sum(int(v.nbytes) for v in values)


def slow_total(arr: Any, seconds: float) -> float:
    import time

    time.sleep(seconds)
    return total(arr)


def dot_row(matrix: Any, row: int) -> float:
    """A task that uses a shared matrix: the sum of one of its rows."""
    return float(matrix[row].sum())


def shared_info(value: Any, extra: int) -> list[Any]:
    return [type(value).__name__, bool(value.flags.writeable), int(value.nbytes), extra]


def placement(*values: Any) -> list[list[Any]]:
    """For each array: whether its data starts at a multiple of 64 bytes, whether it is
    writable, and its bytes (to compare)."""
    return [[v.ctypes.data % 64 == 0, bool(v.flags.writeable), v.tobytes()] for v in values]


_KEPT: list[Any] = []


def keep(arr: Any) -> int:
    """Keep the argument past the task (a cache, say): later values must never change it."""
    _KEPT.append(arr)
    return len(_KEPT)


def kept() -> list[bytes]:
    return [arr.tobytes() for arr in _KEPT]


def several(seed: int) -> dict[str, Any]:
    """A result of several large arrays, with odd-sized items between them: only the first
    can be placed aligned where a value travels as one flat buffer."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return {"a": rng.integers(0, 9, 500_003, dtype=np.int16), "text": "odd" * 1001,
            "b": rng.standard_normal(300_001), "c": rng.standard_normal(200_000).astype(
                np.complex64), "blob": b"q" * 1_000_003, "d": rng.standard_normal(150_000)}
