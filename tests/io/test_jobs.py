"""Jobs end to end with real peers and real worker processes, on loopback only.

Every peer here is ``Config.local(mdns=False, port=0)`` (bound to 127.0.0.1, no multicast),
with its own cluster name and a secret file in ``tmp_path``; the XDG directories point into
``tmp_path`` too. Task functions live in ``jobfuncs.py``, shipped with ``include=`` and
imported here under the name a peer gives it (``jobfuncs``). These tests run in real time;
each waits for what it needs with a deadline, most of it worker start-up.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pcluster import (
    Cluster,
    Config,
    P2PClusterError,
    PoisonTaskError,
    SubmitError,
    TaskError,
    TaskTimeoutError,
    ValueTooLarge,
)
from p2pcluster._jobs import encode_map_args, unpack
from p2pcluster._peer import Peer, open_peer
from p2pcluster._proto.envelope import Keyring
from p2pcluster._proto.messages import CancelJob, Results
from p2pcluster._secret import load_secrets, new_secret, write_secret_file
from p2pcluster._secure import SecureWire
from p2pcluster._trio_transport import TrioTransport

from .daemons import Daemon, running_daemon

ROOT = Path(__file__).resolve().parents[2]
JOBFUNCS = Path(__file__).with_name("jobfuncs.py")
sys.path.append(str(JOBFUNCS.parent))  # what CodeRegistry(include=[JOBFUNCS]) does, too
import jobfuncs  # noqa: E402

WAIT = 20  # seconds: a generous deadline for anything that involves starting processes
_counter = itertools.count()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the code cache, control sockets and config of these tests in tmp_path."""
    for name in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    for name in [n for n in os.environ if n.startswith("P2PCLUSTER_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    write_secret_file(path, (new_secret(),))
    return path


def unique_cluster() -> str:
    return f"jobs-{os.getpid()}-{next(_counter)}"


def config(secret: Path, cluster: str, **changes: Any) -> Config:
    return Config.local(mdns=False, port=0, secret_file=str(secret), cluster=cluster,
                        **{"workers": 1, **changes})


def alive(pid: int) -> bool:
    """True while the process exists, zombies included (a killed worker must be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def until(predicate: Any, what: str, timeout: float = WAIT) -> None:
    try:
        with trio.fail_after(timeout):
            while not predicate():
                await trio.sleep(0.01)
    except trio.TooSlowError:
        pytest.fail(f"{what}: not within {timeout} s")


def running(peer: Peer) -> int:
    """Batches out to the peer's workers."""
    return peer.statistics().running


def warm(peer: Peer) -> bool:
    return peer.statistics().workers.idle_workers == peer.workers


@contextlib.asynccontextmanager
async def two_peers(secret: Path, **changes: Any) -> AsyncIterator[tuple[Peer, Peer]]:
    """Peers a and b (b seeded to a) that see each other alive, with warm workers."""
    cluster = unique_cluster()
    async with open_peer(config(secret, cluster, node_name="a", **changes),
                         include=[JOBFUNCS]) as a:
        seed = f"127.0.0.1:{a.address[1]}"
        async with open_peer(config(secret, cluster, node_name="b", seeds=(seed,), **changes),
                             include=[JOBFUNCS]) as b:
            def both_alive(peer: Peer) -> bool:
                return {m.name for m in peer.members() if m.alive} == {"a", "b"}

            await until(lambda: both_alive(a) and both_alive(b), "a and b see each other")
            await until(lambda: warm(a) and warm(b), "the workers started")
            yield a, b


# --- two peers: map, run, as_completed ---------------------------------------------------


async def test_two_peers_map_run_and_as_completed(secret: Path) -> None:
    async with two_peers(secret) as (a, b):
        with trio.fail_after(WAIT):
            squares = await a.map(jobfuncs.square, range(2000))
        assert squares == [x * x for x in range(2000)]
        executed = {p.name: p.statistics().stealing.executed for p in (a, b)}
        assert executed["a"] > 0 and executed["b"] > 0, executed
        assert sum(executed.values()) >= 2000
        assert a.statistics().stealing.completed == 2000  # a owns the job: one result each

        with trio.fail_after(WAIT):
            assert await a.run(jobfuncs.add, 2, 3) == 5
            assert await b.run(jobfuncs.add, a=-1, b=1) == 0  # keyword arguments too
            assert await b.map(jobfuncs.add, [1, 2, 3], [10, 20]) == [11, 22]  # zip's length

        seen: list[int] = []
        with trio.fail_after(WAIT):
            async with contextlib.aclosing(b.as_completed(jobfuncs.square, range(300))) as it:
                async for index, value in it:
                    assert value == index * index
                    seen.append(index)
        assert sorted(seen) == list(range(300))  # every index, once


# --- errors -------------------------------------------------------------------------------


async def test_a_remote_exception_carries_its_traceback_and_peer(secret: Path,
                                                                 tmp_path: Path) -> None:
    async with two_peers(secret) as (a, b):
        with trio.fail_after(WAIT), pytest.raises(TaskError) as info:
            await a.map(jobfuncs.boom_at, range(20), [7] * 20)
        error = info.value
        assert isinstance(error, TaskError) and isinstance(error, P2PClusterError)
        assert isinstance(error, ValueError) and error.args == ("boom 7",)  # as raised there
        assert error.type_name == "ValueError"
        assert error.remote_message == "boom 7"
        assert 'raise ValueError(f"boom {x}")' in error.remote_traceback
        assert "jobfuncs.py" in error.remote_traceback and "boom_at" in error.remote_traceback
        assert error.peer in ("a", "b")
        assert "ValueError: boom 7" in str(error) and "Remote traceback" in str(error)

        # Now make sure the task runs on the other peer: hold the submitter's only worker
        # with a long task, so the failing one can only be stolen.
        started = tmp_path / "started"
        started.mkdir()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.run, jobfuncs.record_and_sleep, str(started), 0, 30)
            await until(lambda: any(started.iterdir()), "the blocking task started")
            await until(lambda: running(a) + running(b) == 1, "one slot busy")
            busy, other = (a, b) if running(a) else (b, a)
            with trio.fail_after(WAIT), pytest.raises(TaskError) as info:
                await busy.run(jobfuncs.boom_at, 7, 7)
            nursery.cancel_scope.cancel()
        assert info.value.peer == other.name
        assert info.value.remote_message == "boom 7"
        assert 'raise ValueError(f"boom {x}")' in info.value.remote_traceback


async def test_a_poison_task_is_reported_and_the_peer_keeps_working(secret: Path) -> None:
    async with open_peer(config(secret, unique_cluster()), include=[JOBFUNCS]) as peer:
        with trio.fail_after(WAIT), pytest.raises(PoisonTaskError) as info:
            await peer.run(jobfuncs.crash)
        assert "crashed its worker process 3 times" in info.value.remote_message
        assert "exit code 3" in info.value.remote_message
        assert isinstance(info.value, TaskError) and info.value.peer == peer.name
        assert peer.statistics().workers.poisoned == 1
        with trio.fail_after(WAIT):
            assert await peer.map(jobfuncs.add, [1, 2], [3, 4]) == [4, 6]


async def test_a_task_timeout_stops_the_task(secret: Path) -> None:
    async with open_peer(config(secret, unique_cluster()), include=[JOBFUNCS]) as peer:
        await until(lambda: warm(peer), "the worker started")
        start = trio.current_time()
        with trio.fail_after(WAIT), pytest.raises(TaskTimeoutError) as info:
            await peer.run(jobfuncs.sleep, 30, timeout=0.5)
        elapsed = trio.current_time() - start
        assert isinstance(info.value, TimeoutError) and isinstance(info.value, TaskError)
        assert "timeout of 0.5 s" in info.value.remote_message
        assert 0.5 <= elapsed < 5, elapsed
        with trio.fail_after(WAIT):
            assert await peer.run(jobfuncs.add, 1, 1, timeout=10) == 2



async def test_a_batch_that_meets_slow_tasks_gives_back_what_it_did_not_start(
        secret: Path) -> None:
    # 3000 tasks of nothing teach the peer large batches; then 30 tasks of 50 ms each.
    # The batch that meets them stops after max_batch_time and the rest run in small
    # batches; every result arrives once, in order.
    conf = config(secret, unique_cluster(), max_batch_time=0.1)
    async with open_peer(conf, include=[JOBFUNCS]) as peer:
        await until(lambda: warm(peer), "the worker started")
        xs = list(range(3030))
        naps = [0.0] * 3000 + [0.05] * 30
        with trio.fail_after(WAIT):
            assert await peer.map(jobfuncs.sleep_square, xs, naps) == [x * x for x in xs]
        stats = peer.statistics().stealing
        assert stats.tasks_given_back > 0, stats
        assert stats.executed == 3030

# --- cancellation -------------------------------------------------------------------------


def started_pids(directory: Path) -> dict[int, int]:
    """task index -> pid of the worker that started it."""
    return {int(p.name.split(".")[1]): int(p.name.split(".")[0]) for p in directory.iterdir()}


@pytest.mark.parametrize("how", ["scope", "job.cancel"])
async def test_cancelling_a_job_stops_every_task_on_every_peer(secret: Path, tmp_path: Path,
                                                               how: str) -> None:
    started = tmp_path / "started"
    started.mkdir()
    items = range(40)
    async with two_peers(secret) as (a, b):
        def both_running() -> bool:  # (a peer may also hold a prefetched batch)
            return (len(set(started_pids(started).values())) >= 2
                    and running(a) >= 1 and running(b) >= 1)

        if how == "scope":
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    async def cancel_when_running() -> None:
                        await until(both_running, "a task running on each peer")
                        scope.cancel()

                    nursery.start_soon(cancel_when_running)
                    await a.map(jobfuncs.record_and_sleep, [str(started)] * 40, items,
                                [5] * 40)
            assert scope.cancelled_caught
        else:
            job_request = a.request(
                jobfuncs.record_and_sleep, encode_map_args([[str(started)] * 40, items,
                                                            [5] * 40]))
            async with a.open_job(job_request) as job:
                await until(both_running, "a task running on each peer")
                job.cancel()
                assert job.cancelled and job.finished.is_set()
        cancelled_at = trio.current_time()
        pids = started_pids(started)
        assert len(pids) < 40

        def all_stopped() -> bool:
            return (not any(alive(pid) for pid in pids.values())
                    and all(p.statistics().queued == 0 and running(p) == 0
                            for p in (a, b)))

        await until(all_stopped, "every worker that ran a task is gone, queues empty",
                    timeout=1.0)
        stopped_after = trio.current_time() - cancelled_at
        await trio.sleep(0.5)  # and nothing starts afterwards
        assert started_pids(started) == pids
        assert a.statistics().jobs_owned == 0
        assert stopped_after < 1.0
        with trio.fail_after(WAIT):  # both still work
            assert await b.map(jobfuncs.add, [1, 2], [1, 2]) == [2, 4]


# --- submit-time refusals -----------------------------------------------------------------


def make_closure(k: int) -> Any:
    def add_k(x: int) -> int:
        return x + k

    return add_k


def check_lambda_refused(error: SubmitError) -> None:
    assert "lambda" in str(error)
    assert "module level" in str(error) and "def" in str(error)  # how to fix it


def check_closure_refused(error: SubmitError) -> None:
    assert "add_k" in str(error) and "inside another function" in str(error)
    assert "task arguments" in str(error) and "module level" in str(error)


async def test_lambdas_closures_and_unencodable_arguments_are_refused_at_submit(
        secret: Path) -> None:
    async with open_peer(config(secret, unique_cluster()), include=[JOBFUNCS]) as peer:
        with pytest.raises(SubmitError) as info:
            await peer.map(lambda x: x, [1, 2])
        check_lambda_refused(info.value)
        with pytest.raises(SubmitError) as info:
            await peer.map(make_closure(1), [1, 2])
        check_closure_refused(info.value)
        with pytest.raises(SubmitError) as info:
            await peer.run(lambda: 1)
        check_lambda_refused(info.value)
        with pytest.raises(SubmitError) as info:
            await peer.run(jobfuncs.add, 1, object())
        assert "argument 1 cannot be sent" in str(info.value)
        assert "object" in str(info.value)
        with pytest.raises(SubmitError) as info:
            await peer.map(jobfuncs.add, [1, 2], [3, object()])
        assert "argument 1 cannot be sent" in str(info.value)
        assert peer.statistics().stealing.submitted == 0  # nothing reached the machine


# --- the Executor -------------------------------------------------------------------------


def test_the_cluster_executor_embedded(secret: Path) -> None:
    start = time.monotonic()
    cluster = Cluster(config(secret, unique_cluster(), node_name="exec"), daemon=False,
                      include=[JOBFUNCS])
    try:
        assert not cluster.via_daemon and cluster.peer is not None
        assert time.monotonic() - start < 5  # ready at once; workers warm in the background
        future = cluster.submit(jobfuncs.add, 2, b=3)
        assert isinstance(future, cf.Future)
        assert future.result(timeout=WAIT) == 5

        failing = cluster.submit(jobfuncs.boom_at, 7, 7)
        error = failing.exception(timeout=WAIT)
        assert isinstance(error, TaskError) and error.remote_message == "boom 7"

        assert list(cluster.map(jobfuncs.square, range(500), timeout=WAIT)) == [
            x * x for x in range(500)]
        assert list(cluster.map(jobfuncs.add, [1, 2, 3], [1, 1])) == [2, 3]

        futures = [cluster.submit(jobfuncs.square, i) for i in range(20)]
        done = [f.result() for f in cluster.as_completed(futures, timeout=WAIT)]
        assert sorted(done) == sorted(i * i for i in range(20))

        # PEP 3148: map's timeout counts from the call, and expiry raises TimeoutError.
        called = time.monotonic()
        results = cluster.map(jobfuncs.sleep, [5, 5], timeout=0.5)
        with pytest.raises(cf.TimeoutError):
            next(results)
        assert 0.5 <= time.monotonic() - called < 2.0

        members = cluster.members()
        assert [(m.name, m.alive, m.workers) for m in members] == [("exec", True, 1)]

        with pytest.raises(SubmitError) as info:
            cluster.submit(lambda: 1)
        check_lambda_refused(info.value)
        with pytest.raises(SubmitError) as info:
            cluster.map(lambda x: x, [1])  # at the call, not at the first next()
        check_lambda_refused(info.value)
        with pytest.raises(SubmitError) as info:
            cluster.map(make_closure(2), [1])
        check_closure_refused(info.value)
        with pytest.raises(SubmitError) as info:
            cluster.submit(make_closure(2), 1)
        check_closure_refused(info.value)
        with pytest.raises(SubmitError) as info:
            cluster.submit(jobfuncs.add, 1, b=object())
        assert "keyword argument 'b' cannot be sent" in str(info.value)
        with pytest.raises(SubmitError) as info:
            cluster.map(jobfuncs.square, [1, object()])
        assert "argument 0 cannot be sent" in str(info.value)
    finally:
        begun = time.monotonic()
        cluster.shutdown()
        assert time.monotonic() - begun < 5
    with pytest.raises(RuntimeError):
        cluster.submit(jobfuncs.add, 1, 2)
    with pytest.raises(RuntimeError):
        cluster.map(jobfuncs.square, [1])
    with pytest.raises(RuntimeError):
        cluster.members()


def test_future_cancel_stops_the_task_and_shutdown_ends_running_futures(
        secret: Path, tmp_path: Path) -> None:
    started = tmp_path / "started"
    started.mkdir()
    with Cluster(config(secret, unique_cluster()), daemon=False, include=[JOBFUNCS]) as cluster:
        future = cluster.submit(jobfuncs.record_and_sleep, str(started), 0, 30)
        deadline = time.monotonic() + WAIT
        while not any(started.iterdir()):
            assert time.monotonic() < deadline, "the task did not start"
            time.sleep(0.01)
        assert future.cancel()  # documented: cancelling the future stops the task
        (pid,) = started_pids(started).values()
        deadline = time.monotonic() + 2
        while alive(pid):
            assert time.monotonic() < deadline, "the cancelled task's worker still runs"
            time.sleep(0.01)
        assert future.cancelled()
        assert list(cf.as_completed([future], timeout=1)) == [future]  # waiters notified

        running = cluster.submit(jobfuncs.record_and_sleep, str(started), 1, 30)
        deadline = time.monotonic() + WAIT
        while len(started_pids(started)) < 2:
            assert time.monotonic() < deadline, "the second task did not start"
            time.sleep(0.01)
        begun = time.monotonic()
    assert time.monotonic() - begun < 5  # the with block's shutdown
    # A future whose task was still running when the cluster shut down ends, cancelled.
    assert running.cancelled()
    with pytest.raises(cf.CancelledError):
        running.result(timeout=1)


# --- through the daemon ------------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path, secret: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    """`p2pcluster join` in a subprocess, with its own code cache, on loopback. It shares
    XDG_RUNTIME_DIR with this process, where a Cluster finds its control socket."""
    with running_daemon(tmp_path, secret, unique_cluster(), monkeypatch) as started:
        yield started


def test_the_cluster_executor_through_the_daemon(daemon: Daemon, secret: Path,
                                                 tmp_path: Path) -> None:
    with Cluster(config(secret, daemon.cluster), daemon=True, include=[JOBFUNCS]) as cluster:
        assert cluster.via_daemon and cluster.peer is None
        assert list(cluster.map(jobfuncs.square, range(300), timeout=WAIT)) == [
            x * x for x in range(300)]
        assert cluster.submit(jobfuncs.add, 4, 5).result(timeout=WAIT) == 9
        with pytest.raises(TaskError) as info:
            list(cluster.map(jobfuncs.boom_at, range(10), [7] * 10, timeout=WAIT))
        assert info.value.peer == "d1" and info.value.remote_message == "boom 7"
        assert [m.name for m in cluster.members()] == ["d1"]
        assert cluster.progress().per_peer.get("d1", 0) >= 301

        # Leaving maps early, while the daemon streams results: the daemon lives on.
        for _ in range(25):
            results = cluster.map(jobfuncs.square, range(2000), chunksize=1)
            assert next(results) == 0
            results.close()  # type: ignore[attr-defined]
            time.sleep(0.05)
        daemon.check_alive()
        assert cluster.submit(jobfuncs.add, 1, 1).result(timeout=WAIT) == 2

    job = tmp_path / "job.py"
    job.write_text("def cube(x):\n    return x ** 3\n\n\n"
                   "def main(cluster, n):\n    return {'cubes': list(cluster.map(cube, "
                   "range(int(n))))}\n")
    done = subprocess.run(
        [sys.executable, "-m", "p2pcluster", "run", str(job), "5", "--cluster", daemon.cluster,
         "--secret-file", str(secret), "--no-mdns", "--preset", "local"],
        env=daemon.env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "submitting through the local daemon" in done.stderr
    assert json.loads(done.stdout) == {"cubes": [0, 1, 8, 27, 64]}
    daemon.check_alive()


def test_closing_the_client_cancels_the_job_on_the_daemon(daemon: Daemon, secret: Path,
                                                          tmp_path: Path) -> None:
    started = tmp_path / "started"
    started.mkdir()
    cluster = Cluster(config(secret, daemon.cluster), daemon=True, include=[JOBFUNCS])
    try:
        results = cluster.map(jobfuncs.record_and_sleep, [str(started)] * 40, range(40),
                              [5] * 40)
        deadline = time.monotonic() + WAIT
        while not any(started.iterdir()) or daemon.members()[0]["queue"] == 0:
            assert time.monotonic() < deadline, "the job did not start on the daemon"
            time.sleep(0.05)
        assert daemon.members()[0]["queue"] > 0  # the daemon holds queued tasks
    finally:
        cluster.shutdown()
    closed = time.monotonic()
    (pid,) = started_pids(started).values()
    deadline = closed + WAIT
    while alive(pid) or daemon.members()[0]["queue"] != 0:
        assert time.monotonic() < deadline, "the job still runs on the daemon"
        time.sleep(0.05)
    assert time.monotonic() - closed < 3  # a round trip, plus one metadata interval
    time.sleep(0.5)
    assert len(started_pids(started)) == 1  # nothing else started
    daemon.check_alive()
    del results


# --- values larger than a message ----------------------------------------------------------


async def test_large_arguments_and_results_cross_between_peers(secret: Path) -> None:
    """The owner has no worker, so every task runs on the other peer: arguments larger than
    inline_value_size stay at the owner until the task runs (fetched on a data stream), and
    a large result comes back on a data stream of its own."""
    import hashlib

    cluster = unique_cluster()
    async with open_peer(config(secret, cluster, node_name="a", workers=0),
                         include=[JOBFUNCS]) as a:
        seed = f"127.0.0.1:{a.address[1]}"
        async with open_peer(config(secret, cluster, node_name="b", seeds=(seed,)),
                             include=[JOBFUNCS]) as b:
            await until(lambda: {m.name for m in a.members() if m.alive} == {"a", "b"},
                        "a sees b")
            values = [jobfuncs.blob(3_000_000 + i, i) for i in range(3)]
            with trio.fail_after(WAIT):
                digests = await a.map(jobfuncs.digest, values)
                big = await a.run(jobfuncs.blob, 5_000_000, 7)
            assert digests == [hashlib.sha256(v).hexdigest() for v in values]
            assert hashlib.sha256(big).digest() == hashlib.sha256(
                jobfuncs.blob(5_000_000, 7)).digest()
            assert b.statistics().stealing.executed == 4
            assert b.statistics().stealing.results_pushed == 1
            assert a.statistics().stealing.completed == 4


async def test_a_batch_fetches_its_arguments_on_one_stream_past_a_refused_one(
        secret: Path) -> None:
    """b runs every task (a has no worker), in batches of up to 8: it asks for a batch's
    arguments on one data stream, not one stream per task. The argument of task 1 is over
    b's own limit (not a's): b refuses it unread, that task fails naming b and the setting,
    and the tasks after it in the batch come on a new stream."""
    import hashlib

    cluster = unique_cluster()
    sizes = [300_000, 2_000_000, *[300_000 + 1000 * i for i in range(6)]]
    values = [jobfuncs.blob(n, i) for i, n in enumerate(sizes)]
    async with open_peer(config(secret, cluster, node_name="a", workers=0),
                         include=[JOBFUNCS]) as a:
        seed = f"127.0.0.1:{a.address[1]}"
        async with open_peer(config(secret, cluster, node_name="b", seeds=(seed,),
                                    max_value_size=1_500_000), include=[JOBFUNCS]) as b:
            await until(lambda: {m.name for m in a.members() if m.alive} == {"a", "b"},
                        "a sees b")
            await until(lambda: warm(b), "b's workers started")
            assert await a.run(jobfuncs.add, 1, 2) == 3  # b's links to a are open now
            opened = b.wire_statistics().streams_opened
            results: dict[int, Any] = {}
            request = a.request(jobfuncs.digest, encode_map_args([values]), chunksize=8)
            with trio.fail_after(WAIT):
                async with a.open_job(request) as job:
                    job.listeners.append(
                        lambda batch: results.update((r.task, r) for r in batch))
                    await job.wait()
            opened = b.wire_statistics().streams_opened - opened
    assert sorted(results) == list(range(len(values)))
    for i, value in enumerate(values):
        if i != 1:
            assert unpack(*results[i][1:]) == hashlib.sha256(value).hexdigest()
    with pytest.raises(TaskError) as failed:
        unpack(*results[1][1:])
    assert failed.value.type_name == "ValueTooLarge"
    assert "over the limit of 1,500,000 bytes on peer b" in failed.value.remote_message
    assert "max_value_size" in failed.value.remote_message
    # One stream per task was 8 (and one more for anything else b opened); one per batch,
    # plus one past the refused value, is 5 here, how many depending on the grants' sizes.
    assert opened < len(values), opened


async def test_values_over_the_limit_fail_with_the_named_error(secret: Path) -> None:
    async with two_peers(secret, max_value_size=1024 * 1024) as (a, _b):
        with pytest.raises(ValueTooLarge) as too_big:
            await a.run(jobfuncs.digest, b"x" * 2_000_000)
        assert ("the arguments of digest: 2,000,008 bytes, over the limit of 1,048,576 bytes "
                "on this peer") in str(too_big.value)
        assert "max_value_size" in str(too_big.value)
        with trio.fail_after(WAIT), pytest.raises(TaskError) as failed:
            await a.run(jobfuncs.blob, 1_500_000, 1)
        assert failed.value.type_name == "ValueTooLarge"
        assert ("the result of blob: 1,500,005 bytes, over the limit of 1,048,576 bytes"
                in failed.value.remote_message)
        assert "max_value_size" in failed.value.remote_message


# --- work messages speak only for their session's peer --------------------------------------


async def test_only_the_owner_cancels_a_job_and_no_peer_speaks_for_another(
        secret: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A third holder of the secret connects to b, which runs tasks of a's job, and sends a
    CancelJob for it and Results in a's name: b refuses both (they name another node than
    the stream's authenticated one), warns, and the job finishes with every result."""
    caplog.set_level(logging.WARNING, "p2pcluster.peer")
    async with two_peers(secret) as (a, b):
        request = a.request(jobfuncs.sleep_square, encode_map_args([range(30), [0.2] * 30]))
        results: dict[int, Any] = {}
        async with a.open_job(request) as job:
            job.listeners.append(lambda batch: results.update((r.task, r) for r in batch))
            await until(lambda: running(b) >= 1, "b runs a task of a's job")
            keys = Keyring.from_secrets(load_secrets(secret_file=secret).secrets,
                                        a.config.cluster)
            intruder = SecureWire(TrioTransport(), keys, a.config, node_id=os.urandom(16))
            with trio.fail_after(WAIT):
                async with await intruder.connect(b.address) as stream:
                    await stream.send(CancelJob(job.id))
                    await stream.send(Results(job.id, a.me.id, 0, ()))
                    await until(lambda: len([r for r in caplog.records
                                             if "refused a" in r.getMessage()]) >= 1,
                                "b refuses the forged messages")
                await job.wait()
        assert sorted(results) == list(range(30))
        assert [unpack(*results[i][1:]) for i in range(30)] == [i * i for i in range(30)]
        refusals = [r.getMessage() for r in caplog.records if "refused a" in r.getMessage()]
        assert "refused a CancelJob" in refusals[0] and "only its owner" in refusals[0]
        assert len(refusals) == 1  # one warning a minute per peer
        assert b.statistics().stealing.dropped == 0  # b dropped none of a's tasks
