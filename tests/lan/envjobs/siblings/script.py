"""A script that uses Cluster through the local daemon; its sibling imports ship by
themselves, as a job file's do."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import helper
from shapes import area

import p2pcluster


def task(i: int) -> list[Any]:
    return [helper.triple(i) + area.square(i), os.environ.get("P2P_TEST_HOST", "?")]


if __name__ == "__main__":
    with p2pcluster.Cluster(daemon=True) as cluster:
        results = list(cluster.map(task, range(int(sys.argv[1]))))
    print(json.dumps({"values": [v for v, _ in results], "hosts": [h for _, h in results]}))
