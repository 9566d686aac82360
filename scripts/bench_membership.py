"""Membership figures from the simulator, at the LAN preset with 1 ms links.

    python scripts/bench_membership.py [--json] [--sizes 10,100,1000] [--crashes 5]

Every list has one value per N. For each N, one cluster starts converged (every peer knows
every other, quiet queues, push-pull timers at random phases) and:

- runs 60 virtual seconds without faults: ``msgs_per_peer_per_s`` and
  ``bytes_per_peer_per_s`` (datagrams and stream messages sent, envelope and framing
  included), and the wall time of that minute (``sim_wall_s_per_60s``);
- crashes ``--crashes`` random peers one after another: ``detect_first_s`` (someone suspects)
  and ``detect_all_s`` (every survivor holds it dead), medians over the crashes;
- has 9 new peers join one after another: ``convergence_s``, the median time until every
  peer holds the joiner alive (checked every millisecond); ``convergence_mean_s`` and
  ``convergence_max_s`` show the tail (a peer missed by the first gossip wave waits one
  gossip interval).

A second cluster runs under 10% loss on every link for 600 virtual s (120 s at N=1000) and
counts ``false_deaths``: running peers that some running peer declared dead.

The loss runs go to a second process (this machine has two cores), so the whole benchmark
fits in ten minutes; ``sim_wall_s_per_60s`` is therefore measured beside another simulation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from p2pcluster import Config, EventKind, MemberStatus
from p2pcluster.testing import LinkConditions, SimCluster, peer_address

LINK = LinkConditions(latency=0.001)
LOSSY = LinkConditions(latency=0.001, loss=0.1)


def steady_load(cluster: SimCluster, seconds: float) -> tuple[float, float, float]:
    n = len(cluster.machines)
    before = [(cluster.sim.stats(peer_address(i)).msgs_sent,
               cluster.sim.stats(peer_address(i)).bytes_sent) for i in range(n)]
    start = time.perf_counter()
    cluster.sim.run_for(seconds)
    wall = time.perf_counter() - start
    msgs = sum(cluster.sim.stats(peer_address(i)).msgs_sent - before[i][0] for i in range(n))
    size = sum(cluster.sim.stats(peer_address(i)).bytes_sent - before[i][1] for i in range(n))
    return msgs / n / seconds, size / n / seconds, wall


def crash_times(cluster: SimCluster, crashes: int) -> tuple[list[float], list[float]]:
    rng = cluster.sim.random("bench-crashes")
    first, every = [], []
    for _ in range(crashes):
        victim = rng.choice(sorted(cluster.machines))
        node = cluster.crash(victim).node_id
        start = cluster.sim.now
        t1 = cluster.sim.run_until_true(lambda node=node: cluster.any_sees(  # type: ignore[misc]
            node, MemberStatus.SUSPECT), timeout=600)
        t2 = cluster.sim.run_until_true(lambda node=node: cluster.all_see(  # type: ignore[misc]
            node, MemberStatus.DEAD), timeout=600)
        first.append(t1 - start)
        every.append(t2 - start)
        cluster.sim.run_for(5.0 + rng.random())  # let the news settle, then the next crash
    return first, every


def join_times(cluster: SimCluster, joins: int, n: int) -> list[float]:
    times = []
    for k in range(joins):
        newcomer = n + k
        machine = cluster.add(newcomer, via=min(cluster.machines))
        start = cluster.sim.now
        done = cluster.sim.run_until_true(
            lambda m=machine: cluster.all_see(m.node_id, MemberStatus.ALIVE),  # type: ignore[misc]
            timeout=120, check_every=0.001)
        times.append(done - start)
        cluster.sim.run_for(3.0)
    return times


def false_deaths(n: int, seconds: float, seed: int) -> int:
    # Sizes stay real (every message is encoded); decoding again is skipped for speed, as
    # decode(encode(m)) == m is what the codec tests prove.
    cluster = SimCluster(n, seed=seed, conditions=LOSSY, digest=False, roundtrip=False)
    cluster.sim.run_for(seconds)
    running = {m.node_id for m in cluster.machines.values()}
    return sum(1 for m in cluster.machines.values() for e in m.take_events()
               if e.kind == EventKind.FAIL and e.member.id in running)


def scenarios(n: int, crashes: int) -> dict[str, Any]:
    """Everything but the loss run, on one converged cluster of ``n`` peers."""
    t0 = time.perf_counter()
    cluster = SimCluster(n, seed=n, config=Config.lan(), conditions=LINK, digest=False)
    msgs, size, wall = steady_load(cluster, 60.0)
    first, every = crash_times(cluster, crashes)
    joins = join_times(cluster, 9, n)
    print(f"N={n}: detect_all {[round(t, 2) for t in every]} first "
          f"{[round(t, 2) for t in first]} joins {[round(t, 3) for t in joins]} "
          f"({time.perf_counter() - t0:.0f} s wall)", file=sys.stderr, flush=True)
    return {"n": n, "convergence_s": statistics.median(joins),
            "convergence_mean_s": statistics.mean(joins), "convergence_max_s": max(joins),
            "detect_first_s": statistics.median(first), "detect_all_s": statistics.median(every),
            "msgs_per_peer_per_s": msgs, "bytes_per_peer_per_s": size,
            "sim_wall_s_per_60s": wall}


def bench(sizes: list[int], crashes: int) -> dict[str, Any]:
    keys = ("n", "convergence_s", "convergence_mean_s", "convergence_max_s", "detect_first_s",
            "detect_all_s", "msgs_per_peer_per_s",
            "bytes_per_peer_per_s", "false_deaths", "loss_seconds", "sim_wall_s_per_60s")
    out: dict[str, Any] = {key: [] for key in keys}
    with ProcessPoolExecutor(2) as pool:
        loss: dict[int, Future[int]] = {}
        for n in sorted(sizes, reverse=True):  # the largest first: they take longest
            loss[n] = pool.submit(false_deaths, n, 120.0 if n >= 1000 else 600.0, n + 1)
        main_runs = {n: pool.submit(scenarios, n, crashes) for n in sizes}
        for n in sizes:
            row = main_runs[n].result() | {"false_deaths": loss[n].result(),
                                            "loss_seconds": 120.0 if n >= 1000 else 600.0}
            for key in keys:
                value = row[key]
                out[key].append(round(value, 3) if isinstance(value, float) else value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sizes", default="10,100,1000", help="cluster sizes, comma-separated")
    parser.add_argument("--crashes", type=int, default=5, help="crashes per size (>= 5)")
    args = parser.parse_args()
    started = time.perf_counter()
    result = bench([int(s) for s in args.sizes.split(",")], args.crashes)
    result["bench_wall_s"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
