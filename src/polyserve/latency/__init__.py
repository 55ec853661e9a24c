"""Latency models: how long one engine iteration takes.

Reading guide:
- ``base``      the ``LatencyModel`` protocol and the KV transfer time;
- ``hardware``  GPU specs, model architectures, deployments and KV capacity;
- ``linear``    the fitted linear model (BLIS coefficients; the default for Llama-3.1-8B on H100);
- ``roofline``  an analytical model from architecture and GPU spec;
- ``table``     a model interpolated from a profile CSV (Vidur's mlp.csv layout);
- ``fit``       least-squares fit of linear coefficients from measured iterations;
- ``registry``  ``build_latency_model(kind, deployment)`` and the ``auto`` choice.
"""

from polyserve.latency.base import LatencyModel, kv_transfer_time
from polyserve.latency.fit import (
    FitReport,
    Iterations,
    fit_linear,
    fit_report,
    load_linear_coefficients,
    read_iterations,
    save_linear_coefficients,
)
from polyserve.latency.hardware import Deployment, GpuSpec, ModelArch, get_deployment, get_gpu, get_model
from polyserve.latency.linear import LinearLatencyModel, blis_linear_model
from polyserve.latency.registry import LATENCY_MODELS, AutoChoice, build_latency_model, choose_auto
from polyserve.latency.roofline import RooflineLatencyModel
from polyserve.latency.table import LayerProfile, TableLatencyModel, default_profile, read_layer_profile

__all__ = [
    "LATENCY_MODELS",
    "AutoChoice",
    "Deployment",
    "FitReport",
    "GpuSpec",
    "Iterations",
    "LatencyModel",
    "LayerProfile",
    "LinearLatencyModel",
    "ModelArch",
    "RooflineLatencyModel",
    "TableLatencyModel",
    "blis_linear_model",
    "build_latency_model",
    "choose_auto",
    "default_profile",
    "fit_linear",
    "fit_report",
    "get_deployment",
    "get_gpu",
    "get_model",
    "kv_transfer_time",
    "load_linear_coefficients",
    "read_iterations",
    "read_layer_profile",
    "save_linear_coefficients",
]
