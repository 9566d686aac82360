"""The dashboard of `p2pcluster join` daemons on a virtual LAN, checked in a real browser.

Two daemons in their own network namespaces; a job submitted at h1. The dashboard of h2,
which does not own the job, must show the whole cluster: Debian's chromium loads it
headless inside h2's namespace (``scripts/headless.py``, over the DevTools pipe), and the
test reads the DOM, the console's errors and a screenshot. Also: the token on a LAN
address, `p2pcluster jobs --json` while the job runs, and the jobs of a peer that has gone.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import JOBS, ROOT, Peers, lan_tests, wait_until

_spec = importlib.util.spec_from_file_location("headless", ROOT / "scripts" / "headless.py")
assert _spec and _spec.loader
headless = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(headless)

CHROMIUM = headless.find_chromium()
HYPERCORN = importlib.util.find_spec("hypercorn") is not None
pytestmark = [*lan_tests(), pytest.mark.slow,
              pytest.mark.skipif(not HYPERCORN, reason="the dashboard extra is not installed "
                                 "(pip install -e '.[dashboard]')")]
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")

#: Wait for the page to list both peers alive and h1's job with some progress.
PAGE_READY = """(() => {
  const peers = [...document.querySelectorAll('#members tbody tr')]
    .filter((r) => r.querySelector('.state-alive')).map((r) => r.dataset.peer);
  const jobs = [...document.querySelectorAll('#jobs tbody tr')];
  return peers.includes('h1') && peers.includes('h2') && jobs.some((r) =>
    r.textContent.includes('tally.py') && /[1-9][0-9]* \\/ 24/.test(r.textContent));
})()"""


def start_two(peers: Peers, *h1_args: str) -> None:
    peers.start(1, "--workers", "1", *h1_args, env=peers.host_env(1))
    peers.start(2, "--workers", "1", env=peers.host_env(2))
    peers.wait_everyone_sees([1, 2], timeout=45)  # the CLI starts slowly on a loaded CI box


def dashboard_url(peers: Peers, host: int) -> str:
    result = peers.cli(host, "dashboard")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def http_get(peers: Peers, host: int, url: str) -> tuple[int, str]:
    """GET ``url`` from inside ``host``'s namespace: (status, body)."""
    code = ("import sys, urllib.request, urllib.error\n"
            "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=10); print(r.status)\n"
            " sys.stdout.write(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n print(e.code)\n"
            " sys.stdout.write(e.read().decode())")
    result = peers.lan.run(host, [sys.executable, "-c", code, url], env=peers.env(host),
                           timeout=30)
    assert result.returncode == 0, result.stderr
    status, _, body = result.stdout.partition("\n")
    return int(status), body


def jobs_json(peers: Peers, host: int) -> dict[str, Any]:
    result = peers.cli(host, "jobs", "--json")
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


@needs_chromium
def test_the_dashboard_of_the_peer_that_does_not_own_the_job(make_lan: Any,
                                                             tmp_path: Path) -> None:
    peers = make_lan(2)
    start_two(peers)
    url = dashboard_url(peers, 2)
    assert url == "http://127.0.0.1:8797/"  # loopback by default: no token
    assert "dashboard at http://127.0.0.1:8797/" in peers.log(2)
    logdir = tmp_path / "tally"
    logdir.mkdir()
    job = peers.run_job(1, JOBS / "tally.py", "24", "0.4", str(logdir))
    shot = tmp_path / "dashboard.png"
    browse = peers.lan.run(2, [sys.executable, str(ROOT / "scripts" / "headless.py"), url,
                               "--until", PAGE_READY, "--timeout", "40",
                               "--screenshot", str(shot), "--chromium", CHROMIUM],
                           env=peers.env(2), timeout=120)
    out, err = job.communicate(timeout=60)
    assert job.returncode == 0, err
    assert browse.returncode in (0, 1), browse.stderr
    report = json.loads(browse.stdout)
    dom = report["dom"]
    assert report["ok"], f"the page never showed both peers and the job:\n{dom[:4000]}"
    assert report["errors"] == [], report["errors"]
    assert 'data-peer="h1"' in dom and 'data-peer="h2"' in dom
    assert "tally.py: square" in dom
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    assert json.loads(out)["sum"] == sum(i * i for i in range(24))


