"""The daemon path as a lab uses it: one `p2pcluster join` daemon, client processes that submit
many futures, large values, clients that die, and sockets that are not what they claim.

The daemon runs in a subprocess on loopback (``daemons.running_daemon``); clients are this
process's :class:`~p2pcluster.Cluster` or further subprocesses. These tests run in real time.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pcluster import (
    Cluster,
    ClusterError,
    Config,
    P2PClusterError,
    TaskError,
    TaskFuture,
    ValueTooLarge,
)
from p2pcluster._control import UntrustedDaemon, connect
from p2pcluster._control_client import DaemonError, request_daemon
from p2pcluster._proto.control import CODEC, SegmentBlob, hello
from p2pcluster._secret import new_secret, write_secret_file
from p2pcluster._shm import Segment

from .daemons import ROOT, Daemon, running_daemon

JOBFUNCS = Path(__file__).with_name("jobfuncs.py")
sys.path.append(str(JOBFUNCS.parent))
import jobfuncs  # noqa: E402

WAIT = 30
_counter = itertools.count()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
    return f"ctl-{os.getpid()}-{next(_counter)}"


def config(secret: Path, cluster: str, **changes: Any) -> Config:
    return Config.local(mdns=False, port=0, secret_file=str(secret), cluster=cluster, **changes)


@pytest.fixture
def daemon(tmp_path: Path, secret: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    with running_daemon(tmp_path, secret, unique_cluster(), monkeypatch) as started:
        yield started


# --- many futures on one connection ---------------------------------------------------------


def test_many_outstanding_futures_through_a_one_worker_daemon(daemon: Daemon,
                                                              secret: Path) -> None:
    """It used to die at 17 outstanding submits: one connection each, a backlog of 16."""
    with Cluster(config(secret, daemon.cluster), daemon=True, include=[JOBFUNCS]) as cluster:
        futures = [cluster.submit(jobfuncs.sleep_square, x, 0.05) for x in range(40)]
        assert [f.result(timeout=WAIT) for f in futures] == [x * x for x in range(40)]
        assert {f.peer for f in futures} == {"d1"}
        assert all(isinstance(f, TaskFuture) for f in futures)
        assert cluster.progress().done == 40  # each result arrived once
    daemon.check_alive()
    log = daemon.log.read_text()
    assert log.count("(sleep_square, 1 task(s)) from ") == 40
    assert re.search(r"INFO +job [0-9a-f]{8} \(sleep_square\) done in [0-9.]+ s: 1 of 1 "
                     r"task\(s\) \(d1 1\)", log), log[-2000:]


CLIENT = """
    import json, sys
    sys.path.insert(0, {jobfuncs_dir!r})
    import jobfuncs
    from p2pcluster import Cluster, Config

    if __name__ == "__main__":
        offset, n = int(sys.argv[1]), int(sys.argv[2])
        config = Config.local(mdns=False, port=0, cluster={cluster!r}, secret_file={secret!r})
        with Cluster(config, daemon=True, include=[{jobfuncs!r}]) as cluster:
            futures = [cluster.submit(jobfuncs.sleep_square, offset + i, {seconds})
                       for i in range(n)]
            values = [f.result(timeout=300) for f in futures]
            done = cluster.progress().done
        print(json.dumps({{"values": values, "done": done,
                          "peers": sorted({{f.peer for f in futures}})}}))
