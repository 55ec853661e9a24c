"""The gateway's latency model on a scaled clock predicts what the scaled engines do, absolutely."""

from __future__ import annotations

import pytest

from polyserve.gateway.config import EngineSpec
from polyserve.gateway.latency import ScaledModel, build_gateway_model
from polyserve.latency.build import FleetSpec, build_model
from polyserve.policy.cost import fit_cost


@pytest.mark.parametrize("latency_model", ["linear", "roofline"])
def test_the_policies_cost_surrogate_of_a_scaled_model_is_scaled_like_its_iterations(latency_model):
    """Engines 4x slower than the model: every iteration, and the surrogate the routers use, is 4x longer.
    (A regression: the linear coefficients once passed through unscaled, so PolyServe admitted 4x too much.)"""
    inner = build_model(FleetSpec(latency_model=latency_model))
    scaled = build_gateway_model(EngineSpec(latency_model=latency_model, time_scale=0.25))
    assert isinstance(scaled, ScaledModel)
    assert scaled.iteration_time(8, 8000, 512) == pytest.approx(4 * inner.iteration_time(8, 8000, 512))
    a, b = fit_cost(inner), fit_cost(scaled)
    assert b.iteration(8, 8000, 512) == pytest.approx(4 * a.iteration(8, 8000, 512), rel=1e-6)
    assert b.prefill_seconds(2000, 8192) == pytest.approx(4 * a.prefill_seconds(2000, 8192), rel=1e-6)
