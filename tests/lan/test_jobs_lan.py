"""`p2pcluster run` through a daemon on a virtual LAN: work stealing with real processes.

Three daemons with one worker each, in their own network namespaces (and their own code
caches, so the job's code travels from its owner). The job files in ``jobs/`` log, per host,
when each task starts and ends (or beats while it runs), so a test can follow the work while
it runs and check afterwards where each task ran; every task reads ``$P2P_TEST_HOST``, which
each daemon passes on to its workers. "Killing a host" kills every process in its namespace,
as a crash of the machine would.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from .conftest import JOBS, Peers, lan_tests, wait_until

pytestmark = lan_tests()
WORKERS = ("--workers", "1")


def read_log(path: Path) -> list[tuple[str, int, float]]:
    """``(kind, task, time)`` lines of a job's host log; [] before the first one."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    rows = []
    for line in text.split("\n")[:-1]:  # only complete lines
        kind, task, when = line.split()
        rows.append((kind, int(task), float(when)))
    return rows


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def state(pid: int) -> str:
    """A process's state letter (R, S, T for stopped...); X if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "X"


def count(path: Path, kind: str) -> int:
    return sum(1 for k, _, _ in read_log(path) if k == kind)


def start_peers(peers: Peers, hosts: list[int], *args: str) -> None:
    for host in hosts:
        peers.start(host, *WORKERS, *args, env=peers.host_env(host))


def logged_at(peers: Peers, host: int, words: str) -> float | None:
    """When (``time.time()``) a daemon started with ``--json-logs`` first logged a message
    containing ``words``; None if it has not."""
    for line in peers.log(host).splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if words in entry["message"]:
            stamp = datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
            return stamp.replace(tzinfo=UTC).timestamp()
    return None


def finish(run: Any, timeout: float) -> dict[str, Any]:
    """Wait for a `run` client; its printed result, after checking it exited 0."""
    try:
        out, err = run.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        run.kill()
        out, err = run.communicate()
        pytest.fail(f"the job did not finish within {timeout} s; run's stderr:\n{err}")
    assert run.returncode == 0, f"run exited {run.returncode}:\n{err}"
    assert "submitting through the local daemon" in err, err
    result: dict[str, Any] = json.loads(out)
    return result


def assert_serving(peers: Peers, host: int, alive: set[str]) -> None:
    """The job's owner is still up after its client left, and sees ``alive`` alive."""
    assert peers.processes[host].poll() is None, peers.log(host)[-3000:]
    listing = peers.cli(host, "members", "--json")
    assert listing.returncode == 0, listing.stderr
    assert {r["name"] for r in json.loads(listing.stdout)["members"]
            if r["status"] == "alive"} == alive


def check_squares(result: dict[str, Any], n: int) -> None:
    assert result["n"] == n
    assert result["sum"] == (n - 1) * n * (2 * n - 1) // 6
    assert result["values"] == [i * i for i in range(n)]
    assert set(result["hosts"]) <= {"h1", "h2", "h3"}


def test_a_peer_killed_mid_job_loses_no_result(make_lan, tmp_path: Path  # type: ignore[no-untyped-def]
                                               ) -> None:
    peers = make_lan(3)
    logs = tmp_path / "tasks"
    logs.mkdir()
    start_peers(peers, [1, 2, 3], "--json-logs")
    peers.wait_everyone_sees([1, 2, 3])
    n, seconds = 300, 0.04
    begun = time.monotonic()
    run = peers.run_job(1, JOBS / "tally.py", str(n), str(seconds), str(logs))
    h3 = logs / "h3.log"
    wait_until(lambda: count(h3, "end") >= 10, 30, "h3 finishes 10 tasks", interval=0.02)
    pids = peers.namespace_pids(3)  # its daemon and its worker
    caught: list[int] = []

    def stopped_mid_task() -> bool:
        """Freeze h3; keep it frozen if its worker is between a task's start and end."""
        signal_all(pids, signal.SIGSTOP)
        wait_until(lambda: all(state(pid) in "TtXZ" for pid in pids), 5, "h3 stops",
                   interval=0.001)
        rows = read_log(h3)
        if rows and rows[-1][0] == "start":
            caught.append(rows[-1][1])
            return True
        signal_all(pids, signal.SIGCONT)
        return False

    wait_until(stopped_mid_task, 10, "h3 is caught in the middle of a task", interval=0.005)
    peers.kill9_all(3, pids)
    killed = time.monotonic()
    killed_at = time.time()
    h3_rows = read_log(h3)
    started = {task for kind, task, _ in h3_rows if kind == "start"}
    ended = {task for kind, task, _ in h3_rows if kind == "end"}
    assert started - ended == set(caught)
    print(f"killed h3 {killed - begun:.2f} s into the job, after it ran {len(ended)} tasks, "
          f"in the middle of task {caught[0]}")

    seen = wait_until(lambda: all(peers.status_of(h, "h3") == {"dead"} for h in (1, 2)), 20,
                      "h1 and h2 declare h3 dead")
    declared = [logged_at(peers, h, "peer h3 (10.77.0.3:7946) failed: declared dead")
                or math.nan for h in (1, 2)]
    print(f"h1, h2 declared h3 dead {', '.join(f'{t - killed_at:.2f}' for t in declared)} s "
          f"after the kill (by their logs); `members` showed it {seen:.2f} s after the kill")
    result = finish(run, 60)
    print(f"job done {time.monotonic() - begun:.2f} s after it started "
          f"({time.monotonic() - killed:.2f} s after the kill)")

    check_squares(result, n)
    hosts = result["hosts"]
    by_h3 = {i for i, host in enumerate(hosts) if host == "h3"}
    per_host = {h: hosts.count(h) for h in ("h1", "h2", "h3")}
    runs = sum(count(logs / f"{h}.log", "start") for h in ("h1", "h2", "h3"))
    print(f"results kept per host: {per_host}; {runs} task runs for {n} tasks")
    assert by_h3, "h3 ran tasks, but the owner kept none of its results"
    assert by_h3 <= ended  # what the owner kept from h3, h3 did finish
    # The task h3 died in the middle of was requeued by the owner and run by a survivor.
    assert hosts[caught[0]] in {"h1", "h2"}
    assert count(logs / "h1.log", "end") + count(logs / "h2.log", "end") >= n - len(by_h3)
    assert_serving(peers, 1, {"h1", "h2"})


