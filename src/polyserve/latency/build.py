"""From a fleet description (model, GPU, TP, latency model) to the latency model every face uses.

One place, so the simulator, the emulated engine and the gateway's predictions time iterations alike.
Raises ``ConfigError`` for an unknown model/GPU, a model that does not fit the GPU, or a bad profile file.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyserve.latency.hardware import get_deployment
from polyserve.latency.registry import build_latency_model, choose_auto


@dataclass(frozen=True)
class FleetSpec:
    """What each instance is: model, GPU, tensor parallelism, and how its iterations are timed."""

    model: str = "llama-3.1-8b"
    gpu: str = "h100"
    tp: int = 1
    latency_model: str = "auto"  # auto | linear | roofline | table
    latency_coefficients: str | None = None  # a `polyserve profile fit` output (linear)
    latency_profile: str | None = None  # a Vidur mlp.csv (table)
    gpu_memory_utilization: float = 0.9



def build_model(fleet: FleetSpec):
    dep = get_deployment(fleet.model, fleet.gpu, fleet.tp, fleet.gpu_memory_utilization)
    return build_latency_model(
        fleet.latency_model,
        dep,
        coefficients_path=fleet.latency_coefficients,
        profile_path=fleet.latency_profile,
    )


def describe_model(model, fleet: FleetSpec) -> dict[str, object]:
    d = dict(model.describe())
    d["requested"] = fleet.latency_model
    if fleet.latency_model == "auto" and not fleet.latency_coefficients and not fleet.latency_profile:
        d["auto_reason"] = choose_auto(model.deployment).reason
    return d
