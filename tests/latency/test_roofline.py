"""The roofline model over the deployments the simulator must cover: 8B and 70B, TP 1-8, H100/H200/A100."""

from __future__ import annotations

import math
import re

import pytest

from polyserve.core.errors import ConfigError, ModelDoesNotFitError
from polyserve.latency import RooflineLatencyModel, get_deployment
from polyserve.latency.roofline import BREAKDOWN_TERMS

GPUS = ["h100", "h200", "a100"]
TPS = [1, 2, 4, 8]
GRID = [(d, 1200 * d, p) for d in (1, 16, 64, 256) for p in (0, 512, 4096)]


def _models(model: str, gpu: str) -> dict[int, RooflineLatencyModel]:
    out = {}
    for tp in TPS:
        try:
            out[tp] = RooflineLatencyModel(get_deployment(model, gpu, tp))
        except ModelDoesNotFitError:
            continue
    return out


@pytest.mark.parametrize("gpu", GPUS)
@pytest.mark.parametrize("model", ["llama-3.1-8b", "llama-3.1-70b"])
def test_finite_positive_everywhere(model: str, gpu: str) -> None:
    models = _models(model, gpu)
    assert sorted(models) == (TPS if model == "llama-3.1-8b" else [2, 4, 8])
    for m in models.values():
        for d, kv, p in GRID:
            t = m.iteration_time(d, kv, p)
            assert math.isfinite(t) and 0 < t < 10, (m.deployment.describe(), d, kv, p, t)


@pytest.mark.parametrize("gpu", GPUS)
def test_70b_on_one_gpu_raises(gpu: str) -> None:
    with pytest.raises(ModelDoesNotFitError):
        RooflineLatencyModel(get_deployment("llama-3.1-70b", gpu, 1))


@pytest.mark.parametrize("gpu", GPUS)
@pytest.mark.parametrize("model", ["llama-3.1-8b", "llama-3.1-70b"])
@pytest.mark.parametrize(("d", "p"), [(256, 0), (64, 4096), (0, 8192)])
def test_tensor_parallelism_helps_big_batches(model: str, gpu: str, d: int, p: int) -> None:
    models = _models(model, gpu)
    times = [models[tp].iteration_time(d, 1200 * d, p) for tp in sorted(models)]
    assert times == sorted(times, reverse=True), times
    assert times[-1] < 0.5 * times[0], times  # 4-8x the GPUs at least halve a big iteration


def test_allreduce_only_with_tp(h100_8b) -> None:
    assert RooflineLatencyModel(h100_8b).breakdown(64, 64 * 1200, 0)["allreduce"] == 0.0
    tp2 = RooflineLatencyModel(get_deployment("llama-3.1-8b", "h100", 2)).breakdown(64, 64 * 1200, 0)
    # 2 per layer x 32 layers x (24.0 us + 2*(1/2) * 64 tokens * 4096 * 2 B / 305 GB/s)
    assert tp2["allreduce"] == pytest.approx(64 * (24.0e-6 + 64 * 4096 * 2 / 305e9))


def test_a100_allreduce_scaled_by_nvlink() -> None:
    h100 = RooflineLatencyModel(get_deployment("llama-3.1-8b", "h100", 4)).describe()
    a100 = RooflineLatencyModel(get_deployment("llama-3.1-8b", "a100", 4)).describe()
    assert a100["allreduce_bus_gbps"] == pytest.approx(h100["allreduce_bus_gbps"] * 600 / 900)  # type: ignore[operator]


def test_batch_one_decode_is_weight_bandwidth_bound(h100_8b) -> None:
    m = RooflineLatencyModel(h100_8b)
    b = m.breakdown(1, 1200, 0)
    layer_weight_bytes = 32 * (4096 * 32 * 128 + 2 * 4096 * 8 * 128 + 32 * 128 * 4096 + 3 * 4096 * 14336) * 2
    assert b["gemm"] == pytest.approx(layer_weight_bytes / (3.35e12 * 0.80))
    assert b["lm_head"] == pytest.approx(128256 * 4096 * 2 / (3.35e12 * 0.80))
    assert b["decode_attention"] == pytest.approx(1201 * 131072 / (3.35e12 * 0.80))
    assert b["overhead"] == pytest.approx(126.024825e-6 + 32 * 32.09546717e-6 + 4.41684444e-6)


def test_big_prefill_is_compute_bound_at_blis_mfu(h100_8b) -> None:
    m = RooflineLatencyModel(h100_8b)
    layer_params = 32 * (4096 * 32 * 128 + 2 * 4096 * 8 * 128 + 32 * 128 * 4096 + 3 * 4096 * 14336)
    assert m.breakdown(0, 0, 8192)["gemm"] == pytest.approx(2 * layer_params * 8192 / (989.5e12 * 0.45))
    assert m.breakdown(0, 0, 8192)["prefill_attention"] == pytest.approx(
        2 * 32 * 32 * 128 * 8192 * 8193 / (989.5e12 * 0.45)
    )


def test_breakdown_sums_to_iteration_time(h100_8b) -> None:
    for dep in (h100_8b, get_deployment("llama-3.1-70b", "a100", 8)):
        m = RooflineLatencyModel(dep)
        for d, kv, p in [(0, 0, 0), *GRID]:
            parts = m.breakdown(d, kv, p)
            assert tuple(parts) == BREAKDOWN_TERMS
            assert sum(parts.values()) == pytest.approx(m.iteration_time(d, kv, p), rel=1e-12)
            assert m.time_except_layer_gemms(d, kv, p) == pytest.approx(
                m.iteration_time(d, kv, p) - parts["gemm"], rel=1e-12, abs=1e-15
            )


def test_longer_context_costs_more(h100_8b) -> None:
    m = RooflineLatencyModel(h100_8b)
    assert not m.kv_independent
    assert m.iteration_time(32, 32 * 8000, 0) > m.iteration_time(32, 32 * 500, 0)


def test_describe_states_factors_and_sources(h100_8b) -> None:
    desc = RooflineLatencyModel(h100_8b).describe()
    assert desc["name"] == "roofline"
    assert desc["mfu_prefill"] == 0.45 and desc["mfu_decode"] == 0.30
    assert desc["hbm_efficiency"] == 0.80
    for k in ("mfu_source", "hbm_efficiency_source", "allreduce_source", "overhead_source"):
        assert isinstance(desc[k], str) and desc[k]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hbm_efficiency": 0.0}, "hbm_efficiency must be in (0, 1], got 0.0"),
        ({"mfu_prefill": 1.5}, "mfu_prefill must be in (0, 1], got 1.5"),
        ({"step_overhead_s": -1e-3}, "step_overhead_s must be a finite number >= 0, got -0.001"),
        ({"allreduce_bus_bytes_per_s": 0.0}, "bus bandwidth > 0"),
    ],
)
def test_bad_parameters_raise(h100_8b, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        RooflineLatencyModel(h100_8b, **kwargs)
