"""The chaos soak, for runs longer than CI's: whole peers under seeded chaos.

    python scripts/soak.py --hours 1 --seed 7                 # one run: 32 peers, 1 h
    python scripts/soak.py --hours 1 --seed 100 --runs 8 --jobs 2   # seeds 100 .. 107

Each run starts ``--peers`` peers (the real membership and stealing machines of
``p2pcluster._proto``, wired as a peer wires them, on ``p2pcluster.testing``'s simulator),
then for ``--hours`` of virtual time injects random crashes and restarts, freezes, partitions,
``--loss`` datagram loss and jobs from several owners, checking the invariants as it goes
(see ``tests/sim/soakchecks.py``): each result exact, each task's result delivered exactly
once, no peer that was never faulted declared dead, every partition healed in time, every job
of a live owner finished in time. The harness lives in ``tests/sim/`` (``soak.py``).

Output is JSON on stdout: one line per finished run (its report: faults, jobs, work,
membership and check figures, wall seconds, and the violation if any), then one summary line
``{"summary": ..., "failing_seeds": [...]}``. Each failing run's line carries ``replay``,
the command that replays it bit for bit. ``--progress`` writes a line to stderr every
virtual ``--every`` seconds. The exit status is 1 when any seed failed.

A 32-peer hour takes roughly 10 to 25 minutes of one core, depending on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.sim

from tests.sim.soak import SoakParams, SoakReport, run_soak
from tests.sim.soakchaos import DENSE, ChaosRates


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Seeded chaos soak of whole simulated peers; prints JSON reports and "
                    "any failing seed (exit status 1).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--hours", type=float, default=1.0, help="virtual hours of chaos per run")
    p.add_argument("--seed", type=int, default=1, help="the first seed")
    p.add_argument("--runs", type=int, default=1, help="runs, with seeds SEED, SEED+1, ...")
    p.add_argument("--peers", type=int, default=32, help="peers in each run")
    p.add_argument("--loss", type=float, default=0.1, help="datagram loss on every link")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, in separate processes")
    p.add_argument("--dense", action="store_true",
                   help="CI's chaos rates: faults and jobs several times as often")
    p.add_argument("--no-roundtrip", dest="roundtrip", action="store_false",
                   help="skip decoding every message (faster; the codec is not exercised)")
    p.add_argument("--digest", action="store_true",
                   help="print a SHA-256 of every event: equal digests mean identical runs "
                        "(the same seed replays bit for bit, whatever PYTHONHASHSEED is)")
    p.add_argument("--progress", action="store_true", help="progress lines on stderr")
    p.add_argument("--every", type=float, default=300.0,
                   help="virtual seconds between progress lines")
    args = p.parse_args(argv)
    if args.hours <= 0 or args.runs < 1 or args.peers < 2 or args.jobs < 1:
        p.error("--hours must be > 0, --runs and --jobs >= 1, --peers >= 2")
    if not 0.0 <= args.loss < 1.0:
        p.error("--loss must be in [0, 1)")
    return args


def params_for(args: argparse.Namespace, seed: int) -> SoakParams:
    rates = DENSE if args.dense else ChaosRates()
    return SoakParams(seed=seed, peers=args.peers, duration=round(args.hours * 3600.0, 6),
                      loss=args.loss, rates=rates, roundtrip=args.roundtrip,
                      digest=args.digest)


def one(params: SoakParams, progress: bool, every: float) -> dict[str, Any]:
    def show(report: SoakReport) -> None:
        print(f"seed {params.seed}: t={report.virtual_seconds:.0f} s, "
              f"{report.wall_seconds:.0f} s wall, jobs {report.jobs}, "
              f"faults {report.faults}", file=sys.stderr, flush=True)

    return run_soak(params, progress=show if progress else None, every=every).as_dict()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    seeds = range(args.seed, args.seed + args.runs)
    started = time.perf_counter()
    failing: list[int] = []
    results: list[dict[str, Any]] = []

    def done(result: dict[str, Any]) -> None:
        results.append(result)
        if result["violation"] is not None:
            failing.append(result["seed"])
        print(json.dumps(result, sort_keys=True), flush=True)

    if args.jobs == 1:
        for seed in seeds:
            done(one(params_for(args, seed), args.progress, args.every))
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(one, params_for(args, s), args.progress, args.every)
                       for s in seeds]
            for future in futures:
                done(future.result())
    summary = {"runs": len(results), "failed": len(failing),
               "virtual_hours_each": args.hours, "peers": args.peers,
               "jobs_finished": sum(r["jobs"]["finished"] for r in results),
               "faults": {k: sum(r["faults"].get(k, 0) for r in results)
                          for k in ("crashes", "restarts", "freezes", "partitions")},
               "wall_seconds": round(time.perf_counter() - started, 3)}
    print(json.dumps({"summary": summary, "failing_seeds": sorted(failing)}), flush=True)
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
