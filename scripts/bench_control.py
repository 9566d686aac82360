"""The daemon path's latency and throughput, beside Dask distributed and ProcessPoolExecutor.

    python scripts/bench_control.py [--json] [--rtt 1000] [--submits 4000] [--repeat 3]
                                    [--no-dask]

Measured in one run, on this machine, with two workers everywhere:

- **through the daemon**: a ``p2pcluster join`` subprocess (local preset, no mDNS, two
  workers, a fresh cluster name and secret), and this process's ``Cluster(daemon=True)``;
- **Dask**: ``LocalCluster(n_workers=2, threads_per_worker=1)`` and its ``Client``;
- **ProcessPoolExecutor**: ``ProcessPoolExecutor(2)``;
- **embedded W1**: ``bench_tasks.py``'s W1 (10,000 no-op tasks in one map) on its two
  peers of one worker each, started here too, so the ratio compares figures of one run.

Figures (best of ``--repeat`` rounds for rates, all samples pooled for latencies):

- ``rtt_median_us``, ``rtt_p99_us``: one ``submit(noop).result()`` at a time through the
  daemon (``--rtt`` of them); ``dask_rtt_median_us``/``_p99_us``, ``ppe_rtt_median_us``/
  ``_p99_us`` the same for the others.
- ``submits_per_s``: ``{"1": ..., "4": ..., "16": ...}``, threads that each submit their share
  of ``--submits`` no-op futures as fast as they can, then wait for them: completed futures
  per second of wall time. ``dask_submits_per_s`` and ``ppe_submits_per_s`` likewise.
- ``daemon_w1_tasks_per_s``: W1 (one map of 10,000 no-ops) through the daemon;
  ``embedded_w1_tasks_per_s``: W1 on bench_tasks' embedded peers.
- Ratios: ``rtt_vs_dask`` (target <= 0.1), ``rtt_vs_ppe`` (target <= 3), and
  ``daemon_w1_vs_embedded`` and ``submits_16_vs_embedded_w1`` (target >= 0.5).

Each round starts every system on its own, measures it and stops it, so that one system's
idle traffic (Dask's heartbeats, a peer's probes) does not slow another's round trips. A run
takes about five minutes, most of it Dask's submits.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
sys.path[:0] = [str(SCRIPTS.parent), str(SCRIPTS)]
import bench_tasks  # noqa: E402
import bench_work  # noqa: E402

THREADS = (1, 4, 16)
W1_TASKS = 10_000


def _log(message: str) -> None:
    print(f"bench_control: {message}", file=sys.stderr, flush=True)


def start_daemon(stack: contextlib.ExitStack, tmp: Path) -> Any:
    """A join daemon of two workers and this process's Cluster through it."""
    import p2pcluster

    tmp = Path(tempfile.mkdtemp(dir=tmp))
    secret = tmp / "secret"
    bench_tasks.write_secret(secret)
    name = bench_tasks.cluster_name()
    env = bench_tasks.child_env(tmp)
    control = tmp / "daemon.sock"
    log = stack.enter_context((tmp / "daemon.log").open("w"))
    daemon = subprocess.Popen(
        [sys.executable, "-m", "p2pcluster", "join", "--preset", "local", "--cluster", name,
         "--secret-file", str(secret), "--port", "0", "--workers", "2", "--no-mdns",
         "--interface", "lo", "--name", "bench-daemon", "--control", str(control),
         "--log-level", "warning"],
        env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack.callback(bench_tasks.kill_group, daemon)
    deadline = time.monotonic() + bench_tasks.READY_TIMEOUT
    while not control.exists():
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the daemon did not start: " + (tmp / "daemon.log").read_text())
        time.sleep(0.05)
    config = p2pcluster.Config.local(cluster=name, secret_file=str(secret), mdns=False)
    return stack.enter_context(p2pcluster.Cluster(config, daemon=True, control=control,
                                                  include=[bench_tasks.WORK_FILE]))


def rtts(submit: Callable[[], Any], count: int) -> list[float]:
    """Seconds of ``count`` sequential ``submit().result()`` round trips."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        if submit().result(timeout=bench_tasks.TIMEOUT) != 1:
            raise RuntimeError("a no-op returned a wrong value")
        times.append(time.perf_counter() - start)
    return times


def submit_rate(submit: Callable[[int], Any], total: int, threads: int) -> float:
    """Futures completed per second when ``threads`` threads submit ``total`` in all."""
    share = total // threads
    barrier = threading.Barrier(threads + 1)

    def work(offset: int) -> None:
        barrier.wait()
        futures = [submit(offset + i) for i in range(share)]
        for i, future in enumerate(futures):
            if future.result(timeout=bench_tasks.TIMEOUT) != offset + i:
                raise RuntimeError("a no-op returned a wrong value")

    with cf.ThreadPoolExecutor(threads) as pool:
        running = [pool.submit(work, k * share) for k in range(threads)]
        barrier.wait()
        start = time.perf_counter()
        for done in running:
            done.result()
        elapsed = time.perf_counter() - start
    return share * threads / elapsed


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Figures:
    def __init__(self) -> None:
        self.rtt: dict[str, list[float]] = {}
        self.rates: dict[str, list[float]] = {}
        self.errors: dict[str, str] = {}

    def attempt(self, key: str, fn: Callable[[], Any]) -> Any:
        if key in self.errors:
            return None
        try:
            return fn()
        except Exception as exc:
            self.errors[key] = bench_tasks._error(exc)
            _log(f"{key} failed: {self.errors[key]}")
            return None

    def add_rtt(self, system: str, samples: list[float] | None) -> None:
        if samples:
            self.rtt.setdefault(system, []).extend(samples)

    def add_rate(self, key: str, value: float | None) -> None:
        if value is not None:
            self.rates.setdefault(key, []).append(value)


def measure(args: argparse.Namespace, tmp: Path) -> Figures:
    """Each round starts each system alone, measures it, and stops it, so that no system's
    idle chatter (Dask's heartbeats, a peer's probes) slows another's round trips."""
    figures = Figures()
    names = ["p2p", "ppe", "embedded"] + ([] if args.no_dask else ["dask"])
    for round_ in range(args.repeat):
        _log(f"round {round_ + 1} of {args.repeat}")
        for name in names:
            with contextlib.ExitStack() as stack:
                system = figures.attempt(name, lambda n=name, st=stack: start(n, st, tmp))
                if system is not None:
                    measure_one(figures, name, system, args)
    return figures


def start(name: str, stack: contextlib.ExitStack, tmp: Path) -> Any:
    if name == "p2p":
        system: Any = start_daemon(stack, tmp)
    elif name == "ppe":
        system = stack.enter_context(cf.ProcessPoolExecutor(2))
    elif name == "dask":
        system = bench_tasks.start_dask(stack).client
    else:
        embedded = bench_tasks.start_p2p(stack, tmp)
        bench_tasks.warm_up(embedded)
        return embedded
    [f.result() for f in [_submitter(system)(i) for i in range(200)]]  # warm the workers
    return system


def _submitter(system: Any) -> Callable[[int], Any]:
    if hasattr(system, "scheduler"):  # a Dask Client: equal arguments must stay separate
        return lambda x: system.submit(bench_work.noop, x, pure=False)
    return lambda x: system.submit(bench_work.noop, x)


def measure_one(figures: Figures, name: str, system: Any, args: argparse.Namespace) -> None:
    if name == "embedded":
        figures.add_rate("embedded_w1", figures.attempt(
            "embedded_w1", lambda: bench_tasks.measure_w1(system, W1_TASKS, None)))
        return
    submit = _submitter(system)
    figures.add_rtt(name, figures.attempt(f"{name}_rtt",
                                          lambda: rtts(lambda: submit(1), args.rtt)))
    for threads in THREADS:
        figures.add_rate(f"{name}_submits_{threads}", figures.attempt(
            f"{name}_submits_{threads}",
            lambda t=threads: submit_rate(submit, args.submits, t)))
    if name == "p2p":
        figures.add_rate("daemon_w1", figures.attempt("daemon_w1", lambda: bench_tasks.measure_w1(
            bench_tasks.P2PSystem(system), W1_TASKS, None)))


def _us(samples: list[float] | None, q: float | None = None) -> float | None:
    if not samples:
        return None
    value = statistics.median(samples) if q is None else percentile(samples, q)
    return round(value * 1e6, 1)


def _best(figures: Figures, key: str) -> float | None:
    values = figures.rates.get(key)
    return round(max(values), 1) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def report(figures: Figures, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rtt_median_us": _us(figures.rtt.get("p2p")),
        "rtt_p99_us": _us(figures.rtt.get("p2p"), 0.99),
        "dask_rtt_median_us": _us(figures.rtt.get("dask")),
        "dask_rtt_p99_us": _us(figures.rtt.get("dask"), 0.99),
        "ppe_rtt_median_us": _us(figures.rtt.get("ppe")),
        "ppe_rtt_p99_us": _us(figures.rtt.get("ppe"), 0.99),
    }
    for prefix, name in (("", "p2p"), ("dask_", "dask"), ("ppe_", "ppe")):
        out[f"{prefix}submits_per_s"] = {str(t): _best(figures, f"{name}_submits_{t}")
                                         for t in THREADS}
    out["daemon_w1_tasks_per_s"] = _best(figures, "daemon_w1")
    out["embedded_w1_tasks_per_s"] = _best(figures, "embedded_w1")
    out["rtt_vs_dask"] = _ratio(out["rtt_median_us"], out["dask_rtt_median_us"])
    out["rtt_vs_ppe"] = _ratio(out["rtt_median_us"], out["ppe_rtt_median_us"])
    out["daemon_w1_vs_embedded"] = _ratio(out["daemon_w1_tasks_per_s"],
                                          out["embedded_w1_tasks_per_s"])
    out["submits_16_vs_embedded_w1"] = _ratio(out["submits_per_s"]["16"],
                                              out["embedded_w1_tasks_per_s"])
    out["settings"] = {"rtt": args.rtt, "submits": args.submits, "repeat": args.repeat,
                       "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    out["errors"] = figures.errors
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--rtt", type=int, default=1000, help="round trips per round")
    parser.add_argument("--submits", type=int, default=4000, help="futures per rate figure")
    parser.add_argument("--repeat", type=int, default=3, help="rounds")
    parser.add_argument("--no-dask", action="store_true", help="skip Dask")
    args = parser.parse_args(argv)
    bench_tasks.unwind_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="bench-control-") as tmp:
        out = report(measure(args, Path(tmp)), args)
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
