"""NumPy arrays and shared values through `p2pcluster join` daemons on a virtual LAN.

h1's daemon owns the jobs and has no workers, so every array crosses the link to the peers
that run the tasks (h2, and h3 when it joins). The job file is ``jobs/arrays.py``; a test
reads a daemon's sharing counters and peak RSS through its control socket.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from p2pcluster._cpu import cpu_has_aes

from .conftest import JOBS, Peers, lan_tests, wait_until
from .test_jobs_lan import finish

pytest.importorskip("numpy")
pytestmark = lan_tests()
MB = 2**20

STATUS = ("import json, os, pathlib, trio; from p2pcluster._control_client import request_daemon;"
          " from p2pcluster._places import control_path;"
          " print(json.dumps(trio.run(request_daemon, control_path('default'), 'status')))")


def status(peers: Peers, host: int) -> dict[str, Any]:
    """The answer of ``host``'s daemon to a ``status`` request."""
    done = peers.lan.run(host, [sys.executable, "-c", STATUS], env=peers.env(host), timeout=30)
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def sharing(peers: Peers, host: int) -> dict[str, int]:
    """The sharing counters of ``host``'s daemon (see SharingStatistics)."""
    counters: dict[str, int] = status(peers, host)["sharing"]
    return counters


def ciphers(peers: Peers, host: int) -> tuple[int, int]:
    """How many of ``host``'s streams used AES-256-GCM, and how many ChaCha20-Poly1305."""
    wire = status(peers, host)["wire"]
    aes = wire["streams_aes_gcm"]
    return aes, wire["streams_opened"] + wire["streams_accepted"] - aes


def peak_rss_mb(peers: Peers, host: int) -> float:
    """The daemon's peak resident set (VmHWM), in MiB."""
    status = open(f"/proc/{peers.processes[host].pid}/status").read()  # noqa: SIM115
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def start(peers: Peers, host: int, workers: int) -> None:
    peers.start(host, "--workers", str(workers), env=peers.host_env(host))


def test_a_1_gib_map_over_arrays_is_exact(make_lan: Any) -> None:  # 64 x 16 MiB
    peers = make_lan(2)
    start(peers, 1, 0)
    start(peers, 2, 2)
    peers.wait_everyone_sees([1, 2])
    result = finish(peers.run_job(1, JOBS / "arrays.py", "map", "64", "16"), 600)
    owner, runner = peak_rss_mb(peers, 1), peak_rss_mb(peers, 2)
    print(f"1 GiB map: {result['wall']:.1f} s, {result['bytes'] / result['wall'] / 1e9:.2f}"
          f" GB/s; peak RSS: client {result['peak_mb']:.0f} MiB, owner daemon {owner:.0f} "
          f"MiB, h2 daemon {runner:.0f} MiB")
    assert result["exact"] is True and result["hosts"] == ["h2"]
    assert result["bytes"] == 1024 * MB
    # The owner daemon holds the job's arguments (1 GiB) until their tasks are done.
    assert owner < 2 * 1024 + 200, owner


def test_a_large_result_is_sealed_from_the_worker_s_shared_memory(make_lan: Any) -> None:
    """A 128 MiB array made by h2's worker comes back exact through h1's daemon, and h2's
    daemon seals it from the segment the worker placed it in: its peak RSS grows by the
    segment's pages it reads, not by a second, joined copy as well."""
    peers = make_lan(2)
    start(peers, 1, 0)
    start(peers, 2, 1)
    peers.wait_everyone_sees([1, 2])
    before = peak_rss_mb(peers, 2)
    result = finish(peers.run_job(1, JOBS / "arrays.py", "result", "128"), 300)
    grew = peak_rss_mb(peers, 2) - before
    print(f"128 MiB result: h2 daemon's peak RSS grew by {grew:.0f} MiB")
    assert result == {"exact": True, "host": "h2"}
    assert grew < 1.5 * 128, grew


def test_a_shared_array_crosses_the_link_once(make_lan: Any) -> None:
    """256 MiB shared by 256 tasks: h2 fetches it once, and h1 serves it once."""
    peers = make_lan(2)
    start(peers, 1, 0)
    start(peers, 2, 2)
    peers.wait_everyone_sees([1, 2])
    result = finish(peers.run_job(1, JOBS / "arrays.py", "shared", "256", "256", "0"), 600)
    print(f"shared 256 MiB x 256 tasks: {result['wall']:.1f} s; h1 {sharing(peers, 1)}")
    assert result["exact"] is True and result["same_handle"] is True
    assert result["hosts"] == ["h2"] and result["writeable"] is False
    served = sharing(peers, 1)
    assert served["served"] == 1
    assert 256 * MB <= served["served_bytes"] <= 1.1 * 256 * MB
    fetched = sharing(peers, 2)
    assert fetched["fetches"] == 1 and fetched["fetched_bytes"] == served["served_bytes"]
    # The job is over: h2 let go of the value; h1 let go of it when the client left.
    wait_until(lambda: sharing(peers, 2)["cached"] == 0, 10, "h2 freed its cache")
    wait_until(lambda: sharing(peers, 1)["owned"] == 0, 10, "h1 freed the shared value")


