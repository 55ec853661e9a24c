"""The optimal goodput bound (``policy/bound.py``) against numbers worked out by hand from its docstring formula.

Example instance used throughout (round numbers, so each figure below can be checked on paper):
P = 100 prompt tokens, D = 50 output tokens, T0 = 5 ms, c_p = 10 us/prefill token, c_d = 200 us/decode token.
Per request: prefill work c_p*P = 1 ms, decode work c_d*D = 10 ms, so co-located work = 11 ms.
KV residency of one request at TPOT s: (P + D/2) * D * s = 125 * 50 * s = 6250 * s token-seconds.
"""

from __future__ import annotations

import math

import pytest

from polyserve.core.errors import ConfigError
from polyserve.policy.bound import BoundInputs, optimal_rate, tier_rate

BIG_KV = 1_000_000.0  # tokens: KV never binds (compute-bound case)
SMALL_KV = 1_000.0  # tokens: KV binds (KV-bound case)


def inputs(tiers=((0.020, 1.0),), kv=BIG_KV, instances=4, **kw) -> BoundInputs:
    base = dict(
        instances=instances,
        mean_prompt=100.0,
        mean_output=50.0,
        kv_capacity=kv,
        t0=0.005,
        c_prefill=1e-5,
        c_decode=2e-4,
        tiers=tuple(tiers),
    )
    base.update(kw)
    return BoundInputs(**base)


def test_tier_rate_compute_bound_is_one_minus_t0_over_s_divided_by_work():
    """s = 20 ms, big KV: mu = (1 - 5/20) / 11 ms = 0.75 / 0.011 = 68.18 req/s (KV term 1e6/125 = 8000)."""
    assert tier_rate(inputs(), 0.020) == pytest.approx(0.75 / 0.011, rel=1e-12)
    assert tier_rate(inputs(), 0.020) == pytest.approx(68.181818, rel=1e-6)


def test_tier_rate_kv_bound_is_capacity_over_residency():
    """s = 20 ms, K = 1000: KV term 1000 / (6250 * 0.02) = 8 req/s, below the compute term 68.18."""
    assert tier_rate(inputs(kv=SMALL_KV), 0.020) == pytest.approx(8.0, rel=1e-12)


def test_tier_rate_switches_from_kv_to_compute_bound_at_the_crossover():
    """s = 50 ms: compute = 0.9 / 0.011 = 81.82; KV = K / 312.5. K = 25,000 -> 80 (KV-bound); 30,000 -> 81.82."""
    assert tier_rate(inputs(kv=25_000.0), 0.050) == pytest.approx(80.0, rel=1e-12)
    assert tier_rate(inputs(kv=30_000.0), 0.050) == pytest.approx(0.9 / 0.011, rel=1e-12)


def test_tier_rate_disaggregated_drops_the_prefill_term():
    """Decode instance, s = 20 ms: mu^d = 0.75 / (c_d*D = 10 ms) = 75 req/s."""
    assert tier_rate(inputs(), 0.020, disaggregated=True) == pytest.approx(75.0, rel=1e-12)


def test_colocated_one_tier_is_instances_times_tier_rate():
    """N = 4, one 20 ms tier: rate* = 4 / (1 / 68.18) = 4 * 0.75 / 0.011 = 272.73 req/s."""
    assert optimal_rate(inputs()) == pytest.approx(4 * 0.75 / 0.011, rel=1e-12)
    assert optimal_rate(inputs(kv=SMALL_KV)) == pytest.approx(4 * 8.0, rel=1e-12)


def test_colocated_two_tiers_is_harmonic_in_the_mix():
    """Tiers 20 ms and 50 ms with mix weights 1:3 (normalised to 0.25/0.75), N = 4.

    mu_20 = 0.75/0.011, mu_50 = 0.90/0.011; rate* = 4 / (0.25*0.011/0.75 + 0.75*0.011/0.90)
    = 4 / (0.0036667 + 0.0091667) = 311.69 req/s.
    """
    b = inputs(tiers=((0.020, 1.0), (0.050, 3.0)))
    expected = 4 / (0.25 * 0.011 / 0.75 + 0.75 * 0.011 / 0.90)
    assert optimal_rate(b) == pytest.approx(expected, rel=1e-12)
    assert optimal_rate(b) == pytest.approx(311.688312, rel=1e-6)


def test_colocated_two_tiers_kv_bound():
    """K = 1000: mu_20 = 1000/125 = 8, mu_50 = 1000/312.5 = 3.2 (both KV-bound); mix 0.5/0.5, N = 4.

    rate* = 4 / (0.5/8 + 0.5/3.2) = 4 / 0.21875 = 18.2857 req/s.
    """
    b = inputs(tiers=((0.020, 0.5), (0.050, 0.5)), kv=SMALL_KV)
    assert optimal_rate(b) == pytest.approx(4 / 0.21875, rel=1e-12)


def test_disaggregated_one_tier_adds_the_prefill_instance_share():
    """mu_p = 1 / (c_p*P) = 1000 req/s, mu^d = 75: rate* = 4 / (1/1000 + 1/75) = 279.07 req/s."""
    assert optimal_rate(inputs(), "disaggregated") == pytest.approx(4 / (1 / 1000 + 1 / 75), rel=1e-12)


