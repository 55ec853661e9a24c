"""Policies: routers, per-instance schedulers and autoscalers. Pure and clock-free.

Reading guide: ``base`` (protocols, registries), ``cost`` (the linear cost surrogate routers predict with),
``polyserve`` (the PolyServe router and its ablations), ``chunking`` (dynamic chunking), ``schedulers``
(fcfs, edf), ``simple`` (round-robin), ``baselines`` (random, minimal, co-chunk and stronger ones),
``autoscale`` (the conventional autoscaler baselines get), ``bound`` (the optimal goodput bound).
Importing this package registers every built-in policy.
"""

from polyserve.policy import autoscale, baselines, chunking, polyserve, schedulers, simple  # noqa: F401  (registration)
from polyserve.policy.base import AUTOSCALERS, ROUTERS, SCHEDULERS, BatchInfo, make_router

__all__ = ["AUTOSCALERS", "ROUTERS", "SCHEDULERS", "BatchInfo", "make_router"]
