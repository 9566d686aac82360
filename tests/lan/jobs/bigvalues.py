"""LAN test job: one large argument and one large result, checked by SHA-256.

    p2pcluster run tests/lan/jobs/bigvalues.py BYTES

``main`` sends BYTES bytes to a task that hashes them, and asks another task for BYTES
bytes back. It returns both digests as computed on each side, the hosts that ran the two
tasks, or the error each raised, as ``{"arg": ..., "result": ...}``.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any


def make(size: int, seed: int) -> bytes:
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def digest(data: bytes) -> list[str]:
    return [hashlib.sha256(data).hexdigest(), os.environ.get("P2P_TEST_HOST", "?")]


def produce(size: int, seed: int) -> bytes:
    return make(size, seed)


def _outcome(call: Any) -> dict[str, Any]:
    start = time.monotonic()
    try:
        value = call()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "seconds": time.monotonic() - start}
    return {"value": value, "seconds": time.monotonic() - start}


def _send(cluster: Any, n: int) -> dict[str, Any]:
    data = make(n, 1)
    expected = hashlib.sha256(data).hexdigest()
    arg = _outcome(lambda: cluster.submit(digest, data).result())
    if "value" in arg:
        arg["value"] = {"same": arg["value"][0] == expected, "host": arg["value"][1]}
    return arg


def main(cluster: Any, size: str) -> dict[str, Any]:
    n = int(size)
    arg = _send(cluster, n)
    result = _outcome(lambda: cluster.submit(produce, n, 2).result())
    if "value" in result:
        got = hashlib.sha256(result["value"]).hexdigest()
        result["value"] = {"same": got == hashlib.sha256(make(n, 2)).hexdigest()}
    return {"arg": arg, "result": result}
