import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# CI runs the fuzzers at full strength (at least 20k examples each); locally they are quicker.
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

pytest_plugins = ["pytester"]


@pytest.hookimpl(tryfirst=True)  # before xdist's, which reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (README's `-n 2 --dist loadgroup`) the tests of real processes
    (tests/io) and of network namespaces all run on one worker, one at a time: they start
    daemons and workers, build LANs, and many are timed. The other worker runs the pure,
    simulated and CLI tests beside them."""
    for item in items:
        if item.get_closest_marker("netns") is not None or "/tests/io/" in str(item.path):
            item.add_marker(pytest.mark.xdist_group("processes"))


@pytest.hookimpl(optionalhook=True)  # xdist's hook: unknown where xdist is not loaded
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """Stop at once if ``--dist loadgroup`` does not group. xdist tells its controller a
    test's group by appending ``@group`` to the test's id, which pytest 9.2 no longer allows
    (pytest-xdist issue 1386); and until the hook above ran first, the group came too late.
    Both times the process tests ran two at a time, unannounced, and a timed one failed on
    a loaded CI machine. Called in the controller, once per worker."""
    if node.config.getvalue("dist") != "loadgroup":
        return
    lost = [i for i in ids if i.startswith(("tests/io/", "tests/lan/")) and "@" not in i]
    if lost:
        pytest.exit(f"pytest-xdist put no test in a group ({lost[0]} has none), so the "
                    f"process tests would run two at a time. Under pytest 9.2 its loadgroup "
                    f"does not group (pytest-xdist issue 1386); this is pytest "
                    f"{pytest.__version__}: install the pytest that pyproject.toml asks for",
                    returncode=pytest.ExitCode.USAGE_ERROR)