def test_a_lan_address_needs_the_token_and_loopback_none(make_lan: Any) -> None:
    peers = make_lan(2)
    lan_address = peers.lan.address(1)
    start_two(peers, "--dashboard", f"{lan_address}:8797")
    url = dashboard_url(peers, 1)
    base, _, token = url.partition("?token=")
    assert base == f"http://{lan_address}:8797/" and len(token) >= 24
    assert f"dashboard at {url}" in peers.log(1)
    for path in ("", "api/members", "api/jobs", "metrics", "static/dashboard.js"):
        status, body = http_get(peers, 2, base + path)
        assert status == 403, (path, status)
        assert "needs its token" in body
        assert http_get(peers, 2, f"{base}{path}?token=wrong{token}")[0] == 403
        assert http_get(peers, 2, f"{base}{path}?token={token}")[0] == 200
    status, body = http_get(peers, 2, f"{base}api/members?token={token}")
    assert {m["name"] for m in json.loads(body)["members"]} == {"h1", "h2"}
    # h2 serves loopback by default: no token there, from its own machine.
    assert http_get(peers, 2, "http://127.0.0.1:8797/api/members")[0] == 200
    assert dashboard_url(peers, 2) == "http://127.0.0.1:8797/"


def test_jobs_json_during_a_run_and_after_the_owner_has_gone(make_lan: Any,
                                                             tmp_path: Path) -> None:
    peers = make_lan(2)
    start_two(peers)
    logdir = tmp_path / "tally"
    logdir.mkdir()
    job = peers.run_job(1, JOBS / "tally.py", "60", "0.5", str(logdir))  # 15 s on 2 workers

    def running_at_both() -> dict[str, Any] | None:
        rows = jobs_json(peers, 2)["jobs"]
        mine = [r for r in rows if r["label"] == "tally.py: square"]
        if mine and mine[0]["state"] == "running" and len(mine[0]["done_by"]) == 2:
            return mine[0]
        return None

    wait_until(running_at_both, 30, "h2's `jobs --json` shows h1's job run by both")
    row = running_at_both() or {}
    assert row["owner"] == "h1" and row["total"] == 60 and 0 < row["done"] < 60
    assert row["stale"] is False and row["errors"] == 0 and row["rate"] > 0
    assert sum(row["done_by"].values()) == row["done"]
    table = peers.cli(2, "jobs")
    assert table.returncode == 0 and "tally.py: square" in table.stdout
    assert "ran by" in table.stdout
    peers.kill9_all(1)  # the owner's machine crashes mid-job
    job.wait(timeout=30)

    def gone() -> dict[str, Any] | None:
        rows = [r for r in jobs_json(peers, 2)["jobs"] if r["label"] == "tally.py: square"]
        return rows[0] if rows and rows[0]["state"] == "owner gone" else None

    wait_until(gone, 30, "h2 still lists h1's job, its owner gone")
    last = gone() or {}
    assert last["stale"] is True and last["owner"] == "h1" and last["done"] > 0
    assert http_get(peers, 2, "http://127.0.0.1:8797/api/jobs")[0] == 200


def test_no_dashboard_turns_it_off(make_lan: Any) -> None:
    peers = make_lan(1)
    peers.start(1, "--workers", "1", "--no-dashboard")
    wait_until(lambda: peers.alive(1) == {"h1"}, 15, "h1 is up")
    result = peers.cli(1, "dashboard")
    assert result.returncode == 1 and "--no-dashboard" in result.stderr
    refused = peers.lan.run(1, [sys.executable, "-c",
                                "import socket; socket.create_connection(('127.0.0.1', 8797))"],
                            env=peers.env(1), timeout=30)
    assert refused.returncode != 0 and "ConnectionRefused" in refused.stderr


@needs_chromium
def test_the_page_works_from_another_machine_with_its_token(make_lan: Any) -> None:
    """h2's browser opens h1's LAN dashboard by the tokened URL: the page's script, style and
    event stream load too (the token rides in a cookie and in the stream's query)."""
    peers = make_lan(2)
    start_two(peers, "--dashboard", f"{peers.lan.address(1)}:8797")
    url = dashboard_url(peers, 1)
    ready = ("document.querySelectorAll('#members tbody tr .state-alive').length === 2 && "
             "document.getElementById('status').textContent === 'live'")
    browse = peers.lan.run(2, [sys.executable, str(ROOT / "scripts" / "headless.py"), url,
                               "--until", ready, "--timeout", "40", "--chromium", CHROMIUM],
                           env=peers.env(2), timeout=120)
    report = json.loads(browse.stdout)
    assert report["ok"], report["dom"][:4000]
    assert report["errors"] == []
    untokened = peers.lan.run(2, [sys.executable, str(ROOT / "scripts" / "headless.py"),
                                  url.partition("?")[0], "--until", ready, "--timeout", "5",
                                  "--chromium", CHROMIUM], env=peers.env(2), timeout=60)
    refused = json.loads(untokened.stdout)
    assert not refused["ok"] and "needs its token" in refused["dom"]
