"""A sibling module of job.py."""

import time


def triple(x: int) -> int:
    time.sleep(0.02)
    return 3 * x
