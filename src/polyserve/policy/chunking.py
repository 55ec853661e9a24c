"""PolyServe's per-instance scheduler: dynamic chunking, earliest deadline first.

Dynamic chunking: each iteration's prefill chunk is sized so that the iteration ends before the earliest
next-token deadline among the decoding requests (their tightest remaining slack), keeping ``guard`` of
that slack in reserve for prediction error. A batch that is ahead of schedule (banked slack) therefore
prefills big chunks and a batch at its limit prefills little, instead of vLLM's fixed token budget that
stalls every decode by the same amount. Waiting requests are served earliest TTFT deadline first.

With no decoding request there is nothing to protect and the engine's static budget applies. The chunk
is found by inverting a linear cost surrogate of the latency model (exact for the linear model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from polyserve.policy.base import SCHEDULERS, BatchInfo
from polyserve.policy.cost import LinearCost, fit_cost


@dataclass
class DynamicChunkScheduler:
    name: str = "polyserve-dynamic"
    queue: Literal["fcfs", "edf"] = "edf"
    token_budget: int | None = None  # cap (default: the engine's max_num_batched_tokens)
    dynamic_budget: bool = True
    guard: float = 0.05  # fraction of the slack kept in reserve
    _cost: LinearCost | None = field(default=None, repr=False)
    _model: object | None = field(default=None, repr=False)

    def prefill_budget(self, batch: BatchInfo, model: object, now: float) -> int:
        if self._cost is None or self._model is not model:
            self._cost = fit_cost(model, max_chunk=batch.max_num_batched_tokens)  # type: ignore[arg-type]
            self._model = model
        cap = (self.token_budget or batch.max_num_batched_tokens) - batch.num_decode
        if not math.isfinite(batch.min_next_deadline):  # no deadline to protect: the static cap applies
            return max(0, cap)
        time_budget = (batch.min_next_deadline - now) * (1.0 - self.guard)
        chunk = self._cost.max_chunk(time_budget, batch.num_decode, batch.kv_decode_tokens)
        return max(0, min(cap, chunk))


@SCHEDULERS.register("polyserve-dynamic", "PolyServe: EDF queue, prefill chunk sized to the batch's tightest slack")
def _dynamic(token_budget: int | None = None, guard: float = 0.05) -> DynamicChunkScheduler:
    return DynamicChunkScheduler(token_budget=token_budget, guard=guard)
