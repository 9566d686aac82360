"""scikit-learn's GridSearchCV through joblib: loky, Dask's joblib backend and p2pcluster's,
side by side in one run.

    python scripts/bench_joblib.py [--json] [--quick] [--repeat 3] [--no-dask]

The same search everywhere: an SVC on scikit-learn's bundled digits data set (no download),
a grid of 4 C x 5 gamma values with 5-fold cross-validation, 100 fits (``--quick``: 2 x 2
values, 2 folds, 8 fits, to check that the script runs). Each system has two workers:

- **loky**: ``parallel_config(backend="loky", n_jobs=2)``, one machine;
- **Dask**: ``LocalCluster(n_workers=2, threads_per_worker=1)`` and
  ``parallel_config(backend="dask", client=...)``;
- **p2pcluster**: two peers of one worker each on loopback (a ``p2pcluster join``
  subprocess and this process's embedded peer, as ``bench_tasks.py`` starts them), with
  ``parallel_config(backend="p2pcluster", cluster=...)``.

The systems take turns, in ``--repeat`` rounds (3 by default): in each round each system in
turn is started, warmed (one small search, so that worker start-up is not counted), timed
on one search, and stopped before the next starts. A system's figure is its best round. On
a shared virtual machine one search's fits alone vary by up to 30% from minute to minute,
more than the systems differ: taking turns spreads that drift over all of them, where
timing one system after the other would charge it to whichever ran in a slow minute. Every
timed search is under ``walls``. Keys:
``loky_wall_s``, ``dask_wall_s``, ``p2p_wall_s`` (None if that system failed; the error is
under ``errors``), ``same_best_params`` (every system that ran found loky's), the ratios
``p2p_vs_loky`` (target <= 1.1) and ``p2p_vs_dask`` (target < 1), and ``fits``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
sys.path[:0] = [str(SCRIPTS.parent), str(SCRIPTS)]
import bench_tasks  # noqa: E402

FULL = ({"C": [0.1, 1.0, 10.0, 100.0], "gamma": [0.0001, 0.0005, 0.001, 0.005, 0.01]}, 5)
QUICK = ({"C": [1.0, 10.0], "gamma": [0.0005, 0.001]}, 2)


def _log(message: str) -> None:
    print(f"bench_joblib: {message}", file=sys.stderr, flush=True)


def search(grid: dict[str, list[float]], folds: int, **config: Any) -> tuple[float, Any]:
    """Seconds of one GridSearchCV under ``parallel_config(**config)``; its best_params_."""
    import joblib
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    X, y = load_digits(return_X_y=True)
    start = time.perf_counter()
    with joblib.parallel_config(**config):
        found = GridSearchCV(SVC(), grid, cv=folds, n_jobs=-1).fit(X, y)
    return time.perf_counter() - start, found.best_params_


def start(name: str, stack: contextlib.ExitStack, tmp: Path) -> dict[str, Any]:
    """The ``parallel_config`` arguments of system ``name``, started in ``stack``."""
    if name == "loky":
        return {"backend": "loky", "n_jobs": 2}
    if name == "dask":
        return {"backend": "dask", "client": bench_tasks.start_dask(stack).client}
    import p2pcluster.joblib  # noqa: F401 (registers the backend)

    system = bench_tasks.start_p2p(stack, Path(tempfile.mkdtemp(dir=tmp)))
    return {"backend": "p2pcluster", "cluster": system.cluster}


def measure(name: str, args: argparse.Namespace, tmp: Path) -> tuple[float, Any]:
    """One round of system ``name``: start it, warm it, time one search, stop it."""
    grid, folds = QUICK if args.quick else FULL
    with contextlib.ExitStack() as stack:
        config = start(name, stack, tmp)
        search(QUICK[0], 2, **config)  # warm: start the workers, import scikit-learn there
        return search(grid, folds, **config)


def run(args: argparse.Namespace) -> dict[str, Any]:
    names = ["loky", "p2p"] if args.no_dask else ["loky", "dask", "p2p"]
    every: dict[str, list[float]] = {name: [] for name in names}
    params: dict[str, Any] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-joblib-") as tmp:
        for round_ in range(1, args.repeat + 1):
            for name in (n for n in names if n not in errors):
                _log(f"round {round_}: {name}...")
                try:
                    seconds, found = measure(name, args, Path(tmp))
                except Exception as exc:  # one system failing must not hide the others
                    errors[name] = f"{type(exc).__name__}: {exc}"
                    _log(f"{name} failed: {errors[name]}")
                    continue
                every[name].append(round(seconds, 3))
                if params.setdefault(name, found) != found:
                    errors[name] = f"best_params_ changed between rounds: {found}"
                _log(f"{name}: {seconds:.2f} s, best {found}")
    walls: dict[str, float | None] = {
        name: min(every[name]) if every.get(name) and name not in errors else None
        for name in ("loky", "dask", "p2p")}
    grid, folds = QUICK if args.quick else FULL
    fits = folds * len(grid["C"]) * len(grid["gamma"])
    return {
        "loky_wall_s": walls["loky"], "dask_wall_s": walls["dask"], "p2p_wall_s": walls["p2p"],
        "same_best_params": bool(params) and all(p == params.get("loky") for p in
                                                 params.values()),
        "p2p_vs_loky": _ratio(walls["p2p"], walls["loky"]),
        "p2p_vs_dask": _ratio(walls["p2p"], walls["dask"]),
        "fits": fits, "walls": every, "best_params": params, "errors": errors,
        "machine": bench_tasks.machine(),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--quick", action="store_true", help="8 fits: check that it runs")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds: each system is started and timed once per round; its "
                             "best round counts (default 3)")
    parser.add_argument("--no-dask", action="store_true", help="skip Dask")
    args = parser.parse_args(argv)
    bench_tasks.unwind_on_sigterm()
    out = run(args)
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        for key in ("loky_wall_s", "dask_wall_s", "p2p_wall_s", "p2p_vs_loky", "p2p_vs_dask",
                    "same_best_params", "fits"):
            print(f"{key:18} {out[key]}")
    return 0 if out["same_best_params"] and not out["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
