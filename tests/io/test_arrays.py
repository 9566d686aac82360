"""NumPy arrays as task arguments and results, through real worker processes, an embedded
peer, a `p2pcluster join` daemon, and a peer that has no NumPy (loopback only).

Task functions live in ``arrayfuncs.py``, shipped with ``include=`` like ``jobfuncs.py``.
"""

from __future__ import annotations

import itertools
import mmap
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

np = pytest.importorskip("numpy")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from p2pcluster import Cluster, Config, SubmitError, TaskError, ValueTooLarge  # noqa: E402
from p2pcluster._control_client import request_daemon  # noqa: E402
from p2pcluster._jobs import JobResult, encode_args, unpack  # noqa: E402
from p2pcluster._peer import open_peer  # noqa: E402
from p2pcluster._secret import new_secret, write_secret_file  # noqa: E402

from .daemons import running_daemon  # noqa: E402

ARRAYFUNCS = Path(__file__).with_name("arrayfuncs.py")
sys.path.append(str(ARRAYFUNCS.parent))
import arrayfuncs  # noqa: E402

WAIT = 30
_counter = itertools.count()

#: Every dtype that travels: bool, signed and unsigned integers, floats and complex, in
#: both byte orders.
DTYPES = st.one_of(
    hnp.boolean_dtypes(), hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?", sizes=(16, 32, 64)),
    hnp.complex_number_dtypes(endianness="?"),
)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)


@st.composite
def arrays(draw: st.DrawFn) -> Any:
    """An array of any supported dtype and shape, in C or Fortran order, or a strided view."""
    arr = draw(hnp.arrays(DTYPES, SHAPES))
    layout = draw(st.sampled_from(["C", "F", "view"]))
    if layout == "F":
        return np.asfortranarray(arr)
    if layout == "view" and arr.ndim >= 1 and arr.shape[0] > 1:
        return arr[::2]
    return arr


def same(a: Any, b: Any) -> bool:
    """Exactly the same array: type, dtype (byte order included), shape, bits."""
    return (type(a) is type(b) and a.dtype == b.dtype and a.dtype.str == b.dtype.str
            and a.shape == b.shape
            and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes())


def check_several(got: dict[str, Any], seed: int) -> None:
    """``arrayfuncs.several(seed)`` came back exact, and every array aligned for NumPy."""
    want = arrayfuncs.several(seed)
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, np.ndarray):
            assert same(got[key], value) and got[key].flags.aligned, key
            assert got[key].flags.writeable, key
        else:
            assert got[key] == value


def memory_of(arr: Any) -> memoryview:
    """The buffer an array is a view of (failing the test if it owns its memory)."""
    base = arr.base
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview), f"the array's memory is a {type(base).__name__}"
    return base


def config(secret: Path, cluster: str, **changes: Any) -> Config:
    return Config.local(mdns=False, port=0, secret_file=str(secret), cluster=cluster,
                        **{"workers": 1, **changes})


