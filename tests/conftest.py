"""Fixtures shared across packages: one local Ray for every Ray test (starting Ray takes seconds).

Ray tests are grouped (``xdist_group("ray")``, run with ``--dist loadgroup``) so one pytest worker runs them all
against the one instance; they skip, saying why, only when the ``ray`` extra is not installed.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with 2 CPUs, started once per test session, shut down at its end."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'polyserve[ray]')")
    import logging

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()
