"""``TierOutcomes``: per-tier arrivals and certain misses over a sliding window."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyserve.core.outcomes import TierOutcomes


def test_miss_share_counts_only_the_window():
    o = TierOutcomes(2, window_s=30.0)
    for i in range(100):  # one arrival of tier 0 every 0.5 s, from 0 to 49.5 s; a miss every 10 s from 5 s
        o.arrived(0, i * 0.5)
        if i % 20 == 10:
            o.missed(0, i * 0.5)
    # at 50 s the window is [20, 50]: 60 arrivals, misses at 25, 35, 45
    assert o.counts(0, 50.0) == (60, 3)
    assert o.miss_share(0, 50.0) == pytest.approx(3 / 60)
    assert o.miss_share(1, 50.0) == 0.0  # no arrivals: 0, not a division by zero
    assert o.total_arrivals == [100, 0] and o.total_misses == [5, 0]


def test_miss_share_is_capped_at_one():
    """A burst's sheds may outnumber the window's arrivals (the arrivals came before the window)."""
    o = TierOutcomes(1, window_s=10.0)
    o.arrived(0, 0.0)
    o.arrived(0, 9.0)
    o.missed(0, 11.0)
    o.missed(0, 12.0)
    assert o.counts(0, 12.0) == (1, 2)
    assert o.miss_share(0, 12.0) == 1.0


def test_a_stale_now_counts_as_the_latest_time_seen():
    """A live host may pass a clock reading taken before another call went through: the window never moves
    back, so nothing already dropped comes back and the counts stay those of the latest time."""
    o = TierOutcomes(1, window_s=10.0)
    o.arrived(0, 0.0)
    o.arrived(0, 20.0)
    o.missed(0, 15.0)  # stale: recorded at 20
    assert o.counts(0, 5.0) == (1, 1)  # stale query: the window ending at 20
    assert o.counts(0, 30.0) == (1, 1) and o.counts(0, 30.1) == (0, 0)


@pytest.mark.parametrize("args", [(0, 30.0), (2, 0.0), (2, -1.0), (2, float("nan"))])
def test_bad_construction_names_the_argument(args):
    with pytest.raises(ValueError, match=r"tier|window_s"):
        TierOutcomes(*args)


def test_decode_misses_are_counted_apart():
    """A disaggregated decode's lost second token is its tier's decode servers' miss, not the shared prefill
    pool's: it counts in ``decode=True`` only, and in the decode total."""
    o = TierOutcomes(1)
    for t in range(4):
        o.arrived(0, float(t))
    o.missed(0, 4.0)
    o.missed(0, 4.0, decode=True)
    o.missed(0, 4.5, decode=True)
    assert o.counts(0, 5.0) == (4, 1) and o.counts(0, 5.0, decode=True) == (4, 2)
    assert o.miss_share(0, 5.0, decode=True) == 0.5
    assert o.total_misses == [1] and o.total_decode_misses == [2]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), st.integers(0, 2), st.sampled_from(["a", "m", "d"])), max_size=60),
       st.floats(0.5, 20))
def test_counts_equal_a_brute_force_count_of_the_window(steps, window):
    """Invariant: whatever the order of writes and queries, ``counts`` is the number of events in
    ``[now - window, now]``, and memory never holds more than that."""
    o = TierOutcomes(3, window_s=window)
    now = 0.0
    log: list[tuple[float, int, str]] = []
    for dt, tier, kind in steps:
        now += dt
        if kind == "a":
            o.arrived(tier, now)
        else:
            o.missed(tier, now, decode=kind == "d")
        log.append((now, tier, kind))
        for t in range(3):
            want = {k: sum(1 for (x, j, kk) in log if j == t and kk == k and x >= now - window) for k in "amd"}
            assert o.counts(t, now) == (want["a"], want["m"])
            assert o.counts(t, now, decode=True) == (want["a"], want["d"])
            held = (len(o._arrivals[t]), len(o._misses[0][t]), len(o._misses[1][t]))
            assert held == (want["a"], want["m"], want["d"])
