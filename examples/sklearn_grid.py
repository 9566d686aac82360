"""scikit-learn on the whole cluster: GridSearchCV of an SVC on the digits data set.

    pip install 'p2pcluster[sklearn]'
    python examples/sklearn_grid.py            # through the local `p2pcluster join` daemon,
                                               # or an embedded peer if none runs
    p2pcluster run examples/sklearn_grid.py    # the same, on run's cluster; prints JSON

Nothing changes in the scikit-learn code: importing p2pcluster.joblib registers the joblib
backend "p2pcluster", and `parallel_config(backend="p2pcluster")` sends every fit to the
cluster (n_jobs=-1: every worker of every live peer). The digits data set ships with
scikit-learn: nothing is downloaded.
"""

from __future__ import annotations

import time
from typing import Any

import joblib
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC

import p2pcluster.joblib

GRID = {"C": [0.1, 1.0, 10.0, 100.0], "gamma": [0.0001, 0.0005, 0.001, 0.005, 0.01]}


def main(cluster: p2pcluster.Cluster | None = None) -> dict[str, Any]:
    """The search, and what came of it. ``p2pcluster run`` passes its ``cluster`` (and prints
    the answer as JSON); run as a script, the backend opens its own cluster."""
    X, y = load_digits(return_X_y=True)
    search = GridSearchCV(SVC(), GRID, cv=5, n_jobs=-1)
    start = time.perf_counter()
    with joblib.parallel_config(backend="p2pcluster", cluster=cluster):
        search.fit(X, y)
    return {"best_params": search.best_params_, "mean_accuracy": round(search.best_score_, 4),
            "fits": len(search.cv_results_["params"]) * search.n_splits_,
            "seconds": round(time.perf_counter() - start, 1),
            "fits_by_peer": p2pcluster.joblib.calls_by_peer()}


def report(found: dict[str, Any]) -> None:
    print(f"best parameters: {found['best_params']} "
          f"(mean accuracy {found['mean_accuracy']:.4f})")
    print(f"{found['fits']} fits in {found['seconds']:.1f} s, by peer:")
    for peer, calls in sorted(found["fits_by_peer"].items()):
        print(f"  {peer}: {calls}")
    if not found["fits_by_peer"]:
        print("  none: the cluster has one worker in all, so joblib ran the fits here, one "
              "after the other")


if __name__ == "__main__":  # required: an embedded peer spawns its worker processes
    report(main())
