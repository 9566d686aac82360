"""Task processes behind a `p2pcluster join` daemon: what a task forks dies with it, and what
it prints reaches the daemon's log labelled with its job and task, printable.

Real time, loopback only (the daemon of ``daemons.py``, no mDNS).
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pcluster import Cluster, Config, TaskTimeoutError
from p2pcluster._secret import new_secret, write_secret_file

from .daemons import Daemon, running_daemon

JOBFUNCS = Path(__file__).with_name("jobfuncs.py")
sys.path.append(str(JOBFUNCS.parent))
import jobfuncs  # noqa: E402

WAIT = 20


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    write_secret_file(path, (new_secret(),))
    return path


@pytest.fixture
def daemon(tmp_path: Path, secret: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    for name in [n for n in os.environ if n.startswith("P2PCLUSTER_")]:
        monkeypatch.delenv(name)
    with running_daemon(tmp_path, secret, f"procs-{os.getpid()}", monkeypatch) as started:
        yield started


def client(secret: Path, daemon: Daemon) -> Cluster:
    conf = Config.local(mdns=False, port=0, secret_file=str(secret), cluster=daemon.cluster)
    return Cluster(conf, daemon=True, include=[JOBFUNCS])


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_forking_task_that_times_out_does_not_stall_the_next_job(
        daemon: Daemon, secret: Path, tmp_path: Path) -> None:
    # Before: the kill reached the worker only, and the pool waited for EOF on a pipe the
    # child held, a minute; the next job waited with it.
    pid_file = tmp_path / "child"
    with client(secret, daemon) as cluster:
        assert cluster.submit(jobfuncs.add, 1, 1).result(timeout=WAIT) == 2  # warm
        start = time.monotonic()
        with pytest.raises(TaskTimeoutError):
            list(cluster.map(jobfuncs.fork_and_sleep, [str(pid_file)], [30], task_timeout=1,
                             timeout=WAIT))
        assert time.monotonic() - start < 4
        child = int(pid_file.read_text())
        begun = time.monotonic()
        assert list(cluster.map(jobfuncs.square, range(20), timeout=WAIT)) == [
            x * x for x in range(20)]
        # On time: a fresh worker's start-up (under a second) and the job itself.
        assert time.monotonic() - begun < 5, time.monotonic() - begun
        deadline = time.monotonic() + 5
        while not gone(child):
            assert time.monotonic() < deadline, "the forked child outlived its task"
            time.sleep(0.02)
    daemon.check_alive()


def test_task_output_is_labelled_with_job_and_task_in_the_daemon_log(
        daemon: Daemon, secret: Path) -> None:
    with client(secret, daemon) as cluster:
        assert list(cluster.map(jobfuncs.chatter, range(3), timeout=WAIT)) == [0, 1, 2]
    deadline = time.monotonic() + 5
    pattern = r"job ([0-9a-f]{8}) task (\d+) (stdout|stderr) \(worker \d+\): (.*)"
    while True:
        lines = [m.groups() for m in re.finditer(pattern, daemon.log.read_text())]
        if len(lines) >= 9 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len({job for job, *_ in lines}) == 1, lines
    got = {(int(task), stream, text) for _, task, stream, text in lines}
    for x in range(3):
        assert (x, "stdout", f"out {x}") in got, lines
        assert (x, "stdout", f"line {x}") in got, lines
        assert (x, "stdout", r"2026-01-01 00:00:00 ERROR forged\x1b[2J") in got, lines
        assert (x, "stderr", f"err {x}") in got, lines
    assert "\x1b" not in daemon.log.read_text()
    assert not re.search(r"^2026-01-01 00:00:00 ERROR forged", daemon.log.read_text(), re.M)
