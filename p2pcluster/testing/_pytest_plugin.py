"""pytest plugin (registered by the package's ``pytest11`` entry point).

When a test fails, the report names the seed of every :class:`Simulation` it created, so the
failure can be replayed with ``Simulation(seed=...)``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from ._sim import reset_registry


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    reset_registry()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        seeds = [s.seed for s in reset_registry()]
        if seeds:
            report.sections.append(
                ("p2pcluster simulation seeds", "replay with Simulation(seed=...): "
                 + ", ".join(map(str, seeds)))
            )
