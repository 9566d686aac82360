"""scikit-learn on a 2-peer LAN of network namespaces through the joblib backend: the same
scores as loky, and fits on both peers. Each peer is a `p2pcluster join` daemon with one
worker; the user's script runs on h1 and submits through h1's daemon."""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import Peers, lan_tests

pytestmark = [*lan_tests(), pytest.mark.slow]
CLIENT = Path(__file__).with_name("sklearn_client.py")


def run_client(peers: Peers, host: int, hosts_log: Path, *args: str
               ) -> tuple[dict[str, Any], str]:
    """The user's script on ``host``: what it printed, and its stderr."""
    # The timeout only guards against a hang: the fits take 1-2 min on an idle machine.
    done = peers.lan.run(host, [sys.executable, str(CLIENT), str(hosts_log), *args],
                         env=peers.env(host, **peers.host_env(host)), timeout=480)
    assert done.returncode == 0, done.stderr
    print("the script's stderr:", done.stderr, sep="\n")
    result: dict[str, Any] = json.loads(done.stdout)
    return result, done.stderr


def fake_version(directory: Path, dist: str, version: str) -> Path:
    """A directory whose metadata says ``dist`` is at ``version``: first on a peer's
    PYTHONPATH, it is what importlib.metadata answers there (the code stays the same)."""
    info = directory / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    return directory


def test_scikit_learn_gives_loky_s_scores_with_fits_on_both_peers(
        make_lan: Any, tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="needs scikit-learn (the [sklearn] extra)")
    pytest.importorskip("joblib", reason="needs the [joblib] extra")
    peers = make_lan(2)
    for host in (1, 2):
        peers.start(host, "--workers", "1", env=peers.host_env(host))
    peers.wait_everyone_sees([1, 2], timeout=60)  # a generous start-up: only a wait
    hosts_log = tmp_path / "fits.log"
    result, _ = run_client(peers, 1, hosts_log)
    loky, p2p = result["loky"], result["p2p"]
    assert p2p["cv"] == loky["cv"]
    assert p2p["grid"] == loky["grid"]
    assert p2p["best"] == loky["best"]
    where = collections.Counter(hosts_log.read_text().split())
    assert set(where) == {"h1", "h2"}, where  # fits ran in both peers' workers, nowhere else
    assert sum(where.values()) == 4 + 6 * 3  # 4 folds; 6 candidates x 3 folds
    assert set(result["calls"]) == {"h1", "h2"}
    for host in (1, 2):
        assert peers.processes[host].poll() is None, peers.log(host)[-3000:]


def test_a_peer_with_another_scikit_learn_gets_none_of_the_fits(
        make_lan: Any, tmp_path: Path) -> None:
    sklearn = pytest.importorskip("sklearn", reason="needs scikit-learn (the [sklearn] extra)")
    pytest.importorskip("joblib", reason="needs the [joblib] extra")
    peers = make_lan(2)
    other = fake_version(tmp_path / "old-sklearn", "scikit-learn", "0.24.2")
    peers.start(1, "--workers", "1", env=peers.host_env(1))
    peers.start(2, "--workers", "1", env={**peers.host_env(2),
                                          "PYTHONPATH": f"{other}:{peers.env(2)['PYTHONPATH']}"})
    peers.wait_everyone_sees([1, 2], timeout=60)
    hosts_log = tmp_path / "fits.log"
    result, stderr = run_client(peers, 1, hosts_log, "--no-loky")
    where = collections.Counter(hosts_log.read_text().split())
    assert where == {"h1": 4 + 6 * 3}, where  # every fit on h1, none on h2
    assert set(result["calls"]) == {"h1"}
    named = [line for line in stderr.splitlines() if "h2" in line and "scikit-learn" in line]
    assert named and f"(here {sklearn.__version__})" in named[0], stderr
    assert len(named) == 1, stderr  # once, not once per batch
