"""The worker pool with real worker processes: batches, errors, crashes, timeouts, cancellation.

These tests use real time (real processes cannot run on a virtual clock); each stays within a
few seconds, most of which is process start-up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pcluster._bundles import bundle_file, bundle_tree, job_module_name
from p2pcluster._codecache import CodeCache
from p2pcluster._pool import (
    MAX_CRASHES,
    WORKER_MAIN,
    Outcome,
    WorkerPool,
    open_worker_pool,
)
from p2pcluster._proto.messages import TaskStatus
from p2pcluster._refs import FunctionRef, function_ref
from p2pcluster._values import decode_value, encode_call

from . import workjobs

WAIT = 20  # seconds: generous, for process start-up on a loaded machine


def call(*args: Any, **kwargs: Any) -> bytes:
    return encode_call(args, kwargs)


def value(outcome: Outcome) -> Any:
    assert outcome.status == TaskStatus.OK, decode_value(outcome.payload)
    return decode_value(outcome.payload)


def error(outcome: Outcome, status: int = TaskStatus.ERROR) -> dict[str, str]:
    assert outcome.status == status, outcome
    err: dict[str, str] = decode_value(outcome.payload)
    assert set(err) == {"type", "message", "traceback"}
    return err


def alive(pid: int) -> bool:
    """True while the process exists, zombies included: a dead worker must also be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_for_file(path: Path) -> str:
    with trio.fail_after(WAIT):
        while not path.exists() or not path.read_text():
            await trio.sleep(0.01)
    return path.read_text()


async def worker_pids(pool: WorkerPool) -> set[int]:
    """The pids of all the pool's workers: hold every slot at once, so each is a different one."""
    pids: set[int] = set()
    ref = function_ref(workjobs.sleep_then_pid)

    async def one() -> None:
        pids.add(value((await pool.run(ref, [call(0.3)])).outcomes[0]))

    async with trio.open_nursery() as nursery:
        for _ in range(pool.slots):
            nursery.start_soon(one)
    return pids


async def test_batches_return_results_in_order(tmp_path: Path) -> None:
    ref = function_ref(workjobs.add)
    async with open_worker_pool(2, tmp_path) as pool:
        with trio.fail_after(WAIT):
            results: dict[int, list[Outcome]] = {}

            async def batch(k: int) -> None:
                payloads = [call(i, k) for i in range(1000)]
                results[k] = (await pool.run(ref, payloads)).outcomes

            async with trio.open_nursery() as nursery:  # both slots busy at once
                nursery.start_soon(batch, 0)
                nursery.start_soon(batch, 1000)
        assert [value(o) for o in results[0]] == list(range(1000))
        assert [value(o) for o in results[1000]] == list(range(1000, 2000))
        stats = pool.statistics()
        assert (stats.slots, stats.batches, stats.tasks, stats.crashes) == (2, 2, 2000, 0)
        with trio.fail_after(WAIT):  # a warm-up may still hold a worker for a moment
            while pool.statistics().idle_workers != 2:
                await trio.sleep(0.01)


async def test_errors_carry_type_message_and_traceback(tmp_path: Path) -> None:
    async with open_worker_pool(1, tmp_path) as pool:
        with trio.fail_after(WAIT):
            result = await pool.run(function_ref(workjobs.fail), [call("boom"), call("bang")])
            unencodable = await pool.run(function_ref(workjobs.unencodable), [call()])
            exits = await pool.run(function_ref(workjobs.exits), [call()])
            coroutine = await pool.run(function_ref(workjobs.coroutine), [call()])
            missing = await pool.run(FunctionRef("no_such_module_here", "f"), [call(), call()])
            bad_args = await pool.run(function_ref(workjobs.add), [call(1), b"\xff"])
        assert result.worker_seconds > 0
        err = error(result.outcomes[0])
        assert err["type"] == "tests.io.workjobs.JobError" and err["message"] == "boom"
        assert "Traceback" in err["traceback"] and "workjobs.py" in err["traceback"]
        assert "raise JobError(message)" in err["traceback"]
        assert error(result.outcomes[1])["message"] == "bang"
        err = error(unencodable.outcomes[0])
        assert err["type"] == "p2pcluster.UnsendableResult" and err["traceback"] == ""
        assert "the result of unencodable cannot be sent back" in err["message"]
        assert error(exits.outcomes[0])["type"] == "SystemExit"  # the peer did not exit
        assert "async function" in error(coroutine.outcomes[0])["message"]
        for outcome in missing.outcomes:
            err = error(outcome)
            assert err["type"] == "ModuleNotFoundError"
            assert "could not be imported on this peer" in err["message"]
            assert "--include" in err["message"]
        assert error(bad_args.outcomes[0])["type"] == "TypeError"  # add() missing an argument
        assert error(bad_args.outcomes[1])["type"] == "p2pcluster._errors.DecodeError"
        assert pool.statistics().crashes == 0