"""


def client_script(tmp_path: Path, daemon: Daemon, secret: Path, seconds: float) -> Path:
    script = tmp_path / f"client-{next(_counter)}.py"
    script.write_text(textwrap.dedent(CLIENT.format(
        jobfuncs_dir=str(JOBFUNCS.parent), jobfuncs=str(JOBFUNCS), cluster=daemon.cluster,
        secret=str(secret), seconds=seconds)))
    return script


def test_2000_outstanding_submits_from_three_clients_at_once(
        tmp_path: Path, secret: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_daemon(tmp_path, secret, unique_cluster(), monkeypatch,
                        workers=4) as daemon:
        baseline = daemon.settled_fds()
        script = client_script(tmp_path, daemon, secret, 0.01)
        clients = [subprocess.Popen([sys.executable, str(script), str(k * 1000), "700"],
                                    env=daemon.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for k in range(3)]
        for k, client in enumerate(clients):
            out, err = client.communicate(timeout=240)
            assert client.returncode == 0, err
            answer = json.loads(out)
            assert answer["values"] == [(k * 1000 + i) ** 2 for i in range(700)]
            assert answer["done"] == 700  # delivered once each
            assert answer["peers"] == ["d1"]
        assert daemon.fds_back_to(baseline) == baseline
        daemon.check_alive()


def test_a_client_killed_mid_job_has_its_jobs_cancelled_within_a_second(
        tmp_path: Path, secret: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_daemon(tmp_path, secret, unique_cluster(), monkeypatch,
                        workers=2) as daemon:
        doomed = subprocess.Popen(
            [sys.executable, str(client_script(tmp_path, daemon, secret, 30.0)), "0", "20"],
            env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + WAIT
        while "from client" not in daemon.log.read_text() or daemon.members()[0]["queue"] == 0:
            assert time.monotonic() < deadline, daemon.log.read_text()
            time.sleep(0.05)
        # Another client's job runs alongside and must not notice.
        with Cluster(config(secret, daemon.cluster), daemon=True,
                     include=[JOBFUNCS]) as other:
            survivor = other.map(jobfuncs.sleep_square, range(4), [0.3] * 4)
            doomed.send_signal(signal.SIGKILL)
            doomed.wait()
            killed = time.monotonic()
            while "went away" not in daemon.log.read_text():
                assert time.monotonic() - killed < 1.0, daemon.log.read_text()[-2000:]
                time.sleep(0.01)
            assert list(survivor) == [0, 1, 4, 9]
        assert "cancelled: its client" in daemon.log.read_text()
        daemon.check_alive()


# --- values of any size --------------------------------------------------------------------


def test_large_values_through_the_daemon(daemon: Daemon, secret: Path) -> None:
    data = jobfuncs.blob(6_000_000, 3)
    with Cluster(config(secret, daemon.cluster), daemon=True, include=[JOBFUNCS]) as cluster:
        assert cluster.submit(jobfuncs.digest, data).result(timeout=WAIT) == hashlib.sha256(
            data).hexdigest()
        back = cluster.submit(jobfuncs.blob, 7_000_000, 4).result(timeout=WAIT)
        assert hashlib.sha256(back).digest() == hashlib.sha256(
            jobfuncs.blob(7_000_000, 4)).digest()


def test_values_over_the_daemon_s_limit_fail_with_the_named_error(
        tmp_path: Path, secret: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_daemon(tmp_path, secret, unique_cluster(), monkeypatch,
                        env={"P2PCLUSTER_MAX_VALUE_SIZE": "1048576"}) as daemon, Cluster(
            config(secret, daemon.cluster), daemon=True, include=[JOBFUNCS]) as cluster:
        start = time.monotonic()
        with pytest.raises(ValueTooLarge) as too_big:
            cluster.submit(jobfuncs.digest, b"x" * 2_000_000)
        assert "2,000,008 bytes, over the limit of 1,048,576 bytes on the daemon's peer d1" in (
            str(too_big.value))
        with pytest.raises(TaskError) as failed:
            cluster.submit(jobfuncs.blob, 1_500_000, 1).result(timeout=WAIT)
        assert failed.value.type_name == "ValueTooLarge"
        assert "1,048,576 bytes" in failed.value.remote_message
        assert "max_value_size" in failed.value.remote_message
        assert time.monotonic() - start < 5


# --- errors a user can act on ----------------------------------------------------------------


def test_a_broken_connection_fails_every_future_with_cluster_error(
        tmp_path: Path, secret: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_daemon(tmp_path, secret, unique_cluster(), monkeypatch) as daemon:
        cluster = Cluster(config(secret, daemon.cluster), daemon=True, include=[JOBFUNCS])
        try:
            futures = [cluster.submit(jobfuncs.sleep_square, x, 30) for x in range(5)]
            results = cluster.map(jobfuncs.sleep_square, range(3), [30] * 3)
            daemon.process.kill()
            daemon.process.wait()
            for future in futures:
                with pytest.raises(ClusterError) as info:
                    future.result(timeout=WAIT)
                assert "the connection to the daemon" in str(info.value)
                assert info.value.__cause__ is not None
            with pytest.raises(ClusterError):
                next(results)
            with pytest.raises(ClusterError):
                cluster.submit(jobfuncs.add, 1, 2)
        finally:
            cluster.shutdown()


def test_an_old_client_is_told_what_is_wrong(daemon: Daemon) -> None:
    async def old_client() -> dict[str, Any] | None:
        stream = await connect(daemon.control)
        try:
            await stream.send_map({"op": "members"})  # what version 1 sent
            return await stream.receive_map()
        finally:
            await stream.aclose()

    answer = trio.run(old_client)
    assert answer is not None and answer["ok"] is False
    assert "this daemon speaks control protocol 3" in answer["error"]


def test_a_memfd_a_client_could_still_change_ends_its_connection_not_the_daemon(
        daemon: Daemon) -> None:
    """A value in shared memory must be sealed against writes: the daemon holds it as the
    job's arguments. One that is not ends that connection; its descriptor is closed."""
    before = daemon.settled_fds()

    async def client_with_an_open_memfd() -> bytes | memoryview | None:
        stream = await connect(daemon.control)
        try:
            await stream.send_map(hello("a test", os.getpid(), 2**31))
            welcome = await stream.receive_map()
            assert welcome is not None and welcome["segments"] is True
            writable = Segment.create(2_000_000)  # sealed against resizing only
            await stream.send_frame_with_fd(
                CODEC.encode(SegmentBlob(1, 2_000_000, 0)), writable.fd)
            return await stream.receive_frame()  # the daemon hangs up: None
        finally:
            await stream.aclose()

    assert trio.run(client_with_an_open_memfd) is None
    assert daemon.fds_back_to(before) == before
    assert "not sealed against resizing and writes" in daemon.log.read_text()
    daemon.check_alive()


