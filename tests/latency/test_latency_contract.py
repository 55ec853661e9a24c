"""The contract every latency model keeps: idle is free, more work never takes less time, reports name it."""

from __future__ import annotations

import itertools
import math

import pytest

from polyserve.latency import LatencyModel, build_latency_model, get_deployment

CASES = [
    ("linear", "llama-3.1-8b", "h100", 1),
    ("roofline", "llama-3.1-8b", "h100", 1),
    ("roofline", "llama-3.1-70b", "h200", 4),
    ("table", "llama-3.1-8b", "a100", 1),
    ("table", "llama-3.1-8b", "a100", 4),
]
DECODES = [0, 1, 2, 7, 32, 100, 256, 512]
KVS_PER_SEQ = [0, 1, 500, 1200, 8000]
PREFILLS = [0, 1, 16, 100, 513, 2048, 8192, 40000]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: "-".join(map(str, c)))
def model(request: pytest.FixtureRequest) -> LatencyModel:
    kind, m, gpu, tp = request.param
    return build_latency_model(kind, get_deployment(m, gpu, tp))


def test_implements_protocol(model: LatencyModel) -> None:
    assert isinstance(model, LatencyModel)
    assert isinstance(model.kv_independent, bool)


def test_idle_engine_takes_no_time(model: LatencyModel) -> None:
    assert model.iteration_time(0, 0, 0) == 0.0


def test_positive_and_finite_whenever_there_is_work(model: LatencyModel) -> None:
    for d, kv, p in itertools.product(DECODES, KVS_PER_SEQ, PREFILLS):
        if d == 0 and p == 0:
            continue
        t = model.iteration_time(d, d * kv, p)
        assert math.isfinite(t) and t > 0, (d, kv, p, t)


@pytest.mark.parametrize("axis", ["num_decode", "kv_tokens", "prefill_tokens"])
def test_monotone_in_each_argument(model: LatencyModel, axis: str) -> None:
    for d, kv, p in itertools.product(DECODES, KVS_PER_SEQ, PREFILLS):
        base = {"num_decode": d, "kv_tokens": d * kv, "prefill_tokens": p}
        prev = model.iteration_time(**base)
        for step in (1, 3, 64, 1000):
            more = dict(base)
            more[axis] += step
            t = model.iteration_time(**more)
            assert t >= prev, (axis, base, step, prev, t)
            prev = t
            base = more


def test_describe_names_the_model_and_its_parameters(model: LatencyModel) -> None:
    desc = model.describe()
    assert desc["name"] == model.name
    assert "formula" in desc
    assert {"model", "gpu", "tp", "kv_capacity_tokens"} <= set(desc)
    assert len(desc) > 8  # parameters and provenance, not just a name