async def test_a_crashing_task_is_poisoned_and_the_others_complete(tmp_path: Path) -> None:
    ref = function_ref(workjobs.crash_on)
    async with open_worker_pool(2, tmp_path) as pool:
        with trio.fail_after(WAIT):
            result = await pool.run(ref, [call(i, 3) for i in range(6)])
        ok, poison = TaskStatus.OK, TaskStatus.POISON
        assert [o.status for o in result.outcomes] == [ok, ok, ok, poison, ok, ok]
        assert [value(o) for i, o in enumerate(result.outcomes) if i != 3] == [0, 1, 2, 4, 5]
        err = error(result.outcomes[3], TaskStatus.POISON)
        assert err["type"] == "PoisonTask" and err["traceback"] == ""
        assert f"crashed its worker process {MAX_CRASHES} times" in err["message"]
        assert "exit code 1" in err["message"]
        stats = pool.statistics()
        assert stats.crashes == 1 + MAX_CRASHES  # the batch, then the culprit alone
        assert stats.poisoned == 1
        with trio.fail_after(WAIT):  # and the pool still works
            after = await pool.run(function_ref(workjobs.add), [call(2, 3)])
        assert value(after.outcomes[0]) == 5


async def test_a_segfault_is_reported_by_signal(tmp_path: Path) -> None:
    async with open_worker_pool(1, tmp_path) as pool:
        with trio.fail_after(WAIT):
            result = await pool.run(function_ref(workjobs.segfault), [call()])
            killed = await pool.run(function_ref(workjobs.kill_self), [call()])
        assert "killed by SIGSEGV" in error(result.outcomes[0], TaskStatus.POISON)["message"]
        assert "killed by SIGKILL" in error(killed.outcomes[0], TaskStatus.POISON)["message"]
        assert pool.statistics().crashes == 2 * MAX_CRASHES