def test_a_peer_that_joins_mid_job_gets_work(make_lan, tmp_path: Path  # type: ignore[no-untyped-def]
                                             ) -> None:
    peers = make_lan(3)
    logs = tmp_path / "tasks"
    logs.mkdir()
    start_peers(peers, [1, 2])
    peers.wait_everyone_sees([1, 2])
    n, seconds = 400, 0.03
    begun = time.monotonic()
    run = peers.run_job(1, JOBS / "tally.py", str(n), str(seconds), str(logs))
    wait_until(lambda: count(logs / "h1.log", "end") >= 5 and count(logs / "h2.log", "end") >= 5,
               30, "h1 and h2 both run tasks")
    done_before = count(logs / "h1.log", "end") + count(logs / "h2.log", "end")
    joined_at = time.time()
    start_peers(peers, [3])
    print(f"h3 started {time.monotonic() - begun:.2f} s into the job, {done_before}/{n} done")
    result = finish(run, 60)
    print(f"job done {time.monotonic() - begun:.2f} s after it started")

    check_squares(result, n)
    hosts = result["hosts"]
    per_host = {h: hosts.count(h) for h in ("h1", "h2", "h3")}
    h3_rows = read_log(logs / "h3.log")
    print(f"results kept per host: {per_host}; h3's first task started "
          f"{min(t for _, _, t in h3_rows) - joined_at:.2f} s after its daemon did"
          if h3_rows else f"results kept per host: {per_host}; h3 ran nothing")
    assert per_host["h3"] > 0, "h3 joined mid-job but ran none of its tasks"
    assert done_before < n
    assert all(t > joined_at for _, _, t in h3_rows)
    assert_serving(peers, 1, {"h1", "h2", "h3"})


