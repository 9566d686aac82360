"""Count the primes below LIMIT over ranges of very uneven cost, with progress as they finish.

    p2pcluster run examples/primes.py [LIMIT [RANGES]]       # defaults: 1000000 32
    python examples/primes.py                                 # self-test, no cluster needed

[0, LIMIT) is cut into RANGES ranges whose widths grow by 10% from one to the next, and each
task counts the primes of one range by trial division (by the primes up to the square root),
which costs more the larger the numbers: the last range costs about 100 times the first.
The tasks go out with ``cluster.submit``, the most expensive first (a good habit with uneven
tasks: the small ones then fill the gaps at the end), and ``cluster.as_completed`` reports
each range on stderr as soon as it is done, in whatever order that is:

    primes: [904571, 1000000) 6904 primes in 0.16 s (1/32 ranges, 9.5% of the numbers)

The result is exact, so deterministic. With the default arguments it prints

    {"limit": 1000000, "primes": 78498}

About 1 s on two worker processes; ``p2pcluster run`` takes about 4 s in all. Run the file
itself to check the counts against known values of pi(x), up to pi(10**6) = 78498.
"""

from __future__ import annotations

import itertools
import sys
import time
from concurrent.futures import Executor, Future
from typing import Any

GROWTH = 1.1  # each range is this much wider than the one before


def small_primes(limit: int) -> list[int]:
    """The primes up to and including ``limit`` (sieve of Eratosthenes)."""
    if limit < 2:
        return []
    sieve = bytearray([1]) * (limit + 1)
    sieve[0] = sieve[1] = 0
    for n in range(2, int(limit**0.5) + 1):
        if sieve[n]:
            sieve[n * n::n] = bytes(len(range(n * n, limit + 1, n)))
    return [n for n, is_prime in enumerate(sieve) if is_prime]


def count_primes(lo: int, hi: int) -> list[float]:
    """``[primes in [lo, hi), seconds spent]``, by trial division by the primes <= sqrt."""
    start = time.perf_counter()
    divisors = small_primes(int(hi**0.5) + 1)
    found = sum(1 for n in (2,) if lo <= n < hi)
    for n in range(max(lo, 3) | 1, hi, 2):
        for p in divisors:
            if p * p > n:
                found += 1
                break
            if n % p == 0:
                break
        else:
            found += 1
    return [found, time.perf_counter() - start]


def boundaries(limit: int, ranges: int) -> list[int]:
    """Edges of ``ranges`` ranges covering [0, limit), each GROWTH times wider than the last."""
    weights = [GROWTH**i for i in range(ranges)]
    total = sum(weights)
    edges = [0]
    acc = 0.0
    for weight in weights:
        acc += weight
        edges.append(round(limit * acc / total))
    edges[-1] = limit
    return sorted(set(edges))


def main(cluster: Any, limit: str = "1000000", ranges: str = "32") -> dict[str, int]:
    n, count = int(limit), int(ranges)
    if n < 0 or count < 1:
        raise ValueError("LIMIT must not be negative and RANGES must be positive")
    edges = boundaries(n, count)
    spans = list(itertools.pairwise(edges))
    # The widest ranges hold the largest numbers: they are the most expensive, submit first.
    futures: dict[Future[Any], tuple[int, int]] = {
        cluster.submit(count_primes, lo, hi): (lo, hi) for lo, hi in reversed(spans)}
    primes = 0
    covered = 0
    for done, future in enumerate(cluster.as_completed(futures), 1):
        found, seconds = future.result()
        lo, hi = futures[future]
        primes += int(found)
        covered += hi - lo
        print(f"primes: [{lo}, {hi}) {int(found)} primes in {seconds:.2f} s ({done}/"
              f"{len(spans)} ranges, {100 * covered / max(n, 1):.1f}% of the numbers)",
              file=sys.stderr, flush=True)
    return {"limit": n, "primes": primes}


class _InProcess(Executor):
    """Runs each task at once, in this process: enough to test ``main`` without a cluster."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future

    def as_completed(self, futures: Any) -> Any:
        from concurrent.futures import as_completed

        return as_completed(futures)


def self_test() -> None:
    import contextlib
    import io

    known = {0: 0, 1: 0, 2: 0, 3: 1, 10: 4, 100: 25, 1000: 168, 10**4: 1229, 10**5: 9592,
             10**6: 78498}
    for limit, expected in known.items():
        for ranges in (1, 7, 32, 100) if limit < 10**6 else (32,):
            with contextlib.redirect_stderr(io.StringIO()):
                got = main(_InProcess(), str(limit), str(ranges))["primes"]
            assert got == expected, f"pi({limit}) with {ranges} ranges: {got} != {expected}"
    print(f"primes: self-test passed (pi(x) for x in {sorted(known)})")


if __name__ == "__main__":
    self_test()
