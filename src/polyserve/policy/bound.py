"""The optimal goodput bound (``../shared/design/polyserve.md`` §1, ours after the paper's §3 cost model).

For tier *t* with TPOT ``s_t`` an instance serves at most

    mu_t = min( (1 - T0/s_t) / (c_p*P + c_d*D),  K / ((P + D/2) * D * s_t) )

requests per second: iterations run every ``s_t`` at best and each costs ``T0`` plus ``c_p`` per prefill
token and ``c_d`` per decode token (compute/bandwidth), and a request holds ``P + D/2`` KV tokens on
average for ``D * s_t`` seconds (KV residency). ``P``, ``D`` are the workload's mean prompt and output
lengths and ``K`` an instance's KV capacity. Co-located: ``rate* = N / sum_t(f_t / mu_t)``.
Disaggregated: decode instances drop the prefill term (``mu_t^d``), a prefill instance serves
``mu_p = 1 / (c_p*P)`` (its fixed cost amortised over large batches), and
``rate* = N / (1/mu_p + sum_t f_t / mu_t^d)``, which is the best continuous split of the ``N`` instances.

It ignores TTFT and queueing, so it bounds 100%-attainment goodput; a 90%-attainment goodput may exceed it by
up to 1/0.9.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from polyserve.core.errors import ConfigError


@dataclass(frozen=True)
class BoundInputs:
    instances: int
    mean_prompt: float  # P
    mean_output: float  # D
    kv_capacity: float  # K, tokens per instance
    t0: float  # s per iteration (fixed cost)
    c_prefill: float  # s per prefill token
    c_decode: float  # s per decode token
    tiers: tuple[tuple[float, float], ...]  # (TPOT seconds, mix fraction)

    def __post_init__(self) -> None:
        """Why: a NaN or negative cost would give a bound that is silently wrong (NaN, 0, or too high)."""
        for name in ("mean_prompt", "mean_output", "kv_capacity", "t0", "c_prefill", "c_decode"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"bound input {name} must be a finite number >= 0, got {v}")
        for i, (tpot, f) in enumerate(self.tiers):
            if not (math.isfinite(tpot) and tpot > 0) or not (math.isfinite(f) and f >= 0):
                raise ConfigError(f"bound tier {i}: TPOT must be > 0 s and the mix weight >= 0, got ({tpot}, {f})")


def tier_rate(b: BoundInputs, tpot: float, disaggregated: bool = False) -> float:
    """``mu_t``: requests per second one instance can serve for a tier of TPOT ``tpot``."""
    p, d = b.mean_prompt, b.mean_output
    work = b.c_decode * d + (0.0 if disaggregated else b.c_prefill * p)
    compute = (1 - b.t0 / tpot) / work if work > 0 else float("inf")
    if b.t0 >= tpot:
        compute = 0.0
    kv = b.kv_capacity / ((p + d / 2) * d * tpot)
    return max(0.0, min(compute, kv))


def optimal_rate(b: BoundInputs, mode: str = "colocated") -> float:
    """The fleet's goodput bound in requests per second (``mode``: colocated or disaggregated)."""
    if mode not in ("colocated", "disaggregated"):
        raise ConfigError(f"bound mode must be colocated or disaggregated, got {mode!r}")
    if b.instances < 1 or b.mean_prompt <= 0 or b.mean_output <= 0:
        raise ConfigError("bound needs >= 1 instance and positive mean prompt and output lengths")
    total = sum(f for _, f in b.tiers)
    if total <= 0:
        raise ConfigError("bound needs a tier mix with positive weight")
    dis = mode == "disaggregated"
    inv = 0.0
    for tpot, f in b.tiers:
        if f <= 0:
            continue
        mu = tier_rate(b, tpot, dis)
        if mu <= 0:
            return 0.0
        inv += (f / total) / mu
    if dis:
        if b.c_prefill <= 0:
            raise ConfigError("disaggregated bound needs a positive prefill cost")
        inv += b.c_prefill * b.mean_prompt  # 1 / mu_p
    return b.instances / inv
