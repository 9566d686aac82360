"""joblib's backend contract on a real peer (embedded, 2 worker processes) and through a
`p2pcluster join` daemon on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

joblib = pytest.importorskip("joblib", reason="needs the [joblib] extra")
cloudpickle = pytest.importorskip("cloudpickle", reason="needs the [joblib] extra")

import p2pcluster.joblib as pj  # noqa: E402
from p2pcluster import Cluster, Config  # noqa: E402
from p2pcluster._control_client import request_daemon  # noqa: E402
from p2pcluster._secret import new_secret, write_secret_file  # noqa: E402

from .daemons import Daemon, running_daemon  # noqa: E402

# The workers import this module by value, not by name (as if it were a user's script).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT = 60


class Oops(Exception):
    """An exception class of the user's own."""


def square(x: int) -> int:
    time.sleep(0.002 * (x % 3))  # out of order completion
    return x * x


def fail_at(x: int, bad: int) -> int:
    if x == bad:
        raise Oops(f"bad {x}")
    return x


def mark_and_sleep(directory: str, x: int, bad: int) -> int:
    if x == bad:
        raise ValueError("early failure")
    Path(directory, str(x)).touch()
    time.sleep(0.2)
    return x


def nested(x: int) -> tuple[str, list[int]]:
    backend, _ = joblib.parallel.get_active_backend()
    inner = joblib.Parallel(n_jobs=-1)(joblib.delayed(square)(x + i) for i in range(4))
    return type(backend).__name__, inner


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("joblib")
    secret = tmp / "secret"
    write_secret_file(secret, (new_secret(),))
    config = Config.local(mdns=False, port=0, secret_file=str(secret), workers=2,
                          cluster=f"joblib-{os.getpid()}", node_name="solo")
    with Cluster(config, daemon=False) as opened:
        yield opened


@pytest.fixture
def backend(cluster: Cluster) -> Iterator[None]:
    with joblib.parallel_config(backend="p2pcluster", cluster=cluster):
        yield


def test_results_in_order_and_n_jobs(backend: None) -> None:
    out = joblib.Parallel(n_jobs=-1, timeout=WAIT)(joblib.delayed(square)(i) for i in range(60))
    assert out == [i * i for i in range(60)]
    assert joblib.effective_n_jobs(-1) == 2  # every worker of every live peer: 2 here
    assert joblib.effective_n_jobs(-2) == 1
    assert joblib.effective_n_jobs(5) == 5
    assert joblib.Parallel()(joblib.delayed(square)(i) for i in range(3)) == [0, 1, 4]


def blas_threads(_: int) -> list[int]:
    import threadpoolctl

    return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]


def test_batches_run_with_limited_blas_threads(cluster: Cluster) -> None:
    """As under joblib's process backends: CPUs // n_jobs threads, or inner_max_num_threads."""
    pytest.importorskip("numpy")
    pytest.importorskip("threadpoolctl")
    with joblib.parallel_config(backend="p2pcluster", cluster=cluster):
        out = joblib.Parallel(n_jobs=os.cpu_count(), timeout=WAIT)(
            joblib.delayed(blas_threads)(i) for i in range(8))
    assert out[-1] and set(out[-1]) == {1}  # the first batch may import NumPy itself
    cpus = os.cpu_count() or 1
    if cpus < 2:
        return
    with joblib.parallel_config(backend="p2pcluster", cluster=cluster,
                                inner_max_num_threads=2):
        out = joblib.Parallel(n_jobs=cpus, timeout=WAIT)(
            joblib.delayed(blas_threads)(i) for i in range(8))
    assert out[-1] and set(out[-1]) == {2}


def test_closures_and_numpy_arrays_travel(backend: None) -> None:
    np = pytest.importorskip("numpy")
    big = np.arange(300_000, dtype=np.float64)  # 2.4 MB: over inline_value_size
    k = 3
    out = joblib.Parallel(n_jobs=2, timeout=WAIT)(
        joblib.delayed(lambda a, i: a * k + i)(big, i) for i in range(3))
    for i, arr in enumerate(out):
        assert arr.dtype == big.dtype and np.array_equal(arr, big * 3 + i)
    assert sum(pj.calls_by_peer().values()) >= 3