def test_the_owners_death_stops_its_tasks_everywhere(make_lan, tmp_path: Path  # type: ignore[no-untyped-def]
                                                     ) -> None:
    peers = make_lan(3)
    logs = tmp_path / "tasks"
    logs.mkdir()
    start_peers(peers, [1, 2, 3], "--json-logs")
    peers.wait_everyone_sees([1, 2, 3])
    n, seconds, step = 40, 2.0, 0.05  # 80 s of work: h2 and h3 hold plenty when h1 dies
    run = peers.run_job(1, JOBS / "heartbeat.py", str(n), str(seconds), str(step), str(logs))
    survivors = {2: logs / "h2.log", 3: logs / "h3.log"}
    wait_until(lambda: all(count(log, "beat") >= 6 for log in survivors.values()), 30,
               "h2 and h3 both run tasks of h1's job")
    killed = time.time()
    peers.kill9_all(1)  # the daemon, its worker and the `run` client
    run.wait(timeout=10)

    # Poll each survivor until it no longer lists h1 alive, noting the queue it advertises.
    seen_dead: dict[int, float] = {}
    queue_before: dict[int, int] = {}
    deadline = time.monotonic() + 20
    while len(seen_dead) < len(survivors):
        assert time.monotonic() < deadline, f"only {sorted(seen_dead)} declared h1 dead in 20 s"
        for host in survivors.keys() - seen_dead.keys():
            rows = peers.members(host)
            if {r["status"] for r in rows if r["name"] == "h1"} == {"dead"}:
                seen_dead[host] = time.time()
            elif rows:
                queue_before[host] = next(r["queue"] for r in rows if r["name"] == f"h{host}")
        time.sleep(0.05)
    time.sleep(max(0.0, max(seen_dead.values()) + 2.0 - time.time()))
    now = time.time()

    interrupted = 0
    for host, log in survivors.items():
        declared = logged_at(peers, host, "peer h1 (10.77.0.1:7946) failed: declared dead")
        dropped = logged_at(peers, host, ": its owner left or died")
        assert declared is not None, f"h{host} never logged h1's death"
        assert dropped is not None, f"h{host} never dropped the job of its dead owner"
        rows = read_log(log)
        beats = [t for kind, _, t in rows if kind == "beat"]
        began = {task: t for kind, task, t in reversed(rows) if kind == "beat"}
        ended = {task for kind, task, _ in rows if kind == "end"}
        # Tasks under way at the drop, with more than 0.1 s to go: they must not finish.
        under_way = [task for task, t in began.items() if t <= dropped < t + seconds - 0.1]
        last = max(beats)
        print(f"h{host}: h1 declared dead {declared - killed:.2f} s after the kill, its job "
              f"dropped {dropped - declared:+.3f} s from that, seen dead by `members` "
              f"{seen_dead[host] - killed:.2f} s after the kill (advertised queue before: "
              f"{queue_before.get(host)}); last beat {last - dropped:+.3f} s from the drop; "
              f"task(s) {under_way} under way at the drop")
        assert abs(dropped - declared) < 0.5  # dropped when membership says so
        # Busy on the orphaned job up to the drop, so there was something to stop...
        assert any(dropped - 0.3 < t <= dropped for t in beats), \
            f"h{host} was not running h1's tasks when it dropped them"
        # ...and stopped right then: the task under way never ends, no beat follows.
        assert not set(under_way) & ended, f"h{host} let a task of the dead owner finish"
        assert last < dropped + 0.25, f"h{host} kept running h1's tasks after dropping them"
        assert last < seen_dead[host]
        assert now - last > 2.0
        interrupted += len(under_way)
    assert interrupted, "neither h2 nor h3 was in the middle of a task when h1 was declared dead"
    took = wait_until(lambda: all(r["queue"] == 0 for h in survivors for r in peers.members(h)
                                  if r["name"] in {"h2", "h3"}),
                      5, "h2 and h3 advertise empty queues")
    print(f"queues advertised empty {took:.2f} s after that")


BIG = 200 * 1024 * 1024


def test_200_mb_argument_and_result_cross_between_namespace_peers(  # type: ignore[no-untyped-def]
        make_lan) -> None:
    """h1's daemon has no worker, so both tasks run on h2: the argument goes from the `run`
    client to h1's daemon in control-protocol chunks, and from h1 to h2 on a data stream; the
    result comes back the same two ways. Both arrive intact (SHA-256 on each side)."""
    peers = make_lan(2)
    peers.start(1, "--workers", "0", env=peers.host_env(1))
    peers.start(2, "--workers", "1", env=peers.host_env(2))
    peers.wait_everyone_sees([1, 2])
    begun = time.monotonic()
    run = peers.run_job(1, JOBS / "bigvalues.py", str(BIG))
    result = finish(run, 240)
    print(f"200 MB there and back in {time.monotonic() - begun:.1f} s: {result}")
    assert result["arg"]["value"] == {"same": True, "host": "h2"}, result
    assert result["result"]["value"] == {"same": True}, result
    assert_serving(peers, 1, {"h1", "h2"})


def test_values_over_a_peer_s_limit_fail_with_the_named_error(  # type: ignore[no-untyped-def]
        make_lan) -> None:
    """h2, which runs the tasks, takes at most 100 MB: the 200 MB argument is refused there
    before a byte of it is buffered, and the 200 MB result fails where it was made. Each
    failure names the sizes and the setting, within 5 s."""
    peers = make_lan(2)
    peers.start(1, "--workers", "0", env=peers.host_env(1))
    peers.start(2, "--workers", "1",
                env={**peers.host_env(2), "P2PCLUSTER_MAX_VALUE_SIZE": str(100 * 2**20)})
    peers.wait_everyone_sees([1, 2])
    run = peers.run_job(1, JOBS / "bigvalues.py", str(BIG))
    result = finish(run, 240)
    print(result)
    for side in ("arg", "result"):
        error = result[side]["error"]
        assert "over the limit of 104,857,600 bytes on" in error, (side, error)
        assert "max_value_size" in error, (side, error)
        assert result[side]["seconds"] < 5, (side, result[side])
    assert "on peer h2" in result["arg"]["error"]
    assert "TaskError: ValueTooLarge: the result of produce: 209,715,205 bytes" in (
        result["result"]["error"])
    assert "on peer h2, which ran the task" in result["result"]["error"]
