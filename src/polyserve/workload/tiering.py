"""Tier assignment and per-request SLOs.

A request's tier comes from the trace's ``tier`` column when it has one; otherwise it is drawn from the
tier mix (the ``TierSet``'s weights, or weights given for the run). Draws use their own random stream, so
changing the mix never shifts arrivals or lengths, and changing the rate never shifts the tiers.

Drawing is inverse-CDF on one uniform per request: request *i*'s tier depends only on the *i*-th uniform,
so a longer run keeps the tiers of a shorter one, and a tier of weight 0 is never drawn.

SLOs: ``ttft_ms = tier.ttft_ms + tier.ttft_ms_per_input_token * input_tokens`` (a long prompt gets
proportionally more time to its first token) and ``tpot_ms = tier.tpot_ms``.
"""

from __future__ import annotations

import numpy as np

from polyserve.core.tiers import TierSet


def draw_tiers(rng: np.random.Generator, tiers: TierSet, n: int) -> np.ndarray:
    """``n`` int16 tier indices drawn from ``tiers.weights()`` (``ConfigError`` if they sum to 0)."""
    cdf = np.cumsum(np.asarray(tiers.weights(), dtype=np.float64))
    cdf /= cdf[-1]  # exactly 1.0 at the end (and on any trailing zero-weight tiers), so u < 1 always lands
    u = rng.random(n)
    return np.searchsorted(cdf, u, side="right").astype(np.int16)


def slo_arrays(tiers: TierSet, tier: np.ndarray, input_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-request ``(ttft_ms, tpot_ms)`` float64 arrays from each request's tier and prompt length."""
    base = np.array([t.ttft_ms for t in tiers], dtype=np.float64)
    per_token = np.array([t.ttft_ms_per_input_token for t in tiers], dtype=np.float64)
    tpot = np.array([t.tpot_ms for t in tiers], dtype=np.float64)
    idx = tier.astype(np.intp, copy=False)
    return base[idx] + per_token[idx] * input_tokens, tpot[idx]
