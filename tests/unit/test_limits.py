"""At start a peer raises its soft limit on open files to the hard one."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest

from p2pcluster._limits import OpenFiles, raise_open_files

CHILD = """
import dataclasses, json, resource
from p2pcluster._limits import raise_open_files
before = resource.getrlimit(resource.RLIMIT_NOFILE)
result = raise_open_files()
print(json.dumps([before, resource.getrlimit(resource.RLIMIT_NOFILE), dataclasses.astuple(result)]))
"""


def _child(soft: int, hard: int) -> list[list[int]]:
    """Run :func:`raise_open_files` in a process started with these limits."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         check=True, preexec_fn=limit).stdout
    rows: list[list[int]] = json.loads(out)
    return rows


def test_the_soft_limit_rises_to_the_hard_one() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the hard limit here is {hard}: nothing to raise to")
    target = 2048 if hard == resource.RLIM_INFINITY else hard
    before, after, result = _child(256, target)
    assert before == [256, target]
    assert after == [target, target]
    assert result == [256, target, target]


def test_nothing_to_raise_is_said_so() -> None:
    before, after, result = _child(512, 512)
    assert before == after == [512, 512]
    assert result == [512, 512, 512]


def test_the_result_is_a_record() -> None:
    result = raise_open_files()
    assert result is None or isinstance(result, OpenFiles)


SCARCE = """
import json, os
from p2pcluster._limits import descriptors_scarce, open_files_text
rows = [[descriptors_scarce(), open_files_text()]]
held = [os.open("/dev/null", os.O_RDONLY) for _ in range(40)]
rows.append([descriptors_scarce(), open_files_text()])
while True:
    try:
        held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        break
rows.append([descriptors_scarce(), open_files_text()])
print(json.dumps(rows))
"""


def test_descriptors_are_scarce_past_half_the_limit_and_the_text_says_how_many() -> None:
    """What a daemon consults before it holds on to a client's memfd, and what it says when
    the kernel had to drop descriptors passed to it."""
    out = subprocess.run([sys.executable, "-c", SCARCE], capture_output=True, text=True,
                         check=True, preexec_fn=lambda: resource.setrlimit(
                             resource.RLIMIT_NOFILE, (64, 64))).stdout
    (fresh, fresh_text), (half, half_text), (full, full_text) = json.loads(out)
    assert not fresh and "files open of at most 64 (ulimit -n)" in fresh_text
    assert half and "of at most 64" in half_text
    assert full and full_text == "all 64 files it may open are open (ulimit -n)"