def test_a_client_is_told_when_the_daemon_is_older(tmp_path: Path) -> None:
    path = tmp_path / "old.sock"

    async def old_daemon_and_client() -> None:
        from p2pcluster._control import FramedStream, serve_control

        async def version_1(stream: FramedStream) -> None:
            request = await stream.receive_map()
            assert request is not None
            await stream.send_map({"ok": False,
                                   "error": f"unknown operation {request['op']!r}"})

        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, path, version_1)
            with pytest.raises(DaemonError, match="older control protocol"):
                await request_daemon(path, "members")
            nursery.cancel_scope.cancel()

    trio.run(old_daemon_and_client)


NOBODY = 65534


def _listen_as_nobody(path: Path, received: Path) -> subprocess.Popen[bytes]:
    """A fake daemon: a process of user nobody that listens at ``path`` and writes down
    whatever a client sends it."""
    code = textwrap.dedent(f"""
        import os, socket, sys
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind({str(path)!r}); sock.listen(4)
        print("ready", flush=True)
        while True:
            conn, _ = sock.accept()
            conn.settimeout(2)
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            with open({str(received)!r}, "ab") as f:
                f.write(data)
            conn.close()
    """)
    return subprocess.Popen([SYSTEM_PYTHON, "-c", code], stdout=subprocess.PIPE,
                            user=NOBODY, group=NOBODY, extra_groups=[])


# User nobody cannot read root's home, where the test's own Python may live.
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as user nobody")
@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason=f"needs {SYSTEM_PYTHON}")
@pytest.mark.parametrize("trap", ["directory", "process"])
def test_a_fake_daemon_of_another_user_is_refused(tmp_path: Path, secret: Path,
                                                  trap: str) -> None:
    """Under /tmp, anyone may create the control path first. ``directory``: the fake
    daemon owns the directory; ``process``: the directory is ours (0700), but the process
    listening in it is nobody's."""
    base = Path(tempfile.mkdtemp(prefix="p2pfake-"))  # tmp_path is not open to nobody
    os.chmod(base, 0o755)
    directory = base / trap
    directory.mkdir()
    os.chmod(directory, 0o777)
    if trap == "directory":
        os.chown(directory, NOBODY, NOBODY)
    path, received = directory / "default.sock", base / "received"
    received.touch()
    os.chmod(received, 0o666)
    fake = _listen_as_nobody(path, received)
    try:
        assert fake.stdout is not None and fake.stdout.readline() == b"ready\n"
        os.chmod(directory, 0o700)
        with pytest.raises(UntrustedDaemon) as refused:
            Cluster(config(secret, "fake"), daemon=True, control=path)
        message = str(refused.value)
        assert str(path) in message
        assert "uid 65534" in message
        assert received.read_bytes() == b""  # not a byte of the job reached it
        done = subprocess.run([sys.executable, "-m", "p2pcluster", "members", "--control",
                               str(path)], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
        assert done.returncode == 1
        assert f"p2pcluster members: error: refusing the control socket {path}" in (
            done.stderr)
        assert "uid 65534" in done.stderr
    finally:
        fake.kill()
        fake.wait()
        data = received.read_bytes()
        shutil.rmtree(base, ignore_errors=True)
    assert data == b""


def test_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    os.chmod(directory, 0o777)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(directory / "default.sock"))
    sock.listen(1)
    try:
        with pytest.raises(UntrustedDaemon, match="with mode 0777; it must be yours"):
            trio.run(connect, directory / "default.sock")
    finally:
        sock.close()


def test_untrusted_daemon_is_a_p2pcluster_error() -> None:
    assert issubclass(UntrustedDaemon, P2PClusterError)
