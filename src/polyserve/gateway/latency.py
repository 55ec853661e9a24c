"""The latency model the policy predicts the backends with, from the config's ``engine`` section.

The same models the simulator and the emulated engine use (``polyserve.experiments.runner.build_model``). Emulated
engines run at ``--time-scale X`` (X times faster than the model); ``ScaledModel`` divides every iteration
time by the same X so the router's predictions match what the backends really do on the wall clock.
"""

from __future__ import annotations

from polyserve.gateway.config import EngineSpec

COEFFICIENTS = ("b0", "b1", "b2", "b3")  # a linear model's seconds per (iteration, prefill token, seq, KV token)


class ScaledModel:
    """``inner``'s iteration times divided by ``time_scale``; everything else (``deployment``...) passes through.

    A linear model's coefficients are scaled too: the policies' cost surrogate (``policy.cost.fit_cost``)
    reads them directly when they exist, and unscaled ones would make every absolute prediction (admission,
    SLO checks, the lost-cause test) off by the scale while relative ones (least-loaded) stay right.
    """

    def __init__(self, inner: object, time_scale: float) -> None:
        self.inner = inner
        self.time_scale = time_scale

    def iteration_time(self, num_decode: int, kv_tokens: int, prefill_tokens: int) -> float:
        return self.inner.iteration_time(num_decode, kv_tokens, prefill_tokens) / self.time_scale  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        v = getattr(self.inner, name)
        if name in COEFFICIENTS and isinstance(v, int | float):
            return v / self.time_scale
        return v

    def describe(self) -> dict[str, object]:
        d = dict(self.inner.describe()) if hasattr(self.inner, "describe") else {}
        d["time_scale"] = self.time_scale
        return d


def build_gateway_model(spec: EngineSpec) -> object:
    """Raises ``ConfigError`` for an unknown model/GPU, or a model that does not fit the GPU."""
    from polyserve.latency.build import FleetSpec, build_model

    model = build_model(
        FleetSpec(
            model=spec.model,
            gpu=spec.gpu,
            tp=spec.tp,
            latency_model=spec.latency_model,
            gpu_memory_utilization=spec.gpu_memory_utilization,
        )
    )
    return model if spec.time_scale == 1 else ScaledModel(model, spec.time_scale)
