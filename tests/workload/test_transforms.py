"""Re-time, tile, cut and window keep arrivals sorted and do what their definitions say."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyserve.core.errors import ConfigError
from polyserve.data import AZURE_CONV
from polyserve.workload import read_trace
from polyserve.workload import transforms as tf


def test_mean_rate_is_n_minus_one_gaps_over_the_span():
    assert tf.mean_rate(np.array([0.0, 1.0, 3.0, 4.0])) == pytest.approx(0.75)
    assert tf.mean_rate(np.array([2.0])) is None
    assert tf.mean_rate(np.array([2.0, 2.0])) is None


def test_retime_hits_the_target_rate_and_keeps_the_shape():
    t = read_trace(AZURE_CONV).arrival_s
    out, factor = tf.retime(t, 20.0)
    assert tf.mean_rate(out) == pytest.approx(20.0, rel=1e-12)
    assert factor == pytest.approx(tf.mean_rate(t) / 20.0)
    np.testing.assert_allclose(np.diff(out), np.diff(t) * factor)  # every gap scaled alike


def test_retime_of_a_trace_without_a_rate_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot re-time"):
        tf.retime(np.array([0.0, 0.0, 0.0]), 5.0)


def test_tile_covers_the_duration_without_overlap():
    t = np.array([0.0, 1.0, 3.0])  # span 3, mean gap 1.5 -> period 4.5
    out, rows, copies, period = tf.tile(t, 10.0)
    assert period == 4.5 and copies == 3
    assert out.tolist() == [0.0, 1.0, 3.0, 4.5, 5.5, 7.5, 9.0]
    assert rows.tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_tile_of_a_trace_longer_than_the_duration_is_a_cut():
    t = np.array([0.0, 1.0, 30.0])
    out, rows, copies, _ = tf.tile(t, 10.0)
    assert copies == 1 and out.tolist() == [0.0, 1.0] and rows.tolist() == [0, 1]


traces = (
    st.lists(st.floats(0, 1e3, allow_nan=False), min_size=2, max_size=50)
    .map(sorted)
    .filter(lambda xs: xs[-1] - xs[0] >= 1.0)
)


@settings(max_examples=150, deadline=None)
@given(times=traces, duration=st.floats(0.1, 1e4))
def test_tile_then_cut_is_sorted_within_duration_and_fills_it(times, duration):
    t = np.array(times)
    out, rows, _copies, period = tf.tile(t, duration)
    assert (np.diff(out) >= 0).all()
    assert (out < duration).all()
    if t[0] >= duration:
        assert len(out) == 0
        return
    assert out[-1] >= duration - period  # the last copy reached into the final period
    np.testing.assert_allclose(out, t[rows] + np.floor_divide(np.arange(len(out)), len(t)) * period)


@settings(max_examples=100, deadline=None)
@given(times=traces, duration=st.floats(0.0, 2e3))
def test_cut_keeps_exactly_the_arrivals_before_the_duration(times, duration):
    t = np.array(times)
    keep = tf.cut(t, duration)
    assert (t[:keep] < duration).all() and (t[keep:] >= duration).all()


def test_window_drops_rows_before_start_and_restarts_the_clock():
    out, first = tf.window(np.array([0.0, 1.0, 2.5, 4.0]), 2.0)
    assert first == 2 and out.tolist() == [0.5, 2.0]


def test_tiling_past_the_request_limit_is_refused():
    with pytest.raises(ConfigError, match="shorten the duration or lower the rate"):
        tf.tile(np.array([0.0, 1e-300]), 1.0)
