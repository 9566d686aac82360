"""Task throughput and scheduling: p2pcluster beside Dask distributed and multiprocessing.Pool.

    python scripts/bench_tasks.py [--json] [--only w1,w2,w3,w4] [--repeat 3] [--tasks 10000]
                                  [--no-dask]

Every figure is measured in the same run on the same machine, two workers each:

- **p2pcluster**: two local peers of one worker each, this process's embedded
  ``p2pcluster.Cluster`` and one ``p2pcluster join`` subprocess, seeded to each other over
  127.0.0.1 (local preset, no mDNS, a fresh cluster name and secret); timing starts once both
  list both peers alive;
- **Dask**: ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` + ``Client``;
- **Pool**: ``multiprocessing.Pool(2)``.

Workloads (task functions in scripts/bench_work.py):

- **W1** ``--tasks`` no-op tasks, map and gather: tasks/s. Dask uses ``client.map`` +
  ``client.gather``; Pool ``pool.map`` with its default chunksize, and chunksize=1 for
  reference. ``w1_ratio_vs_dask`` = p2p / Dask (target >= 10).
- **W2** 64 tasks of 50 ms busy CPU each: efficiency = 3.2 s / (2 x makespan) (target >= 0.95
  and within 0.03 of Pool, chunksize=1).
- **W3** 64 tasks of lognormal cost (``random.Random(12345)``, ``lognormvariate(0, 1)``,
  scaled to 3.2 s in total), submitted in seed order, so the largest comes near the end:
  makespan / max(total / 2, largest). ``w3_greedy_over_bound`` is a zero-overhead greedy list
  schedule of the same tasks in the same order on two workers, the best any system that
  hands out tasks in submit order can do (target: p2p <= 1.15 and below Dask).
- **W4** whole-process wall time: ``p2pcluster run`` of a generated job that maps ``--tasks``
  no-ops (embedded peer, fresh secret and cluster name, so it finds no daemon and no peers)
  versus ``python`` running a script that starts a Dask ``LocalCluster(n_workers=2,
  threads_per_worker=1)``, maps and gathers as many no-ops and closes it (target <= 0.5).

W1 to W3 run with all three systems up, in rounds (each round runs every workload on every
system back to back), so that the machine's speed drifting (it is noisy) hits them alike; W4
runs after they are shut down. Each figure is repeated ``--repeat`` times; the plain key is
the best, ``*_median`` the median; ratios compare the bests. A system that fails (the
p2pcluster runtime may not be there yet) gets ``null`` figures and an entry in ``errors``;
the rest are still measured. Subprocesses run in their own process groups and are killed on
every way out, Ctrl-C and SIGTERM included.

A full run takes 5 to 10 minutes on the reference machine, nearly all of it Dask's W1 and
W4 (about 100 to 200 no-op tasks/s there); ``--tasks 2000`` or ``--only w2,w3`` is quicker.
"""

from __future__ import annotations

import argparse
import base64
import compileall
import contextlib
import json
import multiprocessing
import multiprocessing.pool
import os
import platform
import random
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
WORK_FILE = SCRIPTS / "bench_work.py"
sys.path[:0] = [str(ROOT), str(SCRIPTS)]
import bench_work  # noqa: E402

WORKLOADS = ("w1", "w2", "w3", "w4")
SYSTEMS = ("p2p", "dask", "pool")
WORKERS = 2
W2_TASKS, W2_COST = 64, 0.05
TOTAL_COST = W2_TASKS * W2_COST  # 3.2 s, the serial time of W2 and W3
W3_SEED = 12345
TIMEOUT = 300.0  # per workload call: a hung system becomes an error, not a hung benchmark
READY_TIMEOUT = 60.0


# --- workloads that do not depend on the system -------------------------------------------


def w3_costs() -> list[float]:
    rng = random.Random(W3_SEED)
    raw = [rng.lognormvariate(0, 1) for _ in range(W2_TASKS)]
    scale = TOTAL_COST / sum(raw)
    return [c * scale for c in raw]


def greedy_makespan(costs: Sequence[float], workers: int) -> float:
    """Zero-overhead list schedule: each task, in order, goes to the first free worker."""
    free = [0.0] * workers
    for cost in costs:
        k = free.index(min(free))
        free[k] += cost
    return max(free)


def w3_bound(costs: Sequence[float]) -> float:
    return max(sum(costs) / WORKERS, *costs)


# --- the systems ----------------------------------------------------------------------------


