"""read_trace on good files: right values, right dtypes, for every format and the shipped traces."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyserve.core.errors import ConfigError
from polyserve.data import ARXIV_LENGTHS, AZURE_CODE, AZURE_CONV
from polyserve.workload import TraceData, read_trace

from .helpers import FIXTURES, default_tiers, write


def assert_columns_well_typed(trace: TraceData) -> None:
    assert trace.input_tokens.dtype == np.int64 and trace.output_tokens.dtype == np.int64
    assert (trace.input_tokens >= 1).all() and (trace.output_tokens >= 1).all()
    if trace.arrival_s is not None:
        assert trace.arrival_s.dtype == np.float64
        assert trace.arrival_s[0] == 0.0
        assert (np.diff(trace.arrival_s) >= 0).all()
    if trace.tier is not None:
        assert trace.tier.dtype == np.int16


# Shipped traces ------------------------------------------------------------------------------------------


def test_azure_conv_has_the_documented_rows_lengths_and_span():
    trace = read_trace(AZURE_CONV)
    assert trace.format == "azure"
    assert len(trace) == 19_366
    assert trace.input_tokens.mean() == pytest.approx(1155, abs=1)
    assert trace.output_tokens.mean() == pytest.approx(211, abs=1)
    assert trace.input_tokens.max() == 14_050 and trace.output_tokens.max() == 1_000
    # 18:15:46.6805900 -> 19:14:08.4025270
    assert trace.span_s == pytest.approx(3501.721937, abs=1e-6)
    assert trace.tier is None
    assert_columns_well_typed(trace)


def test_azure_code_has_the_documented_rows_and_span():
    trace = read_trace(AZURE_CODE)
    assert len(trace) == 8_819
    assert trace.input_tokens.mean() == pytest.approx(2048, abs=1)
    assert trace.span_s == pytest.approx(3435.948056, abs=1e-6)
    assert_columns_well_typed(trace)


def test_azure_conv_keeps_all_seven_fractional_digits():
    trace = read_trace(AZURE_CONV)
    # rows 2 and 1: 18:15:50.9951690 - 18:15:46.6805900
    assert trace.arrival_s[1] == pytest.approx(4.3145790, abs=1e-9)


def test_arxiv_lengths_file_has_no_timestamps():
    trace = read_trace(ARXIV_LENGTHS)
    assert trace.format == "lengths"
    assert trace.arrival_s is None and trace.mean_rate is None
    assert len(trace) == 28_257
    assert trace.input_tokens.mean() == pytest.approx(2588, abs=1)
    assert trace.output_tokens.mean() == pytest.approx(291, abs=1)


def test_sha256_is_of_the_file_bytes():
    trace = read_trace(AZURE_CODE)
    assert trace.sha256 == hashlib.sha256(AZURE_CODE.read_bytes()).hexdigest()


# Fixtures, one per format --------------------------------------------------------------------------------


def test_azure_2023_fixture_crosses_midnight_with_seven_digit_fractions():
    trace = read_trace(FIXTURES / "azure_2023.csv")
    np.testing.assert_allclose(trace.arrival_s, [0.0, 1.4999999, 1.4999999, 2.5000001, 11.75], atol=1e-9)
    assert trace.input_tokens.tolist() == [374, 396, 879, 91, 14050]
    assert trace.output_tokens.tolist() == [44, 109, 30, 1, 1000]
    assert_columns_well_typed(trace)


def test_azure_2024_fixture_applies_utc_offsets_and_other_fraction_lengths():
    trace = read_trace(FIXTURES / "azure_2024.csv")
    # 00:00:00.009930Z, 00:00:00.5Z, 02:00:01.25+02:00 (= 00:00:01.25Z), 00:00:03Z
    np.testing.assert_allclose(trace.arrival_s, [0.0, 0.49007, 1.24007, 2.99007], atol=1e-9)
    assert trace.input_tokens.tolist() == [4808, 3180, 120, 550]


def test_vidur_fixture_reads_seconds_extra_columns_and_tiers():
    trace = read_trace(FIXTURES / "vidur_tiers.csv", tiers=default_tiers())
    assert trace.format == "vidur"
    assert trace.arrival_s.tolist() == [0.0, 0.0, 1.25, 7.5]  # relative to the first row (12.5 s)
    assert trace.input_tokens.tolist() == [374, 396, 879, 91]
    assert trace.output_tokens.tolist() == [44, 109, 30, 1]
    assert trace.tier.tolist() == [0, 3, 2, 0]  # t20, t100, t50, t20
    assert_columns_well_typed(trace)


def test_tier_column_without_a_tierset_is_a_config_error():
    with pytest.raises(ConfigError, match="has a 'tier' column; pass the TierSet"):
        read_trace(FIXTURES / "vidur_tiers.csv")


def test_burstgpt_skips_failed_requests_and_counts_them():
    trace = read_trace(FIXTURES / "burstgpt.csv")
    assert trace.format == "burstgpt"
    assert trace.skipped == {"response_tokens_zero": 2}
    assert trace.arrival_s.tolist() == [0.0, 40.0, 113.0, 128.0, 236.0]
    assert trace.input_tokens.tolist() == [472, 1087, 417, 2001, 702]
    assert trace.output_tokens.tolist() == [18, 250, 276, 118, 431]
    assert trace.describe()["skipped"] == {"response_tokens_zero": 2}


def test_mooncake_reads_milliseconds_and_skips_blank_lines():
    trace = read_trace(FIXTURES / "mooncake.jsonl")
    assert trace.format == "mooncake"
    np.testing.assert_allclose(trace.arrival_s, [0.0, 3.053, 3.053, 8.518])
    assert trace.input_tokens.tolist() == [6955, 6472, 512, 8804]
    assert trace.output_tokens.tolist() == [52, 26, 1, 39]
    assert trace.tier is None
    assert_columns_well_typed(trace)


def test_mooncake_tier_key_maps_to_tier_indices():
    trace = read_trace(FIXTURES / "mooncake_tiers.jsonl", tiers=default_tiers())
    assert trace.tier.tolist() == [1, 3]
    assert trace.arrival_s.tolist() == [0.0, 1.5]


def test_lengths_fixture():
    trace = read_trace(FIXTURES / "lengths.csv")
    assert trace.arrival_s is None
    assert trace.input_tokens.tolist() == [3772, 2015, 3178]
    assert trace.output_tokens.tolist() == [54, 156, 313]


def test_forcing_lengths_on_a_timed_file_reads_only_lengths():
    trace = read_trace(FIXTURES / "vidur_tiers.csv", fmt="lengths", tiers=default_tiers())
    assert trace.format == "lengths" and trace.arrival_s is None
    assert trace.input_tokens.tolist() == [374, 396, 879, 91]


def test_unknown_forced_format_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown trace format 'csv'; known formats: azure, vidur"):
        read_trace(FIXTURES / "lengths.csv", fmt="csv")


def test_crlf_line_endings_and_integral_float_counts_are_accepted(tmp_path):
    p = write(
        tmp_path, "t.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\r\n0,12.0,3\r\n\r\n1.5,7,4.0\r\n"
    )
    trace = read_trace(p)
    assert trace.input_tokens.tolist() == [12, 7] and trace.output_tokens.tolist() == [3, 4]
    assert trace.arrival_s.tolist() == [0.0, 1.5]


rows = st.lists(
    st.tuples(
        st.floats(0, 1e4, allow_nan=False, allow_infinity=False),
        st.integers(1, 10**6),
        st.integers(1, 10**6),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(rows=rows)
def test_any_valid_vidur_file_round_trips(tmp_path_factory, rows):
    rows = sorted(rows)
    text = "arrived_at,num_prefill_tokens,num_decode_tokens\n" + "".join(
        f"{t!r},{a},{b}\n" for t, a, b in rows
    )
    p = write(tmp_path_factory.mktemp("rt"), "t.csv", text)
    trace = read_trace(p)
    times = np.array([r[0] for r in rows])
    np.testing.assert_array_equal(trace.arrival_s, times - times[0])
    assert trace.input_tokens.tolist() == [r[1] for r in rows]
    assert trace.output_tokens.tolist() == [r[2] for r in rows]