def test_exceptions_are_reraised_with_their_type_and_remote_traceback(backend: None) -> None:
    with pytest.raises(Oops, match="bad 7") as info:
        joblib.Parallel(n_jobs=-1, timeout=WAIT)(joblib.delayed(fail_at)(i, 7)
                                                 for i in range(20))
    cause = info.value.__cause__
    assert isinstance(cause, pj.RemoteTraceback)
    assert "fail_at" in str(cause) and "on peer solo" in str(cause)
    with pytest.raises(ZeroDivisionError):
        joblib.Parallel(n_jobs=2)(joblib.delayed(lambda: 1 / 0)() for _ in range(2))


def test_an_error_aborts_the_rest_and_the_backend_still_works(backend: None,
                                                              tmp_path: Path) -> None:
    # All 60 batches are sent at once: without the abort, they would all run (6 s).
    with pytest.raises(ValueError, match="early failure"):
        joblib.Parallel(n_jobs=2, batch_size=1, pre_dispatch="all", timeout=WAIT)(
            joblib.delayed(mark_and_sleep)(str(tmp_path), i, 2) for i in range(60))
    ran = len(list(tmp_path.iterdir()))
    time.sleep(2.0)  # what was not cancelled would run meanwhile: about 20 tasks
    more = len(list(tmp_path.iterdir())) - ran
    assert more <= 4, f"{more} tasks started in the 2 s after the error ({ran} before)"
    assert joblib.Parallel(n_jobs=2)(joblib.delayed(square)(i) for i in range(4)) == [
        0, 1, 4, 9]


def test_a_timeout_raises_and_stops_the_batch(backend: None, tmp_path: Path) -> None:
    import multiprocessing

    started = time.monotonic()
    with pytest.raises(multiprocessing.TimeoutError):  # what joblib raises, whatever backend
        joblib.Parallel(n_jobs=2, timeout=1.0)(joblib.delayed(time.sleep)(s)
                                               for s in (0.01, 30, 0.01))
    assert time.monotonic() - started < 10
    assert joblib.Parallel(n_jobs=2)(joblib.delayed(square)(i) for i in range(4)) == [
        0, 1, 4, 9]


def test_generators_ordered_and_unordered(backend: None) -> None:
    gen = joblib.Parallel(n_jobs=2, return_as="generator")(
        joblib.delayed(square)(i) for i in range(30))
    assert not isinstance(gen, list)
    assert list(gen) == [i * i for i in range(30)]
    gen = joblib.Parallel(n_jobs=2, return_as="generator_unordered")(
        joblib.delayed(square)(i) for i in range(30))
    assert sorted(gen) == [i * i for i in range(30)]


def test_nested_parallel_runs_sequentially_in_the_worker(backend: None) -> None:
    out = joblib.Parallel(n_jobs=-1, timeout=WAIT)(joblib.delayed(nested)(i)
                                                   for i in range(6))
    for i, (name, inner) in enumerate(out):
        assert name == "SequentialBackend"
        assert inner == [(i + j) ** 2 for j in range(4)]


def test_unpicklable_results_and_exceptions_are_reported(backend: None) -> None:
    import threading

    from p2pcluster import TaskError

    # A result that cannot be pickled: the worker's TypeError, as a TaskError.
    with pytest.raises(TaskError, match="lock") as info:
        joblib.Parallel(n_jobs=2)(joblib.delayed(threading.Lock)() for _ in range(2))
    assert isinstance(info.value, TypeError)

    def raise_unpicklable() -> None:
        lock = threading.Lock()
        raise Oops(lock)

    # An exception that cannot be pickled: its type's name and message, as a TaskError.
    with pytest.raises(TaskError, match="Oops") as info:
        joblib.Parallel(n_jobs=2)(joblib.delayed(raise_unpicklable)() for _ in range(2))
    assert "raise_unpicklable" in info.value.remote_traceback

    # An argument that cannot be pickled, in a batch dispatched after the first results
    # come back (from the callback thread): joblib raises its TypeError, nothing hangs.
    items = [*range(8), threading.Lock(), 9, 10]
    with pytest.raises(TypeError, match="lock"):
        joblib.Parallel(n_jobs=2, batch_size=1, pre_dispatch=2, timeout=WAIT)(
            joblib.delayed(square)(x) for x in items)
    assert joblib.Parallel(n_jobs=2)(joblib.delayed(square)(i) for i in range(4)) == [
        0, 1, 4, 9]


