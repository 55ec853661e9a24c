"""Fixtures shared across packages: one local Ray for every Ray test (starting Ray takes seconds).

Every Ray test lives in a ``test_ray*.py`` module; under pytest-xdist the scheduler below sends all of them to
one worker, so one session Ray (2 CPUs) serves them all. (xdist's own ``--dist loadgroup`` cannot do it with
pytest 9: it tags node ids through an attribute pytest no longer reads.) The tests skip, saying why, only
when the ``ray`` extra is not installed.
"""

from __future__ import annotations

import os

import pytest


def _ray_module(nodeid: str) -> bool:
    return os.path.basename(nodeid.split("::", 1)[0]).startswith("test_ray")


@pytest.hookimpl(optionalhook=True)  # a run without xdist (-p no:xdist) does not know this hook
def pytest_xdist_make_scheduler(config, log):
    """``-n N`` (load scheduling): each test is its own unit, as with ``--dist load``, except that the Ray
    tests form one unit, run by one worker."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class RayTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "ray" if _ray_module(nodeid) else nodeid

    return RayTestsTogether(config, log)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with 2 CPUs, started once per test session (one worker), shut down at its end."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'polyserve[ray]')")
    import logging

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 _system_config={"worker_niceness": 0})  # as polyserve up's own local Ray (engine/ray_actor.py)
    yield ray
    ray.shutdown()
