"""CPU seconds per batch outside the fits, of p2pcluster's joblib backend: the owner (this
process's embedded peer) and the ``p2pcluster join`` peer, each apart from its worker.

    python scripts/cpu_joblib.py [--quick] [--repeat 3]

The same ``GridSearchCV`` as ``bench_joblib.py`` (an SVC on digits, 100 fits; ``--quick``:
8) on the same two peers of one worker each on loopback. After a warm search, each timed
search reads, before and after, the CPU seconds (user + system, ``/proc/PID/stat``) of: this
process (``resource.getrusage``: pickling batches, the embedded peer, the callbacks), its
worker process, the join peer's daemon process, and its worker. It prints them as JSON
with the batches (tasks) the search sent, and the daemons' milliseconds per batch:
``owner_ms_per_batch`` and ``join_ms_per_batch``. CPU, not wall time, so that a shared
machine still compares two versions. The workers' CPU is mostly the fits themselves.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
sys.path[:0] = [str(SCRIPTS.parent), str(SCRIPTS)]
import bench_joblib  # noqa: E402
import bench_tasks  # noqa: E402


def children(pid: int) -> list[int]:
    """The child processes of ``pid``, whichever of its threads started them."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found.update(int(c) for c in (task / "children").read_text().split())
    return sorted(found)


def proc_cpu_s(pid: int) -> float:
    return proc_cpu_s_at(Path(f"/proc/{pid}/stat"))


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def join_pid() -> int:
    for pid in children(os.getpid()):
        if b"join" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise RuntimeError("no join peer among this process's children")


def threads_cpu_s() -> dict[str, float]:
    """CPU seconds of this process's threads, summed by thread name."""
    names = {t.native_id: t.name.split("(")[0].strip() for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            name = names.get(int(task.name), "other")
            out[name] = out.get(name, 0.0) + proc_cpu_s_at(task / "stat")
    return out


def proc_cpu_s_at(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def snapshot(join: int) -> dict[str, float]:
    ours = [p for p in children(os.getpid()) if p != join]
    threads = {f"owner_thread {k}": v for k, v in threads_cpu_s().items()}
    return {"owner": own_cpu_s(), "owner_workers": sum(map(proc_cpu_s, ours)),
            "join": proc_cpu_s(join), "join_workers": sum(map(proc_cpu_s, children(join))),
            **threads}


def measure(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    grid, folds = bench_joblib.QUICK if args.quick else bench_joblib.FULL
    runs = []
    with contextlib.ExitStack() as stack:
        config = bench_joblib.start("p2p", stack, tmp)
        cluster = config["cluster"]
        bench_joblib.search(bench_joblib.QUICK[0], 2, **config)
        join = join_pid()
        for _ in range(args.repeat):
            tasks, before = cluster.progress().total, snapshot(join)
            seconds, _params = bench_joblib.search(grid, folds, **config)
            after = snapshot(join)
            batches = cluster.progress().total - tasks
            spent = {k: round(after[k] - before.get(k, 0.0), 3) for k in after}
            runs.append({"batches": batches, "cpu_s": spent, "wall_s": round(seconds, 2),
                         "owner_ms_per_batch": round(1000 * spent["owner"] / batches, 1),
                         "join_ms_per_batch": round(1000 * spent["join"] / batches, 1)})
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 fits: check that it runs")
    parser.add_argument("--repeat", type=int, default=3, help="timed searches")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cpu-joblib-") as tmp:
        runs = measure(args, Path(tmp))
    print(json.dumps({"runs": runs, "machine": bench_tasks.machine()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
