"""The joblib backend's pure parts: pickles with out-of-band buffers, the worker's outcome of
a batch, and what a pickled batch needs of a peer."""

from __future__ import annotations

import hashlib
import platform
from typing import Any

import pytest

pytest.importorskip("cloudpickle", reason="needs the [joblib] extra")
pytest.importorskip("joblib", reason="needs the [joblib] extra")

from p2pcluster._joblib_needs import batch_needs, dumps_noting_modules
from p2pcluster._joblib_task import Failure, dumps, loads, run_pickled
from p2pcluster._shared import Shared


def test_numpy_arrays_travel_out_of_band() -> None:
    np = pytest.importorskip("numpy")
    big = np.arange(100_000, dtype=np.float64)
    parts = dumps({"x": big, "z": big[:10]})
    assert len(parts) == 3 and len(parts[0]) < 1000 and len(parts[1]) == big.nbytes
    parts = dumps({"x": big, "y": big[::2]})  # y is not contiguous: in band, as pickle does
    assert len(parts) == 2 and len(parts[1]) == big.nbytes
    back = loads(parts)
    assert np.array_equal(back["x"], big) and np.array_equal(back["y"], big[::2])


def test_loads_refuses_what_is_not_a_list_of_bytes() -> None:
    with pytest.raises(ValueError):
        loads([])
    with pytest.raises(ValueError):
        loads(["text"])  # type: ignore[list-item]


def test_run_pickled_returns_the_result_or_the_failure() -> None:
    assert loads(run_pickled(*dumps(lambda: [1, 2]))) == [1, 2]
    failure = loads(run_pickled(*dumps(lambda: {}["missing"])))
    assert isinstance(failure, Failure) and isinstance(failure.error, KeyError)
    assert failure.type_name == "KeyError" and "missing" in failure.traceback
    broken = loads(run_pickled(b"not a pickle"))
    assert isinstance(broken, Failure) and broken.type_name == "_pickle.UnpicklingError"


def test_a_batch_needs_the_distributions_its_pickle_names() -> None:
    sklearn = pytest.importorskip("sklearn")
    from sklearn.svm import SVC

    parts, modules = dumps_noting_modules([SVC(C=2.0)])
    assert "sklearn" in modules
    assert isinstance(loads(parts)[0], SVC) and loads(parts)[0].C == 2.0
    needs = batch_needs(modules)
    assert needs.python == platform.python_version()
    found = dict(needs.dists)
    assert found["scikit-learn"] == sklearn.__version__
    assert {"joblib", "cloudpickle"} <= set(found)


def test_the_modules_noted_are_those_of_classes_functions_and_objects() -> None:
    import fractions
    import json

    np = pytest.importorskip("numpy")
    parts, modules = dumps_noting_modules(
        {"f": fractions.Fraction(1, 3), "g": json.dumps, "t": fractions.Fraction,
         "a": np.zeros(3), "n": [1.5] * 10, "local": lambda: 1})
    assert {"fractions", "json", "numpy"} <= modules
    assert loads(parts)["f"] == fractions.Fraction(1, 3)


def _blas_threads() -> list[int]:
    import threadpoolctl

    return [pool["num_threads"] for pool in threadpoolctl.threadpool_info()
            if pool["user_api"] == "blas"]


def test_run_pickled_limits_blas_threads_for_the_batch_only() -> None:
    pytest.importorskip("numpy")  # loads OpenBLAS (or MKL)
    pytest.importorskip("threadpoolctl")
    before = _blas_threads()
    if not before:
        pytest.skip("no BLAS library loaded by NumPy here")
    assert loads(run_pickled(*dumps(_blas_threads), threads=1)) == [1] * len(before)
    assert _blas_threads() == before  # the limits are put back after the batch
    assert loads(run_pickled(*dumps(_blas_threads))) == before  # no limit asked: none set


