"""LengthSpec: the CLI forms parse, print back, validate and sample within their bounds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyserve.core.errors import ConfigError
from polyserve.workload import LengthSpec


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("128", LengthSpec.fixed(128)),
        ("fixed:128", LengthSpec.fixed(128)),
        (" Fixed : 7 ", LengthSpec.fixed(7)),
        ("uniform:64:512", LengthSpec.uniform(64, 512)),
        ("uniform:5:5", LengthSpec.uniform(5, 5)),
        ("zipf:1.2:4096", LengthSpec.zipf(1.2, 4096)),
        ("trace", LengthSpec.trace()),
    ],
)
def test_every_documented_form_parses(text, spec):
    assert LengthSpec.parse(text) == spec


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0",
        "-5",
        "fixed",
        "fixed:0",
        "fixed:1.5",
        "fixed:1_000",
        "uniform:10",
        "uniform:9:3",
        "uniform:0:3",
        "zipf:1.0:100",
        "zipf:nan:100",
        "zipf:2:0",
        "trace:3",
        "normal:3:4",
        "12abc",
    ],
)
def test_bad_text_is_a_config_error_listing_the_allowed_forms(bad):
    with pytest.raises(ConfigError, match="allowed forms: N or fixed:N, uniform:LOW:HIGH"):
        LengthSpec.parse(bad)


def test_direct_construction_is_validated():
    with pytest.raises(ConfigError):
        LengthSpec("fixed", value=True)
    with pytest.raises(ConfigError):
        LengthSpec("gauss")


specs = st.one_of(
    st.integers(1, 10**6).map(LengthSpec.fixed),
    st.tuples(st.integers(1, 10**5), st.integers(0, 10**5)).map(
        lambda p: LengthSpec.uniform(p[0], p[0] + p[1])
    ),
    st.tuples(st.floats(1.01, 5.0), st.integers(1, 10**5)).map(
        lambda p: LengthSpec.zipf(round(p[0], 3), p[1])
    ),
    st.just(LengthSpec.trace()),
)


@given(spec=specs)
def test_str_is_canonical_and_parses_back(spec):
    assert LengthSpec.parse(str(spec)) == spec


def test_uniform_is_inclusive_at_both_ends():
    x = LengthSpec.uniform(3, 6).sample(np.random.default_rng(0), 2000)
    assert x.dtype == np.int64
    assert set(x.tolist()) == {3, 4, 5, 6}


def test_zipf_is_at_least_one_and_clipped_to_max():
    x = LengthSpec.zipf(1.2, 4096).sample(np.random.default_rng(0), 20_000)
    assert x.min() == 1 and x.max() == 4096
    assert (x == 1).mean() == pytest.approx(1 / 5.5916, abs=0.02)  # P(1) = 1 / zeta(1.2)
    assert x.dtype == np.int64


def test_fixed_and_trace_sampling():
    assert LengthSpec.fixed(9).sample(np.random.default_rng(0), 3).tolist() == [9, 9, 9]
    with pytest.raises(ConfigError, match="needs a trace"):
        LengthSpec.trace().sample(np.random.default_rng(0), 3)
