"""Per-instance schedulers.

``fcfs`` is vLLM's default: waiting requests in arrival order, a static token budget
(``max_num_batched_tokens``), and preemption of the most recently admitted request when KV runs out.
``edf`` orders the waiting queue by TTFT deadline (earliest first) and preempts the request with the latest
next-token deadline; it is what a deadline-aware engine (vLLM ``--scheduling-policy priority`` with the tier
as priority) approximates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from polyserve.core.errors import ConfigError
from polyserve.policy.base import SCHEDULERS, BatchInfo


@dataclass
class StaticScheduler:
    """A static token budget; queue order ``fcfs`` or ``edf``."""

    name: str = "fcfs"
    queue: Literal["fcfs", "edf"] = "fcfs"
    token_budget: int | None = None
    dynamic_budget: bool = False

    def __post_init__(self) -> None:
        if self.token_budget is not None and self.token_budget < 1:
            raise ConfigError(f"token_budget must be >= 1, got {self.token_budget}")

    def prefill_budget(self, batch: BatchInfo, model: object, now: float) -> int:
        return (self.token_budget or batch.max_num_batched_tokens) - batch.num_decode


@SCHEDULERS.register("fcfs", "vLLM default: first come first served, static token budget")
def _fcfs(token_budget: int | None = None) -> StaticScheduler:
    return StaticScheduler("fcfs", "fcfs", token_budget)


@SCHEDULERS.register("edf", "earliest TTFT deadline first, static token budget")
def _edf(token_budget: int | None = None) -> StaticScheduler:
    return StaticScheduler("edf", "edf", token_budget)
