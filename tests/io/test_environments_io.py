"""Environments through a real `p2pcluster join` daemon on loopback (issue 12): the job's
sibling modules ship by themselves, a job nobody can run fails at once with the list,
`members --versions` answers, and tasks that require a tag no peer has wait.

The LAN versions, with several peers, are in ``tests/lan/test_environments_lan.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pcluster._secret import new_secret, write_secret_file

from .daemons import ROOT, Daemon, running_daemon

JOBS = ROOT / "tests" / "lan" / "envjobs"


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    secret = tmp_path / "secret"
    write_secret_file(secret, (new_secret(),))
    for name in [n for n in os.environ if n.startswith("P2PCLUSTER_")]:
        monkeypatch.delenv(name)
    with running_daemon(tmp_path, secret, f"env-{os.getpid()}", monkeypatch) as started:
        yield started


def cli(daemon: Daemon, *args: str, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2pcluster", *args,
                           "--cluster", daemon.cluster],
                          env={**daemon.env, **(env or {}),  # a cache of its own, empty
                               "XDG_CACHE_HOME": str(daemon.log.parent / "client-cache")},
                          capture_output=True, text=True, timeout=timeout, check=False)


def make_dist(where: Path, version: str) -> Path:
    (where / "p2ptestdist").mkdir(parents=True)
    (where / "p2ptestdist" / "__init__.py").write_text("def twice(x):\n    return 2 * x\n")
    info = where / f"p2ptestdist-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: p2ptestdist\nVersion: {version}\n")
    (info / "top_level.txt").write_text("p2ptestdist\n")
    return where


def test_a_jobs_sibling_imports_ship_through_the_daemon(daemon: Daemon) -> None:
    done = cli(daemon, "run", "--daemon", str(JOBS / "siblings" / "job.py"), "40")
    assert done.returncode == 0, done.stderr + daemon.log.read_text()[-3000:]
    assert json.loads(done.stdout)["values"] == [3 * i + i * i for i in range(40)]
    assert "shipping helper.py, shapes/ with job.py" in done.stderr


def test_a_job_nobody_can_run_fails_at_once_and_versions_show_why(daemon: Daemon,
                                                                  tmp_path: Path) -> None:
    dist = make_dist(tmp_path / "dist", "1.2.3")
    env = {"PYTHONPATH": f"{ROOT}:{dist}"}
    begun = time.monotonic()
    done = cli(daemon, "run", "--daemon", str(JOBS / "needsdist.py"), "10", env=env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert time.monotonic() - begun < 30
    assert "p2pcluster: d1 cannot take needsdist.py's tasks: p2ptestdist missing" in done.stderr
    assert "no live peer can run this job's tasks, this one included: d1: p2ptestdist " \
           "missing" in done.stderr, done.stderr
    listing = cli(daemon, "members", "--versions", "--package", "p2ptestdist", "--json")
    assert listing.returncode == 0, listing.stderr
    [row] = json.loads(listing.stdout)["peers"]
    assert row["name"] == "d1" and row["packages"]["p2ptestdist"] == ""
    assert row["python"] == ".".join(map(str, sys.version_info[:3]))
    assert row["packages"]["cbor2"]  # installed: a version


def test_tasks_that_require_a_tag_nobody_has_wait(daemon: Daemon, tmp_path: Path) -> None:
    logs = tmp_path / "tasks"
    logs.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "p2pcluster", "run", "--daemon", "--cluster", daemon.cluster,
         "--requires", "gpu", str(JOBS / "tagged.py"), "5", "0.01", str(logs)],
        env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(5.0)
        assert process.poll() is None  # waiting, not failed
        assert not any(logs.iterdir())
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert "p2pcluster: tagged.py's tasks wait: no live peer has tag gpu" in err, err
