"""Shared pytest configuration: hypothesis profiles.

``R2DN_PROPERTY_EXAMPLES`` sets the number of hypothesis draws per property test
(default 100 per test, i.e. a few hundred per family across the suite; e.g. 2000 for a soak run).
"""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "r2dn",
    max_examples=int(os.environ.get("R2DN_PROPERTY_EXAMPLES", "100")),
    deadline=None,
    derandomize=os.environ.get("CI") is not None and "R2DN_PROPERTY_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("r2dn")


def pytest_configure(config) -> None:
    # The suite is thousands of tiny tensor ops; on a 2-core CI machine intra-op threads only
    # add synchronisation cost (measured: a small observer test 92 s with 2 threads, 6 s with 1).
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cpp_kernels() -> None:
    """The C++ kernels, loaded (``pytestmark = pytest.mark.usefixtures("cpp_kernels")``). Skips
    only where no build is expected; a failed build with a compiler present fails."""
    from r2dn_control.nn import cpp

    if os.environ.get(cpp.DISABLE_ENV, "0") not in ("", "0"):
        pytest.skip(f"{cpp.DISABLE_ENV} is set")
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler")
    assert cpp.available(), cpp.status()
