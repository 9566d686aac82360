"""A rotation done out of order does not partition: h1 promotes a new secret that h2 has not
even added. h1 goes on sealing toward h2 with the key h2 shows it holds (datagrams), and
handshakes with it under that key (streams), so nobody is suspected and a job that spreads
over both is exact; once h2 catches up and both revoke the old secret, all goes on.
Real `p2pcluster join` daemons with secret files, in network namespaces.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio

from p2pcluster._control_client import request_daemon
from p2pcluster._secret import decode_secret, fingerprint

from .conftest import JOBS, SECRET, Peers, lan_tests
from .test_jobs_lan import check_squares, finish
from .test_rotation_lan import secret_cli, start_with_secret_files

pytestmark = lan_tests()
HOSTS = [1, 2]


def statistics(peers: Peers, host: int) -> dict[str, Any]:
    control = peers.workdir / f"run{host}" / "p2pcluster" / "default.sock"
    answer: dict[str, Any] = trio.run(request_daemon, control, "status")
    stats: dict[str, Any] = answer["statistics"]
    return stats


def no_suspicion(peers: Peers) -> None:
    for host in HOSTS:
        stats = statistics(peers, host)
        assert stats["suspicions"] == 0 and stats["deaths_declared"] == 0, (host, stats)


def test_a_peer_that_promotes_a_key_the_other_lacks_still_reaches_it(  # type: ignore[no-untyped-def]
        make_lan, tmp_path: Path) -> None:
    peers = make_lan(2)
    old = fingerprint(decode_secret(SECRET, "SECRET"))
    start_with_secret_files(peers, HOSTS)

    # h1 alone: a new secret, sent with at once. h2 holds only the old one.
    new = secret_cli(peers, 1, "--new").strip()
    fresh = fingerprint(decode_secret(new, "the new secret"))
    secret_cli(peers, 1, "--promote", fresh)
    time.sleep(8)  # several probe periods and a push-pull each way
    no_suspicion(peers)
    assert all(seen == {"h1", "h2"} for seen in peers.alive_everywhere(HOSTS))
    logs = tmp_path / "tasks"
    logs.mkdir()
    n = 60
    result = finish(peers.run_job(1, JOBS / "tally.py", str(n), "0.05", str(logs)), 60)
    check_squares(result, n)
    assert "h2" in result["hosts"], "h2 ran no task: the work link did not cross the keys"

    # h2 catches up; both revoke the old secret; all goes on under the new one.
    secret_cli(peers, 2, "--add", stdin=new + "\n")
    secret_cli(peers, 2, "--promote", fresh)
    for host in HOSTS:
        secret_cli(peers, host, "--revoke", old)
    time.sleep(5)
    no_suspicion(peers)
    result = finish(peers.run_job(2, JOBS / "tally.py", str(n), "0.05", str(logs)), 60)
    check_squares(result, n)
    for host in HOSTS:
        assert "declared dead" not in peers.log(host)
        assert "Traceback" not in peers.log(host)
