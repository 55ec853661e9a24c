"""Policies: routers, per-instance schedulers and autoscalers. Pure and clock-free.

Reading guide: ``base`` (protocols, registries), ``schedulers`` (fcfs, edf), ``simple`` (round-robin).
Importing this package registers every built-in policy.
"""

from polyserve.policy import schedulers, simple  # noqa: F401  (registration side effects)
from polyserve.policy.base import AUTOSCALERS, ROUTERS, SCHEDULERS, BatchInfo, make_router

__all__ = ["AUTOSCALERS", "ROUTERS", "SCHEDULERS", "BatchInfo", "make_router"]
