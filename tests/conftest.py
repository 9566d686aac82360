import os

import pytest
from hypothesis import HealthCheck, settings

# CI runs the fuzzers at full strength (at least 20k examples each); locally they are quicker.
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

pytest_plugins = ["pytester"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (README's `-n 2 --dist loadgroup`) the tests of real processes
    (tests/io) and of network namespaces all run on one worker, one at a time, as they always
    did: they start daemons and workers, build LANs, and many are timed. The other worker
    runs the pure, simulated and CLI tests beside them."""
    for item in items:
        if item.get_closest_marker("netns") is not None or "/tests/io/" in str(item.path):
            item.add_marker(pytest.mark.xdist_group("processes"))
