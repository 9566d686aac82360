"""The joblib backend sends a buffer that batches repeat (a GridSearchCV's ``X``) once per
peer: two embedded peers on loopback, the owner with no workers, so every batch crosses."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

joblib = pytest.importorskip("joblib", reason="needs the [joblib] extra")
cloudpickle = pytest.importorskip("cloudpickle", reason="needs the [joblib] extra")
np = pytest.importorskip("numpy")

import p2pcluster.joblib as pj  # noqa: E402
from p2pcluster import Cluster, Config  # noqa: E402
from p2pcluster._joblib_shares import SHARE_MIN  # noqa: E402
from p2pcluster._secret import new_secret, write_secret_file  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT = 60


def row_stats(X: np.ndarray, Y: np.ndarray, i: int) -> tuple[float, bool, bool, bool]:
    """A value of row ``i``; whether ``X`` arrived writable and contiguous (then writes to
    it, which must not reach any other batch), and whether ``Y`` arrived writable."""
    value = float(X[i].sum() + X[:, i % X.shape[1]].sum() + Y[i])
    flags = (bool(X.flags.writeable), bool(X.flags.c_contiguous), bool(Y.flags.writeable))
    X[i] = -1.0
    return value, *flags


def _config(secret: Path, cluster: str, name: str, workers: int,
            seeds: tuple[str, ...] = ()) -> Config:
    # shared_linger: each batch is a job, and b keeps what it fetched between them (with
    # the default, 0, b fetches again whenever its queue runs dry between batches).
    return Config.local(mdns=False, port=0, secret_file=str(secret), workers=workers,
                        cluster=cluster, node_name=name, seeds=seeds, shared_linger=5.0)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Cluster]]:
    """``a`` (no workers: owns the batches) and ``b`` (one worker), which sees ``a``."""
    secret = tmp_path_factory.mktemp("joblib-shares") / "secret"
    write_secret_file(secret, (new_secret(),))
    name = f"jlshares-{os.getpid()}"
    with Cluster(_config(secret, name, "a", 0), daemon=False) as a:
        assert a.peer is not None
        seed = (f"127.0.0.1:{a.peer.address[1]}",)
        with Cluster(_config(secret, name, "b", 1, seed), daemon=False) as b:
            deadline = time.monotonic() + WAIT
            while sum(m.workers for m in a.members() if m.alive) < 1:
                assert time.monotonic() < deadline, "a never saw b's worker"
                time.sleep(0.05)
            yield a, b


def test_a_repeated_buffer_crosses_the_link_once(two: tuple[Cluster, Cluster]) -> None:
    a, b = two
    assert a.peer is not None and b.peer is not None
    big = np.random.default_rng(3).standard_normal((2000, 100))
    X = big[:, :64]  # not contiguous, as the digits X: pickle would copy it into each batch
    Y = np.arange(50_000.0)  # contiguous: out of band already
    before = b.peer.statistics().sharing
    with joblib.parallel_config(backend="p2pcluster", cluster=a):
        got = joblib.Parallel(n_jobs=2, batch_size=1, timeout=WAIT)(
            joblib.delayed(row_stats)(X, Y, i) for i in range(12))
    after = b.peer.statistics().sharing
    expected = [row_stats(X.copy(), Y, i)[0] for i in range(12)]
    assert [g[0] for g in got] == expected  # no batch saw another's writes
    assert all(g[1] and g[2] for g in got)  # X writable and contiguous, as pickle's copy
    assert not any(g[3] for g in got)  # Y read-only, as an out-of-band array always was
    assert X.flags.writeable and not np.any(X == -1.0)  # the caller's X is untouched
    # The first batch carried X and Y; the others handles: b fetched their bytes once.
    assert after.fetches - before.fetches == 2
    size = X.nbytes + Y.nbytes
    assert size <= after.fetched_bytes - before.fetched_bytes < size + 1024
    assert a.peer.statistics().sharing.served_bytes < size + 1024
    assert a.peer.statistics().stealing.submitted >= 12
    assert b.peer.statistics().stealing.executed >= 12  # every batch crossed


def test_a_buffer_no_batch_repeats_is_never_shared(two: tuple[Cluster, Cluster]) -> None:
    a, b = two
    assert a.peer is not None and b.peer is not None
    rng = np.random.default_rng(4)
    chunks = [rng.standard_normal(SHARE_MIN // 8 + 10) for _ in range(6)]
    owned = a.peer.statistics().sharing.owned
    with joblib.parallel_config(backend="p2pcluster", cluster=a):
        got = joblib.Parallel(n_jobs=2, batch_size=1, timeout=WAIT)(
            joblib.delayed(np.sum)(c) for c in chunks)
    assert got == [np.sum(c) for c in chunks]
    assert a.peer.statistics().sharing.owned == owned  # nothing more kept by the owner


def test_grid_search_gives_loky_s_scores(two: tuple[Cluster, Cluster]) -> None:
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    a, _ = two
    X, y = load_digits(return_X_y=True)
    grid = {"C": [1.0, 10.0], "gamma": [0.0005, 0.001]}
    with joblib.parallel_config(backend="loky", n_jobs=2):
        loky = GridSearchCV(SVC(), grid, cv=3, n_jobs=2).fit(X, y)
    pj.calls_by_peer(reset=True)
    with joblib.parallel_config(backend="p2pcluster", cluster=a):
        ours = GridSearchCV(SVC(), grid, cv=3, n_jobs=2).fit(X, y)
    assert ours.best_params_ == loky.best_params_
    for key in ("mean_test_score", "split0_test_score", "split2_test_score"):
        assert np.array_equal(ours.cv_results_[key], loky.cv_results_[key])
    assert pj.calls_by_peer() == {"b": 12}