def unique_cluster() -> str:
    return f"arrays-{os.getpid()}-{next(_counter)}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """An embedded peer with one worker process, for the whole module."""
    tmp = tmp_path_factory.mktemp("arrays")
    secret = tmp / "secret"
    write_secret_file(secret, (new_secret(),))
    with pytest.MonkeyPatch.context() as mp:
        for name in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
            mp.setenv(name, str(tmp / name.lower()))
        with Cluster(config(secret, unique_cluster()), daemon=False,
                     include=[ARRAYFUNCS]) as c:
            yield c


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(arr=arrays())
def test_arrays_round_trip_as_argument_and_result_through_a_worker(cluster: Cluster,
                                                                   arr: Any) -> None:
    back = cluster.submit(arrayfuncs.echo, arr).result(timeout=WAIT)
    expected = np.ascontiguousarray(arr) if not (
        arr.flags.c_contiguous or arr.flags.f_contiguous) else arr
    assert same(back, expected)
    fortran = arr.ndim >= 2 and arr.flags.f_contiguous and not arr.flags.c_contiguous
    seen = cluster.submit(arrayfuncs.describe, arr).result(timeout=WAIT)
    assert seen[:4] == ["ndarray", arr.dtype.str, list(arr.shape), fortran]
    assert seen[4] is True  # an argument array is the task's own to change


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=arrays().filter(lambda a: a.size > 0).map(lambda a: a.flat[0]))
def test_numpy_scalars_come_back_as_the_same_type(cluster: Cluster, value: Any) -> None:
    back = cluster.submit(arrayfuncs.echo, value).result(timeout=WAIT)
    assert type(back) is type(value)
    assert np.asarray(back).tobytes() == np.asarray(value).tobytes()


def test_a_shared_value_may_hold_numpy_scalars(cluster: Cluster) -> None:
    """A shared value's arrays are made read-only in the worker; its NumPy scalars (never
    writeable, and whose flags cannot be set) come through as they are."""
    matrix = np.arange(12.0).reshape(3, 4)
    value = {"scale": np.float32(2.5), "rows": [matrix, np.int64(7)], "alone": np.bool_(True)}
    for shared in (value, np.float64(1.5)):
        back = cluster.submit(arrayfuncs.echo, cluster.share(shared)).result(timeout=WAIT)
        if shared is value:
            assert type(back["scale"]) is np.float32 and back["scale"] == np.float32(2.5)
            assert type(back["rows"][1]) is np.int64 and back["alone"] is np.True_
            assert same(back["rows"][0], matrix)
        else:
            assert type(back) is np.float64 and back == 1.5
    info = cluster.submit(arrayfuncs.shared_info, cluster.share(matrix), 0).result(timeout=WAIT)
    assert info == ["ndarray", False, matrix.nbytes, 0]


def test_large_arrays_in_nested_values_and_results_made_on_the_peer(cluster: Cluster) -> None:
    big = np.random.default_rng(1).standard_normal((1000, 700))  # 5.6 MB: out of band
    nested = {"a": [big, np.arange(5)], "b": (big.T, np.float32(2.5))}
    back = cluster.submit(arrayfuncs.echo, nested).result(timeout=WAIT)
    assert same(back["a"][0], big) and same(back["b"][0], big.T)
    assert same(back["a"][1], np.arange(5)) and type(back["b"][1]) is np.float32
    ramp = cluster.submit(arrayfuncs.ramp, 3_000_000, 2).result(timeout=WAIT)
    assert same(ramp, np.arange(3_000_000, dtype=np.float64) + 2)
    assert ramp.flags.writeable


def test_object_and_structured_arrays_are_refused_with_what_to_do(cluster: Cluster) -> None:
    with pytest.raises(SubmitError) as info:
        cluster.submit(arrayfuncs.echo, np.array([1, "a"], dtype=object))
    message = str(info.value)
    assert message.startswith("argument 0 cannot be sent to the cluster: it is a "
                              "numpy.ndarray of dtype object")
    assert "convert it to a numeric dtype (arr.astype(float)), or to a list" in message
    with pytest.raises(SubmitError) as info:
        cluster.submit(arrayfuncs.echo, x=np.zeros(3, dtype=[("x", "f8"), ("y", "i4")]))
    assert "keyword argument 'x'" in str(info.value)
    assert "send each field as an array of its own" in str(info.value)
    with pytest.raises(TaskError) as failed:
        cluster.submit(arrayfuncs.scaled, np.arange(3), "ab").result(timeout=WAIT)
    assert failed.value.type_name in ("numpy._core._exceptions._UFuncNoLoopError",
                                      "numpy.core._exceptions._UFuncNoLoopError",
                                      "numpy._core._exceptions.UFuncTypeError",
                                      "numpy.core._exceptions.UFuncTypeError") or (
        "ufunc" in failed.value.remote_message)


def test_a_buffer_refilled_after_cluster_submit_is_caught_or_was_taken(cluster: Cluster
                                                                        ) -> None:
    """``Cluster.submit`` returns before the job starts in the peer's thread: what it holds
    of the arguments is taken in the caller's thread, so refilling a buffer right after
    each submit, as a loop does, never races the job's start. A small array (it rides in
    the task) was copied: each task gets its own values. A large one (held by the owner,
    not copied) was summed: a task that ran before the next refill got its own values, one
    whose array changed first fails with ArgumentChanged; none gets another's values, and
    the last one, whose array is as submitted, runs. (Which of the first three ran in time
    depends on the threads; the peer-level test above pins the failure.)"""
    small, large = np.zeros(1000), np.zeros(100_000)  # 8 kB, 800 kB (over 256 KiB)
    small_futures, large_futures = [], []
    for i in range(4):
        small[:], large[:] = i, i
        small_futures.append(cluster.submit(arrayfuncs.total, small))
        large_futures.append(cluster.submit(arrayfuncs.total, large))
    assert [f.result(WAIT) for f in small_futures] == [1000.0 * i for i in range(4)]
    for i, future in enumerate(large_futures[:3]):
        try:
            assert future.result(WAIT) == 100_000.0 * i  # it ran before the refill
        except TaskError as exc:
            assert "ArgumentChanged: argument array 0" in str(exc)
    assert large_futures[3].result(WAIT) == 300_000.0


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    write_secret_file(path, (new_secret(),))
    return path


def test_an_array_over_the_budget_is_refused_before_it_travels(secret: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    for name in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    with Cluster(config(secret, unique_cluster(), max_value_size=1024 * 1024), daemon=False,
                 include=[ARRAYFUNCS]) as c:
        with pytest.raises(ValueTooLarge) as info:
            c.submit(arrayfuncs.total, np.zeros(200_000))  # 1.6 MB of float64
        message = str(info.value)
        assert "the arguments of total: 1,600,0" in message
        assert "over the limit of 1,048,576 bytes on this peer" in message
        assert "max_value_size" in message
        with pytest.raises(TaskError) as failed:
            c.submit(arrayfuncs.ramp, 200_000, 0).result(timeout=WAIT)
        assert failed.value.type_name == "ValueTooLarge"
        assert "the result of ramp: 1,600,0" in failed.value.remote_message
        assert "max_value_size" in failed.value.remote_message
        with pytest.raises(ValueTooLarge) as info:
            c.share(np.zeros(200_000))
        assert "the value to share: 1,600,0" in str(info.value)
        assert "over the limit of 1,048,576 bytes" in str(info.value)


def test_arrays_through_the_daemon(secret: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`p2pcluster join`, and a Cluster that submits through its control socket."""
    with running_daemon(tmp_path, secret, unique_cluster(), monkeypatch) as daemon:
        with Cluster(config(secret, daemon.cluster), daemon=True, include=[ARRAYFUNCS]) as c:
            assert c.via_daemon
            rng = np.random.default_rng(7)
            values = [rng.standard_normal(n) for n in (10, 100_000, 1_000_000)]
            assert list(c.map(arrayfuncs.total, values, timeout=WAIT)) == [
                float(np.sum(v)) for v in values]
            big = np.asfortranarray(rng.integers(0, 1000, (1500, 1000), dtype=np.int32))
            back = c.submit(arrayfuncs.echo, big).result(timeout=WAIT)
            assert same(back, big) and back.flags.f_contiguous
            ramp = c.submit(arrayfuncs.ramp, 2_000_000, 5).result(timeout=WAIT)
            assert same(ramp, np.arange(2_000_000, dtype=np.float64) + 5)
            # A large result is a view of the memfd the daemon passed (and let go of),
            # mapped writable and aligned: not a copy. A write changes no later result.
            assert ramp.flags.writeable and ramp.ctypes.data % 64 == 0
            assert isinstance(memory_of(ramp).obj, mmap.mmap)
            ramp[:] = -1.0
            again = c.submit(arrayfuncs.ramp, 2_000_000, 5).result(timeout=WAIT)
            assert same(again, np.arange(2_000_000, dtype=np.float64) + 5)
            # One of 256 KiB or less comes in chunks, into a buffer of the client's own.
            small = c.submit(arrayfuncs.ramp, 20_000, 1).result(timeout=WAIT)
            assert isinstance(memory_of(small).obj, bytearray) and small.flags.writeable
            # Only a value's first array can be placed aligned in one flat buffer: a later
            # one that falls unaligned is copied as it is decoded.
            check_several(c.submit(arrayfuncs.several, 3).result(timeout=WAIT), 3)
            matrix = rng.standard_normal((1000, 500))
            handle = c.share(matrix)
            assert c.share(matrix) is handle  # shared already: nothing is sent again
            assert list(c.map(arrayfuncs.dot_row, [handle] * 20, range(20), timeout=WAIT)) == [
                float(matrix[i].sum()) for i in range(20)]
            status = trio.run(request_daemon, daemon.control, "status")
            assert status["sharing"]["owned"] == 1
            assert status["sharing"]["owned_bytes"] == handle.size
            daemon.check_alive()
        # The client is gone: so is what it shared.
        deadline = time.monotonic() + WAIT
        while trio.run(request_daemon, daemon.control, "status")["sharing"]["owned"]:
            assert time.monotonic() < deadline, "the daemon kept what the client shared"
            time.sleep(0.05)


