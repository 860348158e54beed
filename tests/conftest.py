"""Shared test settings.

Hypothesis runs with the ``ci`` profile when the CI variable is set: it is
derandomized (the same examples on every run) and has no deadline, because
the first call of a Numba kernel includes its compilation. Locally the
``dev`` profile draws fresh examples each run.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))
