"""A scikit-learn user's script, for the joblib LAN test: the same cross_val_score and
GridSearchCV with loky and with the p2pcluster backend (through the local daemon), printed
as JSON. Each fit's scorer appends the host it ran on (``$P2P_TEST_HOST`` of the worker) to
the file named by argv[1] (``--no-loky``: only the p2pcluster fits), so the test checks
where fits ran without trusting the backend.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import joblib
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.svm import SVC

import p2pcluster.joblib as pj

GRID = {"C": [1.0, 10.0], "gamma": [0.0005, 0.001, 0.005]}
HOSTS_LOG = ""  # set by main(); the scorer travels by value, with it


def scorer(estimator: Any, X: Any, y: Any) -> float:
    with Path(HOSTS_LOG).open("a") as log:
        log.write(os.environ.get("P2P_TEST_HOST", "client") + "\n")
    return float(estimator.score(X, y))


def fits(X: Any, y: Any) -> dict[str, Any]:
    scores = cross_val_score(SVC(gamma=0.001), X, y, cv=4, scoring=scorer, n_jobs=-1)
    search = GridSearchCV(SVC(), GRID, cv=3, scoring=scorer, n_jobs=-1).fit(X, y)
    return {"cv": [float(s) for s in scores], "best": search.best_params_,
            "grid": [float(s) for s in search.cv_results_["mean_test_score"]]}


def main() -> None:
    global HOSTS_LOG  # noqa: PLW0603
    HOSTS_LOG = sys.argv[1]
    faulthandler.dump_traceback_later(200)  # if it hangs, the test's failure shows where
    X, y = load_digits(return_X_y=True)
    loky = None
    start = time.monotonic()
    if "--no-loky" not in sys.argv:
        with joblib.parallel_config(backend="loky", n_jobs=2):
            loky = fits(X, y)
    Path(sys.argv[1]).write_text("")  # only the p2pcluster fits from here on
    middle = time.monotonic()
    with joblib.parallel_config(backend="p2pcluster", daemon=True):
        p2p = fits(X, y)
    print(json.dumps({"loky": loky, "p2p": p2p, "calls": pj.calls_by_peer(),
                      "seconds": [middle - start, time.monotonic() - middle]}))


if __name__ == "__main__":
    main()
