"""`p2pcluster run JOB.py` as a user runs it: a subprocess, on an ephemeral peer on loopback.

Each test writes its job file into ``tmp_path`` and runs the real command with
``--preset local --no-mdns`` (bound to 127.0.0.1, no multicast), its own cluster name, a secret
file in ``tmp_path`` and the XDG directories there too, so no daemon of the machine is found.
The one exception is the network-namespace test, which runs with the defaults (mDNS on) in a
namespace that has nothing but loopback.
"""

from __future__ import annotations

import atexit
import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from p2pcluster._run import DISCOVERY_WINDOW
from p2pcluster._secret import new_secret, write_secret_file

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60  # seconds for one run: generous, for a loaded machine
_counter = itertools.count()


def runtime_dir(tmp_path: Path) -> Path:
    """A short runtime directory for ``tmp_path``'s test: a control socket's path must fit in
    107 bytes, and pytest-xdist's temporary paths plus a cluster name come close."""
    link = tmp_path / "run"
    if not link.exists():
        short = Path(tempfile.mkdtemp(prefix="p2p-"))
        atexit.register(shutil.rmtree, short, True)
        link.symlink_to(short)
    return link.resolve()


def environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PCLUSTER_")}
    env.update(PYTHONPATH=str(ROOT), XDG_RUNTIME_DIR=str(runtime_dir(tmp_path)),
               XDG_CACHE_HOME=str(tmp_path / "cache"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    return env


def command(tmp_path: Path, job: Path, *args: str, local: bool = True) -> list[str]:
    secret = tmp_path / "secret"
    if not secret.exists():
        write_secret_file(secret, (new_secret(),))
    options = ["--cluster", f"runcli-{os.getpid()}-{next(_counter)}", "--secret-file",
               str(secret), "--workers", "1"]
    if local:
        options += ["--preset", "local", "--no-mdns"]
    return [sys.executable, "-m", "p2pcluster", "run", str(job), *args, *options]


def run(tmp_path: Path, job: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(tmp_path, job, *args), env=environment(tmp_path),
                          cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT,
                          check=False)


def job_file(tmp_path: Path, source: str, name: str = "job.py") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


ALONE = "no daemon and no other peer found in cluster"


def test_run_prints_mains_value_as_json(tmp_path: Path) -> None:
    job = job_file(tmp_path, """
        def add(a, b):
            return a + b

        def main(cluster, a, b):
            a, b = int(a), int(b)
            return {"sum": cluster.submit(add, a, b).result(),
                    "table": list(cluster.map(add, range(4), [a * b] * 4)),
                    "args": [a, b]}
    """)
    done = run(tmp_path, job, "3", "4")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1  # one line: the value, nothing else
    assert json.loads(done.stdout) == {"sum": 7, "table": [12, 13, 14, 15], "args": [3, 4]}


@pytest.mark.parametrize(("expression", "printed"), [
    ("set(cluster.map(square, [1, 2, 3]))", "{1, 4, 9}"),
    ("complex(*cluster.map(square, [1, 2]))", "(1+4j)"),
])
def test_a_value_json_cannot_carry_is_printed_as_its_repr(tmp_path: Path, expression: str,
                                                           printed: str) -> None:
    job = job_file(tmp_path, f"""
        def square(x):
            return x * x

        def main(cluster):
            return {expression}
    """)
    done = run(tmp_path, job)
    assert done.returncode == 0, done.stderr
    assert done.stdout == printed + "\n"


def test_a_failing_task_prints_the_remote_traceback_and_exits_1(tmp_path: Path) -> None:
    job = job_file(tmp_path, """
        def check(x):
            if x == 7:
                raise ValueError(f"boom {x}")  # the failing line
            return x

        def main(cluster):
            return list(cluster.map(check, range(10)))
    """)
    done = run(tmp_path, job)
    assert done.returncode == 1
    assert done.stdout == ""
    assert "p2pcluster run: a task failed on peer " in done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert 'raise ValueError(f"boom {x}")  # the failing line' in done.stderr
    assert "ValueError: boom 7" in done.stderr
    assert "in check" in done.stderr


def test_main_raising_locally_prints_a_local_traceback_and_exits_1(tmp_path: Path) -> None:
    job = job_file(tmp_path, """
        def square(x):
            return x * x

        def main(cluster):
            total = sum(cluster.map(square, range(5)))
            raise RuntimeError(f"local failure after {total}")
    """)
    done = run(tmp_path, job)
    assert done.returncode == 1
    assert done.stdout == ""
    assert "p2pcluster run: the job's main() raised:" in done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert 'raise RuntimeError(f"local failure after {total}")' in done.stderr
    assert "RuntimeError: local failure after 30" in done.stderr
    assert "a task failed" not in done.stderr


def test_a_missing_main_or_job_file_is_a_clear_error(tmp_path: Path) -> None:
    job = job_file(tmp_path, """
        def square(x):
            return x * x
    """)
    done = run(tmp_path, job)
    assert done.returncode == 1
    assert done.stdout == ""
    assert "has no main(cluster, *args) function" in done.stderr
    assert "Traceback" not in done.stderr
    missing = run(tmp_path, tmp_path / "nowhere.py")
    assert missing.returncode == 1
    assert "no job file at" in missing.stderr and "nowhere.py" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize(("source", "args", "says"), [
    ("def main():\n    return 1\n", (),
     "main() cannot be called as main(cluster): too many positional arguments"),
    ("def main(cluster, n: int = 3) -> int:\n    return n\n", ("1", "2"),
     "main(cluster, n=3) cannot be called as main(cluster, '1', '2'): too many positional"),
    ("async def main(cluster, a, b):\n    return a + b\n", ("x",),
     "main(cluster, a, b) cannot be called as main(cluster, 'x'): missing a required "
     "argument: 'b'"),
])
def test_a_main_that_cannot_take_the_call_is_refused_before_it_runs(
        tmp_path: Path, source: str, args: tuple[str, ...], says: str) -> None:
    job = job_file(tmp_path, "import pathlib\npathlib.Path('loaded').touch()\n" + source)
    done = run(tmp_path, job, *args)
    assert done.returncode == 1
    assert done.stdout == ""
    assert f"{job}: {says}" in done.stderr, done.stderr
    assert "`run` passes the cluster first, then each ARG as a string" in done.stderr
    assert "Traceback" not in done.stderr and "raised" not in done.stderr
    assert (tmp_path / "loaded").exists()  # the file loaded; main was never called


def test_run_without_a_job_file_names_only_what_is_missing(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "p2pcluster", "run"], env=environment(tmp_path),
                          cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT,
                          check=False)
    assert done.returncode == 2
    assert done.stderr.rstrip().endswith(
        "p2pcluster run: error: the following arguments are required: JOB.py"), done.stderr


def test_an_async_main_gets_an_async_cluster(tmp_path: Path) -> None:
    job = job_file(tmp_path, """
        def square(x):
            return x * x

        async def main(cluster, n):
            values = await cluster.map(square, range(int(n)))
            one = await cluster.run(square, 12)
            return {"cluster": type(cluster).__name__, "values": values, "one": one,
                    "members": [m.name for m in await cluster.members()] != []}
    """)
    done = run(tmp_path, job, "5")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"cluster": "AsyncCluster", "values": [0, 1, 4, 9, 16],
                                       "one": 144, "members": True}


