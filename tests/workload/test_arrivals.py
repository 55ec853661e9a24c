"""Synthetic arrivals: the right mean rate, the right burstiness, confined to the duration, reproducible."""

from __future__ import annotations

import math

import numpy as np
import pytest

from polyserve.core.errors import ConfigError
from polyserve.workload import arrival_times


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, 0])


def cv(times: np.ndarray) -> float:
    gaps = np.diff(np.concatenate([[0.0], times]))
    return float(gaps.std() / gaps.mean())


def test_poisson_count_in_a_duration_matches_rate_times_duration():
    t = arrival_times(rng(), rate=50.0, duration_s=2000.0)
    # 100k expected; Poisson sd ~ 316, so 1% is > 3 sd
    assert len(t) == pytest.approx(100_000, rel=0.01)
    assert cv(t) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("burstiness", [0.25, 0.5, 2.0, 4.0])
def test_gamma_burstiness_sets_the_cv_of_gaps_and_keeps_the_mean_rate(burstiness):
    t = arrival_times(rng(), rate=10.0, burstiness=burstiness, num_requests=40_000)
    assert cv(t) == pytest.approx(1 / math.sqrt(burstiness), rel=0.05)
    assert len(t) / t[-1] == pytest.approx(10.0, rel=0.03)


def test_arrivals_lie_in_the_duration_sorted_and_positive():
    t = arrival_times(rng(), rate=3.0, burstiness=0.3, duration_s=100.0)
    assert (t > 0).all() and (t < 100.0).all()
    assert (np.diff(t) >= 0).all()


def test_num_requests_caps_a_duration():
    assert len(arrival_times(rng(), rate=100.0, num_requests=10, duration_s=1000.0)) == 10
    assert len(arrival_times(rng(), rate=100.0, num_requests=10**6, duration_s=1.0)) < 200


def test_same_seed_same_arrivals_different_seed_different():
    a = arrival_times(rng(1), rate=5.0, duration_s=60.0)
    b = arrival_times(rng(1), rate=5.0, duration_s=60.0)
    c = arrival_times(rng(2), rate=5.0, duration_s=60.0)
    np.testing.assert_array_equal(a, b)
    assert len(a) != len(c) or not np.array_equal(a, c)


def test_a_rate_change_rescales_the_same_sample_path():
    """Common random numbers: arrivals at rate r are those at rate 1 divided by r."""
    slow = arrival_times(rng(3), rate=2.0, duration_s=500.0)
    fast = arrival_times(rng(3), rate=8.0, duration_s=500.0)
    assert len(fast) > len(slow)
    np.testing.assert_allclose(fast[: len(slow)] * 8.0, slow * 2.0, rtol=1e-12)


def test_drawing_by_count_or_by_duration_gives_the_same_prefix():
    by_time = arrival_times(rng(4), rate=7.0, duration_s=300.0)
    by_count = arrival_times(rng(4), rate=7.0, num_requests=len(by_time) + 50)
    np.testing.assert_array_equal(by_count[: len(by_time)], by_time)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0.0, "num_requests": 3},
        {"rate": math.nan, "num_requests": 3},
        {"rate": math.inf, "num_requests": 3},
        {"rate": 1.0, "burstiness": 0.0, "num_requests": 3},
        {"rate": 1.0},
        {"rate": 1.0, "duration_s": -1.0},
        {"rate": 1e9, "duration_s": 1e3},
    ],
)
def test_bad_parameters_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        arrival_times(rng(), **kwargs)
