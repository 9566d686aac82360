"""scikit-learn on the whole cluster: GridSearchCV of an SVC on the digits data set.

    pip install 'p2pcluster[sklearn]'
    python examples/sklearn_grid.py            # through the local `p2pcluster join` daemon,
                                               # or an embedded peer if none runs

Nothing changes in the scikit-learn code: importing p2pcluster.joblib registers the joblib
backend "p2pcluster", and `parallel_config(backend="p2pcluster")` sends every fit to the
cluster (n_jobs=-1: every worker of every live peer). The digits data set ships with
scikit-learn: nothing is downloaded.
"""

from __future__ import annotations

import time

import joblib
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC

import p2pcluster.joblib

GRID = {"C": [0.1, 1.0, 10.0, 100.0], "gamma": [0.0001, 0.0005, 0.001, 0.005, 0.01]}


def main() -> None:
    X, y = load_digits(return_X_y=True)
    search = GridSearchCV(SVC(), GRID, cv=5, n_jobs=-1)
    start = time.perf_counter()
    with joblib.parallel_config(backend="p2pcluster"):
        search.fit(X, y)
    seconds = time.perf_counter() - start
    fits = len(search.cv_results_["params"]) * search.n_splits_
    print(f"best parameters: {search.best_params_} "
          f"(mean accuracy {search.best_score_:.4f})")
    print(f"{fits} fits in {seconds:.1f} s, by peer:")
    for peer, calls in sorted(p2pcluster.joblib.calls_by_peer().items()):
        print(f"  {peer}: {calls}")


if __name__ == "__main__":  # required: an embedded peer spawns its worker processes
    main()
