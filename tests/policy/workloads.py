"""Hand-built workloads and round-number latency models for policy tests that run the simulator."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from polyserve.core.tiers import TierSet
from polyserve.latency.hardware import get_deployment
from polyserve.latency.linear import LinearLatencyModel
from polyserve.workload import Workload

from .helpers import tiers as default_tiers


def workload(
    rows: Sequence[tuple[float, int, int, int]],
    ttft_ms: Sequence[float] | None = None,
    tpot_ms: Sequence[float] | None = None,
    tiers: TierSet | None = None,
) -> Workload:
    """rows: (arrival s, prompt tokens, output tokens, tier index); SLOs from the tiers unless given."""
    ts = tiers or default_tiers()
    arrival, inp, out, tier = (list(c) for c in zip(*rows, strict=True))
    tt = [ts[t].ttft_slo_ms(i) for t, i in zip(tier, inp, strict=True)] if ttft_ms is None else list(ttft_ms)
    tp = [ts[t].tpot_ms for t in tier] if tpot_ms is None else list(tpot_ms)
    return Workload(
        np.array(arrival, dtype=np.float64),
        np.array(inp, dtype=np.int64),
        np.array(out, dtype=np.int64),
        np.array(tier, dtype=np.int16),
        np.array(tt, dtype=np.float64),
        np.array(tp, dtype=np.float64),
        ts,
        {"source": "test"},
    )


def linear_model(b0_ms: float = 5.0, b1_ms: float = 0.01, b2_ms: float = 1.0) -> LinearLatencyModel:
    """step = b0 + b1 * prefill tokens + b2 * decode sequences (ms), on llama-3.1-8b/h100's KV capacity."""
    dep = get_deployment("llama-3.1-8b", "h100")
    return LinearLatencyModel(dep, b0_ms / 1e3, b1_ms / 1e3, b2_ms / 1e3, 0.0, source="test")