# --- through the daemon ------------------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Daemon, Path]]:
    secret = tmp_path / "secret"
    write_secret_file(secret, (new_secret(),))
    with running_daemon(tmp_path, secret, f"joblibd-{os.getpid()}", monkeypatch,
                        workers=2) as started:
        yield started, secret


def test_through_the_daemon(daemon: tuple[Daemon, Path]) -> None:
    started, secret = daemon
    config = Config.local(mdns=False, port=0, secret_file=str(secret),
                          cluster=started.cluster)
    with joblib.parallel_config(backend="p2pcluster", config=config, daemon=True):
        assert joblib.effective_n_jobs(-1) == 2
        out = joblib.Parallel(timeout=WAIT)(joblib.delayed(square)(i) for i in range(50))
        assert out == [i * i for i in range(50)]
        with pytest.raises(Oops):
            joblib.Parallel(timeout=WAIT)(joblib.delayed(fail_at)(i, 3) for i in range(10))
    pj.calls_by_peer(reset=True)
    with joblib.parallel_config(backend="p2pcluster", config=config, daemon=True):
        joblib.Parallel()(joblib.delayed(square)(i) for i in range(5))
    assert pj.calls_by_peer() == {"d1": 5}
    pj.shutdown()
    started.check_alive()


def row_sum(X: Any, i: int) -> float:
    return float(X[i].sum())


def test_a_repeated_buffer_is_shared_through_the_daemon(daemon: tuple[Daemon, Path]) -> None:
    np = pytest.importorskip("numpy")
    started, secret = daemon
    config = Config.local(mdns=False, port=0, secret_file=str(secret),
                          cluster=started.cluster)
    X = np.random.default_rng(5).standard_normal((1000, 100))[:, :50]
    with joblib.parallel_config(backend="p2pcluster", config=config, daemon=True):
        got = joblib.Parallel(batch_size=1, timeout=WAIT)(
            joblib.delayed(row_sum)(X, i) for i in range(8))
    assert got == [float(X[i].sum()) for i in range(8)]
    sharing = trio.run(request_daemon, started.control, "status")["sharing"]
    assert (sharing["owned"], sharing["owned_bytes"]) == (1, X.nbytes + 5)  # X, as CBOR
    pj.shutdown()  # the connection closes: the daemon lets go of X
    deadline = time.monotonic() + WAIT
    while trio.run(request_daemon, started.control, "status")["sharing"]["owned"]:
        assert time.monotonic() < deadline, "the daemon kept X after the client left"
        time.sleep(0.05)
    started.check_alive()


JOB = """
import joblib
import p2pcluster.joblib


def cube(x):
    return x ** 3


def main(cluster, n):
    with joblib.parallel_config(backend="p2pcluster", cluster=cluster):
        return joblib.Parallel()(joblib.delayed(cube)(i) for i in range(int(n)))
"""


def test_a_job_file_of_p2pcluster_run_uses_the_backend(daemon: tuple[Daemon, Path],
                                                       tmp_path: Path) -> None:
    started, secret = daemon
    job = tmp_path / "jobjl.py"
    job.write_text(JOB)  # its functions travel by value: no other peer can import the job
    done = subprocess.run(
        [sys.executable, "-m", "p2pcluster", "run", str(job), "6", "--cluster",
         started.cluster, "--secret-file", str(secret), "--no-mdns", "--preset", "local"],
        env=started.env, capture_output=True, text=True, timeout=WAIT, check=False)
    assert done.returncode == 0, done.stderr
    assert "submitting through the local daemon" in done.stderr
    assert json.loads(done.stdout) == [x ** 3 for x in range(6)]
