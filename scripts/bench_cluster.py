"""Real `p2pcluster join` processes on a virtual LAN: joining, detection, idle cost.

    python scripts/bench_cluster.py [--json] [--sizes 3,8,16] [--kills 3] [--dashboard-pairs 3]

Needs root (network namespaces; see scripts/netns_lan.py). For each N, N daemons start at
once on a fresh virtual LAN, with mDNS only (no seeds), and:

- ``join_all_s``: from launching the processes until every peer lists every peer alive;
  ``join_after_up_s``: the same, counted from the moment the last daemon answered on its
  control socket (that is, without interpreter start-up, which on two cores is most of it);
- ``detect_all_s``: median over ``--kills`` sequential ``kill -9`` of the time until every
  survivor holds the victim dead; ``sim_detect_all_s`` is what the simulator predicts for
  the same N and the same procedure, measured in this run, and ``detect_vs_sim`` the ratio;
- ``rss_mb_per_idle_peer`` and ``cpu_percent_per_idle_peer``: from /proc, averaged over the
  peers, after 20 idle seconds (CPU as a percentage of one core).

Then the dashboard's cost to an idle peer (the budget: 5 MB of RSS, 0.5% of a core): one
cluster of ``2 * --dashboard-pairs`` daemons, half serving the dashboard (the default) and
half with ``--no-dashboard``, idle and unwatched; ``dashboard_rss_mb`` and
``dashboard_cpu_percent`` are the differences of the two halves' means (daemon process
only: the workers are the same either way). ``--dashboard-pairs 0`` skips it, ``--sizes ''``
skips the rest.

The daemons are polled through their control sockets (Unix sockets are filesystem objects,
reachable across namespaces), so measuring costs them almost nothing. Python bytecode is
compiled first, as an installed package has it.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import netns_lan  # noqa: E402

from p2pcluster import MemberStatus  # noqa: E402
from p2pcluster._control import NoDaemon  # noqa: E402
from p2pcluster._control_client import DaemonError, request_daemon  # noqa: E402
from p2pcluster._secret import encode_secret  # noqa: E402
from p2pcluster.testing import SimCluster  # noqa: E402

SECRET = encode_secret(os.urandom(32))
IDLE_SECONDS = 20.0


class Daemons:
    def __init__(self, lan: netns_lan.VirtualLan, workdir: Path) -> None:
        self.lan = lan
        self.workdir = workdir
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def control(self, host: int) -> Path:
        return self.workdir / f"run{host}" / "p2pcluster" / "default.sock"

    def start(self, host: int, *args: str) -> None:
        runtime = self.workdir / f"run{host}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "P2PCLUSTER_SECRET": SECRET,
               "PYTHONPATH": str(ROOT)}
        log = (self.workdir / f"peer{host}.log").open("w")
        self.processes[host] = self.lan.popen(
            host, [sys.executable, "-m", "p2pcluster", "join", "--name", f"h{host}", *args],
            env=env, stdout=log, stderr=subprocess.STDOUT)

    def members(self, host: int) -> list[dict[str, Any]] | None:
        try:
            answer = trio.run(lambda: request_daemon(self.control(host), "members",
                                                     timeout=2.0))
        except (NoDaemon, DaemonError, trio.TooSlowError, OSError):
            return None
        rows: list[dict[str, Any]] = answer["members"]
        return rows

    def wait(self, predicate: Any, timeout: float, what: str) -> float:
        start = time.monotonic()
        while not predicate():
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{what}: not within {timeout} s")
            time.sleep(0.02)
        return time.monotonic()


def _alive(rows: list[dict[str, Any]] | None) -> set[str]:
    return {r["name"] for r in rows or [] if r["status"] == "alive"}


def proc_stats(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds used) of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(next(line.split()[1] for line in status.splitlines()
                      if line.startswith("VmRSS:")))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return rss_kb / 1024, ticks / os.sysconf("SC_CLK_TCK")


def sim_detection(n: int, kills: int) -> float:
    """The simulator's prediction for the same N and the same sequential-kill procedure."""
    times = []
    for seed in range(1, 6):
        cluster = SimCluster(n, seed=seed, digest=False)
        cluster.sim.run_for(5.0)
        for k in range(kills):
            victim = n - 1 - k
            node = cluster.crash(victim).node_id
            start = cluster.sim.now
            done = cluster.sim.run_until_true(
                lambda c=cluster, node=node: c.all_see(node, MemberStatus.DEAD), timeout=120)
            times.append(done - start)
            cluster.sim.run_for(3.0)
    return statistics.median(times)