def test_disaggregated_two_tiers_compute_bound():
    """Tiers 20/50 ms, mix 0.25/0.75: mu^d = 75 and 0.9/0.01 = 90. rate* = 4 / (0.001 + 0.25/75 + 0.75/90)."""
    b = inputs(tiers=((0.020, 1.0), (0.050, 3.0)))
    expected = 4 / (0.001 + 0.25 / 75 + 0.75 / 90)
    assert optimal_rate(b, "disaggregated") == pytest.approx(expected, rel=1e-12)
    assert optimal_rate(b, "disaggregated") == pytest.approx(315.789474, rel=1e-6)


def test_disaggregated_kv_bound_decode_uses_the_kv_term():
    """K = 1000: mu^d_20 = min(75, 8) = 8; rate* = 4 / (0.001 + 1/8) = 31.746 req/s."""
    assert optimal_rate(inputs(kv=SMALL_KV), "disaggregated") == pytest.approx(4 / (0.001 + 0.125), rel=1e-12)


def test_disaggregated_rate_is_the_best_split_of_the_instances():
    """The closed form equals the best continuous split n_p + n_d = N of min(n_p*mu_p, n_d / sum f/mu^d)."""
    b = inputs(tiers=((0.020, 1.0), (0.050, 3.0)))
    inv_d = 0.25 / 75 + 0.75 / 90
    best = max(min(n_p * 1000, (4 - n_p) / inv_d) for n_p in (k / 10_000 * 4 for k in range(10_001)))
    assert optimal_rate(b, "disaggregated") == pytest.approx(best, rel=1e-3)
    assert optimal_rate(b, "disaggregated") >= best


def test_bound_scales_linearly_with_instances():
    """Doubling N doubles the bound (both modes)."""
    for mode in ("colocated", "disaggregated"):
        assert optimal_rate(inputs(instances=8), mode) == pytest.approx(2 * optimal_rate(inputs(), mode), rel=1e-12)


@pytest.mark.parametrize("t0", [0.020, 0.030])
def test_t0_at_or_above_tpot_gives_zero(t0):
    """An iteration's fixed cost alone reaches the TPOT: no request can be served, so mu_t = 0 and the bound is 0."""
    assert tier_rate(inputs(t0=t0), 0.020) == 0.0
    assert tier_rate(inputs(t0=t0), 0.020, disaggregated=True) == 0.0
    assert optimal_rate(inputs(t0=t0)) == 0.0
    assert optimal_rate(inputs(t0=t0, tiers=((0.020, 1.0), (0.050, 1.0)))) == 0.0


def test_zero_weight_tier_is_ignored_even_if_unservable():
    """A tier with mix weight 0 contributes nothing, even if T0 >= its TPOT."""
    b = inputs(tiers=((0.004, 0.0), (0.020, 1.0)))
    assert optimal_rate(b) == pytest.approx(4 * 0.75 / 0.011, rel=1e-12)


@pytest.mark.parametrize(
    "kw",
    [
        {"instances": 0},
        {"instances": -2},
        {"mean_prompt": 0.0},
        {"mean_prompt": -5.0},
        {"mean_output": 0.0},
        {"mean_output": -1.0},
        {"tiers": ()},
        {"tiers": ((0.020, 0.0), (0.050, 0.0))},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
@pytest.mark.parametrize("mode", ["colocated", "disaggregated"])
def test_bad_inputs_raise_config_error(kw, mode):
    """No instance, non-positive mean lengths or a mix with no weight are configuration errors."""
    with pytest.raises(ConfigError):
        optimal_rate(inputs(**kw), mode)


def test_disaggregated_without_prefill_cost_raises_config_error():
    """mu_p = 1 / (c_p*P) is undefined for c_p = 0."""
    with pytest.raises(ConfigError):
        optimal_rate(inputs(c_prefill=0.0), "disaggregated")
    assert optimal_rate(inputs(c_prefill=0.0)) == pytest.approx(4 * 0.75 / 0.010, rel=1e-12)


@pytest.mark.parametrize(
    "kw,mode",
    [
        ({"mean_prompt": math.nan}, "colocated"),
        ({"tiers": ((math.nan, 1.0),)}, "colocated"),
        ({"tiers": ((0.020, math.nan),)}, "colocated"),
        ({"kv_capacity": -1.0}, "colocated"),
        ({"t0": -0.005}, "colocated"),
        ({"c_decode": -2e-4}, "colocated"),
        ({}, "disaggregate"),  # typo of "disaggregated"
    ],
    ids=["nan-prompt", "nan-tpot", "nan-weight", "negative-kv", "negative-t0", "negative-c_decode", "unknown-mode"],
)
def test_invalid_numbers_and_unknown_mode_raise_config_error(kw, mode):
    """Style rule: configs are validated (no NaN, no negative costs); an unknown mode name fails loudly."""
    with pytest.raises(ConfigError):
        optimal_rate(inputs(**kw), mode)
