"""build_workload and poisson_lengths_workload: each case does what WorkloadSpec documents, reproducibly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from polyserve.core.errors import ConfigError
from polyserve.data import ARXIV_LENGTHS, AZURE_CODE, AZURE_CONV
from polyserve.workload import (
    LengthSpec,
    Workload,
    WorkloadSpec,
    build_workload,
    poisson_lengths_workload,
    read_trace,
)

from .helpers import FIXTURES, default_tiers, two_tiers

CONV = str(AZURE_CONV)
CODE = str(AZURE_CODE)


def assert_same(a: Workload, b: Workload) -> None:
    for name in ("arrival_s", "input_tokens", "output_tokens", "tier", "ttft_ms", "tpot_ms"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def assert_well_formed(w: Workload) -> None:
    assert w.arrival_s.dtype == np.float64 and w.tier.dtype == np.int16
    assert w.input_tokens.dtype == np.int64 and w.output_tokens.dtype == np.int64
    assert (np.diff(w.arrival_s) >= 0).all() and (len(w) == 0 or w.arrival_s[0] >= 0)
    assert (w.input_tokens >= 1).all() and (w.output_tokens >= 1).all()
    assert ((w.tier >= 0) & (w.tier < len(w.tiers))).all()
    json.dumps(w.description)  # JSON-able provenance


# Replay ----------------------------------------------------------------------------------------------------


def test_by_default_a_trace_is_replayed_whole_as_recorded():
    trace = read_trace(AZURE_CONV)
    w = build_workload(WorkloadSpec(trace=CONV), default_tiers(), seed=0)
    assert_well_formed(w)
    np.testing.assert_array_equal(w.arrival_s, trace.arrival_s)
    np.testing.assert_array_equal(w.input_tokens, trace.input_tokens)
    np.testing.assert_array_equal(w.output_tokens, trace.output_tokens)
    assert w.description["source"] == "replay" and w.description["transforms"] == []
    assert w.description["trace"]["sha256"] == trace.sha256
    assert w.description["trace"]["format"] == "azure"


def test_rate_retimes_the_trace_to_that_mean_rate():
    w = build_workload(WorkloadSpec(trace=CONV, rate=12.0), default_tiers(), seed=0)
    assert len(w) == 19_366
    assert (len(w) - 1) / (w.arrival_s[-1] - w.arrival_s[0]) == pytest.approx(12.0, rel=1e-12)
    assert w.description["transforms"][0]["op"] == "retime"


def test_tile_fills_the_duration_and_cut_stops_at_it():
    w = build_workload(WorkloadSpec(trace=CODE, duration_s=9000.0, tile=True), default_tiers(), seed=0)
    assert_well_formed(w)
    assert w.arrival_s[-1] < 9000.0 and w.arrival_s[-1] > 9000.0 - 3437.0
    step = w.description["transforms"][-1]
    assert step["op"] == "tile" and step["copies"] == 3
    # the second copy repeats the first row's lengths
    n = 8_819
    assert w.input_tokens[n] == w.input_tokens[0] and w.output_tokens[n] == w.output_tokens[0]

    cut = build_workload(WorkloadSpec(trace=CODE, duration_s=600.0), default_tiers(), seed=0)
    assert (cut.arrival_s < 600.0).all() and len(cut) < n


def test_num_requests_keeps_the_first_rows_and_start_s_opens_a_window():
    trace = read_trace(AZURE_CONV)
    w = build_workload(WorkloadSpec(trace=CONV, num_requests=100), default_tiers(), seed=0)
    np.testing.assert_array_equal(w.input_tokens, trace.input_tokens[:100])

    w = build_workload(WorkloadSpec(trace=CONV, start_s=1000.0, duration_s=60.0), default_tiers(), seed=0)
    first = int(np.searchsorted(trace.arrival_s, 1000.0))
    np.testing.assert_allclose(w.arrival_s, trace.arrival_s[first : first + len(w)] - 1000.0)
    np.testing.assert_array_equal(w.input_tokens, trace.input_tokens[first : first + len(w)])
    assert (w.arrival_s < 60.0).all() and trace.arrival_s[first + len(w)] >= 1060.0


def test_a_window_past_the_end_is_a_config_error():
    with pytest.raises(ConfigError, match="past the last arrival"):
        build_workload(WorkloadSpec(trace=CONV, start_s=1e6), default_tiers(), seed=0)


def test_replaying_a_lengths_only_trace_says_how_to_use_it():
    with pytest.raises(ConfigError) as e:
        build_workload(WorkloadSpec(trace=str(ARXIV_LENGTHS)), default_tiers(), seed=0)
    assert str(e.value) == f"{ARXIV_LENGTHS} has no timestamps; use --arrival poisson|gamma with --rate"


def test_replay_with_synthetic_lengths_keeps_the_recorded_arrivals():
    trace = read_trace(AZURE_CODE)
    w = build_workload(WorkloadSpec(trace=CODE, output_len="fixed:64"), default_tiers(), seed=0)
    np.testing.assert_array_equal(w.arrival_s, trace.arrival_s)
    np.testing.assert_array_equal(w.input_tokens, trace.input_tokens)
    assert (w.output_tokens == 64).all()


# Tiers and SLOs --------------------------------------------------------------------------------------------


def test_slos_come_from_each_requests_tier_and_prompt_length():
    tiers = two_tiers()
    w = build_workload(WorkloadSpec(trace=CODE), tiers, seed=0)
    fast = w.tier == 0
    assert fast.any() and (~fast).any()
    np.testing.assert_allclose(w.ttft_ms[fast], 250 + 0.5 * w.input_tokens[fast])
    np.testing.assert_allclose(w.ttft_ms[~fast], 4000.0)
    np.testing.assert_allclose(w.tpot_ms, np.where(fast, 20.0, 80.0))


def test_the_tier_mix_follows_the_weights_and_zero_weight_tiers_are_never_drawn():
    w = build_workload(WorkloadSpec(trace=CONV, tier_weights={"t20": 3, "t100": 1}), default_tiers(), seed=0)
    counts = w.tier_counts()
    assert counts["t30"] == 0 and counts["t50"] == 0
    assert counts["t20"] / len(w) == pytest.approx(0.75, abs=0.02)
    assert w.description["tiers"]["weights"]["t20"] == 0.75
    assert w.tiers.weights() == [0.75, 0.0, 0.0, 0.25]


def test_a_tier_column_is_used_unless_weights_override_it():
    path = str(FIXTURES / "vidur_tiers.csv")
    w = build_workload(WorkloadSpec(trace=path), default_tiers(), seed=0)
    assert w.tier.tolist() == [0, 3, 2, 0] and w.description["tiers"] == {"source": "trace column"}
    w = build_workload(WorkloadSpec(trace=path, tier_weights={"t50": 1}), default_tiers(), seed=0)
    assert w.tier.tolist() == [2, 2, 2, 2] and w.description["tiers"]["overrides_trace_column"]


def test_unknown_tier_in_weights_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown tier 'gold'"):
        build_workload(WorkloadSpec(trace=CONV, tier_weights={"gold": 1}), default_tiers(), seed=0)


# Resampling and synthetic ----------------------------------------------------------------------------------


def test_resampled_pairs_are_real_trace_rows():
    trace = read_trace(AZURE_CONV)
    w = build_workload(
        WorkloadSpec(trace=CONV, arrival="poisson", rate=30.0, num_requests=5000), default_tiers(), seed=3
    )
    assert len(w) == 5000
    recorded = set(zip(trace.input_tokens.tolist(), trace.output_tokens.tolist(), strict=True))
    drawn = set(zip(w.input_tokens.tolist(), w.output_tokens.tolist(), strict=True))
    assert drawn <= recorded
    # and they are a fresh draw, not the trace in order
    assert not np.array_equal(w.input_tokens, trace.input_tokens[:5000])


def test_gamma_resampling_of_a_lengths_only_trace():
    trace = read_trace(ARXIV_LENGTHS)
    spec = WorkloadSpec(trace=str(ARXIV_LENGTHS), arrival="gamma", burstiness=0.5, rate=4.0, duration_s=500.0)
    w = build_workload(spec, default_tiers(), seed=1)
    assert_well_formed(w)
    assert (w.arrival_s < 500.0).all() and len(w) == pytest.approx(2000, rel=0.2)
    assert set(w.input_tokens.tolist()) <= set(trace.input_tokens.tolist())
    assert w.description["arrival"] == {"process": "gamma", "rate_req_s": 4.0, "burstiness": 0.5}


def test_synthetic_defaults_are_vllm_bench_random_lengths():
    w = build_workload(WorkloadSpec(rate=5.0, num_requests=50), default_tiers(), seed=0)
    assert_well_formed(w)
    assert len(w) == 50 and (w.input_tokens == 1024).all() and (w.output_tokens == 128).all()
    assert w.description["arrival"]["process"] == "poisson"
    assert w.description["lengths"] == {"input": "fixed:1024", "output": "fixed:128"}


def test_synthetic_lengths_follow_their_specs():
    spec = WorkloadSpec(rate=5.0, num_requests=3000, input_len="uniform:10:20", output_len="zipf:1.5:300")
    w = build_workload(spec, default_tiers(), seed=0)
    assert w.input_tokens.min() == 10 and w.input_tokens.max() == 20
    assert w.output_tokens.min() == 1 and w.output_tokens.max() <= 300


def test_poisson_lengths_workload_is_the_spec_with_poisson_arrivals():
    trace = read_trace(AZURE_CONV)
    a = poisson_lengths_workload(trace, rate=8.0, duration_s=600.0, tiers=default_tiers(), seed=11)
    b = build_workload(
        WorkloadSpec(trace=CONV, arrival="poisson", rate=8.0, duration_s=600.0), default_tiers(), seed=11
    )
    assert_well_formed(a)
    assert_same(a, b)
    assert len(a) == pytest.approx(4800, rel=0.06)


def test_bisection_rates_share_one_sample_path():
    """Same seed, two rates: request i has the same row and tier, and its arrival scales as 1 / rate."""
    trace = read_trace(AZURE_CONV)
    lo = poisson_lengths_workload(trace, 5.0, 600.0, default_tiers(), seed=2)
    hi = poisson_lengths_workload(trace, 9.0, 600.0, default_tiers(), seed=2)
    n = len(lo)
    assert len(hi) > n
    np.testing.assert_array_equal(hi.input_tokens[:n], lo.input_tokens)
    np.testing.assert_array_equal(hi.output_tokens[:n], lo.output_tokens)
    np.testing.assert_array_equal(hi.tier[:n], lo.tier)
    np.testing.assert_allclose(hi.arrival_s[:n] * 9.0, lo.arrival_s * 5.0, rtol=1e-12)


# Determinism -----------------------------------------------------------------------------------------------

SPECS = {
    "replay": WorkloadSpec(trace=CODE),
    "retime+tile": WorkloadSpec(trace=CODE, rate=9.0, duration_s=900.0, tile=True),
    "resample gamma": WorkloadSpec(trace=CODE, arrival="gamma", burstiness=0.3, rate=6.0, duration_s=300.0),
    "synthetic": WorkloadSpec(
        rate=6.0, duration_s=300.0, input_len="uniform:1:4000", output_len="zipf:1.3:2000"
    ),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_same_seed_same_arrays_and_another_seed_other_draws(name):
    spec = SPECS[name]
    a = build_workload(spec, default_tiers(), seed=5)
    b = build_workload(spec, default_tiers(), seed=5)
    assert_well_formed(a)
    assert_same(a, b)
    assert a.description == b.description
    c = build_workload(spec, default_tiers(), seed=6)
    assert not np.array_equal(a.tier, c.tier)


def test_changing_the_tier_mix_leaves_arrivals_and_lengths_alone():
    spec = WorkloadSpec(rate=6.0, duration_s=300.0, input_len="uniform:1:4000")
    a = build_workload(spec, default_tiers(), seed=5)
    b = build_workload(
        WorkloadSpec(**{**spec.__dict__, "tier_weights": {"t20": 1, "t30": 9}}), default_tiers(), 5
    )
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    np.testing.assert_array_equal(a.input_tokens, b.input_tokens)
    assert not np.array_equal(a.tier, b.tier)


def test_slice_and_len():
    w = build_workload(WorkloadSpec(rate=5.0, num_requests=20), two_tiers(), seed=0)
    s = w.slice(5, 9)
    assert len(s) == 4 and s.arrival_s.tolist() == w.arrival_s[5:9].tolist()
    assert s.tiers is w.tiers and s.description["slice"] == [5, 9] and "slice" not in w.description


def test_a_synthetic_run_too_short_for_any_arrival_is_empty_not_an_error():
    w = build_workload(WorkloadSpec(rate=1e-6, duration_s=1.0), default_tiers(), seed=0)
    assert len(w) == 0
    json.dumps(w.description)


# Spec validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"trace": CONV, "rate": math.nan}, "rate"),
        ({"trace": CONV, "rate": -1.0}, "rate"),
        ({"trace": CONV, "rate": True}, "rate"),
        ({"trace": CONV, "duration_s": 0.0}, "duration_s"),
        ({"trace": CONV, "duration_s": math.inf}, "duration_s"),
        ({"trace": CONV, "start_s": -1.0}, "start_s"),
        ({"trace": CONV, "num_requests": 0}, "num_requests"),
        ({"trace": CONV, "num_requests": 2.5}, "num_requests"),
        ({"trace": CONV, "tile": True}, "tile needs duration_s"),
        ({"trace": CONV, "arrival": "uniform"}, "unknown arrival process"),
        ({"trace": CONV, "trace_format": "parquet"}, "unknown trace format"),
        ({"trace": CONV, "burstiness": 0.5}, "burstiness applies only to arrival='gamma'"),
        (
            {"trace": CONV, "arrival": "gamma", "burstiness": 0.0, "rate": 1.0, "num_requests": 5},
            "burstiness",
        ),
        ({"trace": CONV, "arrival": "poisson", "num_requests": 5}, "poisson arrivals need a rate"),
        ({"trace": CONV, "arrival": "poisson", "rate": 1.0}, "need num_requests or duration_s"),
        ({"trace": CONV, "arrival": "poisson", "rate": 1.0, "duration_s": 9.0, "tile": True}, "tile"),
        ({"rate": 1.0}, "need num_requests or duration_s"),
        ({"num_requests": 5}, "need a rate"),
        ({"rate": 1.0, "num_requests": 5, "start_s": 3.0}, "start_s"),
        ({"rate": 1.0, "num_requests": 5, "input_len": "trace"}, "give a trace file"),
        ({"rate": 1.0, "num_requests": 5, "input_len": "fixed:0"}, "allowed forms"),
        ({"rate": 1.0, "num_requests": 5, "output_len": 128}, "LengthSpec or a string"),
        ({"rate": 1.0, "num_requests": 5, "tier_weights": {"t20": -1}}, "tier weight"),
        ({"rate": 1.0, "num_requests": 5, "tier_weights": {"t20": 0}}, "sum to 0"),
    ],
)
def test_bad_specs_are_config_errors_before_anything_is_read(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        WorkloadSpec(**kwargs)


def test_a_path_object_is_accepted_as_the_trace():
    assert WorkloadSpec(trace=AZURE_CONV).trace == CONV


def test_length_strings_in_a_spec_are_parsed():
    spec = WorkloadSpec(rate=1.0, num_requests=5, input_len="256", output_len="uniform:1:9")
    assert spec.input_len == LengthSpec.fixed(256) and spec.output_len == LengthSpec.uniform(1, 9)


@pytest.mark.parametrize("seed", [-1, 1.5, True, None])
def test_seed_must_be_a_non_negative_integer(seed):
    with pytest.raises(ConfigError, match="seed"):
        build_workload(WorkloadSpec(rate=1.0, num_requests=5), default_tiers(), seed=seed)


def test_poisson_lengths_workload_explicit_weights_override_a_tier_column():
    """Goodput probes keep a trace's tier column by default; explicit weights (--tier-weights) replace it."""
    tiers = default_tiers()
    trace = read_trace(FIXTURES / "vidur_tiers.csv", None, tiers)
    kept = poisson_lengths_workload(trace, 50.0, 60.0, tiers, seed=1)
    assert set(np.unique(kept.tier).tolist()) <= {tiers.index("t20"), tiers.index("t50"), tiers.index("t100")}
    only_t30 = tiers.with_weights({"t20": 0, "t30": 1, "t50": 0, "t100": 0})
    over = poisson_lengths_workload(trace, 50.0, 60.0, only_t30, seed=1, use_tier_column=False)
    assert np.all(over.tier == tiers.index("t30")) and len(over) == len(kept)