def bench_size(n: int, kills: int, workdir: Path) -> dict[str, Any]:
    names = {f"h{i}" for i in range(1, n + 1)}
    with netns_lan.VirtualLan(n, prefix=f"bc{n}") as lan:
        daemons = Daemons(lan, workdir)
        launched = time.monotonic()
        for host in range(1, n + 1):
            daemons.start(host)
        up = max(daemons.wait(lambda h=h: daemons.members(h) is not None, 60, f"h{h} up")
                 for h in range(1, n + 1))
        joined = daemons.wait(lambda: all(_alive(daemons.members(h)) == names
                                          for h in range(1, n + 1)), 60, "all see all")
        time.sleep(IDLE_SECONDS / 2)
        before = {h: proc_stats(p.pid) for h, p in daemons.processes.items()}
        time.sleep(IDLE_SECONDS)
        after = {h: proc_stats(p.pid) for h, p in daemons.processes.items()}
        rss = statistics.mean(after[h][0] for h in after)
        cpu = statistics.mean((after[h][1] - before[h][1]) / IDLE_SECONDS * 100 for h in after)
        detections = []
        survivors = set(range(1, n + 1))
        for k in range(kills):
            victim = n - k
            daemons.processes[victim].send_signal(signal.SIGKILL)
            daemons.processes[victim].wait()
            killed = time.monotonic()
            survivors.discard(victim)
            done = daemons.wait(lambda v=victim: all(
                any(r["name"] == f"h{v}" and r["status"] == "dead"
                    for r in daemons.members(h) or []) for h in survivors), 120,
                f"all mark h{victim} dead")
            detections.append(done - killed)
            time.sleep(3.0)
    predicted = sim_detection(n, kills)
    detect = statistics.median(detections)
    return {"n": n, "join_all_s": joined - launched, "join_after_up_s": joined - up,
            "detect_all_s": detect, "sim_detect_all_s": predicted,
            "detect_vs_sim": detect / predicted, "rss_mb_per_idle_peer": rss,
            "cpu_percent_per_idle_peer": cpu}


def bench_dashboard(pairs: int, workdir: Path) -> dict[str, Any]:
    """The dashboard's idle cost: see the module docstring."""
    n = 2 * pairs
    names = {f"h{i}" for i in range(1, n + 1)}
    served = range(1, pairs + 1)  # the others run with --no-dashboard
    with netns_lan.VirtualLan(n, prefix="bcd") as lan:
        daemons = Daemons(lan, workdir)
        for host in range(1, n + 1):
            daemons.start(host, *(() if host in served else ("--no-dashboard",)))
        daemons.wait(lambda: all(_alive(daemons.members(h)) == names
                                 for h in range(1, n + 1)), 90, "all see all")
        for host in served:  # fails unless it serves one (the dashboard extra is installed)
            trio.run(lambda h=host: request_daemon(daemons.control(h), "dashboard"))
        time.sleep(IDLE_SECONDS / 2)
        before = {h: proc_stats(p.pid) for h, p in daemons.processes.items()}
        time.sleep(IDLE_SECONDS)
        after = {h: proc_stats(p.pid) for h, p in daemons.processes.items()}
    rss = {h: after[h][0] for h in after}
    cpu = {h: (after[h][1] - before[h][1]) / IDLE_SECONDS * 100 for h in after}

    def cost(values: dict[int, float]) -> float:
        return (statistics.mean(v for h, v in values.items() if h in served)
                - statistics.mean(v for h, v in values.items() if h not in served))

    return {"dashboard_rss_mb": cost(rss), "dashboard_cpu_percent": cost(cpu),
            "rss_mb_with_dashboard": statistics.mean(rss[h] for h in served),
            "rss_mb_without": statistics.mean(v for h, v in rss.items() if h not in served)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sizes", default="3,8,16")
    parser.add_argument("--kills", type=int, default=3, help="sequential kill -9 per size")
    parser.add_argument("--dashboard-pairs", type=int, default=3,
                        help="daemons with and without the dashboard, each (0: skip)")
    args = parser.parse_args()
    reason = netns_lan.available()
    if reason:
        print(f"bench_cluster: {reason}", file=sys.stderr)
        return 1
    compileall.compile_dir(str(ROOT / "p2pcluster"), quiet=1)
    rows = []
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",") if s):
            workdir = Path(tmp) / f"n{n}"
            workdir.mkdir()
            row = bench_size(n, args.kills, workdir)
            print(f"N={n}: {row}", file=sys.stderr, flush=True)
            rows.append(row)
        if args.dashboard_pairs > 0:
            workdir = Path(tmp) / "dashboard"
            workdir.mkdir()
            cost = bench_dashboard(args.dashboard_pairs, workdir)
            result.update({k: round(v, 3) for k, v in cost.items()})
    if rows:
        result.update({key: [round(r[key], 3) if isinstance(r[key], float) else r[key]
                             for r in rows] for key in rows[0]})
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in
                                                           result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