def test_a_batch_carries_large_gappy_arrays_out_of_band_as_equal_copies() -> None:
    np = pytest.importorskip("numpy")
    from p2pcluster._joblib_needs import GAPPY_MIN

    base = np.arange(2000 * 100, dtype=np.float64).reshape(2000, 100)
    X = base[:, :64]  # not contiguous, as the digits X
    small = base[:3, :5]
    objects = np.empty((100, 100), dtype=object)[:, ::2]
    parts, _ = dumps_noting_modules({"X": X, "again": X, "T": X.T, "small": small,
                                     "objects": objects})
    # X once (the pickle's memo), its transpose once; the small slice and the object array
    # in band, as pickle does.
    assert sorted(len(p) for p in parts[1:]) == [X.nbytes, X.nbytes]
    assert X.nbytes >= GAPPY_MIN > small.nbytes
    back = loads(parts)
    assert back["X"] is back["again"] and np.array_equal(back["X"], X)
    # Its own writable, C-contiguous copy, as pickle's in-band copy was.
    assert back["X"].flags.c_contiguous and back["X"].flags.writeable
    assert np.array_equal(back["T"], X.T) and np.array_equal(back["small"], small)
    assert back["objects"].shape == objects.shape
    back["X"][0, 0] = -1.0
    assert loads(parts)["X"][0, 0] == X[0, 0]  # the buffer itself is untouched
    # A contiguous array stays a read-only view of its buffer, as before.
    contiguous = np.arange(10_000.0)
    parts, _ = dumps_noting_modules([contiguous])
    assert len(parts) == 2 and not loads(parts)[0].flags.writeable


class _FakeCluster:
    """Only what BufferShares asks of a Cluster: ``share``, counted."""

    def __init__(self) -> None:
        self.shared: list[bytes] = []

    def share(self, value: bytes) -> Shared:
        self.shared.append(value)
        return Shared(hashlib.sha256(value).digest(), len(value))


def test_a_buffer_is_shared_from_its_second_batch_on_and_only_once() -> None:
    from p2pcluster._joblib_shares import SHARE_MIN, BufferShares

    cluster: Any = _FakeCluster()
    shares = BufferShares()
    big, other, small = b"x" * SHARE_MIN, b"y" * SHARE_MIN, b"z" * (SHARE_MIN - 1)
    first = shares.swap(cluster, b"head", [big, small])
    assert first == [b"head", big, small] and cluster.shared == []  # seen once: inline
    second = shares.swap(cluster, b"head2", [memoryview(big), small, other])
    assert isinstance(second[1], Shared) and second[2:] == [small, other]
    assert cluster.shared == [big]
    # Equal bytes, a view or not: the same handle; a view sent inline becomes bytes.
    third = shares.swap(cluster, b"head3", [bytes(big), memoryview(small), other])
    assert third[1] == second[1] and type(third[2]) is bytes and third[2] == small
    assert isinstance(third[3], Shared)
    assert cluster.shared == [big, other]  # each shared once


def test_a_batch_names_at_most_max_uses_shared_values() -> None:
    from p2pcluster._joblib_shares import SHARE_MIN, BufferShares
    from p2pcluster._packed import MAX_USES

    cluster: Any = _FakeCluster()
    shares = BufferShares()
    parts = [b"head", *(bytes([i]) * SHARE_MIN for i in range(MAX_USES + 3))]
    shares.swap(cluster, parts[0], parts[1:])
    again = shares.swap(cluster, parts[0], parts[1:])
    assert sum(isinstance(p, Shared) for p in again) == MAX_USES
    assert again[-3:] == parts[-3:]


def test_shared_buffers_stop_at_the_budget_and_travel_inline_past_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from p2pcluster import _joblib_shares
    from p2pcluster._joblib_shares import SHARE_MIN, BufferShares

    monkeypatch.setattr(_joblib_shares, "SHARE_BUDGET", 2 * SHARE_MIN)
    cluster: Any = _FakeCluster()
    shares = BufferShares()
    parts = [bytes([i]) * SHARE_MIN for i in range(3)]
    shares.swap(cluster, b"h", parts)
    again = shares.swap(cluster, b"h", parts)
    assert [isinstance(p, Shared) for p in again[1:]] == [True, True, False]
    assert again[3] == parts[2] and len(cluster.shared) == 2  # the third: inline, as before