async def test_a_timeout_kills_the_worker(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    async with open_worker_pool(1, tmp_path / "cache") as pool:
        await worker_pids(pool)  # warm
        payloads = [call(1, 2), call(str(pid_file), 30)]
        start = trio.current_time()
        with trio.fail_after(WAIT):
            quick = await pool.run(function_ref(workjobs.add), payloads[:1], timeout=0.5)
            slow = await pool.run(function_ref(workjobs.sleep_recording_pid), payloads[1:],
                                  timeout=0.5)
        elapsed = trio.current_time() - start
        assert value(quick.outcomes[0]) == 3
        err = error(slow.outcomes[0], TaskStatus.TIMEOUT)
        assert err["type"] == "TimeoutError"
        assert err["message"] == "the task exceeded its timeout of 0.5 s"
        assert 0.5 <= elapsed < 2.0
        assert not alive(int(pid_file.read_text()))
        assert pool.statistics().timeouts == 1
        with trio.fail_after(WAIT):  # the replacement's start-up is not on the next task's clock
            after = await pool.run(function_ref(workjobs.add), [call(2, 2)], timeout=0.05)
        assert value(after.outcomes[0]) == 4


async def test_a_timeout_kills_what_the_task_forked(tmp_path: Path) -> None:
    # The child holds the worker's answer pipe: the old pool waited for its EOF (60 s).
    pid_file = tmp_path / "child"
    async with open_worker_pool(1, tmp_path / "cache") as pool:
        await worker_pids(pool)  # warm
        start = trio.current_time()
        with trio.fail_after(WAIT):
            slow = await pool.run(function_ref(workjobs.fork_then_sleep),
                                  [call(str(pid_file), 30)], timeout=1.0)
        error(slow.outcomes[0], TaskStatus.TIMEOUT)
        assert trio.current_time() - start < 3.0
        child = int(pid_file.read_text())
        with trio.fail_after(5):
            while alive(child):  # killed with the group; reaped by init, not us
                await trio.sleep(0.02)
        with trio.fail_after(WAIT):
            after = await pool.run(function_ref(workjobs.add), [call(2, 3)], timeout=1.0)
        assert value(after.outcomes[0]) == 5


async def test_a_worker_is_dead_when_its_process_exits_not_when_its_pipe_ends(
        tmp_path: Path) -> None:
    pid_file = tmp_path / "child"
    async with open_worker_pool(1, tmp_path / "cache") as pool:
        await worker_pids(pool)  # warm
        start = trio.current_time()
        with trio.fail_after(WAIT):
            dead = await pool.run(function_ref(workjobs.fork_then_die), [call(str(pid_file))])
        assert "exit code 5" in error(dead.outcomes[0], TaskStatus.POISON)["message"]
        # Three crashes, each noticed at the exit (plus a re-spawn), not 60 s later.
        assert trio.current_time() - start < WAIT
        with trio.fail_after(5):
            while alive(int(pid_file.read_text())):
                await trio.sleep(0.02)


async def test_a_batch_stops_after_its_time_limit_and_says_how_far_it_got(
        tmp_path: Path) -> None:
    async with open_worker_pool(1, tmp_path) as pool:
        with trio.fail_after(WAIT):
            ran = await pool.run(function_ref(workjobs.nap), [call(i, 0.05) for i in range(40)],
                                 time_limit=0.2)
        # The worker stops after the task during which 0.2 s passed: 4 or 5 of 40 tasks.
        assert 4 <= len(ran.outcomes) <= 6, len(ran.outcomes)
        assert [value(o) for o in ran.outcomes] == list(range(len(ran.outcomes)))
        assert 0.2 <= ran.worker_seconds < 0.4
        assert pool.statistics().tasks == len(ran.outcomes)
        with trio.fail_after(WAIT):  # with a task timeout, tasks run one by one: same limit
            alone = await pool.run(function_ref(workjobs.nap),
                                   [call(i, 0.05) for i in range(40)], time_limit=0.2,
                                   timeout=5.0)
        assert 4 <= len(alone.outcomes) <= 6, len(alone.outcomes)


async def test_cancelling_a_run_kills_its_worker_promptly(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    ref = function_ref(workjobs.sleep_recording_pid)
    async with open_worker_pool(1, tmp_path / "cache") as pool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.run, ref, [call(str(pid_file), 30)])
            pid = int(await wait_for_file(pid_file))
            assert alive(pid)
            cancelled_at = trio.current_time()
            nursery.cancel_scope.cancel()
        assert trio.current_time() - cancelled_at < 1.0
        assert not alive(pid)
        with trio.fail_after(WAIT):  # a fresh worker takes its place
            after = await pool.run(function_ref(workjobs.add), [call(1, 1)])
        assert value(after.outcomes[0]) == 2


async def test_large_bytes_cross_to_a_worker_and_back_exactly(tmp_path: Path) -> None:
    """Arguments and results of megabytes with no array in them (they cross the pipe in a
    segment, :class:`~p2pcluster._handoff.FlatRef`), beside small ones in the same batch."""
    data = os.urandom(3 * 1024 * 1024 + 5)
    async with open_worker_pool(1, tmp_path) as pool:
        with trio.fail_after(WAIT):
            for _ in range(3):  # the segments go back to the stock and are used again
                run = await pool.run(function_ref(workjobs.reversed_bytes),
                                     [call(data), call(b"ab"), call(data[:1000])])
                assert [value(o) for o in run.outcomes] == [data[::-1], b"ba", data[999::-1]]


def anonymous_bytes(pid: int) -> int:
    """The process's resident anonymous memory (heap, not its mapped files)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no RssAnon in /proc/{pid}/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
async def test_an_idle_worker_holds_nothing_of_its_last_batch(tmp_path: Path) -> None:
    """A value that crossed the pipe (a large ``bytes`` argument) is freed once its batch
    is answered, not when the next batch comes: an idle worker does not sit on it."""
    size = 64 * 1024 * 1024  # over glibc's largest mmap threshold: freed means unmapped
    async with open_worker_pool(1, tmp_path) as pool:
        with trio.fail_after(WAIT):
            (pid,) = await worker_pids(pool)
            before = anonymous_bytes(pid)
            run = await pool.run(function_ref(workjobs.length), [call(bytes(size))])
            assert value(run.outcomes[0]) == size
            deadline = time.monotonic() + 5
            while (held := anonymous_bytes(pid) - before) > size // 4:
                assert time.monotonic() < deadline, f"the idle worker holds {held:,} bytes more"
                await trio.sleep(0.05)


async def test_no_worker_outlives_the_pool(tmp_path: Path) -> None:
    async with open_worker_pool(2, tmp_path) as pool:
        pids = await worker_pids(pool)
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        assert os.getpid() not in pids
    assert not any(alive(pid) for pid in pids)


async def test_workers_start_at_open(tmp_path: Path) -> None:
    async with open_worker_pool(2, tmp_path) as pool:
        with trio.fail_after(WAIT):
            while pool.statistics().idle_workers < 2:
                await trio.sleep(0.01)
        start = trio.current_time()
        await worker_pids(pool)  # both slots at once: nobody waits for a process to start
        assert trio.current_time() - start < 0.3 + 0.5


async def test_includes_and_job_files_run_in_workers(tmp_path: Path) -> None:
    cache = CodeCache(tmp_path / "cache")
    pkg = tmp_path / "src" / "shipped_in_test"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("def triple(x):\n    return 3 * x\n")
    include = bundle_tree(pkg)
    cache.store(include)
    job = tmp_path / "job.py"
    job.write_text("import shipped_in_test\n\n"
                   "def task(x):\n    return shipped_in_test.triple(x) + 1\n\n"
                   "if __name__ == '__main__':\n    raise SystemExit('must not run')\n")
    job_bundle = bundle_file(job)
    cache.store(job_bundle)
    module = job_module_name(job_bundle.digest)
    async with open_worker_pool(1, cache.root) as pool:
        with trio.fail_after(WAIT):
            from_include = await pool.run(
                FunctionRef("shipped_in_test", "triple", includes=(include.digest,)),
                [call(1), call(2)])
            from_job = await pool.run(
                FunctionRef(module, "task", job_bundle.digest, (include.digest,)), [call(5)])
            where = await pool.run(
                FunctionRef("sys", "path.__getitem__", includes=(include.digest,)), [call(0)])
            without = await pool.run(FunctionRef("shipped_in_test", "triple"), [call(1)])
    assert [value(o) for o in from_include.outcomes] == [3, 6]
    assert value(from_job.outcomes[0]) == 16
    assert value(where.outcomes[0]) == str(cache.path(include.digest))
    assert "could not be imported" in error(without.outcomes[0])["message"]


CTRL_C_SCRIPT = """
import signal, sys, trio
# Ctrl-C raises KeyboardInterrupt, as under a terminal, even if whatever started the test
# suite ignores SIGINT (a shell's background job does, and its children inherit that).
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from p2pcluster._refs import function_ref
from p2pcluster._values import encode_call
from p2pcluster._pool import open_worker_pool
from tests.io import workjobs

async def main():
    out = Path(sys.argv[1])
    async with open_worker_pool(2, out / "cache") as pool:
        ref = function_ref(workjobs.sleep_recording_pid)
        async with trio.open_nursery() as nursery:
            for i in range(2):
                nursery.start_soon(pool.run, ref, [encode_call((str(out / f"pid{i}"), 30), {})])

if __name__ == "__main__":
    trio.run(main)
"""


def test_ctrl_c_kills_busy_workers_quietly(tmp_path: Path) -> None:
    """SIGINT to the whole process group, as a terminal sends it, while both workers are busy."""
    script = tmp_path / "peer.py"
    script.write_text(CTRL_C_SCRIPT)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)], start_new_session=True, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + WAIT
        pid_files = [tmp_path / "pid0", tmp_path / "pid1"]
        while not all(p.exists() and p.read_text() for p in pid_files):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        pids = [int(p.read_text()) for p in pid_files]
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:  # pragma: no cover - only if the test already failed
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1 and "KeyboardInterrupt" in stderr
    # Only the peer's own traceback: nothing printed by a worker process.
    assert "spawn_main" not in stderr and "workjobs" not in stderr
    deadline = time.monotonic() + 2.0  # a worker sees its peer gone within 0.5 s, if not loaded
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_running(pid) for pid in pids)


def _running(pid: int) -> bool:
    """Not a child of ours, so once dead it may linger as a zombie until init reaps it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_a_pool_cannot_have_negative_workers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot have -1 workers"):
        async with open_worker_pool(-1, tmp_path):
            pass  # pragma: no cover


async def test_a_pool_of_no_workers_opens_and_closes(tmp_path: Path) -> None:
    """A peer that only submits (workers=0) has an empty pool."""
    async with open_worker_pool(0, tmp_path) as pool:
        assert pool.statistics().slots == 0


def test_the_worker_main_module_stays_light() -> None:
    """A worker imports neither trio nor the network layer: a respawned worker costs little
    more than the interpreter."""
    code = (f"import sys, {WORKER_MAIN}; print(sorted(m for m in sys.modules if "
            "m.split('.')[0] in ('trio', 'zeroconf', 'cryptography') or "
            "m in ('p2pcluster._pool', 'p2pcluster._peer', 'p2pcluster._secure', "
            "'p2pcluster._proto.codec')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
