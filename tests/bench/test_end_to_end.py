"""The bench against the emulated engine in-process: every prompt completes, tokens are exact, measured
latencies are the engine's modelled ones, and the run stops by itself (count, duration or trace end)."""

from __future__ import annotations

import itertools

import httpx
import numpy as np
import pytest

from polyserve.bench.api import benchmark
from polyserve.bench.config import BenchConfig
from polyserve.bench.dataset import build_requests
from polyserve.engine import EngineConfig, StreamingASGITransport, create_engine_app
from polyserve.latency.hardware import get_deployment
from polyserve.latency.linear import LinearLatencyModel

from .helpers import run


def model(b0_ms: float, b1_ms: float, b2_ms: float) -> LinearLatencyModel:
    return LinearLatencyModel(get_deployment("llama-3.1-8b", "h100"), b0_ms / 1e3, b1_ms / 1e3, b2_ms / 1e3)


def bench_engine(engine: EngineConfig, lat: LinearLatencyModel, **cfg) -> dict:
    app = create_engine_app(engine, latency_model=lat)
    config = BenchConfig(base_url="http://engine", **cfg)

    async def main():
        async with httpx.AsyncClient(transport=StreamingASGITransport(app)) as c:
            return await benchmark(config, client=c)

    return run(main())


@pytest.mark.parametrize("endpoint", ["/v1/completions", "/v1/chat/completions"])
def test_every_prompt_completes_with_exact_token_counts(endpoint: str) -> None:
    doc = bench_engine(
        EngineConfig(time_scale=20),
        model(2, 0.01, 0.1),
        endpoint=endpoint,
        num_prompts=24,
        request_rate=200,
        random_input_len=16,
        random_output_len=8,
    )
    assert doc["completed"] == 24 and doc["failed"] == 0 and doc["not_sent"] == 0
    assert all(r["output_tokens"] == 8 and r["input_tokens"] == 16 for r in doc["requests"])
    assert all(len(r["itl_ms"]) == 7 for r in doc["requests"])
    assert doc["total_output_tokens"] == 192 and doc["total_input_tokens"] == 384
    assert doc["attained"] == sum(r["attained"] for r in doc["requests"])
    assert doc["attainment"] == pytest.approx(doc["attained"] / 24)
    assert set(doc["tiers"]) == {"t20", "t30", "t50", "t100"}
    assert sum(t["completed"] for t in doc["tiers"].values()) == 24
    assert doc["model_id"] == "llama-3.1-8b"  # found at /v1/models


def test_measured_latencies_are_the_engines_modelled_ones() -> None:
    """One request at a time on a real-time engine: TTFT = one prefill iteration, TPOT = one decode
    iteration (b0 + b2), as the latency model says."""
    doc = bench_engine(
        EngineConfig(time_scale=1),
        model(20, 0, 5),
        num_prompts=3,
        max_concurrency=1,
        random_input_len=16,
        random_output_len=8,
    )
    assert doc["completed"] == 3
    assert 19 <= doc["median_ttft_ms"] < 60  # never faster than the model; a loaded client adds a little
    assert doc["median_tpot_ms"] == pytest.approx(25, rel=0.1)
    assert doc["median_itl_ms"] == pytest.approx(25, rel=0.15)


def test_duration_bounds_the_sending() -> None:
    doc = bench_engine(
        EngineConfig(time_scale=20),
        model(1, 0, 0.1),
        request_rate=100,
        duration_s=0.25,
        random_input_len=4,
        random_output_len=4,
    )
    sched = [r["scheduled_s"] for r in doc["requests"]]
    assert 5 < len(sched) < 60 and max(sched) < 0.25
    assert doc["completed"] == len(sched) and doc["not_sent"] == 0


def test_duration_stops_requests_still_waiting_for_a_slot() -> None:
    doc = bench_engine(
        EngineConfig(time_scale=1),
        model(10, 0, 0),
        num_prompts=20,
        max_concurrency=1,
        duration_s=0.15,
        random_input_len=4,
        random_output_len=5,
    )
    assert 1 <= doc["completed"] < 20
    assert doc["completed"] + doc["failed"] + doc["not_sent"] == 20 == doc["num_prompts"]


def write_trace(tmp_path) -> str:
    p = tmp_path / "trace.csv"
    p.write_text(
        "arrived_at,num_prefill_tokens,num_decode_tokens,tier\n"
        "10.0,12,3,t20\n10.1,20,4,t100\n10.2,7,2,t50\n10.4,9,5,t20\n",
        encoding="utf-8",
    )
    return str(p)


def test_trace_replay_keeps_recorded_times_lengths_and_tiers(tmp_path) -> None:
    doc = bench_engine(
        EngineConfig(time_scale=20),
        model(1, 0, 0.1),
        dataset_name="trace",
        dataset_path=write_trace(tmp_path),
    )
    reqs = doc["requests"]
    assert [r["scheduled_s"] for r in reqs] == pytest.approx([0, 0.1, 0.2, 0.4])
    assert np.all(np.abs(np.array([r["send_s"] - r["scheduled_s"] for r in reqs])) < 0.05)
    assert [r["tier"] for r in reqs] == ["t20", "t100", "t50", "t20"]
    assert [r["input_tokens"] for r in reqs] == [12, 20, 7, 9]
    assert [r["output_tokens"] for r in reqs] == [3, 4, 2, 5]
    assert doc["request_rate"] is None and doc["dataset_name"] == "trace"


def test_trace_with_a_rate_is_retimed_and_with_inf_sent_at_once(tmp_path) -> None:
    path = write_trace(tmp_path)
    retimed, _ = build_requests(BenchConfig(dataset_name="trace", dataset_path=path, request_rate=100))
    assert retimed[-1].at_s == pytest.approx(0.03, rel=0.05)  # 4 requests at 100/s: 3 gaps of ~10 ms
    at_once, _ = build_requests(
        BenchConfig(dataset_name="trace", dataset_path=path, request_rate=float("inf"))
    )
    assert [r.at_s for r in at_once] == [0, 0, 0, 0]


def test_same_seed_same_requests_other_seed_other_requests() -> None:
    cfg = BenchConfig(
        num_prompts=50, request_rate=10, random_input_len=20, random_output_len=5, random_range_ratio=0.5
    )
    a, _ = build_requests(cfg)
    b, _ = build_requests(cfg)
    c, _ = build_requests(BenchConfig(**{**cfg.__dict__, "seed": 1}))
    assert a == b and a != c
    assert {r.input_tokens for r in a} <= set(range(10, 31)) and len({r.input_tokens for r in a}) > 1
    assert all(len(r.prompt.split()) == r.input_tokens for r in a)
    assert a[0].at_s == 0 and all(x.at_s <= y.at_s for x, y in itertools.pairwise(a))


def test_tier_weights_restrict_the_mix() -> None:
    reqs, _ = build_requests(
        BenchConfig(
            num_prompts=40, random_input_len=10, random_output_len=2, tier_weights={"t20": 1, "t100": 1}
        )
    )
    assert {r.tier for r in reqs} == {"t20", "t100"}
    t20 = next(r for r in reqs if r.tier == "t20")
    assert (t20.ttft_slo_ms, t20.tpot_slo_ms) == (pytest.approx(501.0), 20.0)  # 500 + 0.1 per prompt token
