"""Environments on a virtual LAN of `p2pcluster join` daemons (issue 12).

- A job's sibling module and package ship by themselves (no ``--include``).
- A job that imports a distribution only some peers have runs only there; the submitter
  names each excluded peer, and why, on stderr; `members --versions` shows the difference.
- Tasks that require a tag run only on the tagged peer, and wait while it is down.

The distribution is a real one, as far as ``importlib.metadata`` can tell: a package and its
``.dist-info`` in a directory the test puts on ``PYTHONPATH`` of some processes only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .conftest import ROOT, Peers, lan_tests, wait_until

pytestmark = lan_tests()
JOBS = Path(__file__).resolve().parent / "envjobs"
WORKERS = ("--workers", "1")


def make_dist(where: Path, version: str) -> Path:
    """A directory holding distribution ``p2ptestdist`` at ``version``; put it on
    ``PYTHONPATH`` and ``importlib.metadata`` finds it."""
    where.mkdir(parents=True)
    (where / "p2ptestdist").mkdir()
    (where / "p2ptestdist" / "__init__.py").write_text("def twice(x):\n    return 2 * x\n")
    info = where / f"p2ptestdist-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: p2ptestdist\nVersion: {version}\n")
    (info / "top_level.txt").write_text("p2ptestdist\n")
    (info / "RECORD").write_text("p2ptestdist/__init__.py,,\n")
    return where


def pythonpath(*dirs: Path) -> dict[str, str]:
    return {"PYTHONPATH": ":".join([str(ROOT), *map(str, dirs)])}


def run(peers: Peers, host: int, job: Path, *args: str, env: dict[str, str] | None = None,
        options: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """`p2pcluster run --daemon OPTIONS JOB ARGS` in ``host`` (``env`` added to the
    daemon's)."""
    argv = [sys.executable, "-m", "p2pcluster", "run", "--daemon", *options, str(job), *args]
    process: subprocess.Popen[str] = peers.lan.popen(
        host, argv, env={**peers.env(host, **peers.host_env(host)), **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process


def run_finished(process: subprocess.Popen[str], timeout: float
                 ) -> tuple[dict[str, Any], str]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"run exited {process.returncode}:\n{err}"
    result: dict[str, Any] = json.loads(out)
    return result, err


def test_a_jobs_sibling_module_and_package_ship_by_themselves(make_lan  # type: ignore[no-untyped-def]
                                                              ) -> None:
    peers = make_lan(2)
    for host in (1, 2):
        peers.start(host, *WORKERS, env=peers.host_env(host))
    peers.wait_everyone_sees([1, 2])
    n = 200
    process = run(peers, 1, JOBS / "siblings" / "job.py", str(n))
    result, err = run_finished(process, 90)
    assert result["values"] == [3 * i + i * i for i in range(n)]
    assert set(result["hosts"]) == {"h1", "h2"}, result["hosts"]
    assert "shipping helper.py, shapes/ with job.py" in err, err
    assert "ModuleNotFoundError" not in err


def test_a_script_using_cluster_ships_its_sibling_imports_too(make_lan  # type: ignore[no-untyped-def]
                                                              ) -> None:
    peers = make_lan(2)
    for host in (1, 2):
        peers.start(host, *WORKERS, env=peers.host_env(host))
    peers.wait_everyone_sees([1, 2])
    n = 200
    process = peers.lan.popen(
        1, [sys.executable, str(JOBS / "siblings" / "script.py"), str(n)],
        env=peers.env(1, **peers.host_env(1)), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    result, err = run_finished(process, 90)
    assert result["values"] == [3 * i + i * i for i in range(n)]
    assert set(result["hosts"]) == {"h1", "h2"}, result["hosts"]
    assert "shipping helper.py, shapes/ with script.py" in err, err


def test_a_job_runs_only_where_its_distribution_is(make_lan, tmp_path: Path  # type: ignore[no-untyped-def]
                                                   ) -> None:
    here = make_dist(tmp_path / "dist-1.2.3", "1.2.3")
    other = make_dist(tmp_path / "dist-2.0.0", "2.0.0")
    peers = make_lan(3)
    peers.start(1, *WORKERS, env=peers.host_env(1))  # no p2ptestdist
    peers.start(2, *WORKERS, env={**peers.host_env(2), **pythonpath(here)})
    peers.start(3, *WORKERS, env={**peers.host_env(3), **pythonpath(other)})
    peers.wait_everyone_sees([1, 2, 3])
    n = 120
    process = run(peers, 1, JOBS / "needsdist.py", str(n), env=pythonpath(here))
    result, err = run_finished(process, 90)
    assert result["values"] == [2 * i for i in range(n)]
    assert set(result["hosts"]) == {"h2"}, result["hosts"]
    assert "p2pcluster: h1 cannot take needsdist.py's tasks: p2ptestdist missing" in err, err
    assert ("p2pcluster: h3 cannot take needsdist.py's tasks: p2ptestdist 2.0.0 "
            "(here 1.2.3)") in err, err

    listing = peers.cli(1, "members", "--versions", "--package", "p2ptestdist")
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line.split()[1:] for line in listing.stdout.splitlines()
            if line.startswith("p2ptestdist")}
    assert rows == {"p2ptestdist": ["-", "1.2.3", "2.0.0"]}, listing.stdout
    assert "3 of 3 live peers answered" in listing.stdout, listing.stdout


def test_a_job_no_peer_can_run_fails_at_once_with_the_list(make_lan, tmp_path: Path  # type: ignore[no-untyped-def]
                                                           ) -> None:
    here = make_dist(tmp_path / "dist-1.2.3", "1.2.3")
    peers = make_lan(2)
    for host in (1, 2):
        peers.start(host, *WORKERS, env=peers.host_env(host))
    peers.wait_everyone_sees([1, 2])
    begun = time.monotonic()
    process = run(peers, 1, JOBS / "needsdist.py", "10", env=pythonpath(here))
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1, (out, err)
    assert time.monotonic() - begun < 20
    assert "no live peer can run this job's tasks" in err, err
    assert "h1: p2ptestdist missing" in err and "h2: p2ptestdist missing" in err, err


def ended(logs: Path, host: str) -> int:
    try:
        return (logs / f"{host}.log").read_text().count("end ")
    except FileNotFoundError:
        return 0


def test_tasks_that_require_a_tag_run_only_there_and_wait_while_it_is_down(  # type: ignore[no-untyped-def]
        make_lan, tmp_path: Path) -> None:
    logs = tmp_path / "tasks"
    logs.mkdir()
    peers = make_lan(3)
    for host in (1, 3):
        peers.start(host, *WORKERS, env=peers.host_env(host))
    peers.wait_everyone_sees([1, 3])
    n = 300
    process = run(peers, 1, JOBS / "tagged.py", str(n), "0.05", str(logs),
                  options=("--requires", "gpu"))
    time.sleep(4.0)  # no peer has the tag: nothing runs, nothing fails
    assert process.poll() is None, process.communicate()
    assert not any(logs.iterdir()), list(logs.iterdir())
    peers.start(2, *WORKERS, "--tag", "gpu", env=peers.host_env(2))
    wait_until(lambda: ended(logs, "h2") >= 20, 60, "h2 runs tasks", interval=0.05)
    peers.kill9_all(2)  # the tagged peer crashes mid-job: its tasks wait again
    wait_until(lambda: peers.status_of(1, "h2") == {"dead"}, 30, "h1 declares h2 dead")
    time.sleep(2.0)
    assert process.poll() is None, process.communicate()
    assert ended(logs, "h1") == ended(logs, "h3") == 0
    peers.start(2, *WORKERS, "--tag", "gpu", env=peers.host_env(2))
    result, err = run_finished(process, 120)
    assert result["values"] == [i * i for i in range(n)]
    assert set(result["hosts"]) == {"h2"}, result["hosts"]
    assert ended(logs, "h1") == ended(logs, "h3") == 0
    waits = err.count("p2pcluster: tagged.py's tasks wait: no live peer has tag gpu")
    assert waits == 2, err
    rows = {r["name"]: r for r in peers.members(1)}
    assert rows["h2"]["tags"] == ["gpu"] and rows["h1"]["tags"] == []
    assert "gpu" in peers.cli(1, "members").stdout