def timed_run(tmp_path: Path, argv: list[str]) -> tuple[str, list[tuple[float, str]], int]:
    """Run ``argv``; its stdout, each stderr line with the seconds since the start, the
    exit status."""
    lines: list[tuple[float, str]] = []
    start = time.monotonic()
    process = subprocess.Popen(argv, env=environment(tmp_path), cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append((time.monotonic() - start, line))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert process.stdout is not None
        out = process.stdout.read()  # stderr is the reader's alone
        process.wait(timeout=TIMEOUT)
    finally:
        process.kill()
        reader.join()
    return out, lines, process.returncode


def test_alone_is_said_once_the_whole_discovery_window_has_passed(tmp_path: Path) -> None:
    job = job_file(tmp_path, f"""
        import sys, time

        def main(cluster):
            print("main started", file=sys.stderr, flush=True)
            time.sleep({DISCOVERY_WINDOW} + 1.5)
            return "slow"
    """)
    out, lines, status = timed_run(tmp_path, command(tmp_path, job))
    assert status == 0, lines
    assert json.loads(out) == "slow"
    main_at = next(t for t, line in lines if line.startswith("main started"))
    alone_at, alone = next((t, line) for t, line in lines if ALONE in line)
    assert "running on an ephemeral local peer with 1 workers" in alone
    assert "loopback (127.0.0.1)" in alone
    # Not before the window is over (main starts just after the peer starts looking; 0.1 s
    # of slack for that), and not much later either (slack for a loaded machine).
    assert DISCOVERY_WINDOW - 0.1 <= alone_at - main_at < DISCOVERY_WINDOW + 1.0, lines


def test_a_job_over_within_the_window_gets_no_verdict(tmp_path: Path) -> None:
    job = job_file(tmp_path, """
        import sys, time

        def main(cluster):
            print("main started", file=sys.stderr, flush=True)
            time.sleep(0.1)
            return "quick"
    """)
    out, lines, status = timed_run(tmp_path, command(tmp_path, job))
    assert status == 0, lines
    assert json.loads(out) == "quick"
    assert [line for _, line in lines] == ["main started\n"]  # neither alone nor joined
    assert lines[-1][0] < DISCOVERY_WINDOW + 2.0, lines  # and it did not wait for a verdict


def test_other_peers_are_announced_as_soon_as_they_are_found(tmp_path: Path) -> None:
    job = job_file(tmp_path, f"""
        import sys, time

        def main(cluster):
            print("main started", file=sys.stderr, flush=True)
            time.sleep({DISCOVERY_WINDOW} + 0.5)
            return "done"
    """)
    run_args = command(tmp_path, job)
    cluster = run_args[run_args.index("--cluster") + 1]
    shared = ["--cluster", cluster, "--secret-file", str(tmp_path / "secret")]
    daemon = subprocess.Popen(
        [sys.executable, "-m", "p2pcluster", "join", *shared, "--preset", "local", "--port",
         "0", "--no-mdns", "--interface", "lo", "--name", "other-peer", "--workers", "1"],
        env=environment(tmp_path), stderr=subprocess.DEVNULL)
    try:
        port = _daemon_port(tmp_path, shared)
        out, lines, status = timed_run(
            tmp_path, [*run_args, "--local", "--seed", f"127.0.0.1:{port}"])
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
    assert status == 0 and json.loads(out) == "done", lines
    main_at = next(t for t, line in lines if line.startswith("main started"))
    joined_at, joined = next((t, line) for t, line in lines if "joined cluster" in line)
    assert f"joined cluster {cluster!r} with 1 other peer(s): other-peer" in joined
    assert joined_at - main_at < DISCOVERY_WINDOW - 0.3, lines  # well before the window ends
    assert not any(ALONE in line for _, line in lines)


def _daemon_port(tmp_path: Path, shared: list[str]) -> int:
    deadline = time.monotonic() + 15
    while True:
        members = subprocess.run([sys.executable, "-m", "p2pcluster", "members", "--json",
                                  "--cluster", shared[1]], env=environment(tmp_path),
                                 capture_output=True, text=True, timeout=TIMEOUT, check=False)
        if members.returncode == 0:
            port: int = json.loads(members.stdout)["members"][0]["port"]
            return port
        assert time.monotonic() < deadline, members.stderr
        time.sleep(0.1)


def test_quiet_prints_nothing_on_stderr_but_errors(tmp_path: Path) -> None:
    job = job_file(tmp_path, """
        import time

        def square(x):
            if x < 0:
                raise ValueError("negative")
            return x * x

        def main(cluster, n):
            time.sleep(2.0)  # long enough for run to say where it runs, were it not quiet
            return sum(cluster.map(square, range(int(n), 4)))
    """)

    def run_it(first: str, *options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command(tmp_path, job, first), *options],
                              env=environment(tmp_path),
                              cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT,
                              check=False)

    quiet = run_it("0", "-q")
    assert quiet.returncode == 0, quiet.stderr
    assert (quiet.stdout, quiet.stderr) == ("14\n", "")
    loud = run_it("0")
    assert loud.returncode == 0 and ALONE in loud.stderr  # the same job, not quiet
    failed = run_it("-1", "--quiet")
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.startswith("p2pcluster run: a task failed on peer ")
    assert "ValueError: negative" in failed.stderr and ALONE not in failed.stderr


