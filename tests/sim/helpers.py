"""Tiny-config helpers for simulator tests: hand-built workloads and deployments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from polyserve.core.tiers import Tier, TierSet
from polyserve.data import DEFAULT_TIERS
from polyserve.latency.hardware import get_deployment
from polyserve.latency.linear import LinearLatencyModel, blis_linear_model
from polyserve.policy import SCHEDULERS, make_router
from polyserve.sim.cluster import Simulation, make_rng
from polyserve.sim.config import SimConfig
from polyserve.workload import Workload


def default_tiers() -> TierSet:
    return TierSet.from_toml(DEFAULT_TIERS)


def workload(
    rows: Sequence[tuple[float, int, int, int]],
    tiers: TierSet | None = None,
    ttft_ms: Sequence[float] | None = None,
    tpot_ms: Sequence[float] | None = None,
) -> Workload:
    """rows: (arrival_s, input, output, tier index). SLOs from the tiers unless given per request."""
    tiers = tiers or default_tiers()
    a = np.array([r[0] for r in rows], dtype=np.float64)
    inp = np.array([r[1] for r in rows], dtype=np.int64)
    out = np.array([r[2] for r in rows], dtype=np.int64)
    tier = np.array([r[3] for r in rows], dtype=np.int16)
    tt = np.array([tiers[t].ttft_slo_ms(i) for t, i in zip(tier, inp, strict=True)], dtype=np.float64)
    tp = np.array([tiers[t].tpot_ms for t in tier], dtype=np.float64)
    if ttft_ms is not None:
        tt = np.asarray(ttft_ms, dtype=np.float64)
    if tpot_ms is not None:
        tp = np.asarray(tpot_ms, dtype=np.float64)
    return Workload(a, inp, out, tier, tt, tp, tiers, {"source": "test"})


def one_tier(tpot_ms: float = 10.0, ttft_ms: float = 20.0) -> TierSet:
    return TierSet([Tier("t", tpot_ms, ttft_ms, 0.0, 1.0)])


def linear_model(b0_ms=5.0, b1_ms=0.01, b2_ms=1.0, b3_ms=0.0, kv_fraction: float | None = None):
    """A linear model with round coefficients (ms) on llama-3.1-8b/h100; ``kv_fraction`` shrinks KV memory."""
    dep = get_deployment("llama-3.1-8b", "h100")
    if kv_fraction is not None:
        dep = replace(dep, gpu_memory_utilization=kv_fraction)
    return LinearLatencyModel(dep, b0_ms / 1e3, b1_ms / 1e3, b2_ms / 1e3, b3_ms / 1e3, source="test")


def blis(kv_fraction: float | None = None):
    dep = get_deployment("llama-3.1-8b", "h100")
    if kv_fraction is not None:
        dep = replace(dep, gpu_memory_utilization=kv_fraction)
    return blis_linear_model(dep)


def simulation(wl: Workload, model, *, router="round-robin", scheduler="fcfs", seed=0, **cfg) -> Simulation:
    config = SimConfig(**cfg)
    return Simulation(
        wl, model, make_router(router, make_rng(seed)), lambda role: SCHEDULERS.create(scheduler), config
    )


def token_oracle(sim: Simulation) -> dict[int, list[int]]:
    """Record every token's emit time (ns) per request; needs ``fast=False`` (one event per iteration)."""
    times: dict[int, list[int]] = {}

    def on_tokens(inst, reqs, t):
        for r in reqs:
            times.setdefault(r.rid, []).append(t)

    for inst in sim.instances:
        inst.on_tokens = on_tokens
    return times