def _client_values(pid: int) -> int:
    """How many values from clients (sealed memfds) the daemon ``pid`` holds open (each
    by two descriptors: its own, and its mapping's)."""
    values = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        path = f"/proc/{pid}/fd/{fd}"
        try:
            if os.readlink(path).startswith("/memfd:p2pcluster-value"):
                values.add(os.stat(path).st_ino)
        except FileNotFoundError:
            pass  # closed meanwhile
    return len(values)


def test_large_arguments_reach_the_daemon_in_shared_memory_as_they_were_at_submit(
        secret: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client copies a large argument into a sealed memfd and passes it on the control
    socket; the daemon holds it while the task runs and lets go of it with the task. The
    task gets the array as it was at submit, whatever the caller writes after."""
    with running_daemon(tmp_path, secret, unique_cluster(), monkeypatch) as daemon:
        pid = daemon.process.pid
        with Cluster(config(secret, daemon.cluster), daemon=True, include=[ARRAYFUNCS]) as c:
            _arguments_in_shared_memory(c, pid)
            daemon.check_alive()
        deadline = time.monotonic() + WAIT
        while _client_values(pid):
            assert time.monotonic() < deadline, "the daemon kept what a gone client shared"
            time.sleep(0.05)


def _arguments_in_shared_memory(c: Cluster, pid: int) -> None:
    assert _client_values(pid) == 0
    arr = np.random.default_rng(3).standard_normal(1_000_000)
    want = float(np.sum(arr))
    running = c.submit(arrayfuncs.slow_total, arr, 1.5)
    arr[:] = 0.0  # after submit: the task must not see it
    deadline = time.monotonic() + WAIT
    while _client_values(pid) < 1:
        assert time.monotonic() < deadline, "the argument never reached the daemon so"
        time.sleep(0.02)
    assert running.result(timeout=WAIT) == want
    deadline = time.monotonic() + WAIT
    while _client_values(pid):
        assert time.monotonic() < deadline, "the daemon kept a finished task's argument"
        time.sleep(0.05)
    matrix = np.arange(500_000, dtype=np.int64).reshape(1000, 500)
    handle = c.share(matrix)
    assert _client_values(pid) == 1  # kept for as long as the client is connected
    assert list(c.map(arrayfuncs.dot_row, [handle] * 3, range(3), timeout=WAIT)) == [
        float(matrix[i].sum()) for i in range(3)]
    small = np.tile(np.arange(1000.0), 20)  # 160 KB, under SEGMENT_SIZE: in chunks
    assert c.submit(arrayfuncs.total, small).result(timeout=WAIT) == float(small.sum())
    assert _client_values(pid) == 1


def test_a_map_over_many_large_arrays_never_runs_out_of_descriptors(
        secret: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each large argument is a memfd: a client keeps at most ``MOST_WAITING`` of them
    unsent (the rest go into one as they are sent), and a daemon whose open files near
    its limit copies what it receives and lets the descriptor go, where it used to end the
    connection (EMFILE) once it held as many arguments as its limit allowed. Large results
    alike: each mapping holds a descriptor while it lives."""
    import p2pcluster._controlblobs as controlblobs
    import p2pcluster._outbox as outbox

    most, seen = 4, []
    made = outbox.in_memory

    def counting(*args: Any, **kwargs: Any) -> Any:
        seen.append(outbox.waiting())
        return made(*args, **kwargs)

    monkeypatch.setattr(outbox, "MOST_WAITING", most)
    monkeypatch.setattr(outbox, "in_memory", counting)
    arrays = [np.full(140_000, float(i)) for i in range(150)]  # 1.1 MB each
    with running_daemon(tmp_path, secret, unique_cluster(), monkeypatch,
                        open_files=160) as daemon:
        with Cluster(config(secret, daemon.cluster), daemon=True, include=[ARRAYFUNCS]) as c:
            assert list(c.map(arrayfuncs.slow_total, arrays, [0.002] * 150,
                              timeout=WAIT * 4)) == [140_000.0 * i for i in range(150)]
            assert len(seen) == 150 and max(seen) <= most  # (one made as it is sent too)
            # Large results: the daemon reads each out of its worker's memory where its
            # descriptors are scarce, and the client out of the memfd where its are.
            monkeypatch.setattr(controlblobs, "descriptors_scarce", lambda: True)
            results = list(c.map(arrayfuncs.echo, arrays, timeout=WAIT * 4))
            assert all(same(r, a) and r.flags.aligned and r.flags.writeable
                       for r, a in zip(results, arrays, strict=True))
            assert not any(isinstance(memory_of(r).obj, mmap.mmap) for r in results)
        daemon.check_alive()


def test_a_client_without_memfds_sends_and_gets_large_values_in_chunks(
        secret: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the client has no memfds its hello says so: both ways, values go in chunks."""
    import p2pcluster._control_client as control_client

    with running_daemon(tmp_path, secret, unique_cluster(), monkeypatch) as daemon:
        monkeypatch.setattr(control_client, "shm_available", lambda: False)
        with Cluster(config(secret, daemon.cluster), daemon=True, include=[ARRAYFUNCS]) as c:
            arr = np.random.default_rng(4).standard_normal(1_000_000)
            running = c.submit(arrayfuncs.slow_total, arr, 0.5)
            assert _client_values(daemon.process.pid) == 0
            assert running.result(timeout=WAIT) == float(np.sum(arr))
            ramp = c.submit(arrayfuncs.ramp, 2_000_000, 5).result(timeout=WAIT)
            assert same(ramp, np.arange(2_000_000, dtype=np.float64) + 5)
            assert isinstance(memory_of(ramp).obj, bytearray)
            check_several(c.submit(arrayfuncs.several, 4).result(timeout=WAIT), 4)
        daemon.check_alive()


def test_a_peer_without_numpy_fails_one_task_and_takes_no_more_of_the_job(
        secret: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon here cannot import NumPy (a package named numpy that refuses to load
    comes first on its path). It steals tasks of a job of arrays, fails the first it runs
    with a clear error, and leaves the rest of the job to the owner."""
    hidden = tmp_path / "no-numpy" / "numpy"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('NumPy is hidden from this peer')\n")
    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    root = Path(__file__).resolve().parents[2]
    env = {"PYTHONPATH": f"{hidden.parent}{os.pathsep}{root}"}
    with running_daemon(tmp_path, secret, unique_cluster(), monkeypatch, env=env) as daemon:
        (row,) = daemon.members()
        seed = f"127.0.0.1:{row['port']}"
        results = trio.run(_owner_runs_a_job_of_arrays, config(
            secret, daemon.cluster, node_name="owner", seeds=(seed,)))
        daemon.check_alive()
    assert sorted(r.task for r in results) == list(range(24))
    from_d1 = [r for r in results if r.peer == "d1"]
    assert 1 <= len(from_d1) <= 2, [(r.task, r.peer) for r in results]
    for r in from_d1:
        with pytest.raises(TaskError) as failed:
            unpack(r.status, r.payload, r.peer)
        assert failed.value.type_name == "p2pcluster._errors.NumPyUnavailable"
        assert "NumPy is not installed" in failed.value.remote_message
        assert "pip install 'p2pcluster[numpy]'" in failed.value.remote_message
    for r in results:
        if r.peer == "owner":
            assert unpack(r.status, r.payload, r.peer) == 10.0 * r.task


async def _owner_runs_a_job_of_arrays(cfg: Config) -> list[JobResult]:
    """An owner with one worker submits one job of 24 slow tasks and waits for all of
    them, errors included (Peer.map would stop at the first)."""
    async with open_peer(cfg, include=[ARRAYFUNCS]) as owner:
        with trio.fail_after(WAIT):
            while {m.name for m in owner.members() if m.alive} != {"owner", "d1"}:
                await trio.sleep(0.05)
        payloads = [encode_args((np.full(10, float(i)), 0.3), {}) for i in range(24)]
        results: list[JobResult] = []
        with trio.fail_after(30):  # 7 s of work; tasks going back and forth would take 60
            async with owner.open_job(owner.request(arrayfuncs.slow_total, payloads)) as job:
                job.listeners.append(results.extend)
                await job.wait()
        return results


# --- shared values -----------------------------------------------------------------------------


async def _until(predicate: Any, what: str, timeout: float = WAIT) -> None:
    try:
        with trio.fail_after(timeout):
            while not predicate():
                await trio.sleep(0.02)
    except trio.TooSlowError:
        pytest.fail(f"{what}: not within {timeout} s")


def _alive(peer: Any) -> set[str]:
    return {m.name for m in peer.members() if m.alive}


@asynccontextmanager
async def owner_and_worker(secret: Path, cluster: str, workers: int = 1, **changes: Any
                           ) -> AsyncIterator[tuple[Any, Any]]:
    """Peer ``a`` with no workers (every task it owns crosses a link) and peer ``b`` with
    ``workers``, joined through ``a`` and seen by it; ``changes`` to both configs."""
    async with open_peer(config(secret, cluster, node_name="a", workers=0, **changes),
                         include=[ARRAYFUNCS]) as a:
        seed = (f"127.0.0.1:{a.address[1]}",)
        async with open_peer(config(secret, cluster, node_name="b", workers=workers,
                                    seeds=seed, **changes), include=[ARRAYFUNCS]) as b:
            await _until(lambda: _alive(a) == {"a", "b"}, "a sees b")
            yield a, b


async def _streams_for_jobs_after_a_first(secret: Path, jobs: int) -> tuple[int, Any]:
    """Jobs of one 1.6 MB array each (fetched), run by b one after another once a first has
    run: how many streams b opened for them, and a's statistics."""
    arrays = [np.full(200_000, float(i)) for i in range(jobs + 1)]
    async with owner_and_worker(secret, unique_cluster()) as (a, b):
        with trio.fail_after(WAIT):
            assert await a.run(arrayfuncs.total, arrays[0]) == 0.0
            opened = b.wire_statistics().streams_opened
            for i, arr in enumerate(arrays[1:], 1):
                assert await a.run(arrayfuncs.total, arr) == 200_000.0 * i
        assert b.statistics().workers.tasks >= len(arrays)  # they ran on b
        return b.wire_statistics().streams_opened - opened, a.statistics()


async def test_consecutive_batches_from_one_owner_reuse_its_argument_stream(
        secret: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch whose arguments came whole gives its stream back, and the next batch for the
    same owner asks on it: six jobs of one large array each, after a first one, open no
    stream at all (one per batch was six)."""
    for name in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    opened, _ = await _streams_for_jobs_after_a_first(secret, 6)
    assert opened == 0


async def test_a_kept_stream_the_owner_has_closed_costs_no_task(
        secret: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An owner that closes an arguments stream right after its answer (as it does after
    OWNER_LINGER idle seconds): the peer's next batch asks on that stream, finds it closed
    before any answer, and asks again on a new one; no task is lost and queued again."""
    import p2pcluster._dataplane

    for name in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setattr(p2pcluster._dataplane, "OWNER_LINGER", 0.0)
    opened, owner = await _streams_for_jobs_after_a_first(secret, 4)
    assert opened == 4
    assert owner.stealing.requeued == 0


async def test_arguments_fetched_from_the_owner_arrive_whole_and_aligned(
        secret: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large arguments that cross a data stream are received straight into shared memory:
    however the arrays fall in the value's CBOR, each one the task gets is exact, aligned
    and writable (the first by where the value lands, later ones by a second placing)."""
    for name in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    rng = np.random.default_rng(5)
    calls = [
        (rng.standard_normal(40_000),),  # one array: lands aligned, used in place
        (rng.integers(0, 100, 70_001, dtype=np.int8), rng.standard_normal(30_000)),
        (rng.integers(0, 9, 65_537).astype(">u2"), np.ones((300, 300), order="F")),
    ]
    cluster = unique_cluster()
    async with owner_and_worker(secret, cluster) as (a, b):
        with trio.fail_after(WAIT):
            got = [await a.run(arrayfuncs.placement, *call) for call in calls]
        assert b.statistics().workers.tasks >= len(calls)  # they ran on b
    for call, seen in zip(calls, got, strict=True):
        assert [s[0] for s in seen] == [True] * len(call)
        assert [s[1] for s in seen] == [True] * len(call)
        assert [s[2] for s in seen] == [arr.tobytes() for arr in call]


async def test_an_argument_a_task_keeps_is_never_overwritten_by_later_ones(
        secret: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The peer receives arguments into segments it reuses once their worker has unmapped
    them; one a task kept a view of stays mapped, and the peer never writes into it."""
    for name in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    rng = np.random.default_rng(6)
    arrays = [rng.standard_normal(200_000) for _ in range(12)]  # 1.6 MB each
    cluster = unique_cluster()
    async with owner_and_worker(secret, cluster) as (a, b):
        with trio.fail_after(WAIT):
            assert await a.run(arrayfuncs.keep, arrays[0]) == 1
            sums = await a.map(arrayfuncs.total, arrays[1:])  # through reused segments
            got = await a.run(arrayfuncs.kept)
        assert b.statistics().workers.slots == 1  # one worker: it kept the array
    assert sums == [float(np.sum(arr)) for arr in arrays[1:]]
    assert got == [arrays[0].tobytes()]


async def _changed_after_submit(owner: Any, chunksize: int | None = None
                                ) -> dict[int, JobResult]:
    """Three large arrays in one job: the first refilled and the second sorted in place
    right after submit (before any task could take them), the third left alone."""
    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal(200_000) for _ in range(3)]  # 1.6 MB each: held
    untouched = float(np.sum(arrays[2]))
    results: list[JobResult] = []
    with trio.fail_after(WAIT):
        async with owner.open_job(owner.request(
                arrayfuncs.total, [encode_args((arr,), {}) for arr in arrays],
                chunksize=chunksize)) as job:
            arrays[0][:] = 1.0
            arrays[1].sort()
            job.listeners.append(results.extend)
            await job.wait()
    by_id = {r.task: r for r in results}
    assert unpack(*by_id[2][1:]) == untouched
    for tid in (0, 1):
        with pytest.raises(TaskError, match=(
                rf"ArgumentChanged: argument array 0 of task {tid} \(.*total\) changed after "
                r"submit.*pass a copy \(array.copy\(\)\)")):
            unpack(*by_id[tid][1:])
    return by_id


def _offer_crc32_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fetching peers here offer to check CRC-32 alone, as one without xxhash does: an
    owner that sums with XXH3 checks the bytes itself as it sends them."""
    from p2pcluster import _dataplane, _heldargs

    if _heldargs.own_kind() == _heldargs.SumKind.CRC32:
        pytest.skip("without xxhash the owner sums with CRC-32, which every peer checks")
    monkeypatch.setattr(_dataplane, "checkable", lambda: 1 << _heldargs.SumKind.CRC32)


@pytest.mark.parametrize("checker", ["receiver", "owner"])
async def test_an_array_changed_after_submit_fails_its_task_on_a_remote_peer(
        checker: str, secret: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The owner holds the caller's arrays (no copy) with their sums from submit. The peer
    that fetches them checks what landed against the sums, which come in each ValueHeader;
    a peer that cannot check the owner's kind of sum (``owner``: it offers CRC-32 alone,
    as one without xxhash does) has the owner check each chunk as it goes out instead.
    Either way a task whose array changed fails with a message that says what to do, and
    the peer never runs it on the changed values."""
    from p2pcluster import _dataplane

    for name in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    if checker == "owner":
        _offer_crc32_alone(monkeypatch)
    checked_sends = []
    send_checked = _dataplane._send_checked
    monkeypatch.setattr(_dataplane, "_send_checked",
                        lambda *args: checked_sends.append(1) or send_checked(*args))
    async with owner_and_worker(secret, unique_cluster()) as (a, b):
        await _changed_after_submit(a)
        assert b.statistics().workers.tasks == 1  # only the untouched one ran
        assert len(checked_sends) == (0 if checker == "receiver" else 3)
        with trio.fail_after(WAIT):  # and the link still works
            assert await a.run(arrayfuncs.total, np.ones(100_000)) == 100_000.0


@pytest.mark.parametrize("checker", ["receiver", "owner"])
async def test_arrays_changed_in_the_middle_of_a_fetched_batch_fail_only_their_tasks(
        checker: str, secret: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a chunksize, tasks share a batch, whose arguments the peer asks for on one
    stream. ``receiver``: the peer checks each value as it lands and fails the task of a
    changed one, and the stream goes on. ``owner`` (the peer cannot check the owner's kind
    of sum): the owner ends that stream short of a changed array, and the peer asks for the
    tasks after it on a new stream (where the next changed one ends it short as well).
    Either way the untouched task still runs, and the changed ones fail, each with its own
    message."""
    from p2pcluster import _dataplane

    for name in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    if checker == "owner":
        _offer_crc32_alone(monkeypatch)
    found = []  # the changes the fetching peer found (those the owner finds fail there)
    result_of_change = _dataplane.changed_result
    monkeypatch.setattr(_dataplane, "changed_result",
                        lambda *args: found.append(args[0]) or result_of_change(*args))
    async with owner_and_worker(secret, unique_cluster()) as (a, b):
        await _changed_after_submit(a, chunksize=3)
        assert b.statistics().workers.tasks == 1  # only the untouched one ran
        assert sorted(found) == ([0, 1] if checker == "receiver" else [])


async def test_an_array_changed_after_submit_fails_its_task_on_the_owner(
        secret: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The owner's own worker gets a copy in shared memory, checked after the copy."""
    for name in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    async with open_peer(config(secret, unique_cluster(), node_name="a"),
                         include=[ARRAYFUNCS]) as a:
        await _changed_after_submit(a)
        assert a.statistics().workers.tasks == 1


async def test_peer_map_sums_large_arguments_in_a_thread_not_in_the_trio_loop(
        secret: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``await peer.map`` over 40 MB of arrays: their sums from submit are taken in a
    thread (the loop must go on answering probes meanwhile), and the tasks get them; a
    small map's are taken as the job is admitted, in the loop."""
    from p2pcluster import _heldargs

    for name in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    loop_thread, summed_in_loop = threading.current_thread(), []
    real = _heldargs.checked

    def checked(value: Any) -> Any:
        summed_in_loop.append(threading.current_thread() is loop_thread)
        return real(value)

    monkeypatch.setattr(_heldargs, "checked", checked)
    arrays = [np.full(1_250_000, float(i)) for i in range(4)]  # 10 MB each
    async with open_peer(config(secret, unique_cluster(), node_name="a"),
                         include=[ARRAYFUNCS]) as a:
        with trio.fail_after(WAIT):
            assert await a.map(arrayfuncs.total, arrays) == [1_250_000.0 * i for i in range(4)]
            assert summed_in_loop == [False] * 4
            summed_in_loop.clear()
            assert await a.map(arrayfuncs.total, [np.ones(200_000)]) == [200_000.0]
            assert summed_in_loop == [True]


async def test_a_shared_value_crosses_once_per_peer_and_goes_with_the_job(
        secret: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    cluster = unique_cluster()
    matrix = np.random.default_rng(3).standard_normal((1000, 1000))  # 8 MB
    async with owner_and_worker(secret, cluster, workers=2, shared_linger=0.0) as (a, b):
        handle = await a.share(matrix)
        assert await a.share(matrix.copy()) == handle  # the same bytes: the same value
        with trio.fail_after(WAIT):
            sums = await a.map(arrayfuncs.dot_row, [handle] * 64, range(64))
            info = await a.run(arrayfuncs.shared_info, handle, 1)
        assert sums == [float(matrix[i].sum()) for i in range(64)]
        assert info == ["ndarray", False, matrix.nbytes, 1]  # read-only in the task
        owner, runner = a.statistics().sharing, b.statistics().sharing
        assert (owner.owned, owner.owned_bytes) == (1, handle.size)
        assert owner.served == 2 and owner.served_bytes == 2 * handle.size  # two jobs
        assert runner.fetches == 2 and runner.fetched_bytes == 2 * handle.size
        await _until(lambda: b.statistics().sharing.cached == 0, "b freed its cache")


async def test_a_shared_array_is_not_copied_and_a_change_after_share_fails_its_tasks(
        secret: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``share`` keeps the caller's array itself, named by its SHA-256. Changed before a
    peer fetched it, the peer's check of the digest fails the tasks that use it, with a
    message that says what to do; on the owner, its own workers' copy is checked the same
    way. Shared again once changed, it is a new value, and runs."""
    for name in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    matrix = np.random.default_rng(4).standard_normal((400, 1000))  # 3.2 MB
    expected = r"changed after it was shared .*share a copy \(arr.copy\(\)\)"
    async with owner_and_worker(secret, unique_cluster(), workers=1) as (a, b):
        handle = await a.share(matrix)
        matrix[0, 0] += 1.0
        with trio.fail_after(WAIT), pytest.raises(TaskError, match=expected):
            await a.run(arrayfuncs.dot_row, handle, 0)  # on b: a has no workers
        again = await a.share(matrix)
        assert again != handle
        with trio.fail_after(WAIT):
            assert await a.run(arrayfuncs.dot_row, again, 0) == float(matrix[0].sum())
        assert b.statistics().workers.tasks == 1  # the failed task never reached a worker
    async with open_peer(config(secret, unique_cluster(), node_name="c"),
                         include=[ARRAYFUNCS]) as c:
        handle = await c.share(matrix)
        matrix.sort(axis=1)
        for row in (1, 2):  # the second fails at once, from what the first found
            with trio.fail_after(WAIT), pytest.raises(TaskError, match=expected):
                await c.run(arrayfuncs.dot_row, handle, row)  # on c's own worker
        assert c.statistics().workers.tasks == 0


async def test_a_shared_value_lingers_for_the_next_job_then_goes(
        secret: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``shared_linger``, a job that uses a value soon after the last one ended finds
    it at hand (one fetch for several one-task jobs, as joblib's batches are); the value
    goes once no job has used it for that long."""
    for name in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    matrix = np.random.default_rng(6).standard_normal((300, 300))
    async with owner_and_worker(secret, unique_cluster(), shared_linger=1.0) as (a, b):
        handle = await a.share(matrix)
        with trio.fail_after(WAIT):
            sums = [await a.run(arrayfuncs.dot_row, handle, i) for i in range(5)]
        assert sums == [float(matrix[i].sum()) for i in range(5)]
        runner = b.statistics().sharing
        assert (runner.fetches, runner.fetched_bytes) == (1, handle.size)
        assert b.statistics().stealing.executed == 5  # five jobs, all on b
        assert b.statistics().sharing.cached == 1  # kept after the last job: lingering
        start = trio.current_time()
        await _until(lambda: b.statistics().sharing.cached == 0, "b let the value go")
        assert trio.current_time() - start < 1.0 + 1.0  # after the linger, not much later
        assert await a.run(arrayfuncs.dot_row, handle, 7) == float(matrix[7].sum())
        assert b.statistics().sharing.fetches == 2  # gone: fetched again


async def test_a_peer_that_joins_mid_job_fetches_the_value_and_the_owner_leaving_frees_it(
        secret: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    cluster = unique_cluster()
    matrix = np.random.default_rng(4).standard_normal((500, 1000))
    async with open_peer(config(secret, cluster, node_name="b", workers=1),
                         include=[ARRAYFUNCS]) as b:
        seed = (f"127.0.0.1:{b.address[1]}",)
        async with open_peer(config(secret, cluster, node_name="a", workers=0, seeds=seed),
                             include=[ARRAYFUNCS]) as a:
            await _until(lambda: _alive(a) == {"a", "b"}, "a sees b")
            handle = await a.share(matrix)
            payloads = [encode_args((handle, 0.1), {}) for _ in range(40)]
            results: list[JobResult] = []
            async with a.open_job(a.request(arrayfuncs.slow_total, payloads)) as job:
                job.listeners.append(results.extend)
                await _until(lambda: b.statistics().sharing.fetches == 1, "b fetched it")
                async with open_peer(config(secret, cluster, node_name="c", workers=1,
                                            seeds=seed), include=[ARRAYFUNCS]) as c:
                    with trio.fail_after(WAIT):
                        await job.wait()
                    assert {r.peer for r in results} == {"b", "c"}
                    assert all(unpack(r.status, r.payload, r.peer) == float(matrix.sum())
                               for r in results)
                    assert c.statistics().sharing.fetches == 1
                    assert c.statistics().sharing.fetched_bytes == handle.size
                    # A second job: the value is cached again where it runs, until the
                    # owner leaves (cancelling its jobs).
                    more = [encode_args((handle, 5.0), {}) for _ in range(4)]
                    job2 = a.submit(a.request(arrayfuncs.slow_total, more))
                    await _until(lambda: b.statistics().sharing.cached == 1, "b caches it")
                    del job2
        # a has left: b let go of the value it had fetched from a.
        await _until(lambda: b.statistics().sharing.cached == 0, "b freed a's value")


async def test_a_large_result_from_another_peer_arrives_aligned_writable_and_exact(
        secret: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A result pushed to the owner lands in memory of the caller's own: its first array
    is a view of it, aligned, writable, exact; arguments held by the owner (never joined)
    arrive exact too. The peer that ran the task seals the result straight from the
    shared memory its worker placed it in: it never joins it into one byte string."""
    for name in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    import p2pcluster._dataplane as dataplane
    import p2pcluster._slots as slots

    landed: list[int] = []
    joined: list[int] = []
    land_result, as_bytes = dataplane.land_result, slots.as_bytes

    async def spy(stream: Any, size: int) -> memoryview:
        landed.append(size)
        return await land_result(stream, size)

    def joining(payload: Any) -> bytes:
        joined.append(len(payload))
        return as_bytes(payload)

    monkeypatch.setattr(dataplane, "land_result", spy)
    monkeypatch.setattr(slots, "as_bytes", joining)
    cluster = unique_cluster()
    arr = np.random.default_rng(7).standard_normal(300_000)  # 2.4 MB: pushed, not inline
    async with owner_and_worker(secret, cluster) as (a, b):
        with trio.fail_after(WAIT):
            got = await a.run(arrayfuncs.scaled, arr, 2.0)
            strided = await a.run(arrayfuncs.scaled, arr[::3], 1.0)
            several = await a.run(arrayfuncs.several, 5)
        assert b.statistics().workers.tasks >= 3  # they ran on b
        check_several(several, 5)
    assert np.array_equal(got, arr * 2.0) and np.array_equal(strided, arr[::3])
    assert got.flags.writeable and got.ctypes.data % 64 == 0
    assert len(landed) == 3 and min(landed) > 800_000  # all came back as pushed values
    assert max(joined, default=0) < 64 * 1024  # (the owner's other results: small ones)


async def test_a_large_result_of_a_job_owned_here_is_a_view_of_the_worker_s_memory(
        secret: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task that ran on the owner's own worker returns a large array: the caller gets a
    writable view of the shared memory the worker placed it in (mapped copy-on-write), not
    a copy; writing to it changes nothing the worker or a later result sees."""
    for name in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    import mmap

    import p2pcluster._slots as slots

    joined: list[int] = []
    as_bytes = slots.as_bytes

    def joining(payload: Any) -> bytes:
        joined.append(len(payload))
        return as_bytes(payload)

    monkeypatch.setattr(slots, "as_bytes", joining)
    arr = np.random.default_rng(8).standard_normal(300_000)  # 2.4 MB
    async with open_peer(config(secret, unique_cluster(), node_name="a"),
                         include=[ARRAYFUNCS]) as a:
        with trio.fail_after(WAIT):
            got = await a.run(arrayfuncs.scaled, arr, 2.0)
            got[:] = 0.0  # the caller's own
            again = await a.run(arrayfuncs.scaled, arr, 2.0)
        assert a.statistics().workers.tasks >= 2  # they ran here
    assert np.array_equal(again, arr * 2.0) and not got.any()
    assert got.flags.writeable and got.ctypes.data % 64 == 0
    assert isinstance(memory_of(again).obj, mmap.mmap)  # the worker's segment, mapped here
    assert max(joined, default=0) < 64 * 1024