def test_a_peer_that_joins_mid_job_fetches_the_shared_value(make_lan: Any) -> None:
    peers = make_lan(3)
    start(peers, 1, 0)
    start(peers, 2, 1)
    peers.wait_everyone_sees([1, 2])
    run = peers.run_job(1, JOBS / "arrays.py", "shared", "32", "60", "0.25")
    wait_until(lambda: sharing(peers, 2)["fetches"] == 1, 60, "h2 fetched the value")
    start(peers, 3, 1)
    result = finish(run, 300)
    assert result["exact"] is True and result["hosts"] == ["h2", "h3"], result
    third = sharing(peers, 3)
    assert third["fetches"] == 1 and 32 * MB <= third["fetched_bytes"] <= 33 * MB
    assert sharing(peers, 1)["served"] == 2


def test_the_owner_s_death_frees_every_peer_s_cache(make_lan: Any) -> None:
    peers = make_lan(3)
    start(peers, 1, 0)
    start(peers, 2, 1)
    start(peers, 3, 1)
    peers.wait_everyone_sees([1, 2, 3])
    run = peers.run_job(1, JOBS / "arrays.py", "shared", "64", "200", "0.5")
    wait_until(lambda: all(sharing(peers, h)["cached"] == 1 for h in (2, 3)), 60,
               "h2 and h3 hold the shared value")
    peers.kill9_all(1)
    run.wait(timeout=10)
    begun = time.monotonic()
    wait_until(lambda: all(sharing(peers, h)["cached"] == 0 for h in (2, 3)), 30,
               "h2 and h3 freed the dead owner's value")
    print(f"caches freed {time.monotonic() - begun:.1f} s after the owner died")
    for h in (2, 3):
        assert sharing(peers, h)["cached_bytes"] == 0


def test_an_array_changed_after_submit_fails_on_the_peer_that_fetches_it(make_lan: Any,
                                                                        tmp_path: Path) -> None:
    """An ephemeral owner (`run --local --workers 0` in h1) holds the caller's arrays with
    their sums from submit; the caller refills one and sorts another right after. h2's
    daemon starts only then: it fetches the arguments, checks them as they land, fails the
    two changed tasks and runs the third."""
    peers = make_lan(2)
    marker = tmp_path / "submitted"
    argv = [sys.executable, "-m", "p2pcluster", "run", "--local", "--workers", "0",
            str(JOBS / "arrays.py"), "changed", "4", str(marker)]
    run = peers.lan.popen(1, argv, env=peers.env(1, **peers.host_env(1)),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(marker.exists, 60, "the job submitted its arrays and changed two")
        start(peers, 2, 1)
        out, err = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 0, err
    first, second, third = json.loads(out)["outcomes"]
    for outcome in (first, second):  # (each submit is a job of one task)
        assert outcome[0] == "ArgumentChanged", outcome
        assert "argument array 0 of task 0 (total) changed after submit" in outcome[1]
        assert "(on peer h2)" in outcome[1]
    assert third == ["ok", True, "h2"]


@pytest.mark.skipif(not cpu_has_aes(), reason="this CPU has no AES instructions, so no peer "
                    "here offers AES-256-GCM")
def test_streams_use_aes_gcm_only_between_daemons_that_both_offer_it(make_lan: Any) -> None:
    """h3 is told never to offer AES-256-GCM: its streams use ChaCha20-Poly1305, while h1
    and h2 (both "auto" on a CPU with AES instructions) use AES-256-GCM between them."""
    peers = make_lan(3)
    start(peers, 1, 0)
    start(peers, 2, 1)
    peers.start(3, "--workers", "1",
                env={**peers.host_env(3), "P2PCLUSTER_STREAM_CIPHER": "chacha20-poly1305"})
    peers.wait_everyone_sees([1, 2, 3])
    result = finish(peers.run_job(1, JOBS / "arrays.py", "map", "16", "1"), 300)
    assert result["exact"] is True
    h1, h2, h3 = (ciphers(peers, host) for host in (1, 2, 3))
    assert h3[0] == 0 and h3[1] > 0, h3
    assert h2[0] > 0, h2
    assert h1[0] > 0 and h1[1] > 0, h1