def test_help_lists_the_options() -> None:
    done = subprocess.run([sys.executable, "-m", "p2pcluster", "run", "--help"],
                          capture_output=True, text=True, timeout=TIMEOUT, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0
    for option in ("--cluster", "--control", "--secret-file", "--include", "--workers",
                   "--local", "--daemon", "--no-mdns", "--seed", "--preset", "--quiet",
                   "--log-level", "JOB.py", "ARGS"):
        assert option in done.stdout, option
    assert "main(cluster, *args)" in done.stdout
    assert "JSON" in done.stdout
    assert "print nothing on stderr but errors" in " ".join(done.stdout.split())


def test_include_ships_a_module_that_the_job_imports(tmp_path: Path) -> None:
    job_file(tmp_path / "lib", """
        def triple(x):
            return 3 * x
    """, name="helper.py")
    job = job_file(tmp_path / "jobs", """
        import helper

        def work(x):
            return helper.triple(x) + 1

        def main(cluster):
            return {"direct": list(cluster.map(helper.triple, range(4))),
                    "through_the_job": list(cluster.map(work, range(4)))}
    """)
    done = subprocess.run(
        [*command(tmp_path, job), "--include", str(tmp_path / "lib" / "helper.py")],
        env=environment(tmp_path), cwd=tmp_path, capture_output=True, text=True,
        timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"direct": [0, 3, 6, 9], "through_the_job": [1, 4, 7, 10]}


# --- a machine whose only network is loopback ----------------------------------------------


def _netns_unavailable() -> str | None:
    spec = importlib.util.spec_from_file_location("_netns_lan_check",
                                                  ROOT / "scripts" / "netns_lan.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reason: str | None = module.available()
    return reason


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          check=False)


def test_run_in_a_network_namespace_with_only_loopback(tmp_path: Path) -> None:
    reason = _netns_unavailable()
    if reason is not None:
        pytest.skip(f"network namespace test: {reason}")
    namespace = f"p2prun-{os.getpid()}-{next(_counter)}"
    made = _ip("netns", "add", namespace)
    assert made.returncode == 0, made.stderr
    try:
        up = _ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        assert up.returncode == 0, up.stderr
        links = _ip("netns", "exec", namespace, "ip", "-o", "link", "show")
        assert [line.split(":")[1].strip() for line in links.stdout.splitlines()] == ["lo"]
        job = job_file(tmp_path, f"""
            import time

            def square(x):
                return x * x

            def main(cluster):
                time.sleep({DISCOVERY_WINDOW} + 1.0)  # long enough for the verdict
                return sum(cluster.map(square, range(100)))
        """)
        # The defaults: LAN preset, mDNS on, port 7946 (which `run` turns into any free port).
        done = subprocess.run(
            ["ip", "netns", "exec", namespace, *command(tmp_path, job, local=False)],
            env=environment(tmp_path), cwd=tmp_path, capture_output=True, text=True,
            timeout=TIMEOUT, check=False)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == sum(x * x for x in range(100))
        assert ALONE in done.stderr, done.stderr
        assert "ephemeral local peer" in done.stderr
        alone = next(line for line in done.stderr.splitlines() if ALONE in line)
        assert "(no network interface with a default route: loopback only)" in alone, alone
    finally:
        removed = _ip("netns", "del", namespace)
        assert removed.returncode == 0, removed.stderr
    assert namespace not in _ip("netns", "list").stdout
