import os

from hypothesis import HealthCheck, settings

# CI runs the fuzzers at full strength (at least 20k examples each); locally they are quicker.
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

pytest_plugins = ["pytester"]
