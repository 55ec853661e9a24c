"""The BLIS linear model: the published numbers for Llama-3.1-8B on H100 and what they imply."""

from __future__ import annotations

import pytest

from polyserve.core.errors import ConfigError
from polyserve.latency import LinearLatencyModel, blis_linear_model, get_deployment


def test_llama_8b_h100_coefficients_match_blis(h100_8b) -> None:
    m = blis_linear_model(h100_8b)
    assert m.b0 == pytest.approx(6.472008e-3)
    assert m.b1 == pytest.approx(19.797e-6, abs=1e-9)
    assert m.b2 == pytest.approx(304.402e-6, abs=1e-9)
    assert m.b3 == 0.0
    assert m.kv_independent
    assert "v0.11.0" in m.source


@pytest.mark.parametrize(("tpot_ms", "batch", "largest_int"), [(20, 44, 44), (50, 143, 142)])
def test_decode_batch_under_a_tpot(h100_8b, tpot_ms: int, batch: int, largest_int: int) -> None:
    # "About 44 at 20 ms and about 143 at 50 ms": (TPOT - b0) / b2 = 44.4 and 142.99.
    m = blis_linear_model(h100_8b)
    assert round((tpot_ms / 1e3 - m.b0) / m.b2) == batch
    fits = [b for b in range(1, 1000) if m.iteration_time(b, 0, 0) <= tpot_ms / 1e3]
    assert max(fits) == largest_int


def test_formula(h100_8b) -> None:
    m = LinearLatencyModel(h100_8b, b0=1e-3, b1=2e-6, b2=3e-5, b3=4e-8)
    assert m.iteration_time(10, 5000, 100) == pytest.approx(1e-3 + 2e-4 + 3e-4 + 2e-4)
    assert not m.kv_independent


def test_negative_coefficient_is_refused(h100_8b) -> None:
    with pytest.raises(ConfigError, match="b2 must be >= 0, got -1"):
        LinearLatencyModel(h100_8b, b0=0.0, b1=0.0, b2=-1.0)


def test_missing_blis_fit_names_the_alternative() -> None:
    with pytest.raises(ConfigError, match=r"no fitted linear coefficients for llama-3\.1-70b on h100 tp=4"):
        blis_linear_model(get_deployment("llama-3.1-70b", "h100", 4))
