"""``build_latency_model(kind, deployment)``: the one place that turns a CLI/config name into a latency model.

Kinds (``LATENCY_MODELS``):
- ``linear``: BLIS's measured coefficients for the deployment, or the coefficients file when one is given
  (``--latency-coefficients FILE``, written by ``polyserve profile fit``);
- ``roofline``: the analytical model (works for every deployment that fits in memory);
- ``table``: a Vidur-layout kernel profile (``--latency-profile FILE``); without one, the shipped profile of
  the deployment's GPU whose model shape matches;
- ``auto`` (the default): a given coefficients file or profile decides (``linear`` / ``table``); otherwise
  ``linear`` with BLIS's coefficients when BLIS fitted this (model, GPU, TP) *and* the fit is physically
  plausible, else ``roofline``. Measured beats modelled, but not blindly: a BLIS fit whose batch-1 decode step
  (``b0 + b2``) is shorter than reading the weights once at the GPU's *peak* HBM bandwidth cannot be an
  iteration time (BLIS's Llama-3.1-8B H100 TP4 fit has ``b0`` = 42 us against a 1.2 ms floor), so ``auto``
  falls back to the roofline there. ``choose_auto`` says which and why.

Failure modes: an unknown kind raises ``RegistryError`` listing the kinds; a file given to a kind that does
not read it (a profile to ``linear``, coefficients to ``roofline``) raises ``ConfigError`` rather than being
silently ignored; each model's own errors pass through (``ConfigError`` for a missing BLIS fit or profile,
``InputError`` for a bad file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from polyserve.core.errors import ConfigError
from polyserve.core.registry import Registry
from polyserve.latency.base import LatencyModel
from polyserve.latency.fit import load_linear_coefficients
from polyserve.latency.hardware import Deployment
from polyserve.latency.linear import blis_linear_model, find_blis_entry
from polyserve.latency.roofline import RooflineLatencyModel
from polyserve.latency.table import TableLatencyModel, default_profile

LATENCY_MODELS: Registry[LatencyModel] = Registry("latency model")


@dataclass(frozen=True, slots=True)
class AutoChoice:
    """What ``auto`` picks for a deployment, and why (shown in reports next to the model's ``describe()``)."""

    kind: str
    reason: str


def weight_read_floor_s(deployment: Deployment) -> float:
    """Seconds to read one GPU's share of the weights at peak HBM bandwidth: no iteration can be shorter."""
    return deployment.model.weight_bytes / deployment.tp / deployment.gpu.hbm_bytes_per_s


def choose_auto(deployment: Deployment) -> AutoChoice:
    """The ``auto`` rule without files: plausible BLIS fit -> ``linear``, else ``roofline``."""
    d = deployment
    where = f"{d.model.name} on {d.gpu.name} tp={d.tp}"
    entry = find_blis_entry(d)
    if entry is None:
        return AutoChoice("roofline", f"BLIS has no fitted coefficients for {where}")
    step_s = (entry.beta[0] + entry.beta[2]) * 1e-6
    floor_s = weight_read_floor_s(d)
    if step_s < floor_s:
        return AutoChoice(
            "roofline",
            f"BLIS's fit for {where} ({entry.vllm_version}) predicts a {step_s * 1e3:.3f} ms batch-1 decode "
            f"step, below the {floor_s * 1e3:.3f} ms to read the weights at peak bandwidth; not trusted",
        )
    return AutoChoice("linear", f"BLIS fitted {where} on real vLLM runs ({entry.vllm_version})")


def _reject(kind: str, coefficients_path: str | Path | None, profile_path: str | Path | None) -> None:
    if kind != "linear" and coefficients_path is not None:
        raise ConfigError(
            f"--latency-coefficients is read only by --latency-model linear (or auto), not {kind}"
        )
    if kind != "table" and profile_path is not None:
        raise ConfigError(f"--latency-profile is read only by --latency-model table (or auto), not {kind}")


@LATENCY_MODELS.register("linear", "fitted linear model: BLIS coefficients, or a --latency-coefficients file")
def _linear(
    deployment: Deployment,
    coefficients_path: str | Path | None = None,
    profile_path: str | Path | None = None,
    allow_profile_mismatch: bool = False,
) -> LatencyModel:
    _reject("linear", coefficients_path, profile_path)
    if coefficients_path is not None:
        return load_linear_coefficients(coefficients_path, deployment)
    return blis_linear_model(deployment)


@LATENCY_MODELS.register("roofline", "analytical model from the architecture and the GPU's spec")
def _roofline(
    deployment: Deployment,
    coefficients_path: str | Path | None = None,
    profile_path: str | Path | None = None,
    allow_profile_mismatch: bool = False,
) -> LatencyModel:
    _reject("roofline", coefficients_path, profile_path)
    return RooflineLatencyModel(deployment)


@LATENCY_MODELS.register("table", "kernel profile in Vidur's mlp.csv layout plus roofline attention")
def _table(
    deployment: Deployment,
    coefficients_path: str | Path | None = None,
    profile_path: str | Path | None = None,
    allow_profile_mismatch: bool = False,
) -> LatencyModel:
    _reject("table", coefficients_path, profile_path)
    path: str | Path = (
        profile_path
        if profile_path is not None
        else default_profile(deployment, allow_mismatch=allow_profile_mismatch)
    )
    return TableLatencyModel.from_csv(path, deployment, allow_mismatch=allow_profile_mismatch)


@LATENCY_MODELS.register("auto", "linear where BLIS measured the deployment plausibly, else roofline")
def _auto(
    deployment: Deployment,
    coefficients_path: str | Path | None = None,
    profile_path: str | Path | None = None,
    allow_profile_mismatch: bool = False,
) -> LatencyModel:
    if coefficients_path is not None and profile_path is not None:
        raise ConfigError("give --latency-coefficients or --latency-profile, not both")
    if coefficients_path is not None:
        return _linear(deployment, coefficients_path=coefficients_path)
    if profile_path is not None:
        return _table(deployment, profile_path=profile_path, allow_profile_mismatch=allow_profile_mismatch)
    return LATENCY_MODELS.create(choose_auto(deployment).kind, deployment=deployment)


def build_latency_model(
    kind: str,
    deployment: Deployment,
    *,
    coefficients_path: str | Path | None = None,
    profile_path: str | Path | None = None,
    allow_profile_mismatch: bool = False,
) -> LatencyModel:
    """The latency model of ``kind`` (see the module docstring) for ``deployment``."""
    return LATENCY_MODELS.create(
        kind,
        deployment=deployment,
        coefficients_path=coefficients_path,
        profile_path=profile_path,
        allow_profile_mismatch=allow_profile_mismatch,
    )
