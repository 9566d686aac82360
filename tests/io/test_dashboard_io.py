"""The dashboard of a `p2pcluster join` daemon on loopback: its JSON API, /metrics, the event
stream, its refusals, and `p2pcluster top` under a pseudo-terminal.

The browser test, the token on a LAN address and `jobs --json` while a job runs are in
``tests/lan/test_dashboard_lan.py``.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import pty
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pcluster import Cluster, Config
from p2pcluster._control_client import request_daemon
from p2pcluster._secret import new_secret, write_secret_file

from .daemons import Daemon, running_daemon

pytestmark = pytest.mark.skipif(importlib.util.find_spec("hypercorn") is None,
                                reason="the dashboard extra is not installed "
                                       "(pip install -e '.[dashboard]')")
JOBFUNCS = Path(__file__).with_name("jobfuncs.py")
sys.path.insert(0, str(JOBFUNCS.parent))
import jobfuncs  # noqa: E402

WAIT = 30
MEMBER_KEYS = {"name": str, "id": str, "host": str, "port": int, "status": str,
               "incarnation": int, "workers": int, "queue": int, "tags": list,
               "version": str, "age": float, "self": bool, "cpu": (float, type(None)),
               "rss": (int, type(None)), "load": (float, type(None)),
               "python": str, "system": str, "machine": str, "slots": (int, type(None)),
               "busy": (int, type(None)), "queued": (int, type(None)),
               "answered": (bool, type(None)), "error": str}
JOB_KEYS = {"id": str, "owner": str, "owner_id": str, "function": str, "label": str,
            "state": str, "total": int, "done": int, "errors": int, "started": float,
            "ended": (float, type(None)), "elapsed": (float, int),
            "rate": (float, int, type(None)), "eta": (float, int, type(None)),
            "done_by": dict, "held_by": dict, "stale": bool}
TASK_KEYS = {"peer": str, "slot": int, "job": str, "function": str, "task": int,
             "started": float, "ended": float, "seconds": float, "status": int}


def check(row: dict[str, Any], schema: dict[str, Any]) -> None:
    assert set(row) == set(schema), set(row) ^ set(schema)
    for key, kind in schema.items():
        assert isinstance(row[key], kind), (key, row[key])


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Daemon, str]]:
    secret = tmp_path / "secret"
    write_secret_file(secret, (new_secret(),))
    cluster = f"dash-{os.getpid()}-{time.monotonic_ns()}"
    with running_daemon(tmp_path, secret, cluster, monkeypatch, workers=2,
                        extra=("--dashboard", "127.0.0.1:0")) as started:
        url = trio.run(request_daemon, started.control, "dashboard")["url"]
        yield started, url


def get(url: str, headers: dict[str, str] | None = None,
        method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def get_json(url: str) -> Any:
    status, headers, body = get(url)
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    return json.loads(body)


def run_shouts(tmp_path: Path, daemon: Daemon) -> None:
    config = Config.local(mdns=False, port=0, cluster=daemon.cluster,
                          secret_file=str(tmp_path / "secret"))
    with Cluster(config, daemon=True, include=[JOBFUNCS]) as cluster:
        assert list(cluster.map(jobfuncs.shout, range(20), timeout=WAIT)) == list(range(20))
        failing = cluster.submit(jobfuncs.shout, 13, 13)
        assert isinstance(failing.exception(timeout=WAIT), Exception)


def test_the_json_endpoints(daemon: tuple[Daemon, str], tmp_path: Path) -> None:
    started, url = daemon
    assert url.startswith("http://127.0.0.1:") and "token" not in url
    began = time.time()
    run_shouts(tmp_path, started)
    members = get_json(url + "api/members")
    assert members["cluster"] == started.cluster and isinstance(members["time"], float)
    (me,) = members["members"]
    check(me, MEMBER_KEYS)
    assert me["self"] and me["name"] == "d1" and me["slots"] == 2 and me["answered"]
    assert me["python"].endswith(" " + ".".join(map(str, sys.version_info[:3])))

    jobs = get_json(url + "api/jobs")
    assert set(jobs) == {"time", "jobs", "peers"}
    assert jobs["peers"] == {"d1": {"id": me["id"], "answered": True, "error": ""}}
    (job, failed) = sorted((j for j in jobs["jobs"] if j["function"] == "shout"),
                           key=lambda j: -j["total"])
    check(job, JOB_KEYS)
    assert (job["state"], job["done"], job["total"], job["errors"]) == ("done", 20, 20, 0)
    assert (failed["done"], failed["total"], failed["errors"]) == (1, 1, 1)
    assert job["done_by"] == {"d1": 20} and job["owner"] == "d1" and job["eta"] is None

    tasks = get_json(f"{url}api/tasks?since={began - 1}")
    assert set(tasks) == {"time", "since", "tasks", "peers"}
    shouts = [t for t in tasks["tasks"] if t["job"] == job["id"]]
    assert sorted(t["task"] for t in shouts) == list(range(20))
    for task in shouts:
        check(task, TASK_KEYS)
        assert task["slot"] in (0, 1) and task["ended"] >= task["started"] >= began - 1
        assert task["status"] == 0
    assert [t["ended"] for t in tasks["tasks"]] == sorted(t["ended"] for t in tasks["tasks"])
    assert get_json(f"{url}api/tasks?since={time.time() + 60}")["tasks"] == []

    detail = get_json(f"{url}api/jobs/{job['id']}")
    assert set(detail) == {"job", "by_peer", "slowest", "output", "peers"}
    assert detail["job"]["id"] == job["id"]
    assert detail["by_peer"]["d1"]["tasks"] == 20 and detail["by_peer"]["d1"]["errors"] == 0
    assert len(detail["slowest"]) == 10
    printed = {t["task"]: (t["stdout"], t["stderr"]) for t in detail["output"]}
    assert printed[7] == ("shout 7\n", "whisper 7\n")
    failure = get_json(f"{url}api/jobs/{failed['id']}")
    assert failure["by_peer"]["d1"] == {"tasks": 1, "errors": 1,
                                        "seconds": failure["by_peer"]["d1"]["seconds"]}
    assert failure["output"][0]["stdout"] == "shout 13\n"
    assert failure["slowest"][0]["status"] == 1  # TaskStatus.ERROR


def test_refusals(daemon: tuple[Daemon, str]) -> None:
    _, url = daemon
    assert get(url + "api/tasks?since=soon")[0] == 400
    assert get(url + "api/tasks?since=nan")[0] == 400
    assert get(url + "api/nothing")[0] == 404
    assert get(url + "api/jobs/not-hex")[0] == 404
    assert get(url + "api/jobs/" + "00" * 16)[0] == 404
    assert get(url + "static/../../secret")[0] == 404
    assert get(url + "api/members", method="POST")[0] == 405
    # DNS rebinding: a page elsewhere that points a name at 127.0.0.1 is refused.
    status, _, body = get(url + "api/members", headers={"Host": "evil.example:8797"})
    assert status == 403 and b"loopback only" in body
    status, headers, _ = get(url)
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in headers["content-security-policy"]


def test_assets_ship_in_the_package_and_reference_nothing_outside(
        daemon: tuple[Daemon, str]) -> None:
    _, url = daemon
    page = get(url)[2].decode()
    for asset in ("static/dashboard.js", "static/dashboard.css"):
        assert asset in page
        status, _, body = get(url + asset)
        assert status == 200 and len(body) > 1000
        assert b"http://" not in body and b"https://" not in body  # no CDN
    assert "http://" not in page and "https://" not in page


def test_metrics_parse_as_prometheus_text(daemon: tuple[Daemon, str], tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    started, url = daemon
    run_shouts(tmp_path, started)
    status, headers, body = get(url + "metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}

    def value(name: str, **labels: str) -> float:
        (sample,) = [s for s in families[name].samples
                     if s.name.startswith(name) and all(s.labels.get(k) == v
                                                         for k, v in labels.items())]
        return float(sample.value)

    assert value("p2pcluster_peers", state="alive") == 1
    assert value("p2pcluster_peers", state="dead") == 0
    assert value("p2pcluster_tasks_run") >= 20  # a counter: the parser drops "_total"
    assert families["p2pcluster_tasks_run"].type == "counter"
    assert value("p2pcluster_steals", result="granted") >= 0
    assert value("p2pcluster_bytes_sent", transport="udp") >= 0
    assert value("p2pcluster_rejected_packets", reason="auth") == 0
    assert value("p2pcluster_workers") == 2
    assert families["p2pcluster_info"].samples[0].labels["name"] == "d1"


def test_the_event_stream_sends_snapshots(daemon: tuple[Daemon, str]) -> None:
    _, url = daemon
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=WAIT)
    connection.request("GET", "/api/stream")
    response = connection.getresponse()
    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream"
    snapshots = []
    began = time.monotonic()
    while len(snapshots) < 2:
        line = response.readline().decode()
        if line.startswith("data: "):
            snapshots.append((time.monotonic(), json.loads(line[6:])))
    connection.close()
    first = snapshots[0][1]
    assert {"members", "jobs", "rows", "bars", "window", "cluster", "self", "time"} <= set(first)
    assert first["rows"] == [{"peer": "d1", "slots": 2}] and first["window"] == 60
    assert 0.5 < snapshots[1][0] - snapshots[0][0] < 5, "about one a second"
    assert snapshots[0][0] - began < 10


def test_an_explicit_address_in_use_is_an_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runtime = tmp_path / "run"
        runtime.mkdir(mode=0o700)
        secret = tmp_path / "secret"
        write_secret_file(secret, (new_secret(),))
        env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "XDG_CONFIG_HOME": str(tmp_path)}
        result = subprocess.run(
            [sys.executable, "-m", "p2pcluster", "join", "--preset", "local", "--no-mdns",
             "--port", "0", "--workers", "1", "--dashboard", f"127.0.0.1:{port}",
             "--secret-file", str(secret)],
            check=False, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert f"the dashboard's address 127.0.0.1:{port} is in use" in result.stderr


def test_top_draws_under_a_pseudo_terminal_and_q_quits(daemon: tuple[Daemon, str]) -> None:
    started, _ = daemon
    pid, fd = pty.fork()
    if pid == 0:  # the child: `p2pcluster top` on the pseudo-terminal
        os.environ.update(started.env, TERM="xterm", LINES="40", COLUMNS="140")
        os.execv(sys.executable, [sys.executable, "-m", "p2pcluster", "top", "--control",
                                  str(started.control), "--interval", "0.5"])
    screen = b""
    try:
        deadline = time.monotonic() + WAIT
        while not (b"NAME" in screen and b"d1 *" in screen and b"q quits" in screen):
            assert time.monotonic() < deadline, screen[-2000:]
            if select.select([fd], [], [], 0.5)[0]:
                screen += os.read(fd, 65536)
        os.write(fd, b"q")
        deadline = time.monotonic() + WAIT
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
            assert time.monotonic() < deadline, "q did not quit top"
            if select.select([fd], [], [], 0.2)[0]:
                with contextlib.suppress(OSError):
                    screen += os.read(fd, 65536)
        assert os.waitstatus_to_exitcode(done[1]) == 0
    finally:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
        os.close(fd)


@pytest.mark.parametrize("command", [["jobs"], ["jobs", "--json"], ["top"], ["dashboard"]])
def test_the_viewing_commands_without_a_daemon_say_how_to_start_one(
        tmp_path: Path, command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "p2pcluster", *command, "--control", str(tmp_path / "none.sock")],
        check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, "TERM": "xterm"})
    assert result.returncode == 1 and result.stdout == ""
    assert "no p2pcluster peer is running" in result.stderr
    assert "p2pcluster join" in result.stderr


def test_jobs_table_through_the_daemon(daemon: tuple[Daemon, str], tmp_path: Path) -> None:
    started, _ = daemon
    result = subprocess.run([sys.executable, "-m", "p2pcluster", "jobs", "--control",
                             str(started.control)], check=False, capture_output=True,
                            text=True, timeout=60, env=started.env)
    assert result.returncode == 0 and "no jobs yet" in result.stdout
    run_shouts(tmp_path, started)
    deadline = time.monotonic() + 10  # the daemon ends the job just after the last result
    while True:
        result = subprocess.run([sys.executable, "-m", "p2pcluster", "jobs", "--control",
                                 str(started.control)], check=False, capture_output=True,
                                text=True, timeout=60, env=started.env)
        lines = result.stdout.splitlines()
        done = any("20/20 100%" in line and "done" in line for line in lines)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert lines[0].split()[:3] == ["JOB", "OWNER", "FUNCTION"], result.stdout
    assert done, result.stdout
    assert "    ran by    d1: 20" in lines


def test_dashboard_open_hands_the_url_to_the_browser(daemon: tuple[Daemon, str],
                                                     tmp_path: Path) -> None:
    started, url = daemon
    opened = tmp_path / "opened"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    result = subprocess.run([sys.executable, "-m", "p2pcluster", "dashboard", "--open",
                             "--control", str(started.control)], check=False,
                            capture_output=True, text=True, timeout=60,
                            env={**started.env, "BROWSER": str(browser)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == url
    deadline = time.monotonic() + 10
    while not opened.exists():
        assert time.monotonic() < deadline, "the browser was not started"
        time.sleep(0.05)
    assert opened.read_text().strip() == url