class System:
    """Two workers behind one interface: ``map`` runs a batch in order and returns results."""

    name = ""

    def map(self, fn: Callable[..., Any], items: Sequence[Any], chunksize: int | None = None
            ) -> list[Any]:
        raise NotImplementedError

    def submit_all(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        """One submit per item, in order, then wait for all (W3)."""
        return self.map(fn, items, chunksize=1)


class PoolSystem(System):
    name = "pool"

    def __init__(self, pool: multiprocessing.pool.Pool) -> None:
        self.pool = pool

    def map(self, fn: Callable[..., Any], items: Sequence[Any], chunksize: int | None = None
            ) -> list[Any]:
        return self.pool.map(fn, items, chunksize)

    def submit_all(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        return list(self.pool.imap(fn, items, chunksize=1))


class DaskSystem(System):
    name = "dask"

    def __init__(self, client: Any) -> None:
        self.client = client

    def map(self, fn: Callable[..., Any], items: Sequence[Any], chunksize: int | None = None
            ) -> list[Any]:
        # pure=False: equal arguments (64 x spin(0.05)) must stay separate tasks.
        return list(self.client.gather(self.client.map(fn, items, pure=False)))

    def submit_all(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        futures = [self.client.submit(fn, item, pure=False) for item in items]
        return list(self.client.gather(futures))


class P2PSystem(System):
    name = "p2p"

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    def map(self, fn: Callable[..., Any], items: Sequence[Any], chunksize: int | None = None
            ) -> list[Any]:
        return list(self.cluster.map(fn, items, timeout=TIMEOUT))

    def submit_all(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        futures = [self.cluster.submit(fn, item) for item in items]
        return [f.result(timeout=TIMEOUT) for f in futures]


# --- process hygiene ------------------------------------------------------------------------


MAIN_PID = os.getpid()


def _raise_exit(signum: int, frame: Any) -> None:
    """SIGTERM in this process unwinds the stack, so every ``finally`` cleans up."""
    if os.getpid() != MAIN_PID:  # a forked worker (the pool's) inherited this: die as usual
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise SystemExit(128 + signum)


def unwind_on_sigterm() -> None:
    """From now on SIGTERM (``timeout``, ``kill``) unwinds this process's stack, so every
    ``finally`` and ``with`` runs: the peers a benchmark started in sessions of their own are
    stopped, not left running."""
    signal.signal(signal.SIGTERM, _raise_exit)


def _pool_worker_signals() -> None:
    """Ctrl-C is for the parent, which then terminates the pool: a worker interrupted while
    it holds the pool's queue lock would make ``Pool.terminate`` wait forever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def kill_group(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM the process group of ``proc`` (its own session), then SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers: worker processes of the child
    proc.wait()


def run_timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str, str, int]:
    """Wall time, stdout, stderr and exit status of ``cmd``; its process group never leaks."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
        elapsed = time.perf_counter() - start
    finally:
        kill_group(proc, grace=1.0)
    return elapsed, out, err, proc.returncode


def free_port() -> int:
    """A port free on 127.0.0.1 for both TCP and UDP (p2pcluster uses the same number)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def write_secret(path: Path) -> None:
    """A fresh secret in the file format p2pcluster reads (43 chars base64url, mode 0600)."""
    text = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def child_env(tmp: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "XDG_RUNTIME_DIR": str(tmp / "run")}


def cluster_name() -> str:
    return f"bench-{os.getpid()}-{secrets.token_hex(3)}"


def _log(message: str) -> None:
    print(f"bench_tasks: {message}", file=sys.stderr, flush=True)


def _error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) < 600 else text[:600] + "..."


# --- starting the systems -------------------------------------------------------------------


def start_dask(stack: contextlib.ExitStack) -> DaskSystem:
    from distributed import Client, LocalCluster

    # Dask's nannies set MALLOC_TRIM_THRESHOLD_, OMP_NUM_THREADS and more in this process's
    # os.environ for their workers, where every process started later inherits them (a
    # p2pcluster worker spawned after Dask ran 14% more CPU per scikit-learn fit with them).
    # Its workers keep them; this process gets its own environment back once they have started,
    # and again when Dask stops.
    saved = dict(os.environ)
    stack.callback(restore_environ, saved)
    # Spawned workers get this process's sys.path, so they import bench_work by reference.
    cluster = stack.enter_context(LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None))
    client = stack.enter_context(Client(cluster))  # type: ignore[no-untyped-call]
    client.wait_for_workers(WORKERS, timeout=READY_TIMEOUT)
    restore_environ(saved)
    return DaskSystem(client)


def restore_environ(saved: dict[str, str]) -> None:
    """Make os.environ ``saved`` again (what a benchmarked system changed in it goes)."""
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    os.environ.update(saved)


def _peer_alive(control: Path, env: dict[str, str]) -> int:
    """How many members the join subprocess lists alive (0 while it is not up)."""
    done = subprocess.run(
        [sys.executable, "-m", "p2pcluster", "members", "--json", "--control", str(control)],
        env=env, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        return 0
    return sum(r["status"] == "alive" for r in json.loads(done.stdout)["members"])


def start_p2p(stack: contextlib.ExitStack, tmp: Path) -> P2PSystem:
    import p2pcluster

    cluster_cls = p2pcluster.Cluster  # AttributeError until the runtime lands
    secret = tmp / "secret"
    if not secret.exists():
        write_secret(secret)
    name = cluster_name()
    ours, theirs = free_port(), free_port()
    env = child_env(tmp)
    control = tmp / "peer.sock"
    log_path = tmp / "join-peer.log"
    log = stack.enter_context(log_path.open("w"))
    cmd = [sys.executable, "-m", "p2pcluster", "join", "--preset", "local", "--cluster", name,
           "--secret-file", str(secret), "--port", str(theirs), "--workers", "1", "--no-mdns",
           "--seed", f"127.0.0.1:{ours}", "--name", "bench-peer", "--control", str(control),
           "--log-level", "warning"]
    peer = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    stack.callback(kill_group, peer)
    config = p2pcluster.Config.local(
        cluster=name, secret_file=str(secret), seeds=(f"127.0.0.1:{theirs}",), workers=1,
        mdns=False, port=ours, node_name="bench-main")
    cluster = stack.enter_context(cluster_cls(config, include=[WORK_FILE], daemon=False))
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        # Works whether or not members() lists this peer itself.
        seen = {m.name for m in cluster.members() if m.alive}
        if "bench-peer" in seen and _peer_alive(control, env) >= WORKERS:
            break
        if peer.poll() is not None:
            raise RuntimeError(f"the join peer exited with status {peer.returncode}: "
                               f"{log_path.read_text()[-400:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the two peers did not both see 2 alive members within "
                               f"{READY_TIMEOUT:.0f} s (we see alive: {sorted(seen)})")
        time.sleep(0.1)
    return P2PSystem(cluster)


def warm_up(system: System) -> int:
    """Start every worker and import bench_work there; return how many workers ran tasks."""
    system.map(bench_work.noop, list(range(100)))
    return len(set(system.map(bench_work.spin_pid, [0.05] * 8, chunksize=1)))


# --- measuring ------------------------------------------------------------------------------


def measure_w1(system: System, tasks: int, chunksize: int | None) -> float:
    items = list(range(tasks))
    start = time.perf_counter()
    results = system.map(bench_work.noop, items, chunksize=chunksize)
    elapsed = time.perf_counter() - start
    if results != items:
        raise RuntimeError("W1 returned wrong results")
    return tasks / elapsed


def measure_w2(system: System) -> float:
    start = time.perf_counter()
    results = system.map(bench_work.spin, [W2_COST] * W2_TASKS, chunksize=1)
    makespan = time.perf_counter() - start
    if len(results) != W2_TASKS:
        raise RuntimeError("W2 returned wrong results")
    return TOTAL_COST / (WORKERS * makespan)


def measure_w3(system: System, costs: list[float]) -> float:
    start = time.perf_counter()
    results = system.submit_all(bench_work.spin, costs)
    makespan = time.perf_counter() - start
    if len(results) != len(costs):
        raise RuntimeError("W3 returned wrong results")
    return makespan / w3_bound(costs)


W4_JOB = """\
def noop(x):
    return x


def main(cluster):
    return len(list(cluster.map(noop, range({tasks}))))
"""

W4_DASK = """\
from distributed import Client, LocalCluster


def noop(x):
    return x


if __name__ == "__main__":
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \\
            Client(cluster) as client:
        print(len(client.gather(client.map(noop, range({tasks}), pure=False))))
"""


def measure_w4(which: str, tasks: int, tmp: Path) -> float:
    env = child_env(tmp)
    if which == "p2p":
        job = tmp / "w1_job.py"
        job.write_text(W4_JOB.format(tasks=tasks))
        secret = tmp / "secret"
        if not secret.exists():
            write_secret(secret)
        env["P2PCLUSTER_SECRET_FILE"] = str(secret)
        cmd = [sys.executable, "-m", "p2pcluster", "run", "--cluster", cluster_name(),
               "--secret-file", str(secret), "--quiet", str(job)]
    else:
        script = tmp / "w1_dask.py"
        script.write_text(W4_DASK.format(tasks=tasks))
        cmd = [sys.executable, str(script)]
    elapsed, out, err, code = run_timed(cmd, env, tmp)
    if code != 0 or out.strip() != str(tasks):
        tail = (err.strip() or out.strip())[-400:]
        raise RuntimeError(f"{shlex.join(cmd[1:4])}... exited {code}, printed "
                           f"{out.strip()[:80]!r}: {tail}")
    return elapsed


# --- the run --------------------------------------------------------------------------------


class Results:
    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}
        self.errors: dict[str, str] = {}
        self.info: dict[str, Any] = {}

    def attempt(self, key: str, error_key: str, fn: Callable[[], float]) -> None:
        """Run one measurement; a failure is recorded once and the key is not tried again."""
        if error_key in self.errors:
            return
        try:
            value = fn()
        except Exception as exc:
            self.errors[error_key] = _error(exc)
            _log(f"{error_key} failed: {self.errors[error_key]}")
            return
        self.samples.setdefault(key, []).append(value)
        _log(f"{key}: {value:.4g}")


# (result key, system, workload) of every measured figure; higher is better unless listed.
W1_KEYS = {"w1_tasks_per_s": "p2p", "w1_dask_tasks_per_s": "dask",
           "w1_pool_tasks_per_s": "pool", "w1_pool_chunksize1_tasks_per_s": "pool"}
W2_KEYS = {"w2_efficiency": "p2p", "w2_dask_efficiency": "dask", "w2_pool_efficiency": "pool"}
W3_KEYS = {"w3_makespan_over_bound": "p2p", "w3_dask_makespan_over_bound": "dask",
           "w3_pool_makespan_over_bound": "pool"}
W4_KEYS = {"w4_wall_s": "p2p", "w4_dask_wall_s": "dask"}
LOWER_IS_BETTER = set(W3_KEYS) | set(W4_KEYS)


def run_in_process(args: argparse.Namespace, only: set[str], results: Results,
                   tmp: Path) -> None:
    """W1 to W3 with the three systems up at once, in interleaved rounds."""
    wanted = only & {"w1", "w2", "w3"}
    if not wanted:
        return
    systems: dict[str, System] = {}
    with contextlib.ExitStack() as stack:
        # The pool first: fork before this process has any other thread.
        pool = multiprocessing.Pool(WORKERS, initializer=_pool_worker_signals)
        stack.callback(pool.join)
        stack.callback(pool.terminate)
        systems["pool"] = PoolSystem(pool)
        _start_systems(args, stack, tmp, systems, results)
        for rnd in range(args.repeat):
            _log(f"round {rnd + 1}/{args.repeat}")
            for name in SYSTEMS:
                if name in systems:
                    run_round(systems[name], wanted, args.tasks, results)
        p2p = systems.get("p2p")
        if isinstance(p2p, P2PSystem):  # where the tasks ran, warm-up included
            with contextlib.suppress(Exception):
                results.info["p2p_tasks_per_peer"] = dict(p2p.cluster.progress().per_peer)
        _log("shutting the systems down")


def _start_systems(args: argparse.Namespace, stack: contextlib.ExitStack, tmp: Path,
                   systems: dict[str, System], results: Results) -> None:
    """Start p2p and Dask beside the pool and warm each up; a system that fails is left out,
    with its error in ``results``."""
    starters: dict[str, Callable[[], System]] = {
        "p2p": lambda: start_p2p(stack, tmp), "dask": lambda: start_dask(stack)}
    for name, start in starters.items():
        if name == "dask" and args.no_dask:
            continue
        try:
            _log(f"starting {name}")
            systems[name] = start()
        except Exception as exc:
            results.errors[name] = _error(exc)
            _log(f"{name} unavailable: {results.errors[name]}")
    for name, system in list(systems.items()):
        try:
            results.info[f"{name}_workers_used_in_warmup"] = warm_up(system)
        except Exception as exc:
            results.errors[name] = _error(exc)
            _log(f"{name} failed to warm up: {results.errors[name]}")
            del systems[name]


def run_round(system: System, wanted: set[str], tasks: int, results: Results) -> None:
    """Each wanted workload once on ``system``."""
    name = system.name
    if "w1" in wanted:
        prefix = "w1" if name == "p2p" else f"w1_{name}"
        results.attempt(f"{prefix}_tasks_per_s", f"{name}.w1",
                        lambda: measure_w1(system, tasks, None))
        if name == "pool":
            results.attempt("w1_pool_chunksize1_tasks_per_s", "pool.w1",
                            lambda: measure_w1(system, tasks, 1))
    if "w2" in wanted:
        key = "w2_efficiency" if name == "p2p" else f"w2_{name}_efficiency"
        results.attempt(key, f"{name}.w2", lambda: measure_w2(system))
    if "w3" in wanted:
        key = "w3_makespan_over_bound" if name == "p2p" else f"w3_{name}_makespan_over_bound"
        results.attempt(key, f"{name}.w3", lambda: measure_w3(system, w3_costs()))


def run_w4(args: argparse.Namespace, results: Results, tmp: Path) -> None:
    compileall.compile_dir(str(ROOT / "p2pcluster"), quiet=1)
    for rnd in range(args.repeat):
        _log(f"W4 round {rnd + 1}/{args.repeat}")
        results.attempt("w4_wall_s", "p2p.w4", lambda: measure_w4("p2p", args.tasks, tmp))
        if not args.no_dask:
            results.attempt("w4_dask_wall_s", "dask.w4",
                            lambda: measure_w4("dask", args.tasks, tmp))


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def summarise(args: argparse.Namespace, only: set[str], results: Results) -> dict[str, Any]:
    out: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for workload, table in (("w1", W1_KEYS), ("w2", W2_KEYS), ("w3", W3_KEYS),
                            ("w4", W4_KEYS)):
        if workload in only:
            keys |= table
    for key, system in keys.items():
        if system == "dask" and args.no_dask:
            continue
        values = results.samples.get(key)
        if not values:
            out[key] = out[f"{key}_median"] = None
            continue
        out[key] = min(values) if key in LOWER_IS_BETTER else max(values)
        out[f"{key}_median"] = statistics.median(values)
    out |= _derived(args, only, out)
    out["targets"] = targets(out)
    out |= results.info
    out = {k: round(v, 1 if "per_s" in k else 4) if isinstance(v, float) else v
           for k, v in out.items()}
    out["errors"] = results.errors
    out["repeat"] = args.repeat
    out["tasks"] = args.tasks
    out["machine"] = machine()
    return out


def _derived(args: argparse.Namespace, only: set[str], out: dict[str, Any]) -> dict[str, Any]:
    """Ratios and bounds computed from the measured figures in ``out``."""
    more: dict[str, Any] = {}
    if "w1" in only and not args.no_dask:
        more["w1_ratio_vs_dask"] = _ratio(out.get("w1_tasks_per_s"),
                                         out.get("w1_dask_tasks_per_s"))
    if "w2" in only:
        more["w2_serial_s"] = TOTAL_COST
        more["w2_gap_vs_pool"] = (None if out.get("w2_efficiency") is None
                                 or out.get("w2_pool_efficiency") is None
                                 else out["w2_pool_efficiency"] - out["w2_efficiency"])
    if "w3" in only:
        costs = w3_costs()
        largest = max(range(len(costs)), key=costs.__getitem__)
        more["w3_greedy_over_bound"] = greedy_makespan(costs, WORKERS) / w3_bound(costs)
        more["w3_bound_s"] = w3_bound(costs)
        more["w3_largest_index"] = largest
        more["w3_largest_s"] = costs[largest]
    if "w4" in only and not args.no_dask:
        more["w4_wall_ratio_vs_dask"] = _ratio(out.get("w4_wall_s"), out.get("w4_dask_wall_s"))
    return more


def targets(out: dict[str, Any]) -> dict[str, bool | None]:
    """Each target: met (true), missed (false) or not measured (null)."""
    def check(key: str, ok: Callable[[float], bool]) -> bool | None:
        value = out.get(key)
        return None if value is None else ok(value)

    found: dict[str, bool | None] = {}
    if "w1_ratio_vs_dask" in out:
        found["w1_ratio_vs_dask >= 10"] = check("w1_ratio_vs_dask", lambda v: v >= 10)
    if "w2_efficiency" in out:
        found["w2_efficiency >= 0.95"] = check("w2_efficiency", lambda v: v >= 0.95)
        found["w2_gap_vs_pool <= 0.03"] = check("w2_gap_vs_pool", lambda v: v <= 0.03)
    if "w3_makespan_over_bound" in out:
        found["w3_makespan_over_bound <= 1.15"] = check("w3_makespan_over_bound",
                                                        lambda v: v <= 1.15)
        if out.get("w3_dask_makespan_over_bound") is not None:
            found["w3_makespan_over_bound < dask"] = check(
                "w3_makespan_over_bound", lambda v: v < out["w3_dask_makespan_over_bound"])
    if "w4_wall_ratio_vs_dask" in out:
        found["w4_wall_ratio_vs_dask <= 0.5"] = check("w4_wall_ratio_vs_dask",
                                                      lambda v: v <= 0.5)
    return found


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform(),
                            "command": shlex.join(sys.orig_argv)}
    for module in ("p2pcluster", "distributed"):
        try:
            info[module] = __import__(module).__version__
        except Exception:
            info[module] = None
    return info


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 100 else f"{value:.3f}"
    return str(value)


def table(out: dict[str, Any]) -> Iterator[str]:
    rows: list[tuple[str, Sequence[str | None]]] = [
        ("W1 no-ops, tasks/s", ("w1_tasks_per_s", "w1_dask_tasks_per_s",
                                "w1_pool_tasks_per_s", "w1_pool_chunksize1_tasks_per_s")),
        ("W2 efficiency", ("w2_efficiency", "w2_dask_efficiency", "w2_pool_efficiency")),
        ("W3 makespan / bound", ("w3_makespan_over_bound", "w3_dask_makespan_over_bound",
                                 "w3_pool_makespan_over_bound")),
        ("W4 process wall s", ("w4_wall_s", "w4_dask_wall_s", None)),
    ]
    lines: list[tuple[str, ...]] = [("", "p2pcluster", "dask", "pool", "pool cs=1")]
    for label, cols in rows:
        if cols[0] not in out:
            continue
        for suffix, what in (("", "best"), ("_median", "median")):
            lines.append((f"{label} ({what})", *(
                _cell(out.get(c + suffix)) if c else "" for c in cols)))
    widths = [max(len(line[i]) if i < len(line) else 0 for line in lines) for i in range(5)]
    for line in lines:
        yield "  ".join(cell.rjust(w) if i else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(line, widths, strict=False))).rstrip()
    yield ""
    for key in ("w1_ratio_vs_dask", "w2_gap_vs_pool", "w3_greedy_over_bound",
                "w3_largest_index", "w3_largest_s", "w4_wall_ratio_vs_dask"):
        if key in out:
            yield f"{key}: {_cell(out[key])}"
    for key, value in out["targets"].items():
        yield f"target {key}: {'-' if value is None else 'met' if value else 'NOT MET'}"
    for key, value in out.items():
        if key.endswith(("_warmup", "_per_peer")):
            yield f"{key}: {value}"
    for key, value in out["errors"].items():
        yield f"error {key}: {value}"
    yield f"machine: {json.dumps(out['machine'])}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--only", default=",".join(WORKLOADS),
                        help="workloads to run, comma-separated (default: all)")
    parser.add_argument("--no-dask", action="store_true", help="leave Dask out")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each figure (default 3)")
    parser.add_argument("--tasks", type=int, default=10_000,
                        help="no-op tasks in W1 and W4 (default 10000)")
    args = parser.parse_args(argv)
    only = {w.strip().lower() for w in args.only.split(",") if w.strip()}
    if not only or only - set(WORKLOADS) or args.repeat < 1 or args.tasks < 1:
        parser.error(f"--only takes some of {','.join(WORKLOADS)}; --repeat and --tasks >= 1")
    unwind_on_sigterm()
    costs = w3_costs()
    largest = max(range(len(costs)), key=costs.__getitem__)
    _log(f"W3: the largest task is #{largest} of {len(costs)} ({costs[largest]:.3f} s)")
    results = Results()
    try:
        with tempfile.TemporaryDirectory(prefix="bench_tasks-") as tmp_name:
            tmp = Path(tmp_name)
            (tmp / "run").mkdir(mode=0o700)
            run_in_process(args, only, results, tmp)
            if "w4" in only:
                run_w4(args, results, tmp)
    except KeyboardInterrupt:  # everything started has been shut down on the way out
        _log("interrupted")
        return 130
    out = summarise(args, only, results)
    if args.json:
        print(json.dumps(out))
    else:
        print("\n".join(table(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
